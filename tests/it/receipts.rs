//! Delivery receipts (SPEC §12 "Receipts"): applied through `messages::receipts::apply` — as a
//! gateway (§13) will — to messages the app really sent through the fake gateway; their events
//! in `webhook_events`, the `delivery_status` filter and the report's counts over HTTP.

use std::time::Duration;

use bengkel_whatsapp::messages::{
    DeliveryStatus,
    receipts::{self, Applied, Receipt, ReceiptStatus},
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    Options, TestApp, day, fields, id_of, metric, ops_post, pause_sends, resume_sends,
};

const WITHIN: Duration = Duration::from_secs(10);

/// An app whose webhook subscriptions may name a local receiver (none listens: the tests read
/// the events the outbox wrote, not what was delivered).
async fn app() -> TestApp {
    TestApp::spawn_with(Options {
        env: vec![("WEBHOOK_ALLOW_PRIVATE", "true".into())],
        ..Options::default()
    })
    .await
}

/// Subscribes to the message events, so that the outbox writes them.
async fn subscribe(app: &TestApp) {
    let (status, body) = ops_post(
        app,
        "/webhooks",
        Some(json!({
            "url": "http://127.0.0.1:9/x",
            "events": ["message.sent", "message.delivered", "message.read", "message.undelivered"],
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// Sends one message (to a number of its own) and waits until it is `sent`; returns its id.
async fn sent(app: &TestApp, n: u32) -> Uuid {
    let id = queued(app, n).await;
    app.wait_for_status(&id.to_string(), "sent", WITHIN).await;
    id
}

/// Sends one message (to a number of its own); returns its id.
async fn queued(app: &TestApp, n: u32) -> Uuid {
    let (status, body) = app
        .send(json!({"to": format!("0812 3456 {n:04}"), "body": format!("pesan {n}")}))
        .await;
    assert_eq!(status, 202, "{body}");
    id_of(&body).parse().unwrap()
}

/// A time with microseconds, `secs` after a fixed one.
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
        + chrono::Duration::microseconds(secs * 1_000_000 + 123_456)
}

/// `at(secs)` as events write times.
fn written(secs: i64) -> String {
    at(secs).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn receipt(message_id: Uuid, status: ReceiptStatus, secs: i64) -> Receipt {
    Receipt {
        message_id,
        status,
        at: at(secs),
        reason: None,
        code: None,
    }
}

/// Applies `receipts` in a transaction of their own, committed.
async fn apply(app: &TestApp, receipts: &[Receipt]) -> Vec<Applied> {
    let mut tx = app.db.pool.begin().await.unwrap();
    let applied = receipts::apply(&mut tx, receipts).await.expect("apply");
    tx.commit().await.unwrap();
    applied
}

fn changed(from: Option<DeliveryStatus>, to: DeliveryStatus, emitted: bool) -> Applied {
    Applied::Changed { from, to, emitted }
}

/// The message's events, in the order they happened: (type, data).
async fn events(app: &TestApp, message_id: Uuid) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT type, data FROM webhook_events WHERE message_id = $1 ORDER BY seq")
        .bind(message_id)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

fn types(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

/// A time of the API as a time (the API may write fewer digits).
fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().map(|s| s.parse().expect("an RFC 3339 time"))
}

#[tokio::test]
async fn receipts_move_a_sent_message_forward_only_and_each_change_is_an_event_in_order() {
    let app = app().await;
    subscribe(&app).await;
    let id = sent(&app, 1).await;

    // A rolled-back receipt changes nothing and emits nothing.
    let mut tx = app.db.pool.begin().await.unwrap();
    receipts::apply(&mut tx, &[receipt(id, ReceiptStatus::Read, 0)])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        app.message(&id.to_string()).await["delivery_status"],
        json!(null)
    );

    let delivered = apply(&app, &[receipt(id, ReceiptStatus::Delivered, 1)]).await;
    assert_eq!(delivered, [changed(None, DeliveryStatus::Delivered, true)]);
    // Duplicates, an undelivered after delivered: nothing.
    let late = apply(
        &app,
        &[
            receipt(id, ReceiptStatus::Delivered, 2),
            receipt(id, ReceiptStatus::Undelivered, 3),
        ],
    )
    .await;
    assert_eq!(late, [Applied::Unchanged, Applied::Unchanged]);
    let read = apply(&app, &[receipt(id, ReceiptStatus::Read, 4)]).await;
    assert_eq!(
        read,
        [changed(
            Some(DeliveryStatus::Delivered),
            DeliveryStatus::Read,
            true
        )]
    );
    // After read, nothing moves it: a delivered, a second read, an undelivered.
    let after_read = apply(
        &app,
        &[
            receipt(id, ReceiptStatus::Delivered, 5),
            receipt(id, ReceiptStatus::Read, 6),
            receipt(id, ReceiptStatus::Undelivered, 7),
        ],
    )
    .await;
    assert_eq!(after_read, [Applied::Unchanged; 3]);

    let m = app.message(&id.to_string()).await;
    assert_eq!(m["status"], "sent");
    assert_eq!(m["delivery_status"], "read");
    assert_eq!(time(&m["delivered_at"]), Some(at(1)));
    assert_eq!(time(&m["read_at"]), Some(at(4)));
    assert_eq!(m["undelivered_reason"], json!(null));

    let events = events(&app, id).await;
    assert_eq!(
        types(&events),
        ["message.sent", "message.delivered", "message.read"]
    );
    let common = json!({
        "message_id": id, "kind": "adhoc", "to": "6281234560001", "client_ref": null, "batch_id": null,
    });
    let with = |extra: Value| {
        let mut data = common.clone();
        data.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        data
    };
    assert_eq!(events[1].1, with(json!({"delivered_at": written(1)})));
    assert_eq!(events[2].1, with(json!({"read_at": written(4)})));
}

#[tokio::test]
async fn a_read_without_a_delivered_sets_both_and_emits_delivered_then_read() {
    let app = app().await;
    subscribe(&app).await;
    let id = sent(&app, 2).await;
    let applied = apply(&app, &[receipt(id, ReceiptStatus::Read, 10)]).await;
    assert_eq!(applied, [changed(None, DeliveryStatus::Read, true)]);
    let m = app.message(&id.to_string()).await;
    assert_eq!(m["delivery_status"], "read");
    assert_eq!(time(&m["delivered_at"]), Some(at(10)));
    assert_eq!(time(&m["read_at"]), Some(at(10)));
    let events = events(&app, id).await;
    assert_eq!(
        types(&events),
        ["message.sent", "message.delivered", "message.read"]
    );
    assert_eq!(events[1].1["delivered_at"], written(10));
    assert_eq!(events[2].1["read_at"], written(10));
}

#[tokio::test]
async fn undelivered_counts_only_before_any_other_receipt_and_a_later_delivered_wins() {
    let app = app().await;
    subscribe(&app).await;
    let first_delivered = sent(&app, 3).await;
    let first_undelivered = sent(&app, 4).await;
    let unknown = Uuid::now_v7();
    let undelivered = |id| Receipt {
        reason: Some("Message failed to send because more than 24 hours have passed".into()),
        code: Some("131047".into()),
        ..receipt(id, ReceiptStatus::Undelivered, 21)
    };
    let applied = apply(
        &app,
        &[
            receipt(first_delivered, ReceiptStatus::Delivered, 20),
            undelivered(unknown),
            undelivered(first_delivered),
            undelivered(first_undelivered),
        ],
    )
    .await;
    assert_eq!(
        applied,
        [
            changed(None, DeliveryStatus::Delivered, true),
            Applied::UnknownMessage,
            Applied::Unchanged,
            changed(None, DeliveryStatus::Undelivered, true),
        ]
    );
    let m = app.message(&first_delivered.to_string()).await;
    assert_eq!(
        (&m["delivery_status"], &m["undelivered_reason"]),
        (&json!("delivered"), &json!(null))
    );
    let m = app.message(&first_undelivered.to_string()).await;
    assert_eq!(m["delivery_status"], "undelivered");
    assert_eq!(
        m["undelivered_reason"],
        "Message failed to send because more than 24 hours have passed"
    );
    assert_eq!(m["undelivered_code"], "131047");
    let events_of = events(&app, first_undelivered).await;
    assert_eq!(types(&events_of), ["message.sent", "message.undelivered"]);
    assert_eq!(
        (&events_of[1].1["reason"], &events_of[1].1["gateway_code"]),
        (
            &json!("Message failed to send because more than 24 hours have passed"),
            &json!("131047")
        )
    );
    assert_eq!(
        types(&events(&app, first_delivered).await),
        ["message.sent", "message.delivered"]
    );

    // WhatsApp's later positive receipt wins over its undelivered, whose reason goes.
    let applied = apply(
        &app,
        &[receipt(first_undelivered, ReceiptStatus::Delivered, 22)],
    )
    .await;
    assert_eq!(
        applied,
        [changed(
            Some(DeliveryStatus::Undelivered),
            DeliveryStatus::Delivered,
            true
        )]
    );
    let m = app.message(&first_undelivered.to_string()).await;
    assert_eq!(m["delivery_status"], "delivered");
    assert_eq!(time(&m["delivered_at"]), Some(at(22)));
    assert_eq!(
        (&m["undelivered_reason"], &m["undelivered_code"]),
        (&json!(null), &json!(null))
    );
    assert_eq!(
        types(&events(&app, first_undelivered).await),
        ["message.sent", "message.undelivered", "message.delivered"]
    );
    assert_eq!(
        apply(&app, &[receipt(unknown, ReceiptStatus::Read, 23)]).await,
        [Applied::UnknownMessage]
    );
}

#[tokio::test]
async fn a_receipt_before_the_message_is_sent_is_kept_and_its_events_follow_message_sent() {
    let app = app().await;
    subscribe(&app).await;
    pause_sends(&app).await;
    let id = queued(&app, 5).await;
    // The gateway's status webhook can beat our own record of the send.
    let applied = apply(
        &app,
        &[
            receipt(id, ReceiptStatus::Delivered, 30),
            receipt(id, ReceiptStatus::Read, 31),
        ],
    )
    .await;
    assert_eq!(
        applied,
        [
            changed(None, DeliveryStatus::Delivered, false),
            changed(Some(DeliveryStatus::Delivered), DeliveryStatus::Read, false),
        ]
    );
    let m = app.message(&id.to_string()).await;
    assert_eq!(
        (&m["status"], &m["delivery_status"]),
        (&json!("queued"), &json!("read"))
    );
    assert!(
        events(&app, id).await.is_empty(),
        "no event before message.sent"
    );

    resume_sends(&app).await;
    app.wait_for_status(&id.to_string(), "sent", WITHIN).await;
    let events = events(&app, id).await;
    assert_eq!(
        types(&events),
        ["message.sent", "message.delivered", "message.read"]
    );
    assert_eq!(events[1].1["delivered_at"], written(30));
    assert_eq!(events[2].1["read_at"], written(31));
}

#[tokio::test]
async fn changes_are_counted_once_committed() {
    let app = TestApp::spawn().await;
    let id = sent(&app, 6).await;
    let scrape = async || {
        let text = app
            .http
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let of = |s: &str| {
            metric(&text, &format!("bengkel_receipts_total{{status=\"{s}\"}}"))
                .expect("the series is there from the start")
        };
        (of("delivered"), of("read"))
    };
    let before = scrape().await;
    let applied = apply(
        &app,
        &[
            receipt(id, ReceiptStatus::Read, 40),
            receipt(id, ReceiptStatus::Read, 41),
            receipt(id, ReceiptStatus::Delivered, 42),
        ],
    )
    .await;
    receipts::count(&applied);
    let after = scrape().await;
    // One change (to read); the duplicates are not counted. (No other test counts receipts.)
    assert_eq!((after.0 - before.0, after.1 - before.1), (0.0, 1.0));
}

#[tokio::test]
async fn messages_are_listed_by_delivery_status_and_a_bad_one_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let delivered = sent(&app, 11).await;
    let read = sent(&app, 12).await;
    let undelivered = sent(&app, 13).await;
    let none = sent(&app, 14).await;
    apply(
        &app,
        &[
            receipt(delivered, ReceiptStatus::Delivered, 50),
            receipt(read, ReceiptStatus::Read, 51),
            receipt(undelivered, ReceiptStatus::Undelivered, 52),
        ],
    )
    .await;
    let list = async |query: &str| -> Vec<String> {
        let (status, body) = app
            .call(app.get(&format!("/whatsapp/messages?{query}")))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    for (filter, want) in [
        ("delivered", delivered),
        ("read", read),
        ("undelivered", undelivered),
        ("none", none),
    ] {
        assert_eq!(
            list(&format!("delivery_status={filter}")).await,
            [want.to_string()],
            "{filter}"
        );
    }
    assert_eq!(list("").await.len(), 4);
    assert!(
        list("delivery_status=read&status=failed").await.is_empty(),
        "with the other filters"
    );

    for bad in ["seen", "READ", "null", ""] {
        let (status, body) = app
            .call(app.get(&format!("/whatsapp/messages?delivery_status={bad}")))
            .await;
        assert_eq!(status, 422, "{bad:?}: {body}");
        assert_eq!(fields(&body), ["delivery_status"], "{bad:?}");
    }
}

#[tokio::test]
async fn a_batchs_messages_are_filtered_by_delivery_status_too() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(app.post("/whatsapp/send-batch").json(&json!({"messages": [
            {"to": "0812 3456 0021", "body": "a"},
            {"to": "0812 3456 0022", "body": "b"},
        ]})))
        .await;
    assert_eq!(status, 202, "{body}");
    let batch = body["data"]["batch_id"].as_str().unwrap().to_owned();
    let ids: Vec<Uuid> = body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().parse().unwrap())
        .collect();
    for id in &ids {
        app.wait_for_status(&id.to_string(), "sent", WITHIN).await;
    }
    // Another message, outside the batch, read too.
    let outside = sent(&app, 23).await;
    apply(
        &app,
        &[
            receipt(ids[1], ReceiptStatus::Read, 60),
            receipt(outside, ReceiptStatus::Read, 61),
        ],
    )
    .await;
    let listed = |query: String| {
        let app = &app;
        async move {
            let (status, body) = app.call(app.get(&query)).await;
            assert_eq!(status, 200, "{body}");
            body["data"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().parse().unwrap())
                .collect::<Vec<Uuid>>()
        }
    };
    assert_eq!(
        listed(format!(
            "/whatsapp/messages?batch={batch}&delivery_status=read"
        ))
        .await,
        [ids[1]]
    );
    assert_eq!(
        listed(format!(
            "/whatsapp/messages?batch={batch}&delivery_status=none"
        ))
        .await,
        [ids[0]]
    );
}

/// Creates a customer with a vehicle due in `days` for each of `plates`; returns the customer
/// id and the vehicle ids.
async fn customer(app: &TestApp, hp: &str, plates: &[(&str, i64)]) -> (String, Vec<String>) {
    let vehicles: Vec<Value> = plates
        .iter()
        .map(|(no_pol, days)| {
            json!({"no_pol": no_pol, "model": "Avanza", "next_visit_date": day(*days).to_string()})
        })
        .collect();
    let (status, body) = app
        .call(
            app.post("/customers")
                .json(&json!({"nama": "Rina", "hp": hp, "vehicles": vehicles})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let ids = body["data"]["vehicles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    (body["data"]["id"].as_str().unwrap().to_owned(), ids)
}

#[tokio::test]
async fn the_report_counts_each_customer_and_vehicles_delivered_and_read_reminders() {
    let app = TestApp::spawn().await;
    let (customer_id, vehicles) = customer(
        &app,
        "0811 2222 0001",
        &[("B 1 RD", 0), ("B 2 DL", 1), ("B 3 UN", 1), ("B 4 NO", 2)],
    )
    .await;
    let summary = app.run_now("?wait_seconds=20").await;
    assert_eq!(summary["reminder_sent"], 4, "{summary}");
    let message_of = |vehicle: &str| {
        summary["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["vehicle_id"] == vehicle)
            .and_then(|d| d["message_id"].as_str())
            .unwrap()
            .parse::<Uuid>()
            .unwrap()
    };
    apply(
        &app,
        &[
            receipt(message_of(&vehicles[0]), ReceiptStatus::Read, 70),
            receipt(message_of(&vehicles[1]), ReceiptStatus::Delivered, 71),
            receipt(message_of(&vehicles[2]), ReceiptStatus::Undelivered, 72),
        ],
    )
    .await;
    let want = [(1, 1), (1, 0), (0, 0), (0, 0)];
    let counts = |rows: &Value| -> Vec<(i64, i64)> {
        vehicles
            .iter()
            .map(|v| {
                let row = rows
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["id_vehicle"] == v.as_str())
                    .unwrap_or_else(|| panic!("no row of vehicle {v}: {rows}"));
                (
                    row["delivered"].as_i64().unwrap(),
                    row["read"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    for path in [
        "/whatsapp-report/".to_owned(),
        "/whatsapp-report/detail".to_owned(),
        format!("/whatsapp-report/customer/{customer_id}"),
    ] {
        let (status, body) = app.call(app.get(&path)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(counts(&body["data"]), want, "{path}");
    }
    let (_, one) = app
        .call(app.get(&format!(
            "/whatsapp-report/customer/{customer_id}/vehicle/{}",
            vehicles[0]
        )))
        .await;
    assert_eq!(
        (&one["data"]["delivered"], &one["data"]["read"]),
        (&json!(1), &json!(1))
    );
    let (_, stats) = app.call(app.get("/whatsapp-report/statistics")).await;
    assert_eq!(
        (
            &stats["data"]["total_messages_sent"],
            &stats["data"]["total_messages_delivered"],
            &stats["data"]["total_messages_read"]
        ),
        (&json!(4), &json!(2), &json!(1)),
        "{stats}"
    );

    // Resetting the frequency leaves the counts: they are read from the messages.
    let (status, _) = app
        .call(app.ops_post("/whatsapp-report/reset-frequency"))
        .await;
    assert_eq!(status, 200);
    let (_, rows) = app.call(app.get("/whatsapp-report/")).await;
    assert_eq!(counts(&rows["data"]), want);
}
