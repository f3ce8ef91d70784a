//! Campaigns yield to every other send (README "Delivery policy": campaigns yield): the fetch
//! takes single jobs first and gives a worker at most half its slots of campaign jobs; the
//! throttle hands its slots to single runs first.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use bengkel_whatsapp::{
    app::ProcessRole,
    messages::{Kind, phone::PhoneNumber, request::NewMessage, store},
    queue::SEND_QUEUE,
};
use serde_json::json;

use crate::{
    helpers::{Options, TestApp, ready, wait_until},
    throttle::rate_limited_app,
};

/// Stores `n` campaign messages, each to its own number, bodies `campaign {i}`.
async fn queue_campaign(app: &TestApp, n: usize) {
    let batch: Vec<NewMessage> = (0..n)
        .map(|i| {
            let to = PhoneNumber::parse(&format!("0812{i:07}")).unwrap();
            NewMessage::internal(Kind::Campaign, to, format!("campaign {i}"), None)
        })
        .collect();
    let items: Vec<store::Item<'_>> = batch.iter().map(|m| store::Item::new(m, "test")).collect();
    let mut tx = app.db.pool.begin().await.unwrap();
    store::store(&mut tx, &items, None, 3).await.unwrap();
    tx.commit().await.unwrap();
}

fn arrivals_of(log: &Mutex<Vec<(Instant, String)>>, prefix: &str) -> Vec<Instant> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(_, body)| body.starts_with(prefix))
        .map(|(at, _)| *at)
        .collect()
}

/// The arrivals of `prefix` calls once there are `n` (each noted by the gateway as it came, so
/// how often this looks does not move them).
async fn wait_arrivals(
    log: &Mutex<Vec<(Instant, String)>>,
    prefix: &str,
    n: usize,
    within: Duration,
) -> Vec<Instant> {
    wait_until(within, async || {
        let seen = arrivals_of(log, prefix);
        let count = seen.len();
        ready(count >= n, || format!("{count}/{n} `{prefix}` calls")).map(|_| seen)
    })
    .await
}

#[tokio::test]
async fn single_sends_overtake_a_campaign_backlog_by_one_slot_at_most_and_the_campaign_goes_on() {
    // 5/s, burst 1: a slot every 200 ms. 8 slots: at most 4 hold campaign jobs.
    let (app, log) = rate_limited_app().await;
    queue_campaign(&app, 80).await;
    // The campaign goes at the rate while nothing else waits.
    let early = wait_arrivals(&log, "campaign", 6, Duration::from_secs(10)).await;
    let span = early[5].duration_since(early[0]);
    assert!(
        span <= Duration::from_millis(1_400),
        "6 campaign calls took {span:?} at 5/s"
    );

    let t0 = Instant::now();
    for i in 0..3 {
        let (status, _) = app
            .send(json!({"to": format!("0813000000{i}"), "body": format!("single {i}")}))
            .await;
        assert_eq!(status, 202);
    }
    let mut singles = wait_arrivals(&log, "single", 3, Duration::from_secs(10)).await;
    singles.sort();
    let first = singles[0].duration_since(t0);
    let last = singles[2].duration_since(t0);
    // The next slot (200 ms at most), the requests and the run's own work: never behind the
    // campaign runs that wait in the slots (4 of them: 800 ms).
    assert!(
        first <= Duration::from_millis(500),
        "the first single send reached the gateway after {first:?}"
    );
    assert!(
        last <= Duration::from_millis(950),
        "the third single send reached the gateway after {last:?}"
    );
    let overtaken = arrivals_of(&log, "campaign")
        .into_iter()
        .filter(|at| *at > t0 && *at < singles[2])
        .count();
    assert!(
        overtaken <= 1,
        "{overtaken} campaign calls went while single sends waited"
    );

    // And the campaign goes on at the rate afterwards.
    let before = arrivals_of(&log, "campaign").len();
    let later = wait_arrivals(&log, "campaign", before + 6, Duration::from_secs(5)).await;
    let mut later: Vec<Instant> = later.into_iter().filter(|at| *at > singles[2]).collect();
    later.sort();
    assert!(later.len() >= 6);
    let span = later[5].duration_since(later[0]);
    assert!(
        span <= Duration::from_millis(1_400),
        "6 campaign calls took {span:?} after the single sends"
    );

    // Waiting for a slot, or not being fetched at all, costs a campaign message nothing.
    let charged: i64 = app
        .count(
            "SELECT count(*) FROM messages WHERE kind = 'campaign'
             AND ((status = 'sent' AND attempts <> 1) OR (status = 'queued' AND attempts <> 0))",
        )
        .await;
    assert_eq!(charged, 0);
    let waiting: i64 = app
        .count(
            "SELECT count(*) FROM apalis.jobs j JOIN messages m ON m.job_id = j.id
             WHERE m.kind = 'campaign' AND j.status = 'Pending' AND j.attempts = 0
               AND j.priority = -1",
        )
        .await;
    assert!(waiting > 0, "campaign jobs wait in the queue, unspent");
}

/// The fetch itself (`apalis.get_jobs`), with no worker running: single jobs first, and a
/// worker holds at most half its batch of campaign jobs.
#[tokio::test]
async fn a_worker_fetches_single_jobs_first_and_at_most_half_its_slots_of_campaign_jobs() {
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        ..Default::default()
    })
    .await;
    queue_campaign(&app, 10).await;
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name)
         VALUES ('w1', 'whatsapp-send', 'test'), ('w2', 'whatsapp-send', 'test')",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let fetch = async |worker: &str| -> Vec<i32> {
        sqlx::query_scalar("SELECT priority FROM apalis.get_jobs($1, $2, 8)")
            .bind(worker)
            .bind(SEND_QUEUE)
            .fetch_all(&app.db.pool)
            .await
            .unwrap()
    };
    assert_eq!(fetch("w1").await, vec![-1; 4], "half of 8 slots");
    assert_eq!(fetch("w1").await, Vec::<i32>::new(), "w1 holds its half");
    assert_eq!(
        fetch("w2").await,
        vec![-1; 4],
        "another worker has its own half"
    );
    for i in 0..3 {
        let (status, _) = app
            .send(json!({"to": format!("0813000000{i}"), "body": format!("single {i}")}))
            .await;
        assert_eq!(status, 202);
    }
    assert_eq!(
        fetch("w1").await,
        vec![0; 3],
        "single jobs, however full w1 is of campaign"
    );
    // w1 settles two of its campaign jobs: room for two more.
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Done', lock_by = NULL
         WHERE id IN (SELECT id FROM apalis.jobs WHERE lock_by = 'w1' AND priority = -1 LIMIT 2)",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(fetch("w1").await, vec![-1; 2]);
    let unspent: i64 = app
        .count("SELECT count(*) FROM apalis.jobs WHERE status = 'Pending' AND attempts = 0")
        .await;
    assert_eq!(unspent, 0, "all 10 campaign jobs were fetched by now");
}
