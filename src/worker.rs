//! Wires jobs to apalis workers: send workers with `WORKER_CONCURRENCY` slots in all and the
//! reminder scheduler's two workers (see `reminders::schedule`), all
//! restarted by the monitor after a database outage, stopped gracefully on shutdown (in-flight
//! sends finish; fetched-but-unstarted jobs go back to the queue).

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use governor::{Quota, RateLimiter};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    db::batch::Batcher,
    gateway::StarSender,
    messages::job::{self, SendContext},
    messages::repo,
    queue,
    reminders::schedule::SchedulerContext,
};

/// How long shutdown waits for in-flight sends (longer than one gateway timeout).
pub fn shutdown_grace(config: &Config) -> Duration {
    config.starsender_timeout + Duration::from_secs(5)
}

pub fn send_context(
    pool: PgPool,
    config: &Config,
    gateway: StarSender,
    pauses: crate::ops::pause::Pauses,
) -> Arc<SendContext> {
    let limiter = NonZeroU32::new(config.send_rate_per_second).map(|rate| {
        let burst = NonZeroU32::new(config.send_burst).unwrap_or(NonZeroU32::MIN);
        Arc::new(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ))
    });
    let relaxed_pool = crate::db::relaxed(&pool, config.worker_concurrency as u32 + 8);
    let retry_ambiguous = config.send_retry_ambiguous;
    let claim_pool = relaxed_pool.clone();
    let claims = Batcher::spawn(2, 256, move |batch: Arc<Vec<repo::Claim>>| {
        let pool = claim_pool.clone();
        async move { repo::claim_batch(&pool, &batch, retry_ambiguous).await }
    });
    let outcome_pool = pool.clone();
    let outcomes = Batcher::spawn(3, 500, move |batch: Arc<Vec<repo::Recorded>>| {
        let pool = outcome_pool.clone();
        async move { repo::record_batch(&pool, &batch).await }
    });
    Arc::new(SendContext {
        claims,
        outcomes,
        relaxed_pool,
        pool,
        gateway,
        limiter,
        backoff: config.backoff(),
        retry_ambiguous: config.send_retry_ambiguous,
        max_attempts: config.send_max_attempts,
        pauses,
    })
}

const SLOTS_PER_WORKER: usize = 8;

/// `WORKER_CONCURRENCY` slots as (workers, slots each), never more slots in all than asked.
fn split_slots(concurrency: usize) -> (usize, usize) {
    let workers = concurrency.div_ceil(SLOTS_PER_WORKER).max(1);
    (workers, (concurrency / workers).max(1))
}

/// Runs the workers until `shutdown` is cancelled.
pub async fn run(
    config: Arc<Config>,
    ctx: Arc<SendContext>,
    scheduler: Arc<SchedulerContext>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // An apalis worker fetches, dispatches and acknowledges in one loop, and stops dispatching
    // while it writes acknowledgements: several workers of up to SLOTS_PER_WORKER slots each
    // keep those round trips overlapping. They share the process' limiter through `ctx`.
    let (workers, slots) = split_slots(config.worker_concurrency);
    // Enough fetched per round trip to keep every slot busy, few enough that a process does
    // not sit on jobs another process could run.
    let batch = (slots * 2).clamp(1, 100);
    let relaxed_pool = ctx.relaxed_pool.clone();
    let monitor = Monitor::new()
        .register_n(workers, move |_index, _restarts| {
            WorkerBuilder::new(queue::worker_name(queue::SEND_QUEUE))
                // apalis' bookkeeping (fetch, acknowledgements, heartbeats) commits without
                // waiting for the WAL flush: see `db::relaxed` for why that is safe.
                .backend(queue::storage::<Value>(
                    &ctx.relaxed_pool,
                    queue::SEND_QUEUE,
                    batch,
                ))
                .concurrency(slots)
                .data(ctx.clone())
                .build(job::handle)
        })
        .should_restart(|worker, error| {
            tracing::warn!(
                worker = worker.name(),
                "worker stopped ({error}); restarting"
            );
            true
        })
        .shutdown_timeout(shutdown_grace(&config));
    // The reminder scheduler: a cron ticker and the fan-out job runner.
    let monitor = crate::reminders::schedule::register(monitor, scheduler, &relaxed_pool)?;
    monitor
        .run_with_signal(async move {
            shutdown.cancelled().await;
            Ok(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("worker monitor failed: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slots_are_split_without_exceeding_the_total() {
        assert_eq!(super::split_slots(1), (1, 1));
        assert_eq!(super::split_slots(4), (1, 4));
        assert_eq!(super::split_slots(8), (1, 8));
        assert_eq!(super::split_slots(9), (2, 4));
        assert_eq!(super::split_slots(32), (4, 8));
    }
}
