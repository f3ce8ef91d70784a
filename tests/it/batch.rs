//! `POST /whatsapp/send-batch` (SPEC §11): per-item results, 1..=1000 items, one batch-level
//! `Idempotency-Key`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, fields, ops_token};

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
    app.wait_idle(Duration::from_secs(5)).await;
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
    let batch_id = first["data"]["batch_id"].as_str().unwrap().to_owned();
    let (status, again) = batch(&app, body.clone(), Some("batch-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["items"], first["data"]["items"]);
    assert_eq!(
        again["data"]["batch_id"], batch_id,
        "the replay names the same batch"
    );
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 1);
    let stored = app
        .message(first["data"]["items"][0]["id"].as_str().unwrap())
        .await;
    assert_eq!(stored["batch_id"], batch_id);
    // An answer stored before batches had an id (no `batch_id` in `send_batches.result`) still
    // replays, with the batch's id.
    sqlx::query("UPDATE send_batches SET result = result - 'batch_id'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, old) = batch(&app, body.clone(), Some("batch-1")).await;
    assert_eq!(status, 200, "{old}");
    assert_eq!(old["data"]["batch_id"], batch_id, "{old}");
    assert_eq!(old["data"]["items"], first["data"]["items"]);
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
    let ids: std::collections::HashSet<&Value> = results
        .iter()
        .map(|(_, b)| &b["data"]["batch_id"])
        .collect();
    assert_eq!(ids.len(), 1, "one batch id for all of them: {results:?}");
    assert_ne!(ids.into_iter().next(), Some(&json!(batch_id)));
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

/// The `data` of `GET /whatsapp/messages?{query}` (with an ops token: the ops page reads it).
async fn list(app: &TestApp, query: &str) -> Value {
    let (status, body) = app
        .call(
            app.http
                .get(format!("{}/whatsapp/messages?{query}", app.base))
                .bearer_auth(ops_token()),
        )
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body["data"].clone()
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A batch's messages remember their call and their `client_ref`: in GET by id, in the list, and
/// as the list's `batch` filter (paged like the rest of the list). Other messages have neither.
#[tokio::test]
async fn a_batch_s_messages_carry_its_id_and_their_client_refs() {
    let app = TestApp::spawn().await;
    let (status, single) = app
        .send(json!({"to": "0812 3456 700", "body": "single", "delay": 3600}))
        .await;
    assert_eq!(status, 202, "{single}");
    let single_id = single["data"]["id"].as_str().unwrap().to_owned();
    assert!(single["data"].get("batch_id").is_none(), "{single}");

    let (status, a) = batch(
        &app,
        json!({"messages": [
            {"to": "0812 3456 701", "body": "a1", "delay": 3600, "client_ref": "INV-A1"},
            {"to": "0812 3456 702", "body": "a2", "delay": 3600},
            {"to": "12", "body": "rejected", "client_ref": "INV-A3"},
            {"to": "0812 3456 704", "body": "a4", "delay": 3600, "client_ref": null},
        ]}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{a}");
    let (status, b) = batch(
        &app,
        json!({"messages": [{"to": "0812 3456 705", "body": "b1", "delay": 3600, "client_ref": "INV-B1"}]}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{b}");
    let a_batch = a["data"]["batch_id"].as_str().unwrap().to_owned();
    let b_batch = b["data"]["batch_id"].as_str().unwrap().to_owned();
    assert_ne!(a_batch, b_batch, "each call is its own batch");
    let a_id = uuid::Uuid::parse_str(&a_batch).unwrap();
    assert_eq!(a_id.get_version_num(), 7, "a UUIDv7 like the message ids");
    let item_id = |i: usize| a["data"]["items"][i]["id"].as_str().unwrap().to_owned();

    // GET by id: the batch and the item's client_ref, null when it had none.
    for (i, client_ref) in [(0, json!("INV-A1")), (1, Value::Null), (3, Value::Null)] {
        let m = app.message(&item_id(i)).await;
        assert_eq!(m["batch_id"], a_batch, "{m}");
        assert_eq!(m["client_ref"], client_ref, "{m}");
    }
    let m = app.message(&single_id).await;
    assert!(
        m["batch_id"].is_null() && m["client_ref"].is_null(),
        "a single send has neither, as nulls: {m}"
    );
    assert!(m.get("batch_id").is_some() && m.get("client_ref").is_some());

    // The list: newest first, every item with both fields.
    let all = list(&app, "").await;
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let by_id = |id: &str| items.iter().find(|m| m["id"] == id).unwrap().clone();
    assert_eq!(by_id(&item_id(0))["client_ref"], "INV-A1");
    assert_eq!(by_id(&item_id(0))["batch_id"], a_batch);
    assert_eq!(by_id(&item_id(1))["client_ref"], Value::Null);
    let b1 = by_id(b["data"]["items"][0]["id"].as_str().unwrap());
    assert_eq!(
        (&b1["batch_id"], &b1["client_ref"]),
        (&json!(b_batch), &json!("INV-B1"))
    );
    let s = by_id(&single_id);
    assert!(s["batch_id"].is_null() && s["client_ref"].is_null(), "{s}");

    // `batch` lists exactly that batch's messages, newest first, and pages with the cursor.
    let mut want = vec![item_id(0), item_id(1), item_id(3)];
    want.sort();
    want.reverse();
    assert_eq!(ids_of(&list(&app, &format!("batch={a_batch}")).await), want);
    let first = list(&app, &format!("batch={a_batch}&limit=2")).await;
    assert_eq!(ids_of(&first), &want[..2]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = list(&app, &format!("batch={a_batch}&limit=2&cursor={cursor}")).await;
    assert_eq!(ids_of(&rest), &want[2..]);
    assert!(rest["next_cursor"].is_null(), "{rest}");
    assert_eq!(
        ids_of(&list(&app, &format!("batch={b_batch}")).await),
        [b1["id"].as_str().unwrap()]
    );
    // With the other filters, and a batch nobody sent.
    assert_eq!(
        ids_of(
            &list(
                &app,
                &format!("batch={a_batch}&to=0812-3456-702&status=queued")
            )
            .await
        ),
        [item_id(1)]
    );
    assert!(ids_of(&list(&app, &format!("batch={a_batch}&status=sent")).await).is_empty());
    assert!(ids_of(&list(&app, &format!("batch={}", uuid::Uuid::now_v7())).await).is_empty());
    assert!(ids_of(&list(&app, &format!("batch={b_batch}&kind=maintenance")).await).is_empty());

    // Anything but a UUID is a 422 naming `batch`, with the other filters' errors beside it.
    for q in [
        "batch=nope",
        "batch=",
        "batch=INV-A1",
        "batch=01a212aa-23c0-71db-9e75",
        "batch=%20",
    ] {
        let (status, body) = app.call(app.get(&format!("/whatsapp/messages?{q}"))).await;
        assert_eq!(status, 422, "{q}: {body}");
        assert_eq!(body["success"], false);
        assert_eq!(fields(&body), ["batch"], "{q}: {body}");
    }
    let (status, body) = app
        .call(app.get("/whatsapp/messages?batch=x&status=lost"))
        .await;
    assert_eq!(status, 422, "{body}");
    let mut named = fields(&body);
    named.sort();
    assert_eq!(named, ["batch", "status"], "{body}");
}

/// A batch announces its due jobs with one NOTIFY, not one per message; jobs due later with none.
#[tokio::test]
async fn a_batch_is_announced_to_the_workers_once() {
    let app = TestApp::spawn().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db.pool)
        .await
        .unwrap();
    listener.listen("apalis::job::insert").await.unwrap();
    let due: Vec<Value> = (0..40)
        .map(|i| json!({"to": format!("0812{i:07}"), "body": format!("now {i}")}))
        .collect();
    let (status, body) = batch(&app, json!({"messages": due}), None).await;
    assert_eq!(status, 202, "{body}");
    let later: Vec<Value> = (0..10)
        .map(|i| json!({"to": format!("0813{i:07}"), "body": "later", "delay": 3600}))
        .collect();
    let (status, body) = batch(&app, json!({"messages": later}), None).await;
    assert_eq!(status, 202, "{body}");
    let mut announced = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), listener.recv()).await {
        let event: Value = serde_json::from_str(n.payload()).unwrap();
        if event["job_type"] == "whatsapp-send" {
            announced.push(event);
        }
    }
    assert_eq!(announced.len(), 1, "{announced:?}");
}
