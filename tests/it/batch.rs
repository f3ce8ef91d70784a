//! `POST /whatsapp/send-batch` (SPEC §11): per-item results, 1..=1000 items, one batch-level
//! `Idempotency-Key`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn batch(app: &TestApp, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut req = app.post("/whatsapp/send-batch").json(&body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    app.call(req).await
}

/// Puts `phone` on the opt-out list for every kind.
async fn opt_out(app: &TestApp, phone: &str) {
    let (status, body) = app
        .call(
            app.post("/suppressions")
                .json(&json!({"phone": phone, "scope": "all"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

fn fields(item: &Value) -> Vec<String> {
    item["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn valid_items_are_kept_and_invalid_ones_reported_by_index() {
    let app = TestApp::spawn().await;
    opt_out(&app, "0813 9999 0000").await;
    let (status, body) = batch(
        &app,
        json!({"messages": [
            {"to": "0812 3456 789", "body": "satu", "client_ref": "INV-1"},
            {"to": "12", "body": "bad phone", "client_ref": "INV-2"},
            {"to": "0812 3456 790"},
            {"to": "0812 3456 791", "body": "later", "delay": 3600, "client_ref": "INV-4"},
            {"to": "0813 9999 0000", "body": "opted out"},
            "not an object",
            {"to": "0812 3456 792", "body": "x", "client_ref": 5, "delay": 1, "schedule": 1},
            {"to": "0812 3456 793", "body": "nul\u{0}"},
        ]}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let data = &body["data"];
    assert_eq!(
        (data["accepted"].as_u64(), data["rejected"].as_u64()),
        (Some(3), Some(5)),
        "{data}"
    );
    let items = data["items"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"], i);
    }
    assert_eq!(items[0]["status"], "queued");
    assert_eq!(items[0]["client_ref"], "INV-1");
    assert_eq!(items[1]["status"], "rejected");
    assert_eq!(
        items[1]["client_ref"], "INV-2",
        "echoed on a rejected item too"
    );
    assert!(items[1].get("id").is_none());
    assert_eq!(fields(&items[1]), ["to"]);
    assert_eq!(fields(&items[2]), ["body"]);
    assert_eq!(items[3]["status"], "queued");
    assert_eq!(items[4]["status"], "cancelled");
    assert_eq!(items[4]["last_error"], "recipient opted out");
    assert_eq!(items[5]["status"], "rejected");
    assert_eq!(fields(&items[5]), ["item"]);
    let mut f = fields(&items[6]);
    f.sort();
    assert!(
        f.contains(&"client_ref".to_owned()) && f.len() >= 2,
        "{f:?}"
    );

    // Stored: the three valid ones, with jobs for the two that will be sent.
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 3);
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE job_id IS NOT NULL")
            .await,
        2
    );
    let id = items[0]["id"].as_str().unwrap();
    let m = app
        .wait_for_status(id, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(m["body"], "satu");
    let later = app.message(items[3]["id"].as_str().unwrap()).await;
    assert_eq!(later["status"], "queued");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.gateway.calls().await,
        1,
        "only the immediate, allowed one went out"
    );
}

#[tokio::test]
async fn a_thousand_messages_go_in_one_call_and_a_thousand_and_one_are_refused() {
    let app = TestApp::spawn().await;
    let many = |n: usize| {
        json!({"messages": (0..n)
            .map(|i| json!({"to": format!("0812{:07}", i), "body": format!("bulk {i}"), "delay": 3600, "client_ref": i.to_string()}))
            .collect::<Vec<_>>()})
    };
    let (status, body) = batch(&app, many(1001), None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "messages");
    assert_eq!(
        app.count("SELECT count(*) FROM messages").await,
        0,
        "nothing stored"
    );
    for empty in [
        json!({"messages": []}),
        json!({}),
        json!({"messages": "x"}),
        json!([1]),
    ] {
        let (status, body) = batch(&app, empty, None).await;
        assert_eq!(status, 422, "{body}");
    }

    let (status, body) = batch(&app, many(1000), None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["accepted"], 1000);
    assert_eq!(body["data"]["items"][999]["client_ref"], "999");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 1000);
    assert_eq!(
        app.count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'whatsapp-send'")
            .await,
        1000
    );
    // Every message is an ordinary one: it can be read and cancelled.
    let id = body["data"]["items"][500]["id"].as_str().unwrap();
    let (status, cancelled) = app
        .call(app.post(&format!("/whatsapp/messages/{id}/cancel")))
        .await;
    assert_eq!(status, 200, "{cancelled}");
}

#[tokio::test]
async fn one_key_replays_the_same_batch_and_refuses_a_different_one() {
    let app = TestApp::spawn().await;
    let body = json!({"messages": [
        {"to": "0812 3456 789", "body": "a", "delay": 3600, "client_ref": "A"},
        {"to": "bad", "body": "b"},
    ]});
    let (status, first) = batch(&app, body.clone(), Some("batch-1")).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = batch(&app, body.clone(), Some("batch-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["items"], first["data"]["items"]);
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 1);
    // The replay shows the current status.
    let id = first["data"]["items"][0]["id"].as_str().unwrap();
    app.call(app.post(&format!("/whatsapp/messages/{id}/cancel")))
        .await;
    let (status, third) = batch(&app, body, Some("batch-1")).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["data"]["items"][0]["status"], "cancelled");
    // The same key with another batch.
    let (status, other) = batch(
        &app,
        json!({"messages": [{"to": "0812 3456 789", "body": "different"}]}),
        Some("batch-1"),
    )
    .await;
    assert_eq!(status, 409, "{other}");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 1);
    // Concurrent duplicates with a fresh key: one batch stored.
    let body = json!({"messages": [{"to": "0812 3456 700", "body": "once", "delay": 3600}]});
    let calls = (0..5).map(|_| batch(&app, body.clone(), Some("batch-2")));
    let results = futures::future::join_all(calls).await;
    let created = results.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(created, 1, "{results:?}");
    assert!(results.iter().all(|(s, _)| *s == 202 || *s == 200));
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE body = 'once'")
            .await,
        1
    );
}

/// Single sends arriving together are written in groups, and each request still gets its own
/// answer: a new message, a replay of its key, a conflict, an opted-out number, an invalid body.
#[tokio::test]
async fn concurrent_single_sends_are_grouped_and_keep_their_own_results() {
    let app = TestApp::spawn().await;
    opt_out(&app, "0813 9999 0000").await;
    // 60 plain sends, 5 with one key and one body, 2 with another key and two bodies, 1 to an
    // opted-out number, 1 invalid: all at once.
    let mut requests: Vec<(Option<&str>, Value)> = (0..60)
        .map(|i| {
            (
                None,
                json!({"to": format!("0812{:07}", i), "body": format!("group {i}"), "delay": 3600}),
            )
        })
        .collect();
    for _ in 0..5 {
        requests.push((
            Some("same"),
            json!({"to": "0812 1111 2222", "body": "same", "delay": 3600}),
        ));
    }
    requests.push((
        Some("clash"),
        json!({"to": "0812 1111 3333", "body": "first", "delay": 3600}),
    ));
    requests.push((
        Some("clash"),
        json!({"to": "0812 1111 3333", "body": "second", "delay": 3600}),
    ));
    requests.push((None, json!({"to": "0813 9999 0000", "body": "opted out"})));
    requests.push((None, json!({"to": "12", "body": "invalid"})));
    let calls = requests.iter().map(|(key, body)| {
        let mut req = app.post("/whatsapp/send").json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", *key);
        }
        app.call(req)
    });
    let answers = futures::future::join_all(calls).await;

    for (i, (status, body)) in answers.iter().take(60).enumerate() {
        assert_eq!(*status, 202, "{body}");
        let id = body["data"]["id"].as_str().unwrap();
        let m = app.message(id).await;
        assert_eq!(
            m["body"],
            format!("group {i}"),
            "each caller gets its own message"
        );
    }
    let same: Vec<&(u16, Value)> = answers[60..65].iter().collect();
    assert_eq!(
        same.iter().filter(|(s, _)| *s == 202).count(),
        1,
        "{same:?}"
    );
    assert!(same.iter().all(|(s, _)| *s == 202 || *s == 200));
    let ids: std::collections::HashSet<&str> = same
        .iter()
        .map(|(_, b)| b["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one message for the key");
    let clash: Vec<u16> = answers[65..67].iter().map(|(s, _)| *s).collect();
    let mut sorted = clash.clone();
    sorted.sort();
    assert_eq!(sorted, [202, 409], "{:?}", &answers[65..67]);
    assert_eq!(answers[67].0, 202);
    assert_eq!(answers[67].1["data"]["status"], "cancelled");
    assert_eq!(answers[68].0, 422);
    assert_eq!(answers[68].1["errors"][0]["field"], "to");
    assert_eq!(
        app.count("SELECT count(*) FROM messages").await,
        60 + 1 + 1 + 1
    );

    // They were written in groups: messages of one group share their transaction.
    let transactions = app
        .count("SELECT count(DISTINCT xmin::text) FROM messages")
        .await;
    assert!(
        transactions < 63,
        "63 messages in {transactions} transactions"
    );
}
