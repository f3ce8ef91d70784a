//! Wires jobs to apalis workers: send workers with `WORKER_CONCURRENCY` slots in all, the
//! webhook delivery and inbound payload workers, and the reminder scheduler's two workers (see
//! `reminders::schedule`), all restarted by the monitor
//! after a database outage, stopped gracefully on shutdown (in-flight sends finish).

use std::{sync::Arc, time::Duration};

use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    inbound::job::{self as inbound_job, InboundContext},
    messages::{context::SendContext, job},
    queue,
    reminders::schedule::SchedulerContext,
    webhooks::deliver::{self, DeliveryContext},
};

/// How long shutdown waits for in-flight sends (longer than one gateway timeout).
pub fn shutdown_grace(config: &Config) -> Duration {
    config.starsender_timeout + Duration::from_secs(5)
}

const SLOTS_PER_WORKER: usize = 8;
/// Webhook deliveries in flight per process (at most 4 of them to one subscription, across
/// processes: `webhooks::deliver`). Their own workers: a slow receiver never holds a send slot.
const WEBHOOK_SLOTS: usize = 16;

/// Inbound payloads processed at once per process (their own worker: a burst of customers'
/// messages never holds a send slot).
const INBOUND_SLOTS: usize = 4;

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
    deliveries: Arc<DeliveryContext>,
    inbound: Arc<InboundContext>,
    workers: queue::Workers,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Several workers of up to SLOTS_PER_WORKER slots each rather than one with all of them:
    // each worker's fetch is one round trip that hands out at most its slots, so several keep
    // fetches overlapping, and a worker whose stream fails (a database outage) restarts
    // without stopping the others. They share the process' limiter through `ctx`.
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
    let (webhook_count, webhook_slots) = (WEBHOOK_SLOTS / SLOTS_PER_WORKER, SLOTS_PER_WORKER);
    let webhook_workers = workers.clone();
    let monitor = monitor.register_n(webhook_count, move |index, _restarts| {
        WorkerBuilder::new(
            webhook_workers
                .process
                .worker_name(queue::WEBHOOK_QUEUE, index),
        )
        .backend(webhook_workers.storage::<Value>(queue::WEBHOOK_QUEUE, webhook_slots))
        .concurrency(webhook_slots)
        .data(deliveries.clone())
        .build(deliver::handle)
    });
    let inbound_workers = workers.clone();
    let monitor = monitor.register(move |_restarts| {
        WorkerBuilder::new(inbound_workers.process.worker_name(queue::INBOUND_QUEUE, 0))
            .backend(inbound_workers.storage::<Value>(queue::INBOUND_QUEUE, INBOUND_SLOTS))
            .concurrency(INBOUND_SLOTS)
            .data(inbound.clone())
            .build(inbound_job::handle)
    });
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
