//! Wires jobs to apalis workers: send workers with `WORKER_CONCURRENCY` slots in all and the
//! reminder scheduler's two workers (see `reminders::schedule`), all restarted by the monitor
//! after a database outage, stopped gracefully on shutdown (in-flight sends finish).

use std::{sync::Arc, time::Duration};

use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    db::batch::Batcher,
    gateway::StarSender,
    messages::{
        decide::RetryPolicy,
        job::{self, SendContext},
        repo,
    },
    policy::Policy,
    queue::{self, pause::Pauses},
    reminders::schedule::SchedulerContext,
};

/// How long shutdown waits for in-flight sends (longer than one gateway timeout).
pub fn shutdown_grace(config: &Config) -> Duration {
    config.starsender_timeout + Duration::from_secs(5)
}

/// A `Retry-After` longer than this is cut to it.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

pub fn send_context(
    pool: sqlx::PgPool,
    workers: &queue::Workers,
    config: &Config,
    gateway: StarSender,
    pauses: Pauses,
    policy: Policy,
) -> Arc<SendContext> {
    let retry_ambiguous = config.send_retry_ambiguous;
    let claim_pool = workers.pool.clone();
    let claim_policy = policy.clone();
    let claims = Batcher::spawn(2, 256, move |batch: Arc<Vec<repo::Claim>>| {
        let pool = claim_pool.clone();
        // The policy as it stands now, for the whole group.
        let rules = claim_policy.claim_rules(retry_ambiguous, chrono::Utc::now());
        async move { repo::claim_batch(&pool, &batch, rules).await }
    });
    let outcome_pool = pool.clone();
    let outcomes = Batcher::spawn(3, 500, move |batch: Arc<Vec<repo::Recorded>>| {
        let pool = outcome_pool.clone();
        async move { repo::record_batch(&pool, &batch).await }
    });
    Arc::new(SendContext {
        claims,
        outcomes,
        pool,
        gateway,
        policy,
        retry: RetryPolicy {
            backoff: config.backoff(),
            retry_ambiguous: config.send_retry_ambiguous,
            retry_after_cap: RETRY_AFTER_CAP,
        },
        pauses,
        process: workers.process.clone(),
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
    workers: queue::Workers,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // An apalis worker fetches, dispatches and acknowledges in one loop, and stops dispatching
    // while it writes acknowledgements: several workers of up to SLOTS_PER_WORKER slots each
    // keep those round trips overlapping. They share the process' limiter through `ctx`.
    let (count, slots) = split_slots(config.worker_concurrency);
    let send_workers = workers.clone();
    let monitor = Monitor::new()
        .register_n(count, move |index, _restarts| {
            // A restarted worker gets a new name; what its predecessor had fetched but not
            // started is released by the process' next beat (`queue::rescue`).
            WorkerBuilder::new(send_workers.process.worker_name(queue::SEND_QUEUE, index))
                // No more fetched than there are slots: a process does not sit on jobs
                // another process could run.
                .backend(send_workers.storage::<Value>(queue::SEND_QUEUE, slots))
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
    let monitor = crate::reminders::schedule::register(monitor, scheduler, &workers)?;
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
