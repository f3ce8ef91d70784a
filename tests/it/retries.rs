use std::time::Duration;

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::helpers::{Options, TestApp, gateway_error, id_of};

async fn attempt_starts(app: &TestApp, id: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar(
        "SELECT started_at FROM message_attempts WHERE message_id = $1::uuid ORDER BY started_at",
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

async fn retried_once_then_sent(first_failure: ResponseTemplate, expected_error: &str) {
    let app = TestApp::spawn().await;
    app.gateway.respond_times(first_failure, 1).await;
    let (_, body) = app
        .send(json!({"to": "0812345678", "body": "retry me"}))
        .await;
    let id = id_of(&body);

    let retrying = app
        .wait_for_status(&id, "retrying", Duration::from_secs(5))
        .await;
    assert!(
        retrying["last_error"]
            .as_str()
            .unwrap()
            .contains(expected_error),
        "{retrying}"
    );
    let next = chrono::DateTime::parse_from_rfc3339(retrying["next_attempt_at"].as_str().unwrap())
        .unwrap();
    let job_run_at = app.job_of(&id).await.run_at;
    assert_eq!(
        job_run_at.timestamp_millis(),
        next.timestamp_millis(),
        "the backoff is persisted on the job"
    );

    let sent = app
        .wait_for_status(&id, "sent", Duration::from_secs(6))
        .await;
    assert_eq!(sent["attempts"], 2);
    assert!(sent["last_error"].is_null());
    let starts = attempt_starts(&app, &id).await;
    assert_eq!(starts.len(), 2);
    let waited = (starts[1] - starts[0]).to_std().unwrap();
    // SEND_BACKOFF_BASE_SECS=1 with jitter in [base/2, base].
    assert!(
        waited >= Duration::from_millis(450),
        "backoff was {waited:?}"
    );
    assert_eq!(app.gateway.calls().await, 2);
}

#[tokio::test]
async fn a_500_is_retried_after_a_backoff_and_then_sent() {
    retried_once_then_sent(
        gateway_error(500, json!({"success": false, "message": "internal"})),
        "500",
    )
    .await;
}

#[tokio::test]
async fn success_false_is_retried_after_a_backoff_and_then_sent() {
    retried_once_then_sent(
        gateway_error(200, json!({"success": false, "message": "device offline"})),
        "device offline",
    )
    .await;
}

#[tokio::test]
async fn a_429_is_snoozed_until_retry_after_without_spending_an_attempt() {
    let app = TestApp::spawn().await;
    app.gateway
        .respond_times(
            gateway_error(429, json!({"success": false, "message": "slow down"}))
                .insert_header("Retry-After", "2"),
            1,
        )
        .await;
    let (_, body) = app.send(json!({"to": "0812345678", "body": "slow"})).await;
    let id = id_of(&body);
    let sent = app
        .wait_for_status(&id, "sent", Duration::from_secs(10))
        .await;
    assert_eq!(sent["attempts"], 1, "the 429 cost no attempt: {sent}");
    let starts = attempt_starts(&app, &id).await;
    assert_eq!(starts.len(), 2, "both calls are in the history");
    let gap = (starts[1] - starts[0]).num_milliseconds();
    assert!(gap >= 2_000, "nothing before Retry-After: {gap} ms");
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM message_attempts WHERE message_id = $1::uuid ORDER BY started_at",
    )
    .bind(&id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(outcomes, ["snoozed", "sent"]);
    let job = app.job_of(&id).await;
    assert_eq!((job.status.as_str(), job.attempts), ("Done", 1));
}

#[tokio::test]
async fn a_permanent_4xx_fails_after_one_call() {
    let app = TestApp::spawn().await;
    app.gateway
        .respond_times(
            gateway_error(400, json!({"success": false, "message": "invalid number"})),
            10,
        )
        .await;
    let (_, body) = app.send(json!({"to": "0812345678", "body": "bad"})).await;
    let id = id_of(&body);
    let failed = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid number"),
        "{failed}"
    );
    assert_eq!(
        failed["gateway_response"]["message"], "invalid number",
        "the gateway's message is kept"
    );
    // Finished for good: no retry is scheduled.
    let job = app.job_of(&id).await;
    assert_eq!((job.status.as_str(), job.attempts), ("Killed", 1));
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.calls().await, 1);
}

#[tokio::test]
async fn exhausted_attempts_fail_the_message_and_stop_calling() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SEND_MAX_ATTEMPTS", "3".into())],
        ..Default::default()
    })
    .await;
    app.gateway
        .respond_times(
            gateway_error(503, json!({"success": false, "message": "down"})),
            100,
        )
        .await;
    let (_, body) = app.send(json!({"to": "0812345678", "body": "never"})).await;
    let id = id_of(&body);
    let failed = app
        .wait_for_status(&id, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(failed["attempts"], 3);
    // Finished for good: no fourth attempt is scheduled.
    let job = app.job_of(&id).await;
    assert_eq!((job.status.as_str(), job.attempts), ("Killed", 3));
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.calls().await, 3);
    assert_eq!(app.outcomes(&id).await, ["retry", "retry", "failed"]);
}

#[tokio::test]
async fn a_timeout_is_ambiguous_and_fails_when_ambiguous_retries_are_off() {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SEND_RETRY_AMBIGUOUS", "false".into()),
            ("STARSENDER_TIMEOUT_SECS", "1".into()),
        ],
        ..Default::default()
    })
    .await;
    app.gateway
        .respond_times(
            ResponseTemplate::new(200)
                .set_body_json(json!({"success": true}))
                .set_delay(Duration::from_secs(3)),
            10,
        )
        .await;
    let (_, body) = app.send(json!({"to": "0812345678", "body": "slow"})).await;
    let failed = app
        .wait_for_status(&id_of(&body), "failed", Duration::from_secs(6))
        .await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("may have been delivered"),
        "{failed}"
    );
    assert_eq!(app.gateway.calls().await, 1);
}

#[tokio::test]
async fn a_timeout_is_retried_when_ambiguous_retries_are_on() {
    let app = TestApp::spawn_with(Options {
        env: vec![("STARSENDER_TIMEOUT_SECS", "1".into())],
        ..Default::default()
    })
    .await;
    app.gateway
        .respond_times(
            ResponseTemplate::new(200)
                .set_body_json(json!({"success": true}))
                .set_delay(Duration::from_secs(3)),
            1,
        )
        .await;
    let (_, body) = app
        .send(json!({"to": "0812345678", "body": "slow once"}))
        .await;
    let sent = app
        .wait_for_status(&id_of(&body), "sent", Duration::from_secs(8))
        .await;
    assert_eq!(sent["attempts"], 2);
    assert_eq!(app.outcomes(&id_of(&body)).await, ["ambiguous", "sent"]);
}

#[tokio::test]
async fn a_message_found_sending_is_treated_as_ambiguous() {
    // A previous attempt died mid-call: the row says `sending`. With ambiguous retries off the
    // next run must not call the gateway again.
    let app = TestApp::spawn_with(Options {
        env: vec![("SEND_RETRY_AMBIGUOUS", "false".into())],
        role: bengkel_whatsapp::app::ProcessRole::Api,
        ..Default::default()
    })
    .await;
    let (_, body) = app
        .send(json!({"to": "0812345678", "body": "interrupted"}))
        .await;
    let id = id_of(&body);
    sqlx::query("UPDATE messages SET status = 'sending', attempts = 1 WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let mut env = crate::helpers::env_for(&app.db, &app.gateway);
    env.insert("SEND_RETRY_AMBIGUOUS".into(), "false".into());
    let config = std::sync::Arc::new(bengkel_whatsapp::config::Config::from_map(&env).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let worker = bengkel_whatsapp::app::start(
        config,
        bengkel_whatsapp::app::ProcessRole::Worker,
        app.db.pool.clone(),
        listener,
        &bengkel_whatsapp::config::Secret::new(crate::helpers::JWT_SECRET),
    )
    .await
    .unwrap();
    let failed = app
        .wait_for_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("may have been delivered"),
        "{failed}"
    );
    assert_eq!(app.gateway.calls().await, 0);
    worker.stop().await.unwrap();
}
