//! Waiting for what a test can observe, never for a guessed stretch of time: a test that sleeps
//! is slow where the machine is fast and flaky where it is slow.

use std::{
    fmt::Display,
    time::{Duration, Instant},
};

use super::TestApp;

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

impl TestApp {
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
