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
    let (vehicles, customers, due_soon, no_phone, days): (i64, i64, i64, i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM vehicles), (SELECT count(*) FROM customers),
                (SELECT count(*) FROM vehicles WHERE next_visit_date < (now() AT TIME ZONE 'Asia/Jakarta')::date + 3),
                (SELECT count(*) FROM customers WHERE hp IS NULL),
                (SELECT max(next_visit_date) - min(next_visit_date) FROM vehicles)",
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
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_bengkel-whatsapp"))
        .args(["demo-data", "--vehicles", "0"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
