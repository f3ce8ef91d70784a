//! Real faults while real worker processes drain: the database goes away mid-drain, a worker is
//! killed with SIGKILL. Counted at the gateway, per message.

use std::time::{Duration, Instant};

use bengkel_whatsapp::app::ProcessRole;
use serde_json::json;
use sqlx::Connection;

use crate::{
    helpers::{Options, RealProcess, Recorder, TestApp, admin_url, id_of, ready, wait_until},
    queue::finished_jobs_of_unfinished_messages,
};

async fn enqueue(app: &TestApp, n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (status, body) = app
            .send(json!({"to": "0812 3456 789", "body": format!("{tag} {i}")}))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(id_of(&body));
    }
    ids
}

/// The test database is unreachable for `outage`: new connections refused, every existing one
/// terminated (again and again, as a stopped server would), then allowed back.
async fn database_outage(name: &str, outage: Duration) {
    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let until = Instant::now() + outage;
    while Instant::now() < until {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .execute(&mut admin)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_database_outage_mid_drain_loses_nothing_sends_nothing_twice_and_resumes_at_once() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        gateway_ok: false,
        processes: 2,
        ..Options::default()
    })
    .await;
    let gateway = Recorder::mount_slow(&app, Duration::from_millis(150)).await;
    let ids = enqueue(&app, 240, "outage").await;
    let _w1 = RealProcess::start(&app, "worker");
    let _w2 = RealProcess::start(&app, "worker");
    wait_until(Duration::from_secs(30), async || {
        let calls = gateway.count();
        ready(calls >= 40, || {
            format!("the workers did not start sending ({calls} calls)")
        })
    })
    .await;

    // Longer than any retry budget a writer could have, as a stopped server would be.
    database_outage(&app.db.name, Duration::from_secs(20)).await;
    let back = Instant::now();

    app.wait_all_sent(Duration::from_secs(60)).await;
    let resumed = gateway
        .first_call_after(back)
        .expect("calls after the database came back");
    let twice: Vec<(String, usize)> = gateway
        .per_body()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert_eq!(twice, vec![], "no message reaches the gateway twice");
    assert_eq!(gateway.count(), ids.len(), "every message once");
    assert!(
        resumed - back < Duration::from_millis(1500),
        "sending resumed {:?} after the database came back",
        resumed - back
    );
    assert_eq!(finished_jobs_of_unfinished_messages(&app).await, vec![]);
    eprintln!(
        "sending resumed {:?} after the database came back",
        resumed - back
    );
}

#[tokio::test]
async fn a_killed_workers_jobs_are_picked_up_within_fifteen_seconds() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        gateway_ok: false,
        processes: 2,
        ..Options::default()
    })
    .await;
    // Slow calls, so that the worker to be killed is holding jobs when it dies.
    let gateway = Recorder::mount_slow(&app, Duration::from_millis(1500)).await;
    // The survivor has been alive (and beating) from the start.
    let _survivor = app.another_process(ProcessRole::Worker).await;
    let mut victim = RealProcess::start(&app, "worker");
    let ids = enqueue(&app, 30, "kill").await;

    // Wait until the victim holds jobs, then kill it.
    let held_by_victim = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT j.id FROM apalis.jobs j JOIN queue_processes p
               ON p.id = split_part(split_part(j.lock_by, '@', 2), '.', 1)
             WHERE j.status IN ('Queued', 'Running') AND p.pid = $1",
        )
        .bind(victim.pid() as i32)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
    };
    let held = wait_until(Duration::from_secs(30), async || {
        let held = held_by_victim().await;
        if held.is_empty() {
            Err("the victim never held a job")
        } else {
            Ok(held)
        }
    })
    .await;
    victim.kill_9();
    let killed = Instant::now();

    // Each job the victim held is back in the queue (or already taken again) within 15 s.
    let victim_id: String = sqlx::query_scalar("SELECT id FROM queue_processes WHERE pid = $1")
        .bind(victim.pid() as i32)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let since_kill = Duration::from_secs(15).saturating_sub(killed.elapsed());
    wait_until(since_kill, async || {
        let still: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs j
             WHERE j.id = ANY($1) AND j.status IN ('Queued', 'Running')
               AND split_part(split_part(j.lock_by, '@', 2), '.', 1) = $2",
        )
        .bind(&held)
        .bind(&victim_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        ready(still == 0, || {
            format!("{still} job(s) of the killed worker still held 15 s after the kill")
        })
    })
    .await;
    let picked_up = killed.elapsed();

    app.wait_all_sent(Duration::from_secs(60)).await;
    let per_body = gateway.per_body();
    assert_eq!(
        per_body.len(),
        ids.len(),
        "every message reached the gateway"
    );
    // Only a send that was at the gateway when its worker died may go out again (ambiguous).
    let twice = per_body.values().filter(|n| **n > 1).count();
    assert!(
        twice <= held.len() && per_body.values().all(|n| *n <= 2),
        "{twice} sent twice, {} held by the killed worker",
        held.len()
    );
    assert_eq!(finished_jobs_of_unfinished_messages(&app).await, vec![]);
    eprintln!(
        "orphans picked up {picked_up:?} after the kill ({} held)",
        held.len()
    );
}
