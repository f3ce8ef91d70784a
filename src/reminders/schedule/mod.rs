//! When fan-outs run. Every `serve`/`worker` process runs an apalis-cron worker that ticks every
//! few seconds and compares the clock with the schedule stored in `scheduler_settings`
//! ([`settings`]); when today's scheduled time has come it claims that tick ([`tick`]) and
//! enqueues one fan-out job in the same transaction ([`job`]). However many processes tick, one
//! claim wins, so one tick yields one fan-out. Because every tick reads the stored schedule, a
//! change made through the API on any process is followed everywhere within one tick, and a
//! process that starts after a missed tick claims it at once (catch-up). [`status`] is what the
//! scheduler API shows.

pub mod job;
pub mod settings;
pub mod status;
pub mod tick;

use std::{str::FromStr, sync::Arc, time::Duration};

use apalis::prelude::{BoxDynError, Data, WorkerBuilder, WorkerBuilderExt};
use apalis_cron::{CronScheduler, Tick};
use chrono::Utc;
use serde_json::Value;

use self::tick::{TICK_EVERY, claim, due};
pub use self::{
    job::{SchedulerContext, run_manual, workshop},
    settings::{ensure, load, set},
    status::{JobInfo, Status, healthy, jobs, status},
};
use crate::queue::{self, FANOUT_QUEUE};

/// How long `wait_seconds` may wait at most.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// apalis-cron handler: claim today's tick when it is due.
async fn on_tick(_tick: Tick, ctx: Data<Arc<SchedulerContext>>) -> Result<(), BoxDynError> {
    let s = load(&ctx.pool, &ctx.config).await?;
    if let Some(due) = due(Utc::now(), &s, ctx.config.app_timezone)
        && claim(&ctx.pool, &due).await?
    {
        tracing::info!(tick = %due.tick_at, trigger = due.trigger, date = %due.date, "fan-out tick claimed");
    }
    Ok(())
}

/// Adds the scheduler's two workers (the cron ticker and the fan-out job runner) to `monitor`.
pub fn register(
    monitor: apalis::prelude::Monitor,
    ctx: Arc<SchedulerContext>,
    workers: &queue::Workers,
) -> anyhow::Result<apalis::prelude::Monitor> {
    let every = cron::Schedule::from_str(TICK_EVERY)
        .map_err(|e| anyhow::anyhow!("bad scheduler tick {TICK_EVERY}: {e}"))?;
    let tick_ctx = ctx.clone();
    let cron_workers = workers.clone();
    let workers = workers.clone();
    Ok(monitor
        .register(move |_restarts| {
            WorkerBuilder::new(cron_workers.process.worker_name("reminder-cron", 0))
                .backend(CronScheduler::new(every.clone()))
                .data(tick_ctx.clone())
                .build(on_tick)
        })
        .register(move |_restarts| {
            WorkerBuilder::new(workers.process.worker_name(FANOUT_QUEUE, 0))
                .backend(workers.storage::<Value>(FANOUT_QUEUE, 1))
                .concurrency(1)
                .data(ctx.clone())
                .build(job::run_job)
        }))
}
