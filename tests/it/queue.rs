//! The queue's own guarantees: a job handed back (paused queue) can never be finished by a stale
//! acknowledgement, and no job is finished while its message is not.

use std::time::Duration;

use bengkel_whatsapp::app::ProcessRole;
use serde_json::json;

use crate::helpers::{
    Options, RealProcess, TestApp, gateway_error, id_of, ops_token, ready, wait_until,
};

/// Jobs that apalis calls finished (`Done`/`Killed`) while their message is still waiting or
/// sending: accepted with 202, never delivered, invisible. Must always be empty.
pub async fn finished_jobs_of_unfinished_messages(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT m.id::text, m.status, j.status FROM messages m JOIN apalis.jobs j ON j.id = m.job_id
         WHERE j.status IN ('Done', 'Killed') AND m.status IN ('queued', 'sending', 'retrying')",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("invariant query")
}

#[tokio::test]
async fn messages_accepted_while_paused_are_all_sent_after_many_pause_resume_cycles() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        processes: 1,
        ..Options::default()
    })
    .await;
    let _worker = app.another_process(ProcessRole::Worker).await;
    let ops = ops_token();
    let post = |path: &str| {
        app.http
            .post(format!("{}{path}", app.base))
            .bearer_auth(&ops)
    };
    let mut all = Vec::new();
    for cycle in 0..12 {
        let (status, _) = app.call(post("/ops/queues/whatsapp-send/pause")).await;
        assert_eq!(status, 200);
        let mut ids = Vec::new();
        for i in 0..6 {
            let (status, body) = app
                .send(json!({"to": "0812 3456 789", "body": format!("cycle {cycle} message {i}")}))
                .await;
            assert_eq!(status, 202, "{body}");
            ids.push(id_of(&body));
        }
        // The worker reads which queues are paused every 250 ms, and no job or table shows when
        // it has: let it see this pause, so that after the resume it hands back what it takes
        // before it sees the resume — the runs whose stale acknowledgements must not count.
        tokio::time::sleep(bengkel_whatsapp::queue::pause::REFRESH + Duration::from_millis(50))
            .await;
        let (status, _) = app.call(post("/ops/queues/whatsapp-send/resume")).await;
        assert_eq!(status, 200);
        for id in &ids {
            let m = app
                .wait_for_status(id, "sent", Duration::from_secs(15))
                .await;
            assert_eq!(m["attempts"], 1, "cycle {cycle}: {m}");
        }
        assert_eq!(finished_jobs_of_unfinished_messages(&app).await, vec![]);
        all.extend(ids);
    }
    app.wait_idle(Duration::from_secs(10)).await;
    assert_eq!(
        app.gateway.calls().await,
        all.len(),
        "each message sent once"
    );
}

#[tokio::test]
async fn the_attempt_limit_stored_with_the_job_wins_over_the_workers_setting() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        gateway_ok: false,
        processes: 1,
        env: vec![("SEND_MAX_ATTEMPTS", "2".into())],
    })
    .await;
    app.gateway
        .respond_times(
            gateway_error(500, json!({"success": false, "message": "down"})),
            100,
        )
        .await;
    let (status, body) = app
        .send(json!({"to": "0812 3456 789", "body": "limited"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    let _worker = RealProcess::start_with(&app, "worker", &[("SEND_MAX_ATTEMPTS", "4")]);
    let m = app
        .wait_for_status(&id, "failed", Duration::from_secs(30))
        .await;
    assert_eq!(m["attempts"], 2, "{m}");
    // Finished for good: no worker takes the job again, whatever its own limit.
    let job = app.job_of(&id).await;
    assert_eq!((job.status.as_str(), job.attempts), ("Killed", 2));
    app.wait_idle(Duration::from_secs(10)).await;
    assert_eq!(app.gateway.calls().await, 2, "no third attempt");
}

#[tokio::test]
async fn a_worker_never_opens_more_connections_than_its_budget() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        // one worker with DB_MAX_CONNECTIONS=8: two processes' share
        processes: 2,
        ..Options::default()
    })
    .await;
    for i in 0..300 {
        let (status, _) = app
            .send(json!({"to": "0812 3456 789", "body": format!("budget {i}")}))
            .await;
        assert_eq!(status, 202);
    }
    let worker = RealProcess::start_with(
        &app,
        "worker",
        &[("WORKER_CONCURRENCY", "16"), ("DB_MAX_CONNECTIONS", "8")],
    );
    let name = format!("bengkel-whatsapp/{}", worker.pid());
    let mut most = 0i64;
    wait_until(Duration::from_secs(60), async || {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&name)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        most = most.max(open);
        let unsent = app
            .count("SELECT count(*) FROM messages WHERE status <> 'sent'")
            .await;
        ready(unsent == 0, || format!("{unsent} not sent"))
    })
    .await;
    assert!(most >= 3, "the worker was seen connected ({most})");
    assert!(most <= 8, "{most} connections open, DB_MAX_CONNECTIONS=8");
}

#[tokio::test]
async fn a_budget_too_small_for_a_worker_stops_start_up_naming_the_variable() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        ..Options::default()
    })
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bengkel-whatsapp"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&app.env)
        .env("DB_MAX_CONNECTIONS", "4")
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DB_MAX_CONNECTIONS"), "{stderr}");
}
