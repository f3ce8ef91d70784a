use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{API_KEY, TestApp, id_of};

#[tokio::test]
async fn an_immediate_send_reaches_the_gateway_once_with_the_exact_request() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .send(json!({"to": "0812 3456 789", "body": "  Servis selesai  "}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["data"]["status"], "queued");
    assert_eq!(body["data"]["kind"], "adhoc");
    let id = id_of(&body);

    let message = app
        .wait_for_status(&id, "sent", Duration::from_secs(5))
        .await;
    assert_eq!(message["attempts"], 1);
    assert_eq!(message["gateway_response"]["success"], true);
    assert_eq!(message["history"]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(app.job_of(&id).await.status, "Done");

    app.wait_idle(Duration::from_secs(5)).await;
    let requests = app.gateway.requests().await;
    assert_eq!(requests.len(), 1, "sent exactly once");
    let req = &requests[0];
    assert_eq!(
        req.headers.get("authorization").unwrap(),
        API_KEY,
        "raw key, no Bearer"
    );
    assert!(
        req.headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        sent,
        json!({"messageType": "text", "to": "628123456789", "body": "Servis selesai"})
    );
}

#[tokio::test]
async fn a_file_makes_a_media_message_and_delay_is_not_forwarded() {
    let app = TestApp::spawn().await;
    let (status, body) = app.send(json!({"to": "0812345678", "body": "Invoice", "file": "https://example.com/inv.pdf", "delay": 0})).await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = app.call(app.post("/whatsapp/send-with-file?phone=0812345678&message=Foto&file_url=https://example.com/a.jpg")).await;
    assert_eq!(status, 202);
    let requests = app.gateway.wait_for_calls(2, Duration::from_secs(5)).await;
    let mut bodies: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    bodies.sort_by_key(|b| b["body"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        bodies[0],
        json!({"messageType": "media", "to": "62812345678", "body": "Foto", "file": "https://example.com/a.jpg"})
    );
    assert_eq!(
        bodies[1],
        json!({"messageType": "media", "to": "62812345678", "body": "Invoice", "file": "https://example.com/inv.pdf"})
    );
}

#[tokio::test]
async fn delay_and_schedule_are_held_by_the_queue_until_run_at() {
    let app = TestApp::spawn().await;
    let started = Instant::now();
    let (status, delayed) = app
        .send(json!({"to": "0812345678", "body": "later", "delay": 2}))
        .await;
    assert_eq!(status, 202, "{delayed}");
    let schedule = chrono::Utc::now().timestamp_millis() + 3_000;
    let (status, scheduled) = app
        .call(app.post(&format!("/whatsapp/send-scheduled?phone=0812345678&message=scheduled&schedule_timestamp_ms={schedule}")))
        .await;
    assert_eq!(status, 202, "{scheduled}");
    let run_at =
        chrono::DateTime::parse_from_rfc3339(scheduled["data"]["run_at"].as_str().unwrap())
            .unwrap();
    assert_eq!(run_at.timestamp_millis(), schedule);

    let requests = app.gateway.wait_for_calls(2, Duration::from_secs(6)).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(2_900), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(4_500),
        "due jobs run within a second of run_at: {elapsed:?}"
    );
    for r in &requests {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            body.get("delay").is_none() && body.get("schedule").is_none(),
            "{body}"
        );
    }
    app.wait_for_status(&id_of(&scheduled), "sent", Duration::from_secs(2))
        .await;
    app.wait_for_status(&id_of(&delayed), "sent", Duration::from_secs(2))
        .await;
    // Each attempt began (its claim, before the call) at or after its message's run_at.
    let early: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.body, (a.started_at - m.run_at)::text FROM message_attempts a
         JOIN messages m ON m.id = a.message_id WHERE a.started_at < m.run_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(early, vec![], "nothing is sent before run_at");
    assert_eq!(app.count("SELECT count(*) FROM message_attempts").await, 2);
}

#[tokio::test]
async fn a_waiting_message_can_be_cancelled_and_is_never_sent() {
    let app = TestApp::spawn().await;
    let (_, body) = app
        .send(json!({"to": "0812345678", "body": "cancel me", "delay": 1}))
        .await;
    let id = id_of(&body);
    let (status, cancelled) = app
        .call(app.post(&format!("/whatsapp/messages/{id}/cancel")))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["data"]["status"], "cancelled");
    assert_eq!(app.job_of(&id).await.status, "Killed");
    let (status, _) = app
        .call(app.post(&format!("/whatsapp/messages/{id}/cancel")))
        .await;
    assert_eq!(status, 409, "a cancelled message cannot be cancelled again");

    // Due after the cancelled one: once it is sent, the workers have taken whatever was due
    // before it (they take due jobs oldest run_at first).
    let (_, sent) = app
        .send(json!({"to": "0812345678", "body": "already gone", "delay": 1}))
        .await;
    app.wait_for_status(&id_of(&sent), "sent", Duration::from_secs(5))
        .await;
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.sent_field("body").await, ["already gone"]);
    assert_eq!(app.message(&id).await["status"], "cancelled");
    let (status, body) = app
        .call(app.post(&format!("/whatsapp/messages/{}/cancel", id_of(&sent))))
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn an_idempotency_key_returns_the_original_message_and_refuses_a_different_request() {
    let app = TestApp::spawn().await;
    let send = |body: Value| {
        app.post("/whatsapp/send")
            .header("Idempotency-Key", "order-42")
            .json(&body)
    };
    let (status, first) = app
        .call(send(json!({"to": "0812345678", "body": "once"})))
        .await;
    assert_eq!(status, 202);
    let (status, again) = app
        .call(send(json!({"to": "0812345678", "body": "once"})))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(id_of(&again), id_of(&first));
    let (status, other) = app
        .call(send(json!({"to": "0812345678", "body": "something else"})))
        .await;
    assert_eq!(status, 409, "{other}");

    // Keys belong to their caller: another subject may use the same key.
    let other_caller = app
        .http
        .post(format!("{}/whatsapp/send", app.base))
        .bearer_auth(crate::helpers::token(
            "someone-else",
            bengkel_whatsapp::http::auth::Role::Client,
            Duration::from_secs(60),
        ))
        .header("Idempotency-Key", "order-42")
        .json(&json!({"to": "0812345678", "body": "once"}));
    let (status, _) = app.call(other_caller).await;
    assert_eq!(status, 202);

    // Two messages exist, so two sends; wait for both, then make sure no third comes.
    app.gateway.wait_for_calls(2, Duration::from_secs(10)).await;
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.calls().await, 2);
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 2);
}

#[tokio::test]
async fn concurrent_duplicates_with_one_key_create_one_message() {
    let app = TestApp::spawn().await;
    let requests = (0..12).map(|_| {
        app.call(
            app.post("/whatsapp/send")
                .header("Idempotency-Key", "burst-1")
                .json(&json!({"to": "0812345678", "body": "one"})),
        )
    });
    let results = futures::future::join_all(requests).await;
    let ids: std::collections::HashSet<String> = results.iter().map(|(_, b)| id_of(b)).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|(s, _)| *s == 202).count(), 1);
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 11);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!((stored, jobs), (1, 1));
    app.gateway.wait_for_calls(1, Duration::from_secs(5)).await;
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.calls().await, 1);
}

#[tokio::test]
async fn messages_are_listed_newest_first_with_filters_and_a_cursor() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, body) = app
            .send(json!({"to": "0812345678", "body": format!("m{i}"), "delay": 3600}))
            .await;
        ids.push(id_of(&body));
    }
    let (_, other) = app
        .send(json!({"to": "0899999999", "body": "other", "delay": 3600}))
        .await;
    let (_, page1) = app
        .call(app.get("/whatsapp/messages?to=0812345678&limit=3"))
        .await;
    let got: Vec<&str> = page1["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]);
    let cursor = page1["data"]["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .call(app.get(&format!(
            "/whatsapp/messages?to=0812345678&limit=3&cursor={cursor}"
        )))
        .await;
    let got: Vec<&str> = page2["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[1].as_str(), ids[0].as_str()]);
    assert!(page2["data"]["next_cursor"].is_null());

    let (_, queued) = app
        .call(app.get("/whatsapp/messages?status=queued&kind=adhoc"))
        .await;
    assert_eq!(queued["data"]["items"].as_array().unwrap().len(), 6);
    let (_, sent) = app.call(app.get("/whatsapp/messages?status=sent")).await;
    assert_eq!(sent["data"]["items"].as_array().unwrap().len(), 0);
    assert_eq!(queued["data"]["items"][0]["id"], other["data"]["id"]);
}
