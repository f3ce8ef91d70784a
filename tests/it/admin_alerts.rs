//! `POST /alerts/alertmanager` (SPEC §14): Alertmanager's notifications become one `admin`
//! message per `ADMIN_PHONES` number — outside the send window and past the opt-out list — a
//! repeat sends nothing, a resolved one sends its own message.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, ops_post, window_excluding_now};

const ADMINS: &str = "0812 1111 0001, +62 812-1111-0002";
const WITHIN: Duration = Duration::from_secs(20);

async fn app(admins: &str) -> TestApp {
    TestApp::spawn_with(Options {
        env: vec![
            ("ADMIN_PHONES", admins.to_owned()),
            ("SEND_WINDOW", window_excluding_now()),
        ],
        ..Options::default()
    })
    .await
}

/// An Alertmanager webhook body (version 4) for alerts with these fingerprints.
fn notification(status: &str, fingerprints: &[&str]) -> Value {
    let alerts: Vec<Value> = fingerprints
        .iter()
        .map(|f| {
            json!({"status": status, "labels": {"alertname": "BengkelQueueBacklog", "queue": "whatsapp-send"},
                   "annotations": {"summary": "whatsapp-send has jobs due for over 5 minutes"},
                   "startsAt": "2026-12-07T01:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
                   "generatorURL": "http://prometheus:9090/graph", "fingerprint": f})
        })
        .collect();
    json!({"version": "4", "groupKey": "{}:{alertname=\"BengkelQueueBacklog\"}",
           "truncatedAlerts": 0, "status": status, "receiver": "bengkel",
           "groupLabels": {"alertname": "BengkelQueueBacklog"},
           "commonLabels": {"alertname": "BengkelQueueBacklog"},
           "commonAnnotations": {"summary": "whatsapp-send has jobs due for over 5 minutes"},
           "externalURL": "http://alertmanager:9093", "alerts": alerts})
}

async fn notify(app: &TestApp, body: &Value) -> (u16, Value) {
    ops_post(app, "/alerts/alertmanager", Some(body.clone())).await
}

#[tokio::test]
async fn a_notification_reaches_every_admin_once_and_its_resolution_follows() {
    let app = app(ADMINS).await;
    // An opt-out of an admin's number does not stop admin messages.
    let (status, body) = ops_post(
        &app,
        "/suppressions",
        Some(json!({"phone": "081211110002", "scope": "all"})),
    )
    .await;
    assert!(status == 201 || status == 200, "{body}");

    let firing = notification("firing", &["a1b2c3", "d4e5f6"]);
    let (status, reply) = notify(&app, &firing).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["queued"], 2, "{reply}");
    assert_eq!(reply["data"]["duplicate"], false);
    let sent = app.gateway.wait_sent(2, WITHIN).await;
    let mut to: Vec<&str> = sent.iter().map(|(t, _)| t.as_str()).collect();
    to.sort();
    assert_eq!(to, ["6281211110001", "6281211110002"]);
    let (_, text) = &sent[0];
    assert!(text.contains("[FIRING] BengkelQueueBacklog"), "{text}");
    assert!(
        text.contains("whatsapp-send has jobs due for over 5 minutes"),
        "{text}"
    );
    assert!(
        text.contains("07-12-2026 08:00 WIB"),
        "since, in APP_TIMEZONE: {text}"
    );
    let ids: Vec<String> = reply["data"]["message_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        let m = app.message(id).await;
        assert_eq!(m["kind"], "admin", "{m}");
    }

    // Alertmanager repeats the group (same alerts in another order): nothing is sent.
    let again = notification("firing", &["d4e5f6", "a1b2c3"]);
    let (status, reply) = notify(&app, &again).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["duplicate"], true, "{reply}");
    assert_eq!(reply["data"]["queued"], 0);

    // Resolved: its own message to each admin.
    let (status, reply) = notify(&app, &notification("resolved", &["a1b2c3", "d4e5f6"])).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["queued"], 2, "{reply}");
    let sent = app.gateway.wait_sent(4, WITHIN).await;
    assert!(
        sent[2..].iter().all(|(_, b)| b.contains("[RESOLVED]")),
        "{sent:?}"
    );
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.calls().await, 4, "the repeat sent nothing");
}

#[tokio::test]
async fn the_same_notification_taken_at_once_by_many_requests_is_sent_once() {
    let app = app(ADMINS).await;
    let body = notification("firing", &["ff00"]);
    let replies = futures::future::join_all((0..6).map(|_| notify(&app, &body))).await;
    assert!(replies.iter().all(|(s, _)| *s == 200), "{replies:?}");
    let queued: i64 = replies
        .iter()
        .map(|(_, r)| r["data"]["queued"].as_i64().unwrap_or_default())
        .sum();
    assert_eq!(queued, 2, "{replies:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE kind = 'admin'")
            .await,
        2
    );
}

#[tokio::test]
async fn bad_notifications_are_refused_and_clients_may_not_send_them() {
    let app = app(ADMINS).await;
    let mut wrong = notification("firing", &["x"]);
    wrong["version"] = json!("3");
    let (status, reply) = notify(&app, &wrong).await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["errors"][0]["field"], "version");
    let (status, reply) = notify(&app, &json!({"status": "firing"})).await;
    assert_eq!(status, 422, "{reply}");
    let mut empty = notification("firing", &[]);
    empty["status"] = json!("pending");
    let (status, reply) = notify(&app, &empty).await;
    assert_eq!(status, 422, "{reply}");
    let fields = crate::helpers::fields(&reply);
    assert_eq!(fields, ["status", "alerts"]);
    // A client token (not ops) may not.
    let (status, _) = app
        .call(
            app.post("/alerts/alertmanager")
                .json(&notification("firing", &["x"])),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn without_admin_phones_a_notification_is_taken_and_nothing_is_sent() {
    let app = app("").await;
    let (status, reply) = notify(&app, &notification("firing", &["x"])).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["queued"], 0);
    assert_eq!(reply["message"], "No ADMIN_PHONES: nothing sent");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
}
