//! The hostile probe's findings (issue 17): a rate that parks the sender, changes a client token
//! must not make, and bodies or headers that say one thing twice.

use std::time::{Duration, Instant};

use bengkel_whatsapp::http::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, fields, id_of, ops_token, token};

async fn policy(app: &TestApp) -> Value {
    let (status, body) = app
        .call(
            app.http
                .get(format!("{}/ops/policy", app.base))
                .bearer_auth(ops_token()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn change_policy(app: &TestApp, change: Value) -> (u16, Value) {
    app.call(
        app.http
            .put(format!("{}/ops/policy", app.base))
            .bearer_auth(ops_token())
            .json(&change),
    )
    .await
}

#[tokio::test]
async fn a_rate_below_the_floor_is_refused_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let before = policy(&app).await;
    for rate in [json!(1e-30), json!(1e-7), json!(0.049), json!(-1)] {
        let (status, body) =
            change_policy(&app, json!({"rate_per_second": rate, "burst": 7})).await;
        assert_eq!(status, 422, "{rate}: {body}");
        assert_eq!(fields(&body), ["rate_per_second"], "{rate}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("0.05"),
            "the floor is named: {body}"
        );
    }
    assert_eq!(policy(&app).await, before, "nothing changed");
    // The floor itself, and 0 (no limit), are rates.
    for rate in [0.05, 0.0] {
        let (status, body) = change_policy(&app, json!({"rate_per_second": rate})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["rate_per_second"], rate);
    }
    // The database refuses it too, whoever writes.
    let stored = sqlx::query("UPDATE delivery_policy SET rate_per_second = 1e-30")
        .execute(&app.db.pool)
        .await;
    assert!(stored.is_err(), "a rate below the floor was stored");
}

#[tokio::test]
async fn a_send_rate_below_the_floor_stops_start_up_naming_the_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bengkel-whatsapp"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SEND_RATE_PER_SECOND", "1e-30")
        // no .env of the checkout is read
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SEND_RATE_PER_SECOND") && stderr.contains("0.05"),
        "{stderr}"
    );
}

#[tokio::test]
async fn runs_waiting_for_a_slot_of_a_slow_rate_take_up_a_faster_one_within_seconds() {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SEND_RATE_PER_SECOND", "0.05".into()),
            ("SEND_BURST", "1".into()),
        ],
        ..Options::default()
    })
    .await;
    for i in 0..4 {
        let (status, body) = app
            .send(json!({"to": format!("62812000010{i}"), "body": "slow"}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    // The first call takes the bucket's one token; at 0.05/s the next slot is 20 s away, and
    // the other runs wait for it.
    app.gateway.wait_for_calls(1, Duration::from_secs(15)).await;
    let (status, body) = change_policy(&app, json!({"rate_per_second": 20})).await;
    assert_eq!(status, 200, "{body}");
    let raised = Instant::now();
    app.gateway.wait_for_calls(4, Duration::from_secs(6)).await;
    eprintln!(
        "the waiting runs went {:?} after the change",
        raised.elapsed()
    );
    app.wait_all_sent(Duration::from_secs(5)).await;
}

/// A 403 in the envelope, naming the role.
fn forbidden(status: u16, body: &Value) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert!(
        body["message"].as_str().unwrap_or_default().contains("ops"),
        "{body}"
    );
}

#[tokio::test]
async fn a_client_token_cannot_change_the_schedule_or_the_report() {
    let app = TestApp::spawn().await;
    let (status, customer) = app
        .call(app.post("/customers").json(&json!({
            "nama": "Budi", "hp": "0812345678", "vehicles": [{"no_pol": "B 1 X"}]
        })))
        .await;
    assert_eq!(status, 201, "{customer}");
    let customer_id = id_of(&customer);
    let report_id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO whatsapp_report (id_customer, id_vehicle, last_message_date, frequency)
         SELECT customer_id, id, now(), 3 FROM vehicles RETURNING id",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let (_, schedule_before) = app
        .call(app.get("/scheduler/maintenance-reminder/status"))
        .await;

    for path in [
        "/scheduler/maintenance-reminder/start?hour=3&minute=0",
        "/scheduler/maintenance-reminder/stop",
        "/whatsapp-report/reset-frequency",
        &format!("/whatsapp-report/reset-frequency?id_customer={customer_id}"),
    ] {
        let (status, body) = app.call(app.post(path)).await;
        forbidden(status, &body);
    }
    let (status, body) = app
        .call(
            app.http
                .delete(format!("{}/whatsapp-report/{report_id}", app.base))
                .bearer_auth(&app.token),
        )
        .await;
    forbidden(status, &body);

    // Nothing changed.
    let (_, schedule_after) = app
        .call(app.get("/scheduler/maintenance-reminder/status"))
        .await;
    assert_eq!(schedule_after, schedule_before);
    assert_eq!(
        app.count("SELECT frequency::bigint FROM whatsapp_report")
            .await,
        3
    );

    // An operator may.
    let (status, body) = app
        .call(app.ops_post("/scheduler/maintenance-reminder/stop"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .call(app.ops_post("/whatsapp-report/reset-frequency"))
        .await;
    assert_eq!((status, body["data"]["count"].as_u64()), (200, Some(1)));
    let (status, body) = app
        .call(app.ops_delete(&format!("/whatsapp-report/{report_id}")))
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn suppress(app: &TestApp, who: &str, body: Value) -> (u16, Value) {
    app.call(
        app.http
            .post(format!("{}/suppressions", app.base))
            .bearer_auth(token(who, Role::Client, Duration::from_secs(600)))
            .json(&body),
    )
    .await
}

async fn listed(app: &TestApp, phone: &str) -> Value {
    let (status, body) = app
        .call(app.get(&format!("/suppressions?phone={phone}")))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["items"][0].clone()
}

#[tokio::test]
async fn only_an_operator_removes_or_narrows_an_opt_out_and_every_change_keeps_who_and_when() {
    let app = TestApp::spawn().await;
    let phone = "628123450001";
    let (status, body) = suppress(
        &app,
        "front-desk",
        json!({"phone": phone, "scope": "all", "reason": "asked"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let first = listed(&app, phone).await;
    assert_eq!(
        (first["created_by"].as_str(), first["updated_by"].as_str()),
        (Some("front-desk"), Some("front-desk")),
        "{first}"
    );

    // Another client can neither take the number off the list nor narrow it.
    let (status, body) = app
        .call(
            app.http
                .delete(format!("{}/suppressions/{phone}", app.base))
                .bearer_auth(token("intruder", Role::Client, Duration::from_secs(600))),
        )
        .await;
    forbidden(status, &body);
    let (status, body) = suppress(
        &app,
        "intruder",
        json!({"phone": phone, "scope": "reminders", "reason": "changed my mind"}),
    )
    .await;
    forbidden(status, &body);
    assert_eq!(listed(&app, phone).await, first, "nothing changed");

    // Adding and widening stay open to any client.
    let other = "628123450002";
    let (status, _) = suppress(&app, "crm", json!({"phone": other, "scope": "reminders"})).await;
    assert_eq!(status, 201);
    let (status, body) = suppress(&app, "intruder", json!({"phone": other, "scope": "all"})).await;
    assert_eq!(status, 200, "{body}");
    let widened = listed(&app, other).await;
    assert_eq!(
        (
            widened["scope"].as_str(),
            widened["created_by"].as_str(),
            widened["updated_by"].as_str()
        ),
        (Some("all"), Some("crm"), Some("intruder"))
    );
    assert!(widened["updated_at"].as_str() >= widened["created_at"].as_str());

    // An operator may narrow and remove.
    let (status, body) = app
        .call(
            app.ops_post("/suppressions")
                .json(&json!({"phone": phone, "scope": "reminders"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["updated_by"], "operator");
    let (status, body) = app
        .call(app.ops_delete(&format!("/suppressions/{phone}")))
        .await;
    assert_eq!(status, 200, "{body}");

    // What happened to the number, by whom and when: the removal too.
    let (status, body) = app
        .call(app.get("/suppressions/0812-3450-001/changes"))
        .await;
    assert_eq!(status, 200, "{body}");
    let changes: Vec<(String, String, String)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["changed_at"].is_string(), "{c}");
            (
                c["action"].as_str().unwrap().to_owned(),
                c["scope"].as_str().unwrap().to_owned(),
                c["changed_by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("added", "all", "front-desk"),
        ("changed", "reminders", "operator"),
        ("removed", "reminders", "operator"),
    ]
    .map(|(a, s, b)| (a.to_owned(), s.to_owned(), b.to_owned()));
    assert_eq!(changes, want);
    let (status, _) = app
        .call(app.get("/suppressions/628999999999/changes"))
        .await;
    assert_eq!(status, 404);
}

/// SQL is never pasted together at run time: the report's statements are static text (a
/// `concat!` of literals), whatever a request carries.
#[test]
fn the_report_builds_no_sql_at_run_time() {
    let source = include_str!("../../../src/reminders/report.rs");
    for pasted in [
        "AssertSqlSafe",
        "format!(\"SELECT",
        "format!(\"UPDATE",
        "format!(\"DELETE",
    ] {
        assert!(
            !source.contains(pasted),
            "src/reminders/report.rs formats SQL at run time ({pasted})"
        );
    }
}

/// `body` sent as it is, with a client token.
fn raw(app: &TestApp, method: reqwest::Method, path: &str, body: &str) -> reqwest::RequestBuilder {
    app.http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(&app.token)
        .header("content-type", "application/json")
        .body(body.to_owned())
}

#[tokio::test]
async fn a_body_that_names_a_key_twice_is_a_400_naming_it_and_nothing_happens() {
    let app = TestApp::spawn().await;
    let ops = ops_token();
    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (
            raw(
                &app,
                reqwest::Method::POST,
                "/whatsapp/send",
                r#"{"to": "628111111111", "body": "hi", "to": "628222222222"}"#,
            ),
            "(at `to`)",
        ),
        (
            raw(
                &app,
                reqwest::Method::POST,
                "/whatsapp/send-batch",
                r#"{"messages": [{"to": "628111111111", "body": "a"},
                                {"to": "628111111112", "body": "b", "body": "c"}]}"#,
            ),
            "(at `messages[1].body`)",
        ),
        (
            raw(
                &app,
                reqwest::Method::POST,
                "/customers/bulk-import",
                r#"{"customers": [{"nama": "Ani", "hp": "0812345678", "hp": "0812345679"}]}"#,
            ),
            "(at `customers[0].hp`)",
        ),
        (
            raw(
                &app,
                reqwest::Method::POST,
                "/suppressions",
                r#"{"phone": "628111111111", "scope": "all", "scope": "reminders"}"#,
            ),
            "(at `scope`)",
        ),
        (
            raw(
                &app,
                reqwest::Method::POST,
                "/manual-whatsapp/send-reminders",
                r#"{"only_active": true, "only_active": false}"#,
            ),
            "(at `only_active`)",
        ),
        (
            app.http
                .put(format!("{}/ops/policy", app.base))
                .bearer_auth(&ops)
                .header("content-type", "application/json")
                .body(r#"{"burst": 2, "burst": 3}"#),
            "(at `burst`)",
        ),
    ];
    for (req, at) in cases {
        let (status, body) = app.call(req).await;
        assert_eq!(status, 400, "{at}: {body}");
        assert_eq!(body["success"], false);
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("appears twice") && message.contains(at),
            "{at}: {message}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM customers").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM suppressions").await, 0);
    assert_eq!(app.gateway.calls().await, 0);
    assert_eq!(policy(&app).await["burst"], 1);
}

#[tokio::test]
async fn a_nul_in_a_key_or_string_outside_the_items_of_a_bulk_body_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "/whatsapp/send-batch",
            json!({"messages": [{"to": "628111111111", "body": "a"}], "\u{0}": 1}),
            "\\u0000",
        ),
        (
            "/whatsapp/send-batch",
            json!({"messages": [{"to": "628111111111", "body": "a"}], "note": {"x": "\u{0}"}}),
            "note.x",
        ),
        (
            "/customers/bulk-import",
            json!({"customers": [{"nama": "Ani", "hp": "0812345678"}], "source\u{0}": "crm"}),
            "source\\u0000",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = app.call(app.post(path).json(&body)).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(fields(&answer), [field], "{body}: {answer}");
    }
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM customers").await, 0);
    // Inside an item it stays that item's error.
    let (status, answer) = app
        .call(app.post("/whatsapp/send-batch").json(&json!({"messages": [
            {"to": "628111111111", "body": "a"},
            {"to": "628111111112", "body": "b", "x\u{0}": 1},
        ]})))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["data"]["accepted"], 1);
    assert_eq!(answer["data"]["items"][1]["status"], "rejected");
}

#[tokio::test]
async fn two_idempotency_key_headers_are_a_400_naming_the_header() {
    let app = TestApp::spawn().await;
    for (path, body) in [
        (
            "/whatsapp/send",
            json!({"to": "628111111111", "body": "hi"}),
        ),
        (
            "/whatsapp/send-batch",
            json!({"messages": [{"to": "628111111111", "body": "hi"}]}),
        ),
    ] {
        for (first, second) in [("a", "b"), ("a", "a")] {
            let (status, answer) = app
                .call(
                    app.post(path)
                        .header("Idempotency-Key", first)
                        .header("Idempotency-Key", second)
                        .json(&body),
                )
                .await;
            assert_eq!(status, 400, "{path}: {answer}");
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap()
                    .contains("Idempotency-Key"),
                "{answer}"
            );
        }
    }
    let (status, answer) = app
        .call(
            app.http
                .post(format!(
                    "{}/whatsapp/send-simple?phone=628111111111&message=hi",
                    app.base
                ))
                .bearer_auth(&app.token)
                .header("Idempotency-Key", "a")
                .header("Idempotency-Key", "b"),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn a_single_send_key_and_a_batch_key_live_in_separate_spaces() {
    let app = TestApp::spawn().await;
    let key = "invoice-7";
    let single = json!({"to": "628111111111", "body": "one"});
    let batch = json!({"messages": [{"to": "628111111112", "body": "two"}]});
    let send = |body: &Value| {
        app.post("/whatsapp/send")
            .header("Idempotency-Key", key)
            .json(body)
    };
    let send_batch = |body: &Value| {
        app.post("/whatsapp/send-batch")
            .header("Idempotency-Key", key)
            .json(body)
    };
    let (status, first) = app.call(send(&single)).await;
    assert_eq!(status, 202, "{first}");
    // The same key on the batch endpoint is another key: no 409, a batch of its own.
    let (status, first_batch) = app.call(send_batch(&batch)).await;
    assert_eq!(status, 202, "{first_batch}");
    // Each replays in its own space.
    let (status, again) = app.call(send(&single)).await;
    assert_eq!((status, &again["data"]["id"]), (200, &first["data"]["id"]));
    let (status, again) = app.call(send_batch(&batch)).await;
    assert_eq!(
        (status, &again["data"]["batch_id"]),
        (200, &first_batch["data"]["batch_id"])
    );
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 2);
}
