//! Deadlines (README "Delivery policy": deadlines): ad-hoc `expires_at` / `ttl_seconds`,
//! reminders that expire at the end of their business day, the expiry sweep.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use crate::helpers::{
    Options, TestApp, fields, gateway_error, id_of, metric, ops_get, ops_post, pause_sends,
    resume_sends, today,
};

/// The sweep runs every 5 s: a message is expired within 15 s of its deadline.
const EXPIRY: Duration = Duration::from_secs(15);

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

fn timestamp(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// The ops view of a message's job.
async fn job_of(app: &TestApp, message_id: &str) -> Value {
    let page = ops_get(app, &format!("/ops/jobs?message_id={message_id}")).await;
    page["items"][0].clone()
}

/// The next midnight in Asia/Jakarta (no daylight saving there).
fn next_local_midnight() -> DateTime<Utc> {
    let next = today().succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap();
    chrono_tz::Asia::Jakarta
        .from_local_datetime(&next)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// Moves a message's deadline into the past, as the end of its business day would.
async fn pass_deadline(app: &TestApp, message_id: &str) {
    sqlx::query("UPDATE messages SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(message_id)
        .execute(&app.db.pool)
        .await
        .expect("move the deadline");
}

#[tokio::test]
async fn invalid_deadlines_are_refused_with_422_naming_the_field_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    let base = |extra: Value| {
        let mut body = json!({"to": "0812 3456 789", "body": "halo"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (
            json!({"expires_at": at(now - chrono::Duration::minutes(1))}),
            vec!["expires_at"],
        ),
        (
            json!({"delay": 600, "expires_at": at(now + chrono::Duration::minutes(5))}),
            vec!["expires_at"],
        ),
        (
            json!({"schedule": (now + chrono::Duration::hours(1)).timestamp_millis(),
                   "expires_at": at(now + chrono::Duration::minutes(59))}),
            vec!["expires_at"],
        ),
        (
            json!({"expires_at": at(now + chrono::Duration::hours(1)), "ttl_seconds": 60}),
            vec!["expires_at", "ttl_seconds"],
        ),
        (json!({"expires_at": "tomorrow"}), vec!["expires_at"]),
        (
            json!({"expires_at": "2099-12-01T10:00:00"}),
            vec!["expires_at"],
        ),
        (json!({"expires_at": 4102444800000u64}), vec!["expires_at"]),
        (json!({"ttl_seconds": 0}), vec!["ttl_seconds"]),
        (json!({"ttl_seconds": 2_592_001}), vec!["ttl_seconds"]),
        (json!({"ttl_seconds": "60"}), vec!["ttl_seconds"]),
        (json!({"ttl_seconds": 1.5}), vec!["ttl_seconds"]),
        (json!({"respect_window": "yes"}), vec!["respect_window"]),
        (json!({"respect_window": 1}), vec!["respect_window"]),
        (
            json!({"delay": -1, "ttl_seconds": 0, "respect_window": "true"}),
            vec!["delay", "ttl_seconds", "respect_window"],
        ),
    ];
    for (extra, want) in cases {
        let (status, body) = app.send(base(extra.clone())).await;
        assert_eq!(status, 422, "{extra}: {body}");
        let mut got = fields(&body);
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "{extra}: {body}");
        assert_eq!(body["success"], false);
    }
    let both = app
        .send(base(
            json!({"expires_at": at(now + chrono::Duration::hours(1)), "ttl_seconds": 60}),
        ))
        .await
        .1;
    assert!(
        both["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ttl_seconds"),
        "{both}"
    );

    // The query-string endpoints read the same parameters.
    for query in [
        "ttl_seconds=0",
        "ttl_seconds=abc",
        "respect_window=maybe",
        "expires_at=2000-01-01T00:00:00Z",
        "expires_at=soon",
    ] {
        let (status, body) = app
            .call(app.post(&format!(
                "/whatsapp/send-simple?phone=08123456789&message=hi&{query}"
            )))
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(fields(&body).len(), 1, "{query}: {body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn ttl_seconds_and_expires_at_set_the_deadline_and_are_part_of_the_request() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .send(
            json!({"to": "0812 3456 789", "body": "later", "delay": 600, "ttl_seconds": 120,
                     "respect_window": true}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let m = app.message(&id_of(&body)).await;
    let run_at = timestamp(&m["run_at"]);
    assert_eq!(
        timestamp(&m["expires_at"]) - run_at,
        chrono::Duration::seconds(120),
        "{m}"
    );
    assert_eq!(m["respect_window"], true);
    assert_eq!(m["status"], "queued");
    let job = ops_get(
        &app,
        &format!("/ops/jobs/{}", m["job_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(job["payload"]["window"], true, "{job}");

    // Due now: the deadline counts from now; an offset is kept as the same instant.
    let before = Utc::now();
    let (_, body) = app
        .send(json!({"to": "0812 3456 789", "body": "now", "ttl_seconds": 60}))
        .await;
    let expires = timestamp(&app.message(&id_of(&body)).await["expires_at"]);
    assert!(expires >= before + chrono::Duration::seconds(60));
    assert!(expires <= Utc::now() + chrono::Duration::seconds(60));
    let deadline = chrono::FixedOffset::east_opt(7 * 3600)
        .unwrap()
        .timestamp_opt(Utc::now().timestamp() + 7200, 0)
        .unwrap();
    let (_, body) = app
        .send(json!({"to": "0812 3456 789", "body": "offset", "expires_at": deadline.to_rfc3339()}))
        .await;
    let m = app.message(&id_of(&body)).await;
    assert_eq!(timestamp(&m["expires_at"]), deadline.with_timezone(&Utc));
    assert_eq!(m["respect_window"], false);

    // The query-string endpoints too; an offset's `+` left unencoded arrives as a space.
    let raw = deadline.to_rfc3339();
    let (status, body) = app
        .call(app.post(&format!(
            "/whatsapp/send-scheduled?phone=08123456789&message=hi&schedule_timestamp_ms={}&expires_at={raw}&respect_window=true",
            Utc::now().timestamp_millis() + 60_000
        )))
        .await;
    assert_eq!(status, 202, "{body}");
    let m = app.message(&id_of(&body)).await;
    assert_eq!(timestamp(&m["expires_at"]), deadline.with_timezone(&Utc));
    assert_eq!(m["respect_window"], true);
    let (status, body) = app
        .call(app.post("/whatsapp/send-simple?phone=08123456789&message=hi&ttl_seconds=30"))
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(!app.message(&id_of(&body)).await["expires_at"].is_null());

    // The deadline is part of the request an `Idempotency-Key` stands for.
    let keyed = |ttl: i64| {
        app.post("/whatsapp/send")
            .header("Idempotency-Key", "deadline-key-1")
            .json(&json!({"to": "0812 3456 789", "body": "keyed", "delay": 60, "ttl_seconds": ttl}))
    };
    assert_eq!(app.call(keyed(30)).await.0, 202);
    assert_eq!(app.call(keyed(30)).await.0, 200);
    assert_eq!(app.call(keyed(31)).await.0, 409);
    let unkeyed_deadline = app
        .call(
            app.post("/whatsapp/send")
                .header("Idempotency-Key", "deadline-key-1")
                .json(&json!({"to": "0812 3456 789", "body": "keyed", "delay": 60})),
        )
        .await;
    assert_eq!(unkeyed_deadline.0, 409, "{}", unkeyed_deadline.1);
}

#[tokio::test]
async fn an_unsent_message_expires_at_its_deadline_and_is_never_sent() {
    let app = TestApp::spawn().await;
    pause_sends(&app).await;
    let (status, body) = app
        .send(json!({"to": "0812 3456 789", "body": "too late", "ttl_seconds": 2}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    let sent_at = Instant::now();
    let m = app.wait_for_status(&id, "expired", EXPIRY).await;
    assert!(sent_at.elapsed() < EXPIRY);
    let deadline = timestamp(&m["expires_at"]);
    assert!(timestamp(&m["expired_at"]) >= deadline, "{m}");
    assert!(
        m["last_error"]
            .as_str()
            .unwrap()
            .starts_with("expired: not sent by "),
        "{m}"
    );
    assert!(
        m["held_until"].is_null() && m["next_attempt_at"].is_null(),
        "{m}"
    );

    // Withdrawn, not failed: the job is `cancelled`; the message can no longer be cancelled.
    let job = job_of(&app, &id).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["message_status"], "expired");
    let (status, body) = app
        .call(app.post(&format!("/whatsapp/messages/{id}/cancel")))
        .await;
    assert_eq!(status, 409, "{body}");
    let listed = app
        .call(app.get("/whatsapp/messages?status=expired"))
        .await
        .1;
    let ids: Vec<&str> = listed["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);

    // An operator's requeue makes it `queued` again; its deadline being past, it expires again.
    let job_id = job["id"].as_str().unwrap();
    let (status, body) = ops_post(&app, &format!("/ops/jobs/{job_id}/requeue"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["message_status"], "queued");
    app.wait_for_status(&id, "expired", EXPIRY).await;
    assert_eq!(job_of(&app, &id).await["status"], "cancelled");

    resume_sends(&app).await;
    app.deliver_control().await;
    assert_eq!(app.gateway.sent_field("body").await, ["control"]);

    let text = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "bengkel_messages_expired_total{kind=\"adhoc\"}",
        "bengkel_sends_total{outcome=\"expired\"}",
    ] {
        assert!(
            metric(&text, series).is_some_and(|n| n >= 2.0),
            "{series}:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_message_waiting_for_a_retry_expires_without_another_attempt() {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SEND_BACKOFF_BASE_SECS", "300".into()),
            ("SEND_BACKOFF_MAX_SECS", "300".into()),
        ],
        ..Options::default()
    })
    .await;
    app.gateway
        .respond_times(gateway_error(503, json!({"success": false})), 1)
        .await;
    let (status, body) = app
        .send(json!({"to": "0812 3456 789", "body": "retry me", "ttl_seconds": 3}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    app.wait_for_status(&id, "retrying", Duration::from_secs(10))
        .await;
    let m = app.wait_for_status(&id, "expired", EXPIRY).await;
    assert!(m["next_attempt_at"].is_null(), "{m}");
    assert_eq!(app.outcomes(&id).await, ["retry"]);
    assert_eq!(job_of(&app, &id).await["status"], "cancelled");
    assert_eq!(app.gateway.calls().await, 1);
}

#[tokio::test]
async fn a_reminder_not_sent_by_the_end_of_its_day_expires_with_its_reminder_row() {
    let app = TestApp::spawn().await;
    pause_sends(&app).await;
    let (status, body) = app
        .call(app.post("/customers").json(&json!({
            "nama": "Budi", "hp": "0812 3456 789",
            "vehicles": [{"no_pol": "B 1 X", "model": "Avanza",
                          "next_visit_date": (today() + chrono::Duration::days(1)).to_string()}]
        })))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .call(app.post("/scheduler/maintenance-reminder/run-now"))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["details"][0]["message_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no reminder queued: {body}"))
        .to_owned();
    let m = app.message(&id).await;
    assert_eq!(timestamp(&m["expires_at"]), next_local_midnight(), "{m}");

    // The end of the business day comes.
    pass_deadline(&app, &id).await;
    let m = app.wait_for_status(&id, "expired", EXPIRY).await;
    let reminders = app.call(app.get("/reminders?status=expired")).await.1;
    let items = reminders["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{reminders}");
    assert_eq!(items[0]["message_id"], id.as_str());
    assert_eq!(items[0]["message_status"], "expired");
    assert_eq!(items[0]["reason"], m["last_error"]);
    assert!(items[0]["sent_at"].is_null());
    assert_eq!(app.count("SELECT count(*) FROM whatsapp_report").await, 0);
    assert_eq!(job_of(&app, &id).await["status"], "cancelled");

    // Waiting for outcomes reports it as final.
    let (status, body) = app
        .call(app.post("/scheduler/maintenance-reminder/run-now?wait_seconds=5"))
        .await;
    assert_eq!(status, 200, "{body}");
    let detail = &body["data"]["details"][0];
    assert_eq!(detail["status"], "expired", "{body}");
    assert_eq!(body["data"]["reminder_sent"], 0);

    resume_sends(&app).await;
    app.deliver_control().await;
    assert_eq!(app.gateway.sent_field("body").await, ["control"]);
    assert_eq!(app.count("SELECT count(*) FROM whatsapp_report").await, 0);
}

#[tokio::test]
async fn a_manual_reminder_expires_at_the_end_of_its_day_and_counts_nothing() {
    let app = TestApp::spawn().await;
    pause_sends(&app).await;
    let (status, body) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": "Joko", "nopol": "B 2 Y", "no_hp": "08123456789",
            "next_service": (today() + chrono::Duration::days(1)).to_string()
        })))
        .await;
    assert_eq!(status, 201, "{body}");
    let record = body["data"]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .call(app.post("/manual-whatsapp/send-reminders").json(&json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["details"][0]["message_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no reminder queued: {body}"))
        .to_owned();
    assert_eq!(
        timestamp(&app.message(&id).await["expires_at"]),
        next_local_midnight()
    );
    let (status, body) = app
        .call(app.post(&format!(
            "/manual-whatsapp/{record}/send-reminder?force=true"
        )))
        .await;
    assert_eq!(status, 202, "{body}");
    let single = body["data"]["message_id"].as_str().unwrap().to_owned();
    assert_eq!(
        timestamp(&app.message(&single).await["expires_at"]),
        next_local_midnight()
    );
    // A custom message has no deadline.
    let (status, body) = app
        .call(
            app.post("/manual-whatsapp/send-custom-message")
                .json(&json!({"no_hp": "08123456789", "message": "promo"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(app.message(&id_of(&body)).await["expires_at"].is_null());

    pass_deadline(&app, &id).await;
    pass_deadline(&app, &single).await;
    app.wait_for_status(&id, "expired", EXPIRY).await;
    app.wait_for_status(&single, "expired", EXPIRY).await;
    assert_eq!(
        app.count("SELECT count(*) FROM manual_reminders WHERE status = 'expired' AND reason LIKE 'expired: %'"
        )
        .await,
        2
    );
    let (status, body) = app
        .call(
            app.post("/manual-whatsapp/send-reminders?wait_seconds=5")
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["details"][0]["status"], "expired", "{body}");
    let record = app
        .call(app.get(&format!("/manual-whatsapp/{record}")))
        .await
        .1;
    assert_eq!(record["data"]["reminder_sent_count"], 0, "{record}");
    assert!(record["data"]["last_reminder_sent"].is_null(), "{record}");
}
