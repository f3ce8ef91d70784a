//! What the hostile probe of the newer routes found in the send path (issue 17, item 9): client
//! tokens reach only their own messages, a batch's idempotency fingerprint is a hash, and a send
//! run that panics gives its job back.

use std::time::Duration;

use bengkel_whatsapp::{
    app::ProcessRole,
    config::{Config, Secret},
    gateway::{Gateway, StarSender},
    http::auth::Role,
    messages::{context::SendContext, job},
    policy::Policy,
    queue::{Run, pause::Pauses, rescue::Process},
};
use serde_json::json;

use crate::helpers::{Options, TestApp, id_of, ops_token, token};

fn as_token(req: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    req.bearer_auth(token)
}

#[tokio::test]
async fn a_client_reads_lists_and_cancels_only_its_own_messages() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        ..Options::default()
    })
    .await;
    let (status, body) = app
        .send(json!({"to": "0812 5500 001", "body": "Mobil Anda sudah siap"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    let other = token("another-client", Role::Client, Duration::from_secs(600));
    let url = |path: &str| format!("{}{path}", app.base);

    // Another client: as if the message did not exist.
    let (status, body) = app
        .call(as_token(
            app.http.get(url(&format!("/whatsapp/messages/{id}"))),
            &other,
        ))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["success"], false);
    let (status, body) = app
        .call(as_token(app.http.get(url("/whatsapp/messages")), &other))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["items"], json!([]), "{body}");
    let (status, _) = app
        .call(as_token(
            app.http
                .post(url(&format!("/whatsapp/messages/{id}/cancel"))),
            &other,
        ))
        .await;
    assert_eq!(status, 404);
    assert_eq!(app.message(&id).await["status"], "queued", "not cancelled");

    // Its owner sees it in its list and reads it; ops sees everyone's.
    let (status, body) = app.call(app.get("/whatsapp/messages")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["items"][0]["id"], id.as_str(), "{body}");
    let (status, _) = app.call(app.get(&format!("/whatsapp/messages/{id}"))).await;
    assert_eq!(status, 200);
    let (status, body) = app
        .call(as_token(
            app.http.get(url("/whatsapp/messages")),
            &ops_token(),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["items"][0]["id"], id.as_str(), "{body}");

    // And the owner may cancel it.
    let (status, body) = app
        .call(app.post(&format!("/whatsapp/messages/{id}/cancel")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");
}

#[tokio::test]
async fn a_batch_key_keeps_a_hash_of_the_request_not_the_request() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        ..Options::default()
    })
    .await;
    let long = "x".repeat(4_000);
    let items: Vec<_> = (0..50)
        .map(|i| json!({"to": format!("0812 5501 {i:03}"), "body": long}))
        .collect();
    let batch = json!({ "messages": items });
    let post = |body: &serde_json::Value| {
        app.post("/whatsapp/send-batch")
            .header("Idempotency-Key", "batch-hash-1")
            .json(body)
    };
    let (status, first) = app.call(post(&batch)).await;
    assert_eq!(status, 202, "{first}");
    let stored: String = sqlx::query_scalar("SELECT request_fingerprint FROM send_batches")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 64, "a SHA-256 in hex, not the 200 kB body");
    assert!(stored.chars().all(|c| c.is_ascii_hexdigit()));
    // The hash still tells the same request from another.
    let (status, again) = app.call(post(&batch)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["batch_id"], first["data"]["batch_id"]);
    let mut changed = batch.clone();
    changed["messages"][3]["body"] = json!("y");
    let (status, _) = app.call(post(&changed)).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn a_send_run_that_panics_gives_its_job_back() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        ..Options::default()
    })
    .await;
    let (status, body) = app.send(json!({"to": "0812 5502 001", "body": "hi"})).await;
    assert_eq!(status, 202, "{body}");
    let job_id = app.message(&id_of(&body)).await["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // As a worker that fetched it holds it.
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name) VALUES ('w1', 'whatsapp-send', 'test')",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Running', lock_by = 'w1', lock_at = now() WHERE id = $1",
    )
    .bind(&job_id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let ctx = send_context(&app);
    let run = Run {
        job_id: job_id.clone(),
        worker: "w1".into(),
        fetched_attempts: 0,
    };
    let result = job::guarded(&ctx, run, |_, _| async { panic!("a run that panics") }).await;
    assert!(result.is_ok(), "{result:?}");
    let (status, lock_by, wait, result): (String, Option<String>, f64, serde_json::Value) =
        sqlx::query_as(
            "SELECT status, lock_by, extract(epoch FROM run_at - now())::float8, last_result
             FROM apalis.jobs WHERE id = $1",
        )
        .bind(&job_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "Pending", "back in the queue, not held by the run");
    assert_eq!(lock_by, None);
    assert!((20.0..=31.0).contains(&wait), "snoozed ~30 s, got {wait}");
    assert_eq!(result, json!({"Snoozed": "send run panicked"}));
    assert_eq!(
        app.message(&id_of(&body)).await["attempts"],
        0,
        "no attempt spent"
    );
}

/// A send context of this test's own, as a worker process builds it.
fn send_context(app: &TestApp) -> std::sync::Arc<SendContext> {
    let env = crate::helpers::env_for(&app.db, &app.gateway);
    let config = Config::from_map(&env).unwrap();
    let pool = app.db.pool.clone();
    let gateway = Gateway::StarSender(
        StarSender::new(
            app.gateway.url(),
            Secret::new("key"),
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    let policy = Policy::new(pool.clone(), config.app_timezone);
    let workers = bengkel_whatsapp::queue::Workers {
        process: Process::new(),
        wakeups: Default::default(),
        pool: pool.clone(),
    };
    SendContext::new(pool, &workers, &config, gateway, Pauses::default(), policy)
}

/// apalis drops a run's handler when its worker stops under it (a database outage): the run
/// goes on, and its job must stay in flight — not released to run (and send) again — until
/// the run has recorded its outcome. (A change that released it with the handler sent a
/// message twice in the outage drill.)
#[tokio::test]
async fn a_run_stays_in_flight_after_apalis_drops_its_handler() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        ..Options::default()
    })
    .await;
    let ctx = send_context(&app);
    let run = Run {
        job_id: "01JOBINFLIGHT".into(),
        worker: "w1".into(),
        fetched_attempts: 0,
    };
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let handler = {
        let ctx = ctx.clone();
        let run = run.clone();
        tokio::spawn(async move {
            job::guarded(&ctx, run, |_, _| async move {
                let _ = finished.await;
                Ok(())
            })
            .await
        })
    };
    while !ctx.process.is_in_flight(&run.job_id) {
        tokio::task::yield_now().await;
    }
    handler.abort();
    let _ = handler.await;
    assert!(
        ctx.process.is_in_flight(&run.job_id),
        "released while its run was still going"
    );
    finish.send(()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ctx.process.is_in_flight(&run.job_id) {
        assert!(std::time::Instant::now() < deadline, "never released");
        tokio::task::yield_now().await;
    }
}
