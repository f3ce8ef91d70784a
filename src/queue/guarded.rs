//! The apalis side of a job that settles itself (inbound payloads, webhook deliveries): the run
//! is its own task, in flight in this process until it returns (so that the orphan rescue never
//! takes it from a live process); a run that panics is snoozed, no attempt spent.

use std::future::Future;

use apalis::prelude::BoxDynError;
use chrono::{TimeDelta, Utc};
use sqlx::PgPool;

use super::{Run, Verdict, rescue::Process, settle, snooze};

/// A run that panicked is looked at again after this (no attempt spent).
const AFTER_PANIC: TimeDelta = TimeDelta::seconds(30);

/// Runs `work` (run `run` of a `what` job) as its own task and waits for it.
pub async fn run_guarded<E, Fut>(
    pool: &PgPool,
    process: &Process,
    run: Run,
    what: &str,
    work: Fut,
) -> Result<(), BoxDynError>
where
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let in_flight = process.enter(&run.job_id);
    let result = match tokio::spawn(work).await {
        Ok(result) => result.map_err(|e| Box::new(e) as BoxDynError),
        Err(e) => {
            tracing::error!(job_id = %run.job_id, "{what} run panicked: {e}");
            let verdict = snooze(Utc::now() + AFTER_PANIC, format!("{what} run panicked"));
            settle_alone(pool, run, verdict)
                .await
                .map_err(|e| Box::new(e) as BoxDynError)
        }
    };
    drop(in_flight);
    result
}

/// Writes one run's verdict in a transaction of its own.
pub async fn settle_alone(pool: &PgPool, run: Run, verdict: Verdict) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    settle(&mut tx, &[(run, verdict)]).await?;
    tx.commit().await
}
