//! The workshop's console (SPEC §14, README "Console"): `GET /console/today` and
//! `GET /console/lookup?q=`, role `ops`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, day, ops_call, ops_get, ops_post, pause_sends, today},
    inbound::{app as inbound_app, inbound},
};

/// Creates a customer with one vehicle due `offset` days from today; returns its id.
async fn customer(app: &TestApp, nama: &str, hp: &str, no_pol: &str, offset: i64) -> String {
    let (status, body) = app
        .call(app.post("/customers").json(&json!({
            "nama": nama,
            "hp": hp,
            "vehicles": [{"no_pol": no_pol, "model": "Avanza", "next_visit_date": day(offset).to_string()}],
        })))
        .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["id"].as_str().unwrap().to_owned()
}

/// Creates a manual record due `offset` days from today; returns its id.
async fn manual(app: &TestApp, name: &str, nopol: &str, phone: &str, offset: i64) -> String {
    let (status, body) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": name, "nopol": nopol, "no_hp": phone,
            "next_service": day(offset).to_string(),
        })))
        .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["id"].as_str().unwrap().to_owned()
}

async fn lookup(app: &TestApp, q: &str) -> Value {
    let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    ops_get(app, &format!("/console/lookup?q={q}")).await
}

fn names(found: &Value) -> Vec<String> {
    let customers = found["customers"].as_array().unwrap().iter();
    let manual = found["manual"].as_array().unwrap().iter();
    customers
        .map(|c| c["nama"].as_str().unwrap().to_owned())
        .chain(manual.map(|m| m["customer_name"].as_str().unwrap().to_owned()))
        .collect()
}

/// (direction, text) of the first number's conversation.
fn conversation(found: &Value) -> Vec<(String, String)> {
    found["phones"][0]["conversation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["direction"].as_str().unwrap().to_owned(),
                e["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn send(app: &TestApp, to: &str, body: &str) -> String {
    let (status, res) = app.send(json!({"to": to, "body": body})).await;
    assert_eq!(status, 202, "{res}");
    res["data"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_number_in_either_spelling_finds_the_customer_and_the_conversation_newest_first() {
    let app = inbound_app().await;
    let id = customer(&app, "Budi Santoso", "0812 3457 001", "B 1234 XY", 30).await;
    customer(&app, "Siti", "0812 3457 999", "D 55 ZZ", 30).await;
    let first = send(&app, "0812-3457-001", "Servis Anda sudah selesai").await;
    app.wait_for_status(&first, "sent", Duration::from_secs(10))
        .await;
    inbound(&app, "628123457001", "Terima kasih, besok saya ambil").await;
    let second = send(&app, "+62 812 3457 001", "Sama-sama, sampai besok").await;
    app.wait_for_status(&second, "sent", Duration::from_secs(10))
        .await;

    for q in ["08123457001", "+62 812 3457 001", "812-3457-001"] {
        let found = lookup(&app, q).await;
        assert_eq!(found["matched_as"], "phone", "{q}: {found}");
        assert_eq!(found["phone"], "628123457001");
        assert_eq!(names(&found), ["Budi Santoso"], "{q}: {found}");
        assert_eq!(found["customers"][0]["id"], id.as_str());
        let vehicle = &found["customers"][0]["vehicles"][0];
        assert_eq!(vehicle["due_date"], day(30).to_string(), "{vehicle}");
        assert_eq!(found["phones"].as_array().unwrap().len(), 1, "{found}");
        let number = &found["phones"][0];
        assert_eq!(number["phone"], "628123457001");
        assert!(number["suppression"].is_null(), "{number}");
        assert_eq!(
            conversation(&found),
            [
                ("out".to_owned(), "Sama-sama, sampai besok".to_owned()),
                ("in".to_owned(), "Terima kasih, besok saya ambil".to_owned()),
                ("out".to_owned(), "Servis Anda sudah selesai".to_owned()),
            ],
            "{q}: {number}"
        );
        let newest = &number["conversation"][0];
        assert_eq!(newest["id"], second.as_str());
        assert_eq!(newest["status"], "sent");
        assert_eq!(newest["attempts"], 1);
        assert!(newest["job_id"].is_string(), "{newest}");
        assert!(number["conversation"][1]["status"].is_null());
    }

    // Opting the number out shows on the lookup.
    let (status, body) = ops_post(
        &app,
        "/suppressions",
        Some(json!({"phone": "08123457001", "scope": "all"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let found = lookup(&app, "08123457001").await;
    assert_eq!(found["phones"][0]["suppression"]["scope"], "all", "{found}");
}

#[tokio::test]
async fn a_plate_or_a_name_matches_case_insensitively_and_wildcards_are_literal() {
    let app = TestApp::spawn().await;
    customer(&app, "Budi Santoso", "0812 3457 001", "B 1234 XY", 30).await;
    customer(&app, "Siti Aminah", "0812 3457 002", "D 55 ZZ", 30).await;
    customer(&app, "100% Motor", "0812 3457 003", "F 1 A", 30).await;
    manual(&app, "Pak Budiman", "AB 77 CD", "0812 3457 004", 40).await;

    let found = lookup(&app, "b 1234").await;
    assert_eq!(found["matched_as"], "text");
    assert_eq!(names(&found), ["Budi Santoso"], "{found}");
    assert_eq!(names(&lookup(&app, "1234xy").await), ["Budi Santoso"]);
    assert_eq!(names(&lookup(&app, "ab 77").await), ["Pak Budiman"]);

    let budi = lookup(&app, "BUDI").await;
    assert_eq!(names(&budi), ["Budi Santoso", "Pak Budiman"], "{budi}");
    assert_eq!(budi["manual"][0]["due_date"], day(40).to_string());
    let phones: Vec<&str> = budi["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phone"].as_str().unwrap())
        .collect();
    assert_eq!(phones, ["628123457001", "628123457004"]);
    assert!(
        budi["phones"][0]["conversation"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // `%` and `_` are not wildcards.
    assert_eq!(names(&lookup(&app, "100%").await), ["100% Motor"]);
    assert_eq!(names(&lookup(&app, "%").await), ["100% Motor"]);
    assert!(names(&lookup(&app, "_").await).is_empty());
    assert!(names(&lookup(&app, "Nobody").await).is_empty());
}

#[tokio::test]
async fn today_lists_the_runs_reminders_with_counts_and_filters_by_status() {
    let app = TestApp::spawn().await;
    pause_sends(&app).await;
    customer(&app, "Budi Santoso", "0812 3457 001", "B 1234 XY", 0).await;
    customer(&app, "Siti Aminah", "0812 3457 002", "D 55 ZZ", 1).await;
    customer(&app, "Nanti Saja", "0812 3457 003", "F 1 A", 10).await;
    manual(&app, "Pak Manual", "AB 77 CD", "0812 3457 004", 2).await;

    let empty = ops_get(&app, "/console/today").await;
    assert_eq!(empty["date"], today().to_string());
    assert_eq!(empty["counts"]["total"], 0, "{empty}");
    assert!(empty["counts"]["eligible"].is_null());

    app.run_now("").await;
    let (status, body) = app
        .call(
            app.post("/manual-whatsapp/send-reminders")
                .json(&json!({"days_threshold": 3})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let all = ops_get(&app, "/console/today").await;
    let mut rows: Vec<(String, String, String, String)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
                r["no_pol"].as_str().unwrap().to_owned(),
                r["phone"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("manual", "Pak Manual", "AB 77 CD", "628123457004"),
            ("vehicle", "Budi Santoso", "B 1234 XY", "628123457001"),
            ("vehicle", "Siti Aminah", "D 55 ZZ", "628123457002"),
        ]
        .map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into())),
        "{all}"
    );
    assert_eq!(all["truncated"], false);
    assert_eq!(all["counts"]["total"], 3, "{all}");
    assert_eq!(all["counts"]["queued"], 3);
    // Two vehicles and the manual record are in the window; the vehicle due in 10 days is not.
    assert_eq!(all["counts"]["eligible"], 3, "{all}");
    assert!(all["items"][0]["job_id"].is_string());
    // Newest first: the manual pass ran last.
    assert_eq!(all["items"][0]["source"], "manual");

    let siti = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Siti Aminah")
        .unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = ops_post(&app, &format!("/whatsapp/messages/{siti}/cancel"), None).await;
    assert_eq!(status, 200, "{body}");

    let cancelled = ops_get(&app, "/console/today?status=cancelled").await;
    let items = cancelled["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{cancelled}");
    assert_eq!(items[0]["name"], "Siti Aminah");
    assert_eq!(items[0]["status"], "cancelled");
    assert_eq!(
        cancelled["counts"]["total"], 3,
        "counts cover the whole day"
    );
    assert_eq!(cancelled["counts"]["cancelled"], 1);
    assert_eq!(cancelled["counts"]["queued"], 2);
    let queued = ops_get(&app, "/console/today?status=queued").await;
    assert_eq!(queued["items"].as_array().unwrap().len(), 2, "{queued}");
    let sent = ops_get(&app, "/console/today?status=sent").await;
    assert!(sent["items"].as_array().unwrap().is_empty(), "{sent}");
}

#[tokio::test]
async fn a_bad_q_or_status_is_422_and_a_client_token_is_403() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(101);
    for path in [
        "/console/lookup".to_owned(),
        "/console/lookup?q=".to_owned(),
        "/console/lookup?q=%20%20".to_owned(),
        format!("/console/lookup?q={long}"),
        "/console/today?status=bogus".to_owned(),
        "/console/today?status=".to_owned(),
        "/console/today?status=delivered".to_owned(),
    ] {
        let (status, body) = ops_call(&app, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["success"], false);
        let field = if path.contains("today") {
            "status"
        } else {
            "q"
        };
        assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
    }
    let (status, _) = ops_call(
        &app,
        reqwest::Method::GET,
        &format!("/console/lookup?q={}", "a".repeat(100)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for path in ["/console/today", "/console/lookup?q=budi"] {
        let (status, body) = app.call(app.get(path)).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
}

#[tokio::test]
async fn today_shows_the_newest_thousand_and_says_it_left_some_out() {
    let app = TestApp::spawn().await;
    // 1,001 reminders of today, written straight to the tables (a fan-out of that size would
    // only slow the test down).
    sqlx::query(
        "WITH c AS (INSERT INTO customers (id, nama, hp) VALUES (gen_random_uuid(), 'Banyak', '081234570000') RETURNING id),
              v AS (INSERT INTO vehicles (id, customer_id, no_pol, next_visit_date)
                    SELECT gen_random_uuid(), c.id, 'B ' || n, $1 FROM c, generate_series(1, 1001) n
                    RETURNING id, customer_id, no_pol),
              m AS (INSERT INTO messages (id, kind, to_phone, body, status, run_at, max_attempts, created_at)
                    SELECT gen_random_uuid(), 'maintenance', '6281234570000', v.no_pol, 'cancelled', now(), 5,
                           now() - make_interval(secs => substr(v.no_pol, 3)::int)
                    FROM v RETURNING id, body)
         INSERT INTO reminders (id, vehicle_id, customer_id, reminder_date, next_visit_date, status, message_id)
         SELECT gen_random_uuid(), v.id, v.customer_id, $1, $1, 'cancelled', m.id
         FROM v JOIN m ON m.body = v.no_pol",
    )
    .bind(today())
    .execute(&app.db.pool)
    .await
    .unwrap();

    let all = ops_get(&app, "/console/today").await;
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 1000);
    assert_eq!(all["truncated"], true);
    assert_eq!(all["counts"]["total"], 1001, "counts cover every reminder");
    // Newest first: `B 1` was queued last, `B 1001` first and is the one left out.
    assert_eq!(items[0]["no_pol"], "B 1");
    assert_eq!(items[999]["no_pol"], "B 1000");
    let filtered = ops_get(&app, "/console/today?status=cancelled").await;
    assert_eq!(filtered["truncated"], true);
    let none = ops_get(&app, "/console/today?status=failed").await;
    assert_eq!(none["truncated"], false);
    assert!(none["items"].as_array().unwrap().is_empty());
}
