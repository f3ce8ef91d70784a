//! Operations: ops API, pause/resume, purge, retention (SPEC §8).

use std::{collections::HashSet, time::Duration};

use bengkel_whatsapp::app::ProcessRole;
use serde_json::{Value, json};
use wiremock::{Mock, ResponseTemplate, matchers};

use crate::helpers::{
    Options, TestApp, TestDb, gateway_error, id_of, ops_call, ops_get, ops_post, ready, wait_until,
};

async fn send(app: &TestApp, to: &str, body: &str) -> String {
    let (status, res) = app.send(json!({"to": to, "body": body})).await;
    assert_eq!(status, 202, "{res}");
    id_of(&res)
}

fn queue<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == name)
        .unwrap_or_else(|| panic!("no {name} in {queues}"))
}

async fn job_id(app: &TestApp, message_id: &str) -> String {
    app.message(message_id).await["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn ops_needs_a_token_with_the_ops_role() {
    let app = TestApp::spawn().await;
    for path in ["/ops/queues", "/ops/jobs"] {
        let (status, _) = app.call(app.http.get(format!("{}{path}", app.base))).await;
        assert_eq!(status, 401, "{path} without a token");
        let (status, _) = app.call(app.get(path)).await;
        assert_eq!(status, 403, "{path} with a client token");
        assert_eq!(
            ops_call(&app, reqwest::Method::GET, path, None).await.0,
            200
        );
    }
    let (status, _) = app
        .call(app.post("/ops/purge").json(&json!({"older_than_days": 1})))
        .await;
    assert_eq!(status, 403);
    let page = app
        .http
        .get(format!("{}/ops/ui", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the page itself loads without a token");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "nothing fetched from the internet"
    );
}

#[tokio::test]
async fn queue_counts_match_what_was_sent_and_failed() {
    let app = TestApp::spawn().await;
    Mock::given(matchers::body_partial_json(json!({"to": "6281999999999"})))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"success": false, "message": "invalid number"})),
        )
        .with_priority(1)
        .mount(&app.gateway.server)
        .await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(send(&app, "0812 3456 789", &format!("ok {i}")).await);
    }
    let bad = send(&app, "0819 9999 9999", "bad").await;
    let (_, scheduled) = app
        .send(json!({"to": "0812 3456 789", "body": "later", "delay": 3600}))
        .await;
    for id in &sent {
        app.wait_for_status(id, "sent", Duration::from_secs(10))
            .await;
    }
    app.wait_for_status(&bad, "failed", Duration::from_secs(10))
        .await;
    // apalis acknowledges finished jobs a moment after the outcome is recorded.
    let queues = wait_until(Duration::from_secs(10), async || {
        let queues = ops_get(&app, "/ops/queues").await;
        let q = queue(&queues, "whatsapp-send");
        if q["counts"]["done"] == 3 && q["counts"]["failed"] == 1 {
            Ok(queues)
        } else {
            Err(format!("not settled: {q}"))
        }
    })
    .await;
    assert!(queue(&queues, "reminder-fanout")["counts"].is_object());
    let send_queue = queue(&queues, "whatsapp-send").clone();
    assert_eq!(
        send_queue["counts"],
        json!({"pending": 1, "running": 0, "done": 3, "failed": 1, "cancelled": 0})
    );
    assert_eq!(send_queue["paused"], false);
    assert_eq!(
        send_queue["oldest_pending_age_seconds"], 0.0,
        "a job scheduled for later is not late"
    );

    let failed = ops_get(&app, "/ops/jobs?queue=whatsapp-send&status=failed").await;
    let items = failed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["message_id"], bad.as_str());
    assert_eq!(items[0]["message_status"], "failed");
    assert!(
        items[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid number"),
        "{items:?}"
    );
    let by_message = ops_get(&app, &format!("/ops/jobs?message_id={}", id_of(&scheduled))).await;
    assert_eq!(by_message["items"][0]["status"], "pending");

    let page = ops_get(&app, "/ops/jobs?limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let rest = ops_get(
        &app,
        &format!(
            "/ops/jobs?limit=10&cursor={}",
            page["next_cursor"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        rest["items"].as_array().unwrap().len(),
        3,
        "5 jobs, newest first, no overlap"
    );

    let detail = ops_get(
        &app,
        &format!("/ops/jobs/{}", items[0]["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(detail["payload"], json!({"message_id": bad}));
    assert_eq!(detail["message"]["status"], "failed");
    assert_eq!(
        (detail["attempts"].as_i64(), detail["max_attempts"].as_i64()),
        (Some(1), Some(8))
    );

    let (status, bad_filter) = ops_call(
        &app,
        reqwest::Method::GET,
        "/ops/jobs?status=broken&queue=nope&message_id=1&limit=0",
        None,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        bad_filter["errors"].as_array().unwrap().len(),
        4,
        "{bad_filter}"
    );
    assert_eq!(
        ops_call(&app, reqwest::Method::GET, "/ops/jobs/not-a-job", None)
            .await
            .0,
        404
    );
    assert_eq!(
        ops_call(
            &app,
            reqwest::Method::GET,
            &format!("/ops/jobs/{}", ulid::Ulid::generate()),
            None
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn a_failed_message_is_requeued_by_id_and_in_bulk_and_sent_exactly_once_more() {
    let app = TestApp::spawn().await;
    app.gateway
        .respond_times(
            gateway_error(400, json!({"success": false, "message": "device offline"})),
            2,
        )
        .await;
    let first = send(&app, "0812 1111 1111", "first").await;
    app.wait_for_status(&first, "failed", Duration::from_secs(10))
        .await;
    let second = send(&app, "0812 2222 2222", "second").await;
    app.wait_for_status(&second, "failed", Duration::from_secs(10))
        .await;
    assert_eq!(app.gateway.calls().await, 2);

    let job = job_id(&app, &first).await;
    let (status, requeued) = ops_post(&app, &format!("/ops/jobs/{job}/requeue"), None).await;
    assert_eq!(status, 200, "{requeued}");
    assert_eq!(requeued["data"]["status"], "pending");
    assert_eq!(requeued["data"]["message_status"], "queued");
    let m = app
        .wait_for_status(&first, "sent", Duration::from_secs(10))
        .await;
    assert_eq!(m["attempts"], 1, "fresh attempts");
    let (status, again) = ops_post(&app, &format!("/ops/jobs/{job}/requeue"), None).await;
    assert_eq!(status, 409, "a sent job is not requeued: {again}");

    let (status, bulk) = ops_post(
        &app,
        "/ops/jobs/requeue",
        Some(json!({"queue": "whatsapp-send", "status": "failed"})),
    )
    .await;
    assert_eq!(
        (status, bulk["data"]["requeued"].as_i64()),
        (200, Some(1)),
        "{bulk}"
    );
    app.wait_for_status(&second, "sent", Duration::from_secs(10))
        .await;
    app.wait_idle(Duration::from_secs(5)).await;
    let bodies = app.gateway.sent_field("body").await;
    assert_eq!(
        bodies.iter().filter(|b| *b == "first").count(),
        2,
        "failed once, sent once more"
    );
    assert_eq!(bodies.iter().filter(|b| *b == "second").count(), 2);
    let (_, none) = ops_post(&app, "/ops/jobs/requeue", Some(json!({"status": "failed"}))).await;
    assert_eq!(none["data"]["requeued"], 0);
    let (status, bad) = ops_post(
        &app,
        "/ops/jobs/requeue",
        Some(json!({"status": "done", "failed_after": "yesterday", "limit": 0})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(bad["errors"].as_array().unwrap().len(), 3, "{bad}");
    assert_eq!(
        ops_post(
            &app,
            &format!("/ops/jobs/{}/requeue", ulid::Ulid::generate()),
            None
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn a_pending_job_is_cancelled_with_its_message_and_a_finished_one_is_not() {
    let app = TestApp::spawn().await;
    let (_, later) = app
        .send(json!({"to": "0812 3456 789", "body": "later", "delay": 3600}))
        .await;
    let later = id_of(&later);
    let job = job_id(&app, &later).await;
    let (status, cancelled) = ops_post(&app, &format!("/ops/jobs/{job}/cancel"), None).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(
        (
            cancelled["data"]["status"].as_str(),
            cancelled["data"]["message_status"].as_str()
        ),
        (Some("cancelled"), Some("cancelled"))
    );
    assert_eq!(app.message(&later).await["status"], "cancelled");
    assert_eq!(
        ops_post(&app, &format!("/ops/jobs/{job}/cancel"), None)
            .await
            .0,
        409
    );

    let now = send(&app, "0812 3456 789", "now").await;
    app.wait_for_status(&now, "sent", Duration::from_secs(10))
        .await;
    let done_job = job_id(&app, &now).await;
    wait_until(Duration::from_secs(10), async || {
        let job = ops_get(&app, &format!("/ops/jobs/{done_job}")).await;
        ready(job["status"] == "done", || format!("not done: {job}"))
    })
    .await;
    let (status, conflict) = ops_post(&app, &format!("/ops/jobs/{done_job}/cancel"), None).await;
    assert_eq!(status, 409);
    assert!(conflict["message"].as_str().unwrap().contains("done"));
    assert_eq!(app.message(&now).await["status"], "sent", "nothing changed");

    // A cancelled job can be requeued: it is sent, once.
    let (status, _) = ops_post(&app, &format!("/ops/jobs/{job}/requeue"), None).await;
    assert_eq!(status, 200);
    app.wait_for_status(&later, "sent", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn pausing_on_one_process_stops_another_within_two_seconds_and_resume_sends_each_once() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        env: vec![
            ("SEND_RATE_PER_SECOND", "2".into()),
            ("SEND_BURST", "1".into()),
        ],
        processes: 1,
        ..Options::default()
    })
    .await;
    let _worker = app.another_process(ProcessRole::Worker).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(send(&app, "0812 3456 789", &format!("paused {i}")).await);
    }
    app.gateway.wait_for_calls(2, Duration::from_secs(10)).await;
    let (status, paused) = ops_post(&app, "/ops/queues/whatsapp-send/pause", None).await;
    assert_eq!(
        (status, paused["data"]["paused"].as_bool()),
        (200, Some(true))
    );
    let at_pause = app.gateway.calls().await;
    // Every process stops taking the queue's jobs within 2 s: by then the runs that had jobs
    // before the pause have handed them back (one call at most was already under way).
    app.wait_handed_back(Duration::from_secs(2)).await;
    let handed_back = app.gateway.calls().await;
    assert!(
        handed_back <= at_pause + 1,
        "{at_pause} calls at the pause, {handed_back} when every job was handed back"
    );
    let queues = ops_get(&app, "/ops/queues").await;
    assert_eq!(queue(&queues, "whatsapp-send")["paused"], true);
    for id in &ids {
        let m = app.message(id).await;
        if m["status"] != "sent" {
            assert_eq!(
                (m["status"].as_str(), m["attempts"].as_i64()),
                (Some("queued"), Some(0)),
                "{m}"
            );
            let job = app.job_of(id).await;
            assert_eq!(
                (job.status.as_str(), job.attempts),
                ("Pending", 0),
                "two seconds after the pause every unsent job is back in the queue, no attempt spent"
            );
        }
    }

    // The behaviour under test is time passing: the worker polls the paused queue (every
    // queue::POLL_INTERVAL) five times, its jobs due, and takes nothing.
    tokio::time::sleep(bengkel_whatsapp::queue::POLL_INTERVAL * 5).await;
    assert_eq!(
        app.gateway.calls().await,
        handed_back,
        "nothing is sent while paused"
    );
    let (status, _) = ops_post(&app, "/ops/queues/whatsapp-send/resume", None).await;
    assert_eq!(status, 200);
    for id in &ids {
        let m = app
            .wait_for_status(id, "sent", Duration::from_secs(20))
            .await;
        assert_eq!(m["attempts"], 1, "{m}");
    }
    app.wait_idle(Duration::from_secs(5)).await;
    let bodies: HashSet<String> = app.gateway.sent_field("body").await.into_iter().collect();
    assert_eq!(
        (app.gateway.calls().await, bodies.len()),
        (10, 10),
        "each message sent once"
    );
    assert_eq!(ops_post(&app, "/ops/queues/nope/pause", None).await.0, 404);
}

#[tokio::test]
async fn purge_removes_old_finished_jobs_and_keeps_their_messages() {
    let app = TestApp::spawn().await;
    let old = send(&app, "0812 3456 789", "old").await;
    let recent = send(&app, "0812 3456 789", "recent").await;
    app.wait_for_status(&old, "sent", Duration::from_secs(10))
        .await;
    app.wait_for_status(&recent, "sent", Duration::from_secs(10))
        .await;
    wait_until(Duration::from_secs(10), async || {
        let jobs = [app.job_of(&old).await, app.job_of(&recent).await];
        ready(jobs.iter().all(|j| j.status == "Done"), || {
            format!("not done: {jobs:?}")
        })
    })
    .await;
    sqlx::query("UPDATE apalis.jobs SET done_at = now() - interval '20 days' WHERE id = (SELECT job_id FROM messages WHERE id = $1::uuid)")
        .bind(&old)
        .execute(&app.db.pool)
        .await
        .unwrap();
    for bad in [
        json!({"older_than_days": -1}),
        json!({}),
        json!({"older_than_days": "ten"}),
    ] {
        let (status, body) = ops_post(&app, "/ops/purge", Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let (status, purged) = ops_post(&app, "/ops/purge", Some(json!({"older_than_days": 10}))).await;
    assert_eq!(
        (status, purged["data"]["purged"].as_i64()),
        (200, Some(1)),
        "{purged}"
    );
    assert_eq!(
        app.message(&old).await["status"],
        "sent",
        "the message is kept"
    );
    assert_eq!(app.job_of(&recent).await.status, "Done");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}

/// A process that finds retention not due must let go of its lock at once: it used to leave the
/// transaction to be rolled back whenever its pooled connection was used next, so the lock
/// stayed held and the next check (any process') found it taken and skipped its turn. (Seen as
/// a rare failure of the test below.)
#[tokio::test]
async fn a_retention_check_that_is_not_due_releases_its_lock_at_once() {
    use bengkel_whatsapp::maintenance::retention::run_once;
    let db = TestDb::new().await;
    assert_eq!(run_once(&db.pool, 14).await.unwrap(), Some(0));
    assert_eq!(run_once(&db.pool, 14).await.unwrap(), None, "not due");
    let mut other = db.pool.acquire().await.unwrap();
    for _ in 0..20 {
        let free: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtext('bengkel-whatsapp:retention'))",
        )
        .fetch_one(&mut *other)
        .await
        .unwrap();
        assert!(
            free,
            "the lock is still held by the check that found nothing to do"
        );
        sqlx::query("SELECT pg_advisory_unlock(hashtext('bengkel-whatsapp:retention'))")
            .execute(&mut *other)
            .await
            .unwrap();
        assert_eq!(run_once(&db.pool, 14).await.unwrap(), None, "not due");
    }
}

#[tokio::test]
async fn retention_deletes_only_old_finished_jobs_once_an_hour_in_one_process() {
    let db = TestDb::new().await;
    // (status, last_result, finished days ago): old done and old cancelled go; the rest stay.
    let rows = [
        ("Done", json!({"Ok": null}), 20, true),
        ("Killed", json!({"Err": "cancelled"}), 20, true),
        ("Done", json!({"Ok": null}), 2, false),
        ("Killed", json!({"Err": "permanent"}), 20, false),
        ("Pending", Value::Null, 20, false),
    ];
    for (status, result, days, _) in &rows {
        sqlx::query(
            "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, last_result, done_at, priority)
             VALUES ($1, 'whatsapp-send', '{}'::bytea, $2, 1, 8, now(), $3, CASE WHEN $2 = 'Pending' THEN NULL ELSE now() - make_interval(days => $4) END, 0)",
        )
        .bind(ulid::Ulid::generate().to_string())
        .bind(status)
        .bind(if result.is_null() { None } else { Some(result) })
        .bind(*days)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let runs = futures::future::join_all(
        (0..4).map(|_| bengkel_whatsapp::maintenance::retention::run_once(&db.pool, 14)),
    )
    .await;
    let ran: Vec<u64> = runs.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(
        ran,
        vec![2],
        "one of four concurrent processes ran it and deleted the two old finished jobs"
    );
    assert_eq!(
        bengkel_whatsapp::maintenance::retention::run_once(&db.pool, 14)
            .await
            .unwrap(),
        None,
        "not again within the hour"
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT status FROM apalis.jobs ORDER BY status")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, ["Done", "Killed", "Pending"]);
    sqlx::query("UPDATE maintenance_runs SET last_run_at = now() - interval '61 minutes'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        bengkel_whatsapp::maintenance::retention::run_once(&db.pool, 1)
            .await
            .unwrap(),
        Some(1),
        "an hour later it runs again"
    );
}
