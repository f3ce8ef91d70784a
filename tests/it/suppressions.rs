//! The opt-out list (SPEC §9 "Opt-out"): the API, cancelling what is pending, refusing what
//! comes, the reminder passes skipping, the metric.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, id_of, ops_token, pause_sends, resume_sends, today};

const NUMBER: &str = "628123456789";

async fn suppress(app: &TestApp, phone: &str, scope: &str) -> (u16, Value) {
    app.call(
        app.post("/suppressions")
            .json(&json!({"phone": phone, "scope": scope})),
    )
    .await
}

fn delete(app: &TestApp, phone: &str) -> reqwest::RequestBuilder {
    app.ops_delete(&format!("/suppressions/{phone}"))
}

async fn send(app: &TestApp, to: &str, body: Value) -> Value {
    let mut req = body;
    req["to"] = json!(to);
    let (status, res) = app.send(req).await;
    assert_eq!(status, 202, "{res}");
    res["data"].clone()
}

async fn scalar_text(app: &TestApp, sql: &str, id: &str) -> Option<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("query")
}

/// Customers, each with one vehicle due today: `(nama, hp, no_pol)`.
async fn due_today(app: &TestApp, customers: &[(&str, &str, &str)]) {
    for (nama, hp, no_pol) in customers {
        let (status, body) = app
            .call(app.post("/customers").json(&json!({"nama": nama, "hp": hp,
                "vehicles": [{"no_pol": no_pol, "model": "Avanza", "next_visit_date": today().to_string()}]})))
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

#[tokio::test]
async fn a_number_is_added_once_by_any_spelling_and_a_second_post_replaces_scope_and_reason() {
    let app = TestApp::spawn().await;
    let (status, body) = suppress(&app, "+62 812-3456-789", "reminders").await;
    assert_eq!(status, 201, "{body}");
    let d = &body["data"];
    assert_eq!(
        (
            d["phone"].as_str(),
            d["scope"].as_str(),
            d["created_by"].as_str(),
            d["cancelled"].as_i64()
        ),
        (Some(NUMBER), Some("reminders"), Some("tester"), Some(0))
    );
    assert!(d["reason"].is_null());
    assert!(d["created_at"].is_string() && d["updated_at"].is_string());

    // Another spelling, another token role: the same entry, scope and reason replaced.
    let (status, body) = app
        .call(
            app.http
                .post(format!("{}/suppressions", app.base))
                .bearer_auth(ops_token())
                .json(&json!({"phone": "0812 3456 789", "scope": "all", "reason": "  asked on the phone "})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let d = &body["data"];
    assert_eq!(
        (
            d["phone"].as_str(),
            d["scope"].as_str(),
            d["reason"].as_str(),
            d["created_by"].as_str()
        ),
        (
            Some(NUMBER),
            Some("all"),
            Some("asked on the phone"),
            Some("tester")
        )
    );

    let (status, list) = app.call(app.get("/suppressions")).await;
    assert_eq!(status, 200, "{list}");
    let items = list["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["scope"], "all");
    assert!(list["data"]["next_cursor"].is_null());

    // A token is needed.
    let (status, _) = app
        .call(
            app.http
                .post(format!("{}/suppressions", app.base))
                .json(&json!({"phone": NUMBER, "scope": "all"})),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn invalid_phone_scope_reason_and_list_parameters_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let fields = |body: &Value| -> Vec<String> {
        body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors in {body}"))
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    };
    for (req, want) in [
        (json!({"phone": "0812", "scope": "all"}), vec!["phone"]),
        (json!({"phone": "0812abc", "scope": "all"}), vec!["phone"]),
        (json!({"scope": "all"}), vec!["phone"]),
        (
            json!({"phone": NUMBER, "scope": "everything"}),
            vec!["scope"],
        ),
        (json!({"phone": NUMBER}), vec!["scope"]),
        (json!({"phone": NUMBER, "scope": 1}), vec!["scope"]),
        (
            json!({"phone": NUMBER, "scope": "all", "reason": "x".repeat(501)}),
            vec!["reason"],
        ),
        (
            json!({"phone": "1", "scope": "none", "reason": 7}),
            vec!["reason", "phone", "scope"],
        ),
    ] {
        let (status, body) = app.call(app.post("/suppressions").json(&req)).await;
        assert_eq!(status, 422, "{req}: {body}");
        let mut got = fields(&body);
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(String::from).collect();
        want.sort();
        assert_eq!(got, want, "{req}");
    }
    let (status, body) = app
        .call(
            app.post("/suppressions")
                .json(&json!({"phone": NUMBER, "scope": "all", "reason": "é".repeat(500)})),
        )
        .await;
    assert_eq!(status, 201, "500 characters are allowed: {body}");
    let (status, _) = app.call(app.post("/suppressions").body("not json")).await;
    assert_eq!(status, 400);

    for (query, field) in [
        ("phone=abc", "phone"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=nope", "cursor"),
    ] {
        let (status, body) = app.call(app.get(&format!("/suppressions?{query}"))).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(fields(&body), [field], "{query}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM suppressions").await,
        1,
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn the_list_is_newest_first_filtered_by_phone_and_paged_by_cursor() {
    let app = TestApp::spawn().await;
    let mut added = Vec::new();
    for i in 0..5 {
        let phone = format!("0812000000{i}");
        let (status, body) = suppress(&app, &phone, "all").await;
        assert_eq!(status, 201, "{body}");
        added.push(body["data"]["phone"].as_str().unwrap().to_owned());
    }
    let newest_first: Vec<String> = added.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/suppressions?limit=2".to_owned(),
            Some(c) => format!("/suppressions?limit=2&cursor={c}"),
        };
        let (status, body) = app.call(app.get(&path)).await;
        assert_eq!(status, 200, "{body}");
        let items = body["data"]["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|s| s["phone"].as_str().unwrap().to_owned()),
        );
        match body["data"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 6, "the cursor does not end: {seen:?}");
    }
    assert_eq!(seen, newest_first, "every entry once, newest first");

    let (status, body) = app
        .call(app.get("/suppressions?phone=%2B62%20812-0000-003"))
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["phone"], "628120000003");
    let (_, body) = app.call(app.get("/suppressions?phone=0899 9999 999")).await;
    assert_eq!(body["data"]["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn delete_removes_a_number_by_any_spelling_and_an_unknown_one_is_404() {
    let app = TestApp::spawn().await;
    suppress(&app, NUMBER, "reminders").await;
    let (status, body) = app.call(delete(&app, "0812-3456-789")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["data"]["phone"].as_str(),
            body["data"]["scope"].as_str()
        ),
        (Some(NUMBER), Some("reminders"))
    );
    let (status, body) = app.call(delete(&app, "0812-3456-789")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = app.call(delete(&app, "not-a-number")).await;
    assert_eq!(status, 404);
    let (_, list) = app.call(app.get("/suppressions")).await;
    assert_eq!(list["data"]["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn scope_all_cancels_a_delayed_adhoc_send_at_once_and_scope_reminders_does_not() {
    let app = TestApp::spawn().await;
    let later = send(
        &app,
        "0812 3456 789",
        json!({"body": "later", "delay": 3600}),
    )
    .await;
    let later = later["id"].as_str().unwrap().to_owned();
    let other = send(
        &app,
        "0899 1111 222",
        json!({"body": "other", "delay": 3600}),
    )
    .await;
    let other = other["id"].as_str().unwrap().to_owned();

    let (status, body) = suppress(&app, "0812 3456 789", "reminders").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["data"]["cancelled"], 0,
        "an ad-hoc send is not a reminder"
    );
    assert_eq!(app.message(&later).await["status"], "queued");

    let (status, body) = suppress(&app, "0812 3456 789", "all").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["cancelled"], 1, "{body}");
    let m = app.message(&later).await;
    assert_eq!(
        (
            m["status"].as_str(),
            m["last_error"].as_str(),
            m["cancelled_at"].is_string(),
            m["held_until"].is_null()
        ),
        (Some("cancelled"), Some("recipient opted out"), true, true),
        "{m}"
    );
    assert_eq!(app.job_of(&later).await.status, "Killed");
    let (_, job) = app
        .call(
            app.http
                .get(format!("{}/ops/jobs?message_id={later}", app.base))
                .bearer_auth(ops_token()),
        )
        .await;
    assert_eq!(job["data"]["items"][0]["status"], "cancelled", "{job}");

    assert_eq!(app.message(&other).await["status"], "queued");
    assert_eq!(app.job_of(&other).await.status, "Pending");
    assert_eq!(app.gateway.calls().await, 0);
}

#[tokio::test]
async fn scope_reminders_cancels_a_queued_maintenance_reminder_with_its_reminder_row() {
    let app = TestApp::spawn().await;
    pause_sends(&app).await;
    due_today(
        &app,
        &[
            ("Budi", "0812 3456 789", "B 1 OPT"),
            ("Sari", "0813 0000 111", "B 2 KEEP"),
        ],
    )
    .await;
    let (status, fanout) = app
        .call(app.post("/scheduler/maintenance-reminder/run-now"))
        .await;
    assert_eq!(status, 200, "{fanout}");
    assert_eq!(fanout["data"]["reminder_queued"], 2, "{fanout}");
    let message_of = |no_pol: &str| {
        fanout["data"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["no_pol"] == no_pol)
            .unwrap()["message_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (opted, kept) = (message_of("B 1 OPT"), message_of("B 2 KEEP"));

    let (status, body) = suppress(&app, "+62 812 3456 789", "reminders").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["cancelled"], 1, "{body}");
    let m = app.message(&opted).await;
    assert_eq!(
        (m["status"].as_str(), m["last_error"].as_str()),
        (Some("cancelled"), Some("recipient opted out"))
    );
    let reminder = |id: String| {
        let app = &app;
        async move {
            scalar_text(
                app,
                "SELECT status FROM reminders WHERE message_id = $1::uuid",
                &id,
            )
            .await
        }
    };
    assert_eq!(reminder(opted.clone()).await.as_deref(), Some("cancelled"));
    assert_eq!(reminder(kept.clone()).await.as_deref(), Some("queued"));
    assert_eq!(app.job_of(&opted).await.status, "Killed");

    // Resumed: the other reminder goes out, the cancelled one never does.
    resume_sends(&app).await;
    app.wait_for_status(&kept, "sent", Duration::from_secs(15))
        .await;
    assert_eq!(app.gateway.sent_field("to").await, ["628130000111"]);
    assert_eq!(app.message(&opted).await["status"], "cancelled");
}

#[tokio::test]
async fn a_send_to_an_opted_out_number_is_accepted_cancelled_and_never_sent_until_removed() {
    let app = TestApp::spawn().await;
    suppress(&app, "0812 3456 789", "all").await;

    let accepted = send(&app, "+62 812-3456-789", json!({"body": "hello"})).await;
    assert_eq!(
        (
            accepted["status"].as_str(),
            accepted["last_error"].as_str(),
            accepted["to"].as_str()
        ),
        (Some("cancelled"), Some("recipient opted out"), Some(NUMBER)),
        "{accepted}"
    );
    let blocked = id_of(&json!({"data": accepted}));
    let m = app.message(&blocked).await;
    assert!(m["job_id"].is_null(), "no job: {m}");
    assert!(m["cancelled_at"].is_string(), "{m}");
    assert_eq!(
        app.count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'whatsapp-send'")
            .await,
        0
    );

    // The query-string send too.
    let (status, body) = app
        .call(app.post("/whatsapp/send-simple?phone=0812-3456-789&message=hi"))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");

    // A normal send has no last_error in its answer and is delivered.
    let fine = send(&app, "0899 1111 222", json!({"body": "to someone else"})).await;
    assert!(fine.get("last_error").is_none(), "{fine}");
    app.wait_for_status(
        fine["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(app.gateway.sent_field("to").await, ["628991111222"]);

    // The counter is exported with the kind.
    let metrics = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bengkel_messages_suppressed_total{kind=\"adhoc\"}")),
        "{metrics}"
    );

    // Off the list: sends go out again (what was cancelled stays cancelled).
    let (status, _) = app.call(delete(&app, "0812 3456 789")).await;
    assert_eq!(status, 200);
    let again = send(&app, "0812 3456 789", json!({"body": "welcome back"})).await;
    assert_eq!(again["status"], "queued");
    app.wait_for_status(
        again["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(10),
    )
    .await;
    let to: HashSet<String> = app.gateway.sent_field("to").await.into_iter().collect();
    assert_eq!(
        to,
        HashSet::from([NUMBER.to_owned(), "628991111222".to_owned()])
    );
    assert_eq!(app.gateway.calls().await, 2);
    assert_eq!(app.message(&blocked).await["status"], "cancelled");
}

#[tokio::test]
async fn scope_reminders_lets_adhoc_sends_through() {
    let app = TestApp::spawn().await;
    suppress(&app, NUMBER, "reminders").await;
    let accepted = send(&app, NUMBER, json!({"body": "your car is ready"})).await;
    assert_eq!(accepted["status"], "queued");
    app.wait_for_status(
        accepted["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn the_fanout_and_the_manual_passes_skip_opted_out_numbers() {
    let app = TestApp::spawn().await;
    pause_sends(&app).await;
    suppress(&app, "0812 3456 789", "reminders").await;
    suppress(&app, "0813 9999 000", "all").await;
    due_today(
        &app,
        &[
            ("Budi", "0812 3456 789", "B 1 OPT"),
            ("Ani", "0813 9999 000", "B 3 ALL"),
            ("Sari", "0813 0000 111", "B 2 KEEP"),
        ],
    )
    .await;
    let (status, fanout) = app
        .call(app.post("/scheduler/maintenance-reminder/run-now"))
        .await;
    assert_eq!(status, 200, "{fanout}");
    let s = &fanout["data"];
    assert_eq!(
        (
            s["eligible"].as_i64(),
            s["reminder_queued"].as_i64(),
            s["skipped"].as_i64()
        ),
        (Some(3), Some(1), Some(2)),
        "{s}"
    );
    for d in s["details"].as_array().unwrap() {
        if d["no_pol"] == "B 2 KEEP" {
            assert_eq!(d["status"], "queued");
        } else {
            assert_eq!(
                (d["status"].as_str(), d["reason"].as_str()),
                (Some("skipped"), Some("opted out")),
                "{d}"
            );
            assert!(d.get("message_id").is_none());
        }
    }
    assert_eq!(app.count("SELECT count(*) FROM reminders").await, 1);

    // Manual records.
    let mut ids = Vec::new();
    for (name, nopol, phone) in [
        ("Budi", "B 10 OPT", "0812-3456-789"),
        ("Sari", "B 20 KEEP", "0813 0000 111"),
    ] {
        let (status, body) = app
            .call(
                app.post("/manual-whatsapp/")
                    .json(&json!({"customer_name": name, "nopol": nopol,
                "no_hp": phone, "next_service": today().to_string()})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_owned());
    }
    let (status, manual) = app
        .call(app.post("/manual-whatsapp/send-reminders").json(&json!({})))
        .await;
    assert_eq!(status, 200, "{manual}");
    let s = &manual["data"];
    assert_eq!(
        (s["reminder_queued"].as_i64(), s["skipped"].as_i64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let opted = s["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["nopol"] == "B 10 OPT")
        .unwrap_or_else(|| panic!("the opted-out record is listed: {s}"));
    assert_eq!(
        (
            opted["status"].as_str(),
            opted["reason"].as_str(),
            opted["message_id"].is_null()
        ),
        (Some("skipped"), Some("opted out"), true)
    );

    // One record's reminder, even forced.
    let (status, one) = app
        .call(app.post(&format!(
            "/manual-whatsapp/{}/send-reminder?force=true",
            ids[0]
        )))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        (
            one["data"]["status"].as_str(),
            one["data"]["reason"].as_str(),
            one["data"]["message_id"].is_null()
        ),
        (Some("skipped"), Some("opted out"), true),
        "{one}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM manual_reminders").await,
        1,
        "only the other record's reminder"
    );

    // A custom message (kind manual) is a send: accepted, cancelled.
    let (status, custom) = app
        .call(
            app.post("/manual-whatsapp/send-custom-message")
                .json(&json!({"no_hp": "0812 3456 789", "message": "promo"})),
        )
        .await;
    assert_eq!(status, 202, "{custom}");
    assert_eq!(
        (
            custom["data"]["status"].as_str(),
            custom["data"]["last_error"].as_str()
        ),
        (Some("cancelled"), Some("recipient opted out")),
        "{custom}"
    );

    resume_sends(&app).await;
    app.gateway.wait_for_calls(2, Duration::from_secs(15)).await;
    let to: Vec<String> = app.gateway.sent_field("to").await;
    assert_eq!(to, ["628130000111", "628130000111"], "only the kept number");
}

/// A send that a worker claimed just before the opt-out finishes its gateway call before the
/// `POST` answers: after the answer nothing in scope is on its way to the gateway.
#[tokio::test]
async fn a_send_in_flight_finishes_before_the_post_answers() {
    let app = TestApp::spawn_with(Options {
        gateway_ok: false,
        ..Default::default()
    })
    .await;
    app.gateway
        .respond_times(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(json!({"success": true}))
                .set_delay(Duration::from_millis(1_200)),
            10,
        )
        .await;
    let accepted = send(&app, NUMBER, json!({"body": "on its way"})).await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&id, "sending", Duration::from_secs(10))
        .await;
    let started = Instant::now();
    let (status, body) = suppress(&app, NUMBER, "all").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["cancelled"], 0, "it was already being sent");
    assert_eq!(
        app.message(&id).await["status"],
        "sent",
        "the POST waited {:?} for the send in flight",
        started.elapsed()
    );
}

/// The set-wise store of the reminder passes: a number that opted out between the pass' check
/// and the store is stored `cancelled`, without a job.
#[tokio::test]
async fn the_batch_store_cancels_messages_to_opted_out_numbers() {
    use bengkel_whatsapp::messages::{Kind, phone::PhoneNumber, request::NewMessage, store};

    let app = TestApp::spawn().await;
    pause_sends(&app).await;
    suppress(&app, NUMBER, "reminders").await;
    let new = |kind, to: &str| {
        NewMessage::internal(kind, PhoneNumber::parse(to).unwrap(), "hi".into(), None)
    };
    let batch = [
        new(Kind::Maintenance, NUMBER),
        new(Kind::Manual, NUMBER),
        new(Kind::Adhoc, NUMBER),
        new(Kind::Maintenance, "628130000111"),
    ];
    let mut tx = app.db.pool.begin().await.unwrap();
    let ids: Vec<uuid::Uuid> = batch.iter().map(|_| uuid::Uuid::now_v7()).collect();
    store::store_followed(&mut tx, &ids, &batch, "test", 3)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut got = Vec::new();
    for id in &ids {
        let m = app.message(&id.to_string()).await;
        got.push((
            m["status"].as_str().unwrap().to_owned(),
            m["last_error"].as_str().map(str::to_owned),
            m["job_id"].is_string(),
        ));
    }
    let opted = (
        "cancelled".to_owned(),
        Some("recipient opted out".to_owned()),
        false,
    );
    let queued = ("queued".to_owned(), None, true);
    assert_eq!(got, [opted.clone(), opted, queued.clone(), queued]);
    assert_eq!(
        app.count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'whatsapp-send'")
            .await,
        2
    );
}
