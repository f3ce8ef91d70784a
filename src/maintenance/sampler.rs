//! Database-derived gauges, refreshed every few seconds (not per scrape):
//! `bengkel_queue_jobs{queue,status}`, `bengkel_queue_oldest_pending_age_seconds{queue}`,
//! `bengkel_queue_paused{queue}`, `bengkel_fanout_last_success_timestamp_seconds`,
//! `bengkel_webhook_subscriptions_disabled` and `bengkel_webhook_oldest_pending_age_seconds`,
//! and the daily schedule's (SPEC §14 alert rules): `bengkel_scheduler_running`,
//! `bengkel_fanout_scheduled_timestamp_seconds` and `bengkel_fanout_last_start_timestamp_seconds`.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    queue::{FANOUT_QUEUE, JobState, QUEUES, SEND_QUEUE},
    reminders::schedule::{self, tick::latest_due},
};

pub const PERIOD: Duration = Duration::from_secs(5);

#[derive(sqlx::FromRow)]
struct Row {
    queue: String,
    state: JobState,
    jobs: i64,
    oldest_due_secs: Option<f64>,
}

/// One sample: every known queue gets every status (zeros included) so that series do not vanish.
pub async fn sample(pool: &PgPool, config: &Config) -> sqlx::Result<()> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT queue, state, count(*) AS jobs,
                extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'pending' AND run_at <= now()))::float8
                    AS oldest_due_secs
         FROM job_states GROUP BY queue, state",
    )
    .fetch_all(pool)
    .await?;
    let mut queues: Vec<&str> = rows.iter().map(|r| r.queue.as_str()).collect();
    queues.push(SEND_QUEUE);
    queues.push(FANOUT_QUEUE);
    queues.sort_unstable();
    queues.dedup();
    for queue in queues {
        for state in JobState::ALL {
            let n = rows
                .iter()
                .find(|r| r.queue == queue && r.state == state)
                .map_or(0, |r| r.jobs);
            metrics::gauge!("bengkel_queue_jobs", "queue" => queue.to_owned(), "status" => state.as_str())
                .set(n as f64);
        }
        let oldest = rows
            .iter()
            .filter(|r| r.queue == queue)
            .filter_map(|r| r.oldest_due_secs)
            .fold(0.0_f64, f64::max);
        metrics::gauge!("bengkel_queue_oldest_pending_age_seconds", "queue" => queue.to_owned())
            .set(oldest);
    }
    let paused: Vec<String> = sqlx::query_scalar("SELECT queue FROM queue_pauses")
        .fetch_all(pool)
        .await?;
    for queue in QUEUES {
        let value = if paused.iter().any(|p| p == queue) {
            1.0
        } else {
            0.0
        };
        metrics::gauge!("bengkel_queue_paused", "queue" => queue).set(value);
    }
    let last_fanout: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(finished_at))::float8 FROM fanout_runs WHERE status = 'done'",
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!("bengkel_fanout_last_success_timestamp_seconds")
        .set(last_fanout.unwrap_or(0.0));
    let (disabled, oldest_pending) = crate::webhooks::repo::health(pool).await?;
    metrics::gauge!("bengkel_webhook_subscriptions_disabled").set(disabled as f64);
    metrics::gauge!("bengkel_webhook_oldest_pending_age_seconds").set(oldest_pending);
    sample_schedule(pool, config).await
}

/// The daily schedule, for the alerts "the scheduler is stopped" and "the daily run has not
/// started 30 minutes after its time": whether it is on, the scheduled time its latest run was
/// due at (0: none due — stopped, or changed since), and when the latest fan-out (of any
/// trigger: a `run-now` after the time does the day's work too) started (0: never).
async fn sample_schedule(pool: &PgPool, config: &Config) -> sqlx::Result<()> {
    let settings = schedule::load(pool, config).await?;
    let last_start: Option<f64> =
        sqlx::query_scalar("SELECT extract(epoch FROM max(started_at))::float8 FROM fanout_runs")
            .fetch_one(pool)
            .await?;
    let scheduled = latest_due(Utc::now(), &settings, config.app_timezone);
    metrics::gauge!("bengkel_scheduler_running").set(if settings.enabled { 1.0 } else { 0.0 });
    metrics::gauge!("bengkel_fanout_scheduled_timestamp_seconds")
        .set(scheduled.map_or(0.0, |t| t.timestamp() as f64));
    metrics::gauge!("bengkel_fanout_last_start_timestamp_seconds").set(last_start.unwrap_or(0.0));
    Ok(())
}

/// Samples every [`PERIOD`] until `shutdown`.
pub async fn run(pool: PgPool, config: Arc<Config>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = sample(&pool, &config).await {
                    tracing::debug!("queue metrics sample failed: {e}");
                }
            }
        }
    }
}
