//! Wires jobs to apalis workers: one send worker per process with `WORKER_CONCURRENCY` slots,
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
    gateway::StarSender,
    messages::job::{self, SendContext},
    queue,
};

/// How long shutdown waits for in-flight sends (longer than one gateway timeout).
pub fn shutdown_grace(config: &Config) -> Duration {
    config.starsender_timeout + Duration::from_secs(5)
}

pub fn send_context(pool: PgPool, config: &Config, gateway: StarSender) -> Arc<SendContext> {
    let limiter = NonZeroU32::new(config.send_rate_per_second).map(|rate| {
        let burst = NonZeroU32::new(config.send_burst).unwrap_or(NonZeroU32::MIN);
        Arc::new(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ))
    });
    Arc::new(SendContext {
        pool,
        gateway,
        limiter,
        backoff: config.backoff(),
        retry_ambiguous: config.send_retry_ambiguous,
        max_attempts: config.send_max_attempts,
    })
}

/// Runs the workers until `shutdown` is cancelled.
pub async fn run(
    pool: PgPool,
    config: Arc<Config>,
    ctx: Arc<SendContext>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let concurrency = config.worker_concurrency;
    // Enough fetched per round trip to keep every slot busy, few enough that a process does
    // not sit on jobs another process could run.
    let batch = (concurrency * 2).clamp(1, 100);
    let monitor = Monitor::new()
        .register(move |_restarts| {
            WorkerBuilder::new(queue::worker_name(queue::SEND_QUEUE))
                .backend(queue::storage::<Value>(&pool, queue::SEND_QUEUE, batch))
                .concurrency(concurrency)
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
    monitor
        .run_with_signal(async move {
            shutdown.cancelled().await;
            Ok(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("worker monitor failed: {e}"))
}
