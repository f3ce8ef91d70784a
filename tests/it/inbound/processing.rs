//! The payload job and `accept`, called directly (an `api` app: no worker takes the jobs), and
//! once through the queue for a gateway whose processing is not built yet.

use bengkel_whatsapp::{
    app::ProcessRole,
    inbound::{
        self, Gateway, InboundResult, NewInbound, Rules,
        accept::KeywordAction,
        job::{ProcessError, process_payload},
    },
};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{TOKEN, hook};
use crate::helpers::{Options, TestApp};

/// An app that takes webhooks but runs no worker: the test runs the processing.
async fn api_app() -> TestApp {
    TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        env: vec![("INBOUND_STARSENDER_TOKEN", TOKEN.into())],
        ..Options::default()
    })
    .await
}

fn rules(app: &TestApp) -> Rules {
    Rules::from_config(&app.config)
}

/// A stored payload (its bytes do not matter to `accept`).
async fn payload(app: &TestApp, gateway: Gateway) -> Uuid {
    let mut tx = app.db.pool.begin().await.unwrap();
    let id = inbound::store_payload(&mut tx, gateway, Some("application/json"), b"{}")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// Rows that processing a payload writes, counted.
async fn footprint(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for table in [
        "inbound_messages",
        "whatsapp_contacts",
        "suppressions",
        "suppression_changes",
        "messages",
        "webhook_events",
    ] {
        out.push(app.count(&format!("SELECT count(*) FROM {table}")).await);
    }
    out
}

#[tokio::test]
async fn processing_a_payload_twice_changes_nothing_the_second_time() {
    let app = api_app().await;
    let (status, body) = app
        .call(hook(&app, TOKEN).json(&json!({"from": "0812 3456 789", "message": "stop"})))
        .await;
    assert_eq!(status, 200, "{body}");
    let id: Uuid = body["data"]["payload_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let rules = rules(&app);

    let mut tx = app.db.pool.begin().await.unwrap();
    let first = process_payload(&mut tx, &rules, id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!first.already);
    assert_eq!(first.result, "ok");
    assert_eq!(first.accepted.len(), 1);
    assert!(matches!(
        first.accepted[0].action,
        KeywordAction::OptedOut { .. }
    ));
    let after_first = footprint(&app).await;
    assert_eq!(after_first[..4], [1, 1, 1, 1], "{after_first:?}");

    // A run that crashed after its commit, or a requeue: the payload is processed already.
    let mut tx = app.db.pool.begin().await.unwrap();
    let second = process_payload(&mut tx, &rules, id).await.unwrap();
    tx.commit().await.unwrap();
    assert!(second.already);
    assert_eq!(second.result, "ok");
    assert!(second.accepted.is_empty());
    assert_eq!(footprint(&app).await, after_first);

    // A run that crashed before its commit left nothing: the next one does it all once.
    let other = {
        let (_, body) = app
            .call(hook(&app, TOKEN).json(&json!({"from": "0812 3456 000", "message": "STOP"})))
            .await;
        body["data"]["payload_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut tx = app.db.pool.begin().await.unwrap();
    process_payload(&mut tx, &rules, other).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(footprint(&app).await, after_first);
    let mut tx = app.db.pool.begin().await.unwrap();
    let again = process_payload(&mut tx, &rules, other).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again.result, "ok");
    let after = footprint(&app).await;
    assert_eq!(after[..4], [2, 2, 2, 2], "{after:?}");

    let missing = Uuid::now_v7();
    let mut tx = app.db.pool.begin().await.unwrap();
    assert!(matches!(
        process_payload(&mut tx, &rules, missing).await,
        Err(ProcessError::Missing(m)) if m == missing
    ));
}

#[tokio::test]
async fn a_message_the_gateway_sends_twice_is_a_duplicate_and_does_nothing_else() {
    let app = api_app().await;
    let rules = rules(&app);
    let message = |payload_id, text: &str| NewInbound {
        gateway: Gateway::CloudApi,
        external_id: Some("wamid.HBgM-1".into()),
        from: "628123456789".into(),
        text: Some(text.into()),
        sent_at: None,
        payload_id,
    };
    let p1 = payload(&app, Gateway::CloudApi).await;
    let mut tx = app.db.pool.begin().await.unwrap();
    let first = inbound::accept(&mut tx, &rules, &message(p1, "Halo"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(first.result, InboundResult::Ok);
    let before = footprint(&app).await;

    // Delivered again days later in another payload, even as a keyword now: a duplicate.
    let p2 = payload(&app, Gateway::CloudApi).await;
    let mut tx = app.db.pool.begin().await.unwrap();
    let second = inbound::accept(&mut tx, &rules, &message(p2, "STOP"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(second.result, InboundResult::Duplicate);
    assert_eq!(second.id, None);
    assert_eq!(second.action, KeywordAction::None);
    assert_eq!(footprint(&app).await, before);

    // Another gateway's id space, and StarSender's messages (no id) are never duplicates.
    for (gateway, external_id) in [
        (Gateway::StarSender, Some("wamid.HBgM-1")),
        (Gateway::StarSender, None),
        (Gateway::StarSender, None),
    ] {
        let p = payload(&app, gateway).await;
        let mut tx = app.db.pool.begin().await.unwrap();
        let a = inbound::accept(
            &mut tx,
            &rules,
            &NewInbound {
                gateway,
                external_id: external_id.map(str::to_owned),
                ..message(p, "Halo")
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(a.result, InboundResult::Ok);
    }
    // A sender that is no number is refused.
    let mut tx = app.db.pool.begin().await.unwrap();
    let refused = inbound::accept(
        &mut tx,
        &rules,
        &NewInbound {
            from: "user:abc".into(),
            external_id: Some("wamid.other".into()),
            ..message(p2, "Halo")
        },
    )
    .await;
    assert!(matches!(
        refused,
        Err(inbound::accept::AcceptError::Phone(_))
    ));
}

#[tokio::test]
async fn last_inbound_at_only_moves_forward() {
    let app = api_app().await;
    let rules = rules(&app);
    let phone = "628123456789";
    let at = |t: DateTime<Utc>| t.timestamp_micros();
    let now = Utc::now();
    let mut seen = Vec::new();
    for sent_at in [
        Some(now - Duration::hours(2)),
        // an older message arriving late does not move it back
        Some(now - Duration::hours(5)),
        Some(now - Duration::hours(1)),
        // a gateway clock ahead of ours counts as the arrival
        Some(now + Duration::hours(3)),
    ] {
        let p = payload(&app, Gateway::StarSender).await;
        let mut tx = app.db.pool.begin().await.unwrap();
        inbound::accept(
            &mut tx,
            &rules,
            &NewInbound {
                gateway: Gateway::StarSender,
                external_id: None,
                from: "0812-3456-789".into(),
                text: Some("halo".into()),
                sent_at,
                payload_id: p,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let mut conn = app.db.pool.acquire().await.unwrap();
        seen.push(
            inbound::last_inbound_at(&mut conn, phone)
                .await
                .unwrap()
                .map(at),
        );
    }
    let hours_ago = |h: i64| Some(at(now - Duration::hours(h)));
    assert_eq!(seen[..3], [hours_ago(2), hours_ago(2), hours_ago(1)]);
    let arrival = seen[3].unwrap();
    assert!(
        arrival >= at(now) && arrival < at(now + Duration::minutes(5)),
        "the arrival, not the future: {seen:?}"
    );
    let mut conn = app.db.pool.acquire().await.unwrap();
    assert_eq!(
        inbound::last_inbound_at(&mut conn, "6281299999999")
            .await
            .unwrap(),
        None
    );
}
