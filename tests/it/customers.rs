use serde_json::{Value, json};

use crate::helpers::TestApp;

#[tokio::test]
async fn a_customer_with_vehicles_round_trips_through_create_read_update_delete() {
    let app = TestApp::spawn().await;
    let (status, created) = app
        .call(app.post("/customers").json(&json!({
            "nama": "Budi Santoso", "hp": "0812 3456 789", "alamat": "Jl. Merdeka 1", "email": "budi@example.com",
            "vehicles": [{"no_pol": "B 1234 XYZ", "model": "Avanza", "next_visit_date": "2026-12-01"}, {"no_pol": "B 9 Q"}]
        })))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["data"]["vehicles"].as_array().unwrap().len(), 2);
    assert_eq!(
        created["data"]["vehicles"][0]["next_visit_date"],
        "2026-12-01"
    );

    let (status, updated) = app
        .call(
            app.http
                .put(format!("{}/customers/{id}", app.base))
                .bearer_auth(&app.token)
                .json(&json!({"hp": "0899 1111 2222", "email": null})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["data"]["hp"], "0899 1111 2222");
    assert!(updated["data"]["email"].is_null());
    assert_eq!(
        updated["data"]["nama"], "Budi Santoso",
        "fields not given are kept"
    );

    let (status, vehicle) = app
        .call(
            app.post(&format!("/customers/{id}/vehicles"))
                .json(&json!({"no_pol": "D 77 AB", "next_visit_date": "2027-01-02"})),
        )
        .await;
    assert_eq!(status, 201, "{vehicle}");
    let vid = vehicle["data"]["id"].as_str().unwrap().to_owned();
    let (status, changed) = app
        .call(
            app.http
                .put(format!("{}/vehicles/{vid}", app.base))
                .bearer_auth(&app.token)
                .json(&json!({"model": "Xenia"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            changed["data"]["model"].as_str(),
            changed["data"]["no_pol"].as_str()
        ),
        (Some("Xenia"), Some("D 77 AB"))
    );
    let (_, read) = app.call(app.get(&format!("/customers/{id}"))).await;
    assert_eq!(read["data"]["vehicles"].as_array().unwrap().len(), 3);

    let (status, _) = app
        .call(
            app.http
                .delete(format!("{}/vehicles/{vid}", app.base))
                .bearer_auth(&app.token),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            app.http
                .delete(format!("{}/customers/{id}", app.base))
                .bearer_auth(&app.token),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.call(app.get(&format!("/customers/{id}"))).await;
    assert_eq!(status, 404);
    let vehicles: i64 = sqlx::query_scalar("SELECT count(*) FROM vehicles")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(vehicles, 0, "vehicles go with their customer");
}

#[tokio::test]
async fn bad_customer_input_is_422_and_unknown_ids_are_404() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(
            app.post("/customers")
                .json(&json!({"nama": 1, "vehicles": [{"next_visit_date": "1/12/2026"}]})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["nama", "vehicles[0].next_visit_date"]);
    for (method, path) in [
        ("GET", "/customers/nope"),
        ("PUT", "/vehicles/01a212aa-23c0-71db-9e75-22982c58756b"),
        ("DELETE", "/customers/01a212aa-23c0-71db-9e75-22982c58756b"),
    ] {
        let req = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .bearer_auth(&app.token)
            .json(&json!({}));
        let (status, _) = app.call(req).await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _) = app
        .call(
            app.post("/customers/01a212aa-23c0-71db-9e75-22982c58756b/vehicles")
                .json(&json!({"no_pol": "B 1"})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(app.http.get(format!("{}/customers", app.base)))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn bulk_import_keeps_valid_items_and_reports_each_invalid_one() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(app.post("/customers/bulk-import").json(&json!({"customers": [
            {"nama": "A", "hp": "0811111111", "vehicles": [{"no_pol": "B 1 A", "next_visit_date": "2026-12-01"}]},
            {"nama": "B", "vehicles": [{"next_visit_date": "tomorrow"}]},
            "not an object",
            {"nama": "C"}
        ]})))
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(
        (
            data["total"].as_u64(),
            data["imported"].as_u64(),
            data["failed"].as_u64()
        ),
        (Some(4), Some(2), Some(2))
    );
    let failed: Vec<u64> = data["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["index"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, [1, 2]);
    assert_eq!(
        data["failures"][0]["errors"][0]["field"],
        "vehicles[0].next_visit_date"
    );

    let (_, page) = app.call(app.get("/customers?limit=1")).await;
    let first: &Value = &page["data"]["items"][0];
    assert_eq!(first["nama"], "C", "newest first");
    let cursor = page["data"]["next_cursor"].as_str().unwrap();
    let (_, next) = app
        .call(app.get(&format!("/customers?limit=5&cursor={cursor}")))
        .await;
    assert_eq!(next["data"]["items"][0]["nama"], "A");
    assert_eq!(next["data"]["items"][0]["vehicles"][0]["no_pol"], "B 1 A");

    let (status, _) = app
        .call(
            app.post("/customers/bulk-import")
                .json(&json!({"customers": {}})),
        )
        .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn demo_data_loads_vehicles_due_over_the_coming_weeks() {
    // the demo-data command: one process at its default budget
    let db = crate::helpers::TestDb::with_processes(2).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bengkel-whatsapp"))
        .args(["demo-data", "--vehicles", "601"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Due dates as the fan-out computes them: the next visit, else the last one + 4 months.
    let (vehicles, customers, due_soon, no_phone, days, by_last_visit, due_before_today): (
        i64,
        i64,
        i64,
        i64,
        i32,
        i64,
        i64,
    ) = sqlx::query_as(
        "WITH due AS (
            SELECT coalesce(next_visit_date, (last_visit_date + interval '4 months')::date) AS d,
                   next_visit_date IS NULL AS by_last
            FROM vehicles
         )
         SELECT (SELECT count(*) FROM vehicles), (SELECT count(*) FROM customers),
                (SELECT count(*) FROM due WHERE d < (now() AT TIME ZONE 'Asia/Jakarta')::date + 3),
                (SELECT count(*) FROM customers WHERE hp IS NULL),
                (SELECT max(d) - min(d) FROM due),
                (SELECT count(*) FROM due WHERE by_last AND d IS NOT NULL),
                (SELECT count(*) FROM due WHERE d < (now() AT TIME ZONE 'Asia/Jakarta')::date)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((vehicles, customers), (601, 301));
    assert!(
        (25..=35).contains(&due_soon),
        "about 5% due in the next 3 days, got {due_soon}"
    );
    assert!(
        no_phone > 0,
        "some incomplete customers for the skipped path"
    );
    assert_eq!(days, 59, "spread over 60 days");
    assert_eq!(due_before_today, 0);
    assert!(
        (55..=60).contains(&by_last_visit),
        "about 1 in 10 due by their last visit, got {by_last_visit}"
    );
    let (salutations, named, english): (Vec<Option<String>>, i64, i64) = sqlx::query_as(
        "SELECT array_agg(DISTINCT salutation),
                count(*) FILTER (WHERE nama ~ '^(Bapak|Ibu|Pak|Kak) '),
                count(*) FILTER (WHERE language = 'en')
         FROM customers",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut salutations: Vec<String> = salutations
        .into_iter()
        .map(|s| s.unwrap_or_else(|| "NULL".into()))
        .collect();
    salutations.sort();
    assert_eq!(salutations, ["", "Ibu", "Kak", "NULL"]);
    assert_eq!(named, 4, "every 97th name starts with a salutation");
    assert_eq!(english, 30, "one in 10 reads English");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_bengkel-whatsapp"))
        .args(["demo-data", "--vehicles", "0"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

fn fields(body: &Value) -> Vec<(&str, &str)> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    (
                        e["field"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn salutation_and_language_are_stored_changed_listed_and_checked() {
    let app = TestApp::spawn().await;
    let (status, ibu) = app
        .call(
            app.post("/customers")
                .json(&json!({"nama": "Siti", "salutation": "  Ibu ", "language": "en"})),
        )
        .await;
    assert_eq!(status, 201, "{ibu}");
    assert_eq!(
        (&ibu["data"]["salutation"], &ibu["data"]["language"]),
        (&json!("Ibu"), &json!("en")),
        "trimmed"
    );
    let (_, plain) = app
        .call(app.post("/customers").json(&json!({"nama": "Budi"})))
        .await;
    assert!(plain["data"]["salutation"].is_null(), "{plain}");
    assert_eq!(plain["data"]["language"], "id", "the default");
    let (_, none) = app
        .call(
            app.post("/customers")
                .json(&json!({"nama": "Rina", "salutation": ""})),
        )
        .await;
    assert_eq!(none["data"]["salutation"], "", "explicitly no salutation");
    let stored: Vec<(Option<String>, String)> =
        sqlx::query_as("SELECT salutation, language FROM customers ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        stored,
        [
            (Some("Ibu".into()), "en".into()),
            (None, "id".into()),
            (Some(String::new()), "id".into())
        ]
    );

    let id = ibu["data"]["id"].as_str().unwrap().to_owned();
    let put = |body: Value| {
        app.http
            .put(format!("{}/customers/{id}", app.base))
            .bearer_auth(&app.token)
            .json(&body)
    };
    let (status, changed) = app.call(put(json!({"hp": "0811 2222 333"}))).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (&changed["data"]["salutation"], &changed["data"]["language"]),
        (&json!("Ibu"), &json!("en")),
        "absent fields are kept"
    );
    let (_, changed) = app
        .call(put(json!({"salutation": "Kak", "language": "id"})))
        .await;
    assert_eq!(
        (&changed["data"]["salutation"], &changed["data"]["language"]),
        (&json!("Kak"), &json!("id"))
    );
    let (_, cleared) = app.call(put(json!({"salutation": null}))).await;
    assert!(cleared["data"]["salutation"].is_null(), "{cleared}");

    let (_, page) = app.call(app.get("/customers")).await;
    let listed: Vec<(&Value, &Value)> = page["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (&c["salutation"], &c["language"]))
        .collect();
    assert_eq!(
        listed,
        [
            (&json!(""), &json!("id")),
            (&Value::Null, &json!("id")),
            (&Value::Null, &json!("id"))
        ],
        "newest first"
    );

    let long = "x".repeat(31);
    let (status, bad) = app
        .call(
            app.post("/customers")
                .json(&json!({"nama": "X", "salutation": long, "language": "fr"})),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(
        fields(&bad),
        [
            ("salutation", "must be at most 30 characters"),
            ("language", "must be id or en")
        ]
    );
    let (status, bad) = app.call(put(json!({"language": "EN"}))).await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(fields(&bad), [("language", "must be id or en")]);
    let (status, bad) = app.call(put(json!({"salutation": 7}))).await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(fields(&bad)[0].0, "salutation");
    let exactly_30 = "y".repeat(30);
    let (status, ok) = app.call(put(json!({"salutation": exactly_30}))).await;
    assert_eq!(status, 200, "{ok}");
}

#[tokio::test]
async fn a_vehicle_is_due_on_its_next_visit_else_months_after_its_last_one() {
    let app = TestApp::spawn().await;
    let (status, created) = app
        .call(app.post("/customers").json(&json!({"nama": "Budi", "vehicles": [
            {"no_pol": "B 1 A", "last_visit_date": "2026-08-01"},
            {"no_pol": "B 2 A", "next_visit_date": "2026-12-24", "last_visit_date": "2026-01-01"},
            {"no_pol": "B 3 A"}
        ]})))
        .await;
    assert_eq!(status, 201, "{created}");
    let due = |v: &Value| {
        (
            v["due_date"].as_str().map(str::to_owned),
            v["due_source"].as_str().map(str::to_owned),
        )
    };
    let s = |x: &str| Some(x.to_owned());
    let vehicles = created["data"]["vehicles"].as_array().unwrap();
    assert_eq!(vehicles[0]["last_visit_date"], "2026-08-01");
    assert!(vehicles[0]["next_visit_date"].is_null());
    assert_eq!(
        due(&vehicles[0]),
        (s("2026-12-01"), s("last_visit_date")),
        "last visit + 4 months"
    );
    assert_eq!(
        due(&vehicles[1]),
        (s("2026-12-24"), s("next_visit_date")),
        "an explicit next visit wins"
    );
    assert_eq!(due(&vehicles[2]), (None, None));
    for v in vehicles {
        assert!(v.get("due_date").is_some() && v.get("due_source").is_some());
    }

    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let (status, added) = app
        .call(
            app.post(&format!("/customers/{id}/vehicles"))
                .json(&json!({"no_pol": "B 4 A", "last_visit_date": "2026-10-31"})),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(
        due(&added["data"]),
        (s("2027-02-28"), s("last_visit_date")),
        "a day February lacks is its last day"
    );

    let both = vehicles[1]["id"].as_str().unwrap();
    let put = |body: Value| {
        app.http
            .put(format!("{}/vehicles/{both}", app.base))
            .bearer_auth(&app.token)
            .json(&body)
    };
    let (status, changed) = app.call(put(json!({"next_visit_date": null}))).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (
            changed["data"]["last_visit_date"].as_str(),
            due(&changed["data"])
        ),
        (Some("2026-01-01"), (s("2026-05-01"), s("last_visit_date"))),
        "without the next visit, the kept last visit decides"
    );
    let (_, changed) = app
        .call(put(json!({"last_visit_date": "2026-03-15"})))
        .await;
    assert_eq!(
        due(&changed["data"]),
        (s("2026-07-15"), s("last_visit_date"))
    );
    let (status, bad) = app
        .call(put(json!({"last_visit_date": "15-03-2026"})))
        .await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(
        fields(&bad),
        [("last_visit_date", "must be a date YYYY-MM-DD")]
    );

    let (_, read) = app.call(app.get(&format!("/customers/{id}"))).await;
    let read: Vec<_> = read["data"]["vehicles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["no_pol"].as_str().unwrap().to_owned(), due(v)))
        .collect();
    assert_eq!(
        read,
        [
            ("B 1 A".to_owned(), (s("2026-12-01"), s("last_visit_date"))),
            ("B 2 A".to_owned(), (s("2026-07-15"), s("last_visit_date"))),
            ("B 3 A".to_owned(), (None, None)),
            ("B 4 A".to_owned(), (s("2027-02-28"), s("last_visit_date")))
        ]
    );
    let (_, page) = app.call(app.get("/customers")).await;
    assert_eq!(
        page["data"]["items"][0]["vehicles"][0]["due_date"],
        "2026-12-01"
    );
}

#[tokio::test]
async fn the_due_date_follows_the_configured_service_interval() {
    let app = TestApp::spawn_with(crate::helpers::Options {
        env: vec![("SERVICE_INTERVAL_MONTHS", "6".to_owned())],
        ..Default::default()
    })
    .await;
    let (status, created) = app
        .call(app.post("/customers").json(
            &json!({"nama": "Budi", "vehicles": [{"no_pol": "B 1 A", "last_visit_date": "2026-08-01"}]}),
        ))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["data"]["vehicles"][0]["due_date"], "2027-02-01",
        "last visit + 6 months"
    );
}

#[tokio::test]
async fn bulk_import_takes_salutation_language_and_last_visit_and_reports_bad_items() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(
            app.post("/customers/bulk-import")
                .json(&json!({"customers": [
                    {"nama": "A", "salutation": "Kak", "language": "en",
                     "vehicles": [{"no_pol": "B 1 A", "last_visit_date": "2026-08-01"}]},
                    {"nama": "B", "language": "jp"},
                    {"nama": "C", "salutation": "Bapak Haji Profesor Doktor Insinyur"},
                    {"nama": "D", "vehicles": [{"last_visit_date": "kemarin"}]},
                    {"nama": "E", "salutation": ""}
                ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(
        (data["imported"].as_u64(), data["failed"].as_u64()),
        (Some(2), Some(3))
    );
    let failures: Vec<(u64, &str)> = data["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["index"].as_u64().unwrap(),
                f["errors"][0]["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            (1, "language"),
            (2, "salutation"),
            (3, "vehicles[0].last_visit_date")
        ]
    );
    let (_, page) = app.call(app.get("/customers")).await;
    let items = page["data"]["items"].as_array().unwrap();
    assert_eq!(
        (
            &items[0]["nama"],
            &items[0]["salutation"],
            &items[0]["language"]
        ),
        (&json!("E"), &json!(""), &json!("id"))
    );
    let a = &items[1];
    assert_eq!(
        (&a["nama"], &a["salutation"], &a["language"]),
        (&json!("A"), &json!("Kak"), &json!("en"))
    );
    assert_eq!(
        (
            &a["vehicles"][0]["last_visit_date"],
            &a["vehicles"][0]["due_date"],
            &a["vehicles"][0]["due_source"]
        ),
        (
            &json!("2026-08-01"),
            &json!("2026-12-01"),
            &json!("last_visit_date")
        )
    );
}
