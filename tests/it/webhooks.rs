//! Outbound webhooks (SPEC §12): every request a real receiver gets is verified with the public
//! Standard Webhooks library; events are written on the change's transaction; retries, `410`,
//! redirects, the SSRF guard, ordering, at most 4 in flight, replay, rotation.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    Answer, Options, Receiver, TestApp, id_of, ops_call, ops_get, ops_post, ready, token, verifies,
    wait_until,
};
use bengkel_whatsapp::{
    http::auth::Role,
    webhooks::{EventType, outbox},
};

/// An app whose webhooks may go to 127.0.0.1 and retry after 1 s.
async fn app(extra: &[(&'static str, &str)]) -> TestApp {
    let mut env = vec![
        ("WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
        ("WEBHOOK_RETRY_SCHEDULE", "1s,1s,1s".to_owned()),
        ("WEBHOOK_TIMEOUT_SECS", "3".to_owned()),
    ];
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k, (*v).to_owned()));
    }
    TestApp::spawn_with(Options {
        env,
        ..Options::default()
    })
    .await
}

/// Subscribes `receiver` to `events`; it trusts the secret. Returns the subscription's id.
pub async fn subscribe(app: &TestApp, receiver: &Receiver, events: &[&str]) -> String {
    let (status, body) = ops_post(
        app,
        "/webhooks",
        Some(json!({"url": receiver.url, "events": events, "description": "test receiver"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let secret = body["data"]["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    receiver.trust(secret);
    body["data"]["id"].as_str().unwrap().to_owned()
}

async fn deliveries(app: &TestApp, sub: &str, query: &str) -> Vec<Value> {
    ops_get(app, &format!("/webhooks/{sub}/deliveries{query}")).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until there are `n` deliveries and every one has succeeded: whatever the receiver got
/// then is all it will get.
async fn settled(app: &TestApp, n: i64) {
    wait_until(Duration::from_secs(10), async || {
        let done = app
            .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'")
            .await;
        let all = app.count("SELECT count(*) FROM webhook_deliveries").await;
        ready(done == n && all == n, || {
            format!("{done} of {all} deliveries succeeded")
        })
    })
    .await;
}

/// The subscription's deliveries once the newest has an attempt.
async fn first_attempted(app: &TestApp, sub: &str) -> Vec<Value> {
    wait_until(Duration::from_secs(10), async || {
        let d = deliveries(app, sub, "").await;
        let attempted = d
            .first()
            .is_some_and(|d| !d["attempts"].as_array().unwrap().is_empty());
        ready(attempted, || format!("{d:?}")).map(|_| d)
    })
    .await
}

#[tokio::test]
async fn a_sent_message_is_posted_signed_and_a_changed_byte_fails_verification() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver, &["message.sent", "message.failed"]).await;
    let (status, body) = app
        .send(json!({"to": "081234567890", "body": "Mobil Anda siap 🚗"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);

    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert!(
        r.verified(),
        "the Standard Webhooks library refused it: {r:?}"
    );
    assert_eq!(r.path, "/hooks");
    assert_eq!(r.content_type, "application/json");
    assert!(r.id.starts_with("evt_") && r.id.len() == 30, "{}", r.id);
    assert!((r.timestamp - chrono::Utc::now().timestamp()).abs() < 30);
    assert!(r.signature.starts_with("v1,") && !r.signature.contains(' '));
    // Minified, the documented shape.
    assert!(!String::from_utf8_lossy(&r.body).contains(": "));
    assert_eq!(r.json["type"], "message.sent");
    let data = &r.json["data"];
    assert_eq!(data["message_id"], id.as_str());
    assert_eq!(data["kind"], "adhoc");
    assert_eq!(data["to"], "6281234567890");
    assert_eq!(data["client_ref"], Value::Null);
    assert_eq!(data["batch_id"], Value::Null);
    assert_eq!(data["attempts"], 1);
    assert!(data["sent_at"].as_str().unwrap().ends_with('Z'));
    assert!(data.as_object().unwrap().contains_key("gateway_message_id"));
    assert!(r.json["timestamp"].as_str().is_some());

    // One changed byte anywhere in the body: the library refuses it.
    let secret = receiver.secret(r.verified_by[0]);
    let secret_ok = |body: &[u8]| verifies(&secret, body, &r.headers);
    assert!(secret_ok(&r.body));
    for i in [0, r.body.len() / 2, r.body.len() - 1] {
        let mut changed = r.body.clone();
        changed[i] ^= 0x01;
        assert!(!secret_ok(&changed), "a body changed at byte {i} verified");
    }
    // A changed id or timestamp fails too.
    let mut headers = r.headers.clone();
    headers.insert("webhook-id", "evt_someone_else".parse().unwrap());
    assert!(!verifies(&secret, &r.body, &headers));

    // No other event: the only delivery there is succeeded, so nothing else can arrive.
    settled(&app, 1).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_500_500_200_is_three_attempts() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    receiver.then(&[Answer::Status(500), Answer::Status(500)]);
    let sub = subscribe(&app, &receiver, &["webhook.test"]).await;
    let (status, body) = ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    assert_eq!(status, 202, "{body}");

    let got = receiver.wait_for(3, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.verified()), "{got:?}");
    assert!(got.iter().all(|r| r.id == got[0].id), "one webhook-id");
    assert!(got.iter().all(|r| r.body == got[0].body), "the same body");
    assert_eq!(got[0].json["type"], "webhook.test");
    // The schedule (1 s × [0.8, 1.2]) between attempts.
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(700), "{gap:?}");
    }
    let d = wait_until(Duration::from_secs(5), async || {
        let d = deliveries(&app, &sub, "").await;
        ready(d.len() == 1 && d[0]["status"] == "succeeded", || {
            format!("{d:?}")
        })
        .map(|_| d)
    })
    .await;
    let attempts = d[0]["attempts"].as_array().unwrap();
    let classes: Vec<&str> = attempts
        .iter()
        .map(|a| a["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["server_error", "server_error", "ok"]);
    assert_eq!(attempts[0]["http_status"], 500);
    assert_eq!(d[0]["event_id"], got[0].id.as_str());
    // Its delivery succeeded: nothing more.
    settled(&app, 1).await;
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn a_410_disables_the_subscription_and_cancels_what_is_pending() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::Status(410));
    let sub = subscribe(&app, &receiver, &["message.sent"]).await;
    for i in 0..3 {
        app.send(json!({"to": "081234567890", "body": format!("m{i}")}))
            .await;
    }
    let s = wait_until(Duration::from_secs(10), async || {
        let s = ops_get(&app, &format!("/webhooks/{sub}")).await;
        ready(s["enabled"] == false, || format!("{s}")).map(|_| s)
    })
    .await;
    assert_eq!(s["disabled_reason"], "gone");
    let (disabled, _) = bengkel_whatsapp::webhooks::repo::health(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(disabled, 1, "the disabled gauge counts it");
    app.wait_all_sent(Duration::from_secs(10)).await;
    // No delivery is left pending; the 410 one failed, the others were cancelled or failed.
    wait_until(Duration::from_secs(5), async || {
        let d = deliveries(&app, &sub, "?status=pending").await;
        ready(d.is_empty(), || format!("pending: {d:?}"))
    })
    .await;
    let before = receiver.received().len();
    app.send(json!({"to": "081234567890", "body": "after"}))
        .await;
    let made = app.count("SELECT count(*) FROM webhook_deliveries").await;
    app.wait_all_sent(Duration::from_secs(10)).await;
    // Its event was written (or not) with its outcome: no delivery for a disabled subscription.
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries").await,
        made
    );
    assert_eq!(
        receiver.received().len(),
        before,
        "nothing goes to a disabled subscription"
    );
    let (status, body) = ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let app = app(&[("WEBHOOK_RETRY_SCHEDULE", "30s")]).await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::Redirect("/elsewhere"));
    let sub = subscribe(&app, &receiver, &["webhook.test"]).await;
    ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    let d = first_attempted(&app, &sub).await;
    let attempt = &d[0]["attempts"][0];
    assert_eq!(attempt["class"], "redirect");
    assert_eq!(attempt["http_status"], 302);
    assert_eq!(d[0]["status"], "pending", "a redirect is retried later");
    // The attempt is recorded after its answer: a redirect followed would be in by now.
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hooks"], "the redirect was followed");
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_blocked_at_connect_time() {
    let app = app(&[("WEBHOOK_ALLOW_PRIVATE", "false")]).await;
    let receiver = Receiver::start().await;
    // The literal is refused when subscribing …
    let (status, body) = ops_post(
        &app,
        "/webhooks",
        Some(json!({"url": format!("https://127.0.0.1:{}/hooks", receiver.port), "events": ["webhook.test"]})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("private"), "{body}");
    for url in [
        "http://example.com/x",
        "https://user:pw@example.com/x",
        "https://[::1]/x",
    ] {
        let (status, body) = ops_post(
            &app,
            "/webhooks",
            Some(json!({"url": url, "events": ["webhook.test"]})),
        )
        .await;
        assert_eq!(status, 422, "{url}: {body}");
    }
    // … and a name resolving to 127.0.0.1 is refused when connecting: nothing is sent.
    let (status, body) = ops_post(
        &app,
        "/webhooks",
        Some(json!({"url": format!("https://localhost:{}/hooks", receiver.port), "events": ["webhook.test"]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let sub = body["data"]["id"].as_str().unwrap().to_owned();
    ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    let d = first_attempted(&app, &sub).await;
    assert_eq!(d[0]["attempts"][0]["class"], "blocked", "{d:?}");
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn a_hanging_receiver_slows_neither_sending_nor_other_receivers_and_gets_at_most_4_at_once() {
    let app = app(&[
        ("WEBHOOK_TIMEOUT_SECS", "60"),
        ("SEND_RATE_PER_SECOND", "20"),
        ("SEND_BURST", "1"),
        ("WORKER_CONCURRENCY", "8"),
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::Hang(Duration::from_secs(60)));
    subscribe(&app, &receiver, &["message.sent"]).await;
    let healthy = Receiver::start().await;
    subscribe(&app, &healthy, &["message.sent"]).await;
    let n = 40;
    let started = Instant::now();
    for i in 0..n {
        let (status, _) = app
            .send(json!({"to": format!("0812000{i:05}"), "body": "hang"}))
            .await;
        assert_eq!(status, 202);
    }
    app.wait_all_sent(Duration::from_secs(20)).await;
    let took = started.elapsed();
    // 40 sends at 20/s take about 2 s; a receiver that held a send for its delivery would add
    // a minute per send. The bound leaves room for a loaded machine (the whole suite at once
    // took 5.8 s on 2 cores).
    assert!(took < Duration::from_secs(15), "40 sends took {took:?}");
    receiver.wait_for(4, Duration::from_secs(5)).await;
    // Another subscription's receiver gets every event meanwhile: the hanging one holds only
    // its own 4 slots, not the process's webhook workers.
    let got = healthy.wait_for(n, Duration::from_secs(20)).await;
    assert!(got.iter().all(|r| r.verified()));
    // Each of the hanging subscription's other 36 runs used to wait 2 s for a slot in a worker
    // of this process: the healthy receiver's last event came 4.6 s after the last send; now
    // about 0.1 s (3 s leaves room for a loaded machine).
    let last = got.iter().map(|r| r.at).max().unwrap();
    let lag = last.saturating_duration_since(started + took);
    assert!(
        lag < Duration::from_secs(3),
        "the healthy receiver lagged {lag:?}"
    );
    assert_eq!(
        receiver.max_in_flight(),
        4,
        "at most 4 deliveries in flight"
    );
    assert_eq!(receiver.received().len(), 4);
}

#[tokio::test]
async fn a_rolled_back_change_emits_nothing_and_a_committed_one_is_delivered() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver, &["optout.created"]).await;
    let event = |phone: &str| outbox::Event {
        kind: EventType::OptoutCreated,
        message_id: None,
        data: outbox::without_message(json!({"phone": phone, "scope": "all", "source": "api"})),
    };
    let mut tx = app.db.pool.begin().await.unwrap();
    assert_eq!(outbox::emit(&mut tx, &[event("6281111")]).await.unwrap(), 1);
    tx.rollback().await.unwrap();
    let mut tx = app.db.pool.begin().await.unwrap();
    outbox::emit(&mut tx, &[event("6282222")]).await.unwrap();
    tx.commit().await.unwrap();
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    settled(&app, 1).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(got[0].json["data"]["phone"], "6282222");
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events").await,
        1,
        "the rolled-back event left no row"
    );
    // An event nobody subscribed to writes nothing.
    let mut tx = app.db.pool.begin().await.unwrap();
    let nobody = outbox::Event {
        kind: EventType::OptoutRemoved,
        ..event("6283333")
    };
    assert_eq!(outbox::emit(&mut tx, &[nobody]).await.unwrap(), 0);
    tx.commit().await.unwrap();
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 1);
}

#[tokio::test]
async fn events_of_one_message_arrive_in_order_even_when_the_first_is_retried() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    // The first request fails: the events after it must wait for its retry.
    receiver.then(&[Answer::Status(503)]);
    subscribe(
        &app,
        &receiver,
        &["message.delivered", "message.read", "optout.created"],
    )
    .await;
    let (_, body) = app
        .send(json!({"to": "081234567890", "body": "order"}))
        .await;
    let id: Uuid = id_of(&body).parse().unwrap();
    app.wait_all_sent(Duration::from_secs(10)).await;
    let at = |s: &str| json!({ s: "2026-12-06T10:00:00.000000Z" });
    let mut tx = app.db.pool.begin().await.unwrap();
    outbox::emit(
        &mut tx,
        &[
            outbox::Event {
                kind: EventType::MessageDelivered,
                message_id: Some(id),
                data: at("delivered_at"),
            },
            outbox::Event {
                kind: EventType::MessageRead,
                message_id: Some(id),
                data: at("read_at"),
            },
            // Not about a message: not held up by it.
            outbox::Event {
                kind: EventType::OptoutCreated,
                message_id: None,
                data: outbox::without_message(
                    json!({"phone": "6289", "scope": "all", "source": "api"}),
                ),
            },
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let got = receiver.wait_for(4, Duration::from_secs(15)).await;
    let order: Vec<&str> = got.iter().map(|r| r.event_type()).collect();
    let delivered = order
        .iter()
        .rposition(|t| *t == "message.delivered")
        .unwrap();
    let read = order.iter().position(|t| *t == "message.read").unwrap();
    assert!(
        delivered < read,
        "read before its delivered succeeded: {order:?}"
    );
    assert_eq!(order.iter().filter(|t| **t == "message.read").count(), 1);
    // The message's own fields come from the message.
    let read = &got[read].json["data"];
    assert_eq!(read["message_id"], id.to_string());
    assert_eq!(read["to"], "6281234567890");
    assert_eq!(read["read_at"], "2026-12-06T10:00:00.000000Z");
}

#[tokio::test]
async fn cancels_opt_outs_and_a_finished_batch_are_events() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    subscribe(
        &app,
        &receiver,
        &[
            "message.cancelled",
            "optout.created",
            "optout.removed",
            "batch.finished",
            "message.sent",
        ],
    )
    .await;
    // A scheduled message, cancelled by its caller.
    let later = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let (_, body) = app
        .send(json!({"to": "081200000001", "body": "later", "schedule": later}))
        .await;
    let cancelled = id_of(&body);
    let (status, body) = app
        .call(app.post(&format!("/whatsapp/messages/{cancelled}/cancel")))
        .await;
    assert_eq!(status, 200, "{body}");
    // An opt-out cancels another scheduled one.
    let (_, body) = app
        .send(json!({"to": "081200000002", "body": "later", "schedule": later}))
        .await;
    let opted = id_of(&body);
    let (status, body) = app
        .call(
            app.post("/suppressions")
                .json(&json!({"phone": "081200000002", "scope": "all"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // A send to the opted-out number is stored cancelled: an event too.
    let (status, body) = app
        .send(json!({"to": "081200000002", "body": "after the opt-out"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let stored_cancelled = id_of(&body);
    // A batch of two: one `batch.finished` after both are sent.
    let (status, body) = app
        .call(app.post("/whatsapp/send-batch").json(&json!({"messages": [
            {"to": "081200000003", "body": "a", "client_ref": "wo-1"},
            {"to": "081200000004", "body": "b"},
        ]})))
        .await;
    assert_eq!(status, 202, "{body}");
    let batch = body["data"]["batch_id"].as_str().unwrap().to_owned();

    let got = wait_until(Duration::from_secs(15), async || {
        let got = receiver.received();
        let n = |t: &str| got.iter().filter(|r| r.event_type() == t).count();
        ready(
            n("batch.finished") == 1 && n("message.sent") == 2 && n("message.cancelled") == 3,
            || {
                format!(
                    "{:?}",
                    got.iter()
                        .map(|r| r.event_type().to_owned())
                        .collect::<Vec<_>>()
                )
            },
        )
        .map(|_| got)
    })
    .await;
    assert!(got.iter().all(|r| r.verified()));
    let of = |t: &str| {
        got.iter()
            .filter(|r| r.event_type() == t)
            .collect::<Vec<_>>()
    };
    let cancels = of("message.cancelled");
    assert_eq!(cancels.len(), 3, "{cancels:?}");
    let reason_of = |id: &str| {
        cancels
            .iter()
            .find(|r| r.json["data"]["message_id"] == id)
            .map(|r| r.json["data"]["reason"].clone())
    };
    assert_eq!(reason_of(&cancelled), Some(json!("cancelled")));
    assert_eq!(reason_of(&opted), Some(json!("recipient opted out")));
    assert_eq!(
        reason_of(&stored_cancelled),
        Some(json!("recipient opted out"))
    );
    let optout = of("optout.created");
    assert_eq!(optout.len(), 1);
    assert_eq!(optout[0].json["data"]["phone"], "6281200000002");
    assert_eq!(optout[0].json["data"]["scope"], "all");
    assert_eq!(optout[0].json["data"]["source"], "api");
    let finished = of("batch.finished");
    assert_eq!(finished.len(), 1);
    let data = &finished[0].json["data"];
    assert_eq!(data["batch_id"], batch.as_str());
    assert_eq!(
        (data["total"].clone(), data["sent"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(data["failed"], 0);
    let sent = of("message.sent");
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().any(|r| r.json["data"]["client_ref"] == "wo-1"));
    assert!(
        sent.iter()
            .all(|r| r.json["data"]["batch_id"] == batch.as_str())
    );
    // `batch.finished` was written after the batch's sends (its delivery is not ordered with
    // theirs: only the events of one message are).
    let seq = |id: &str| {
        let id = id.to_owned();
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT seq FROM webhook_events WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let finished_seq = seq(&finished[0].id).await;
    for s in &sent {
        assert!(seq(&s.id).await < finished_seq);
    }

    // Taking the number off the list is an event too.
    let (status, _) = ops_call(&app, Method::DELETE, "/suppressions/081200000002", None).await;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(10), async || {
        let n = receiver.of_type("optout.removed").len();
        ready(n == 1, || format!("{n} optout.removed"))
    })
    .await;
}

#[tokio::test]
async fn the_subscriptions_api_checks_its_input_and_needs_role_ops() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    // A client may not touch subscriptions.
    let client = token("crm", Role::Client, Duration::from_secs(600));
    let (status, _) = app
        .call(
            app.http
                .get(format!("{}/webhooks", app.base))
                .bearer_auth(&client),
        )
        .await;
    assert_eq!(status, 403);
    for (body, field) in [
        (json!({"events": ["message.sent"]}), "url"),
        (json!({"url": receiver.url, "events": []}), "events"),
        (
            json!({"url": receiver.url, "events": ["message.sent", "message.nope"]}),
            "events",
        ),
        (
            json!({"url": "ftp://example.com", "events": ["message.sent"]}),
            "url",
        ),
        (
            json!({"url": format!("https://example.com/{}", "a".repeat(2048)), "events": ["message.sent"]}),
            "url",
        ),
        (
            json!({"url": receiver.url, "events": ["message.sent"], "description": 5}),
            "description",
        ),
    ] {
        let (status, answer) = ops_post(&app, "/webhooks", Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(
            crate::helpers::fields(&answer).contains(&field.to_owned()),
            "{body}: {answer}"
        );
    }
    let (_, answer) = ops_post(
        &app,
        "/webhooks",
        Some(json!({"url": receiver.url, "events": ["message.nope"]})),
    )
    .await;
    assert!(
        answer.to_string().contains("message.nope"),
        "the unknown type is named: {answer}"
    );

    let sub = subscribe(&app, &receiver, &["message.sent"]).await;
    let one = ops_get(&app, &format!("/webhooks/{sub}")).await;
    assert!(
        one.get("secret").is_none(),
        "the secret is shown only once: {one}"
    );
    assert_eq!(one["events"], json!(["message.sent"]));
    assert_eq!(one["enabled"], true);
    let all = ops_get(&app, "/webhooks").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert!(!all.to_string().contains("whsec_"));
    // PATCH.
    let (status, body) = ops_call(
        &app,
        Method::PATCH,
        &format!("/webhooks/{sub}"),
        Some(json!({"events": ["message.sent", "message.failed"], "description": null, "enabled": false})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["description"], Value::Null);
    assert_eq!(body["data"]["enabled"], false);
    assert_eq!(body["data"]["disabled_reason"], "manual");
    let (disabled, _) = bengkel_whatsapp::webhooks::repo::health(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(disabled, 0, "an operator's disable is not an alert");
    let (status, body) = ops_call(
        &app,
        Method::PATCH,
        &format!("/webhooks/{sub}"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["disabled_reason"], Value::Null);
    // Unknown ids.
    for path in [
        format!("/webhooks/{}", Uuid::new_v4()),
        "/webhooks/not-an-id".to_owned(),
    ] {
        let (status, _) = ops_call(&app, Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = ops_post(
        &app,
        &format!("/webhooks/deliveries/{}/replay", Uuid::new_v4()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // At most 50.
    for _ in 1..50 {
        let (status, _) = ops_post(
            &app,
            "/webhooks",
            Some(json!({"url": receiver.url, "events": ["webhook.test"]})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (status, body) = ops_post(
        &app,
        "/webhooks",
        Some(json!({"url": receiver.url, "events": ["webhook.test"]})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("50"), "{body}");
    // Deleting one makes room; a deleted one is gone.
    let (status, _) = ops_call(&app, Method::DELETE, &format!("/webhooks/{sub}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = ops_call(&app, Method::GET, &format!("/webhooks/{sub}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = ops_post(
        &app,
        "/webhooks",
        Some(json!({"url": receiver.url, "events": ["webhook.test"]})),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    let sub = subscribe(&app, &receiver, &["webhook.test"]).await;
    let (status, body) = ops_post(&app, &format!("/webhooks/{sub}/rotate-secret"), None).await;
    assert_eq!(status, 200, "{body}");
    let new = body["data"]["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_"));
    assert_ne!(new, receiver.secret(0));
    receiver.trust(&new);
    ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].signature.split(' ').count(),
        2,
        "{}",
        got[0].signature
    );
    assert_eq!(got[0].verified_by, [0, 1], "both secrets verify it");
}

#[tokio::test]
async fn a_delivery_and_a_time_range_are_replayed_with_the_same_id_and_body() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    let sub = subscribe(&app, &receiver, &["webhook.test"]).await;
    let since = chrono::Utc::now() - chrono::TimeDelta::seconds(5);
    ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    let first = receiver.wait_for(2, Duration::from_secs(10)).await;
    let d = wait_until(Duration::from_secs(5), async || {
        let d = deliveries(&app, &sub, "?status=succeeded").await;
        ready(d.len() == 2, || format!("{d:?}")).map(|_| d)
    })
    .await;
    // One delivery again, in a later second than its first attempt (timestamps are seconds).
    let first_second = first.iter().map(|r| r.timestamp).max().unwrap();
    wait_until(Duration::from_secs(2), async || {
        let now = chrono::Utc::now().timestamp();
        ready(now > first_second, || format!("still second {now}"))
    })
    .await;
    let one = d[0]["id"].as_str().unwrap();
    ops_call(&app, Method::POST, "/ops/queues/webhooks/pause", None).await;
    let (status, body) = ops_post(&app, &format!("/webhooks/deliveries/{one}/replay"), None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["replayed"], 1);
    // Pending again, and as old as the replay (not as the delivery).
    let (_, age) = bengkel_whatsapp::webhooks::repo::health(&app.db.pool)
        .await
        .unwrap();
    assert!(age < 1.0, "the oldest pending delivery is {age} s old");
    ops_call(&app, Method::POST, "/ops/queues/webhooks/resume", None).await;
    let got = receiver.wait_for(3, Duration::from_secs(10)).await;
    let again = &got[2];
    let original = first
        .iter()
        .find(|r| r.id == again.id)
        .expect("the same webhook-id");
    assert_eq!(again.body, original.body, "the same body");
    assert!(again.timestamp > original.timestamp, "a fresh timestamp");
    assert_ne!(again.signature, original.signature);
    assert!(again.verified());
    // The time range: both (once the replayed one has succeeded again).
    wait_until(Duration::from_secs(5), async || {
        let d = deliveries(&app, &sub, "?status=succeeded").await;
        ready(d.len() == 2, || format!("{d:?}"))
    })
    .await;
    let (status, body) = ops_post(
        &app,
        &format!("/webhooks/{sub}/replay"),
        Some(json!({"since": since.to_rfc3339(), "status": "succeeded"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["replayed"], 2);
    receiver.wait_for(5, Duration::from_secs(10)).await;
    let (status, body) = ops_post(
        &app,
        &format!("/webhooks/{sub}/replay"),
        Some(json!({"since": "yesterday"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    // A disabled subscription: 409.
    ops_call(
        &app,
        Method::PATCH,
        &format!("/webhooks/{sub}"),
        Some(json!({"enabled": false})),
    )
    .await;
    let (status, _) = ops_post(&app, &format!("/webhooks/deliveries/{one}/replay"), None).await;
    assert_eq!(status, 409);
    // Attempts of a replayed delivery go on.
    let d = deliveries(&app, &sub, "").await;
    let replayed = d.iter().find(|x| x["id"] == one).unwrap();
    assert_eq!(replayed["attempts"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_subscription_failing_too_long_is_disabled_and_enabling_resends_nothing() {
    let app = app(&[
        ("WEBHOOK_DISABLE_AFTER", "2s"),
        ("WEBHOOK_RETRY_SCHEDULE", "1s,1s,1s,1s,1s,1s"),
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.always(Answer::Status(500));
    let sub = subscribe(&app, &receiver, &["webhook.test"]).await;
    ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    let s = wait_until(Duration::from_secs(15), async || {
        let s = ops_get(&app, &format!("/webhooks/{sub}")).await;
        ready(s["enabled"] == false, || format!("{s}")).map(|_| s)
    })
    .await;
    assert_eq!(s["disabled_reason"], "failing");
    assert!(s["failing_since"].is_string());
    let d = deliveries(&app, &sub, "").await;
    assert_eq!(d[0]["status"], "cancelled", "{d:?}");
    let n = receiver.received().len();
    assert!((3..=5).contains(&n), "{n} attempts in ~2 s");
    receiver.always(Answer::Status(200));
    let (status, body) = ops_call(
        &app,
        Method::PATCH,
        &format!("/webhooks/{sub}"),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["failing_since"], Value::Null);
    // Nothing pending for it: nothing can be resent.
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            .await,
        0
    );
    assert_eq!(receiver.received().len(), n, "enabling resent something");
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    receiver.then(&[Answer::RetryAfter(429, 2)]);
    let sub = subscribe(&app, &receiver, &["webhook.test"]).await;
    ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let d = wait_until(Duration::from_secs(5), async || {
        let d = deliveries(&app, &sub, "").await;
        ready(d[0]["next_attempt_at"].is_string(), || format!("{d:?}")).map(|_| d)
    })
    .await;
    assert_eq!(d[0]["attempts"][0]["class"], "rate_limited");
    // The 60 s floor after a 429 (above the 2 s Retry-After and the 1 s schedule).
    let next: chrono::DateTime<chrono::Utc> =
        d[0]["next_attempt_at"].as_str().unwrap().parse().unwrap();
    let wait = next - chrono::Utc::now();
    assert!(wait > chrono::TimeDelta::seconds(50), "{wait}");
}

#[tokio::test]
async fn kill_9_around_outcome_commits_gives_exactly_one_message_sent_per_sent_message() {
    let app = TestApp::spawn_with(Options {
        role: bengkel_whatsapp::app::ProcessRole::Api,
        processes: 2,
        env: vec![
            ("WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
            ("WEBHOOK_RETRY_SCHEDULE", "1s,1s,1s,1s,1s".to_owned()),
            ("WEBHOOK_TIMEOUT_SECS", "3".to_owned()),
            ("WORKER_CONCURRENCY", "16".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    subscribe(
        &app,
        &receiver,
        &[
            "message.sent",
            "message.failed",
            "message.cancelled",
            "message.expired",
        ],
    )
    .await;
    // 2,000 sends, in two batches.
    for half in 0..2 {
        let items: Vec<Value> = (0..1000)
            .map(
                |i| json!({"to": format!("0812{half}{i:06}"), "body": format!("drill {half}-{i}")}),
            )
            .collect();
        let (status, body) = app
            .call(
                app.post("/whatsapp/send-batch")
                    .json(&json!({"messages": items})),
            )
            .await;
        assert_eq!(status, 202);
        assert_eq!(body["data"]["accepted"], 1000);
    }
    // A worker that lives throughout, and victims killed while they record outcomes.
    let _survivor = app
        .another_process(bengkel_whatsapp::app::ProcessRole::Worker)
        .await;
    let mut kills = 0;
    for round in 0..4 {
        let mut victim = crate::helpers::RealProcess::start(&app, "worker");
        let sent_before = app
            .count("SELECT count(*) FROM messages WHERE status = 'sent'")
            .await;
        // Until the victim is recording outcomes: sends are being written.
        wait_until(Duration::from_secs(30), async || {
            let held: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM apalis.jobs j JOIN queue_processes p
                   ON p.id = split_part(split_part(j.lock_by, '@', 2), '.', 1)
                 WHERE j.status IN ('Queued', 'Running') AND p.pid = $1",
            )
            .bind(victim.pid() as i32)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
            let sent = app
                .count("SELECT count(*) FROM messages WHERE status = 'sent'")
                .await;
            let unsent = app
                .count("SELECT count(*) FROM messages WHERE status <> 'sent'")
                .await;
            ready(held > 0 && sent > sent_before || unsent == 0, || {
                format!("round {round}: the victim holds {held} job(s)")
            })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50 + 97 * round)).await;
        victim.kill_9();
        kills += 1;
    }
    app.wait_all_sent(Duration::from_secs(120)).await;
    // Every delivery finished (the killed ones' leases ran out and they were sent again).
    wait_until(Duration::from_secs(90), async || {
        let pending = app
            .count("SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'")
            .await;
        ready(pending == 0, || {
            format!("{pending} deliveries not succeeded")
        })
    })
    .await;
    let got = receiver.received();
    assert!(got.iter().all(|r| r.verified()), "an unverified request");
    let mut by_id: std::collections::HashMap<String, &crate::helpers::Received> =
        std::collections::HashMap::new();
    for r in &got {
        if let Some(first) = by_id.get(&r.id) {
            assert_eq!(first.body, r.body, "one webhook-id, one body");
        } else {
            by_id.insert(r.id.clone(), r);
        }
    }
    let types: std::collections::HashSet<&str> = by_id.values().map(|r| r.event_type()).collect();
    assert_eq!(types, ["message.sent"].into(), "only sends happened");
    let mut per_message: std::collections::HashMap<String, usize> = Default::default();
    for r in by_id.values() {
        *per_message
            .entry(r.json["data"]["message_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let sent: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM messages WHERE status = 'sent'")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(sent.len(), 2000);
    assert_eq!(
        per_message.len(),
        2000,
        "a sent message without its message.sent"
    );
    assert!(
        sent.iter()
            .all(|id| per_message.get(&id.to_string()) == Some(&1)),
        "a message with more than one message.sent event"
    );
    let duplicates = got.len() - by_id.len();
    let interrupted = app
        .count("SELECT count(*) FROM messages WHERE attempts > 1")
        .await;
    eprintln!(
        "{kills} kills: {interrupted} sends interrupted by a kill, {} requests, {} events, \
         {duplicates} redelivered (same webhook-id)",
        got.len(),
        by_id.len()
    );
}

#[tokio::test]
async fn a_failed_and_an_expired_message_are_events_with_their_reasons() {
    let app = app(&[("SEND_MAX_ATTEMPTS", "1")]).await;
    let receiver = Receiver::start().await;
    subscribe(
        &app,
        &receiver,
        &["message.failed", "message.expired", "message.sent"],
    )
    .await;
    app.gateway
        .respond_times(
            crate::helpers::gateway_error(500, json!({"success": false, "message": "down"})),
            1,
        )
        .await;
    let (_, body) = app
        .send(json!({"to": "081200000010", "body": "fails"}))
        .await;
    let failed = id_of(&body);
    // Waiting 10 minutes, then its deadline passes: the expiry sweep takes it.
    let (_, body) = app
        .send(json!({"to": "081200000011", "body": "too late", "delay": 600}))
        .await;
    let expired = id_of(&body);
    sqlx::query("UPDATE messages SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&expired)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let got = wait_until(Duration::from_secs(20), async || {
        let got = receiver.received();
        ready(got.len() >= 2, || format!("{} request(s)", got.len())).map(|_| got)
    })
    .await;
    let by_type = |t: &str| got.iter().find(|r| r.event_type() == t).cloned();
    let f = by_type("message.failed").expect("message.failed");
    assert_eq!(f.json["data"]["message_id"], failed.as_str());
    assert_eq!(f.json["data"]["attempts"], 1);
    assert!(f.json["data"]["error_class"].is_string(), "{}", f.json);
    assert!(f.json["data"]["last_error"].is_string(), "{}", f.json);
    let e = by_type("message.expired").expect("message.expired");
    assert_eq!(e.json["data"]["message_id"], expired.as_str());
    assert!(
        e.json["data"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("expired"),
        "{}",
        e.json
    );
    assert!(by_type("message.sent").is_none());
}

#[tokio::test]
async fn retention_deletes_old_finished_deliveries_with_their_attempts_and_events() {
    let app = app(&[]).await;
    let receiver = Receiver::start().await;
    let sub = subscribe(&app, &receiver, &["webhook.test"]).await;
    ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    ops_post(&app, &format!("/webhooks/{sub}/test"), None).await;
    wait_until(Duration::from_secs(10), async || {
        let d = deliveries(&app, &sub, "?status=succeeded").await;
        ready(d.len() == 2, || format!("{d:?}"))
    })
    .await;
    // One of them finished 20 days ago.
    sqlx::query(
        "UPDATE webhook_deliveries SET finished_at = now() - interval '20 days'
         WHERE id = (SELECT id FROM webhook_deliveries ORDER BY seq LIMIT 1)",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    // The app's own clean-up ran at start: its next turn is now.
    sqlx::query("DELETE FROM maintenance_runs WHERE task = 'retention'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), async || {
        let ran = bengkel_whatsapp::maintenance::retention::run_once(&app.db.pool, 14)
            .await
            .unwrap();
        let left = app.count("SELECT count(*) FROM webhook_deliveries").await;
        ready(ran.is_some() || left == 1, || {
            "retention never ran".to_owned()
        })
    })
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_deliveries").await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM webhook_attempts").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 1);
    assert_eq!(deliveries(&app, &sub, "").await.len(), 1);
}
