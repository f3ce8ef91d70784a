//! Waiting for what a test can observe, never for a guessed stretch of time: a test that sleeps
//! is slow where the machine is fast and flaky where it is slow.

use std::{
    fmt::Display,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{TestApp, TestDb, id_of};

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(25);

/// Looks at `check` until it answers `Ok` (whose value is returned), at least once and for at
/// most `within`; then panics with what the last look answered (`Err`: why not yet).
pub async fn wait_until<T, E: Display>(
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(why) => assert!(Instant::now() < deadline, "not within {within:?}: {why}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Ok` when `done`, else why not (for [`wait_until`] on a plain condition).
pub fn ready(done: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if done { Ok(()) } else { Err(why()) }
}

impl TestDb {
    /// [`TestApp::wait_idle`], for a test that runs only processes of its own.
    pub async fn wait_idle(&self, within: Duration) {
        wait_until(within, async || {
            let (busy, sending): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM apalis.jobs
                         WHERE job_type = 'whatsapp-send'
                           AND (status IN ('Queued', 'Running')
                                OR (status = 'Pending'
                                    OR (status = 'Failed' AND attempts < max_attempts))
                                   AND run_at <= now())),
                        (SELECT count(*) FROM messages WHERE status = 'sending')",
            )
            .fetch_one(&self.pool)
            .await
            .expect("the send queue's state");
            ready(busy + sending == 0, || {
                format!("{busy} send job(s) due or running, {sending} message(s) sending")
            })
        })
        .await;
    }
}

impl TestApp {
    /// Waits until no send can happen now: no send job is fetched or running, none is due, no
    /// message is `sending`. What the gateway has seen by then is all it will see until a job
    /// scheduled for later comes due (a retry, a delay, a snooze) — a test that expects none
    /// checks the jobs' states. Not for a paused queue, whose due jobs stay due.
    pub async fn wait_idle(&self, within: Duration) {
        self.db.wait_idle(within).await;
    }

    /// Sends a message to a number of its own and waits until it is delivered and the queue is
    /// idle: the workers have run since everything due before it, so whatever the gateway has
    /// not seen by then was not sent. Returns its id.
    pub async fn deliver_control(&self) -> String {
        let (status, body) = self
            .send(json!({"to": "0812 9999 0000", "body": "control"}))
            .await;
        assert_eq!(status, 202, "{body}");
        let id = id_of(&body);
        self.wait_for_status(&id, "sent", Duration::from_secs(10))
            .await;
        self.wait_idle(Duration::from_secs(10)).await;
        id
    }

    /// Waits until no worker holds the job of an unsent message (each is back in the queue,
    /// snoozed or waiting for its retry) and no message is `sending`: on a paused or held queue,
    /// which hands out no job, nothing can reach the gateway after that.
    pub async fn wait_handed_back(&self, within: Duration) {
        wait_until(within, async || {
            let held: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT m.id::text, m.status, j.status FROM messages m
                 JOIN apalis.jobs j ON j.id = m.job_id
                 WHERE m.status = 'sending'
                    OR m.status IN ('queued', 'retrying') AND j.status IN ('Queued', 'Running')",
            )
            .fetch_all(&self.db.pool)
            .await
            .expect("the unsent messages' jobs");
            ready(held.is_empty(), || {
                format!("held by a worker (message, its status, its job's): {held:?}")
            })
        })
        .await;
    }
}
