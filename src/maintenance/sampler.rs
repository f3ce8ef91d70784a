//! Database-derived gauges, refreshed every few seconds (not per scrape):
//! `bengkel_queue_jobs{queue,status}`, `bengkel_queue_oldest_pending_age_seconds{queue}`,
//! `bengkel_queue_paused{queue}`, `bengkel_fanout_last_success_timestamp_seconds`,
//! `bengkel_webhook_subscriptions_disabled` and `bengkel_webhook_oldest_pending_age_seconds`,
//! and the daily schedule's (SPEC §14 alert rules): `bengkel_scheduler_running`,
//! `bengkel_fanout_scheduled_timestamp_seconds` and `bengkel_fanout_last_start_timestamp_seconds`.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, DurationRound, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    queue::{FANOUT_QUEUE, JobState, QUEUES, SEND_QUEUE},
    reminders::{
        business_date,
        schedule::{self, settings::Settings, tick::tick_on},
    },
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
    let scheduled = expected_tick(Utc::now(), &settings, config.app_timezone);
    metrics::gauge!("bengkel_scheduler_running").set(if settings.enabled { 1.0 } else { 0.0 });
    metrics::gauge!("bengkel_fanout_scheduled_timestamp_seconds")
        .set(scheduled.map_or(0.0, |t| t.timestamp() as f64));
    metrics::gauge!("bengkel_fanout_last_start_timestamp_seconds").set(last_start.unwrap_or(0.0));
    Ok(())
}

/// The latest scheduled time at or before `now` that should have a fan-out: today's once it has
/// come, else yesterday's. None while the schedule is off, and when the schedule was set after
/// that time (the ticker does not catch up a time from before the schedule existed: see
/// `schedule::tick::due`).
fn expected_tick(now: DateTime<Utc>, s: &Settings, tz: Tz) -> Option<DateTime<Utc>> {
    if !s.enabled {
        return None;
    }
    let today = business_date(tz, now);
    let mut last = tick_on(today, s, tz);
    if last > now {
        last = tick_on(today - chrono::Days::new(1), s, tz);
    }
    let set_at = s
        .updated_at
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(s.updated_at);
    (last >= set_at).then_some(last)
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

#[cfg(test)]
mod tests {
    use super::*;

    const JKT: Tz = chrono_tz::Asia::Jakarta;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("an RFC 3339 instant")
            .with_timezone(&Utc)
    }

    fn daily_at_seven(enabled: bool, set: &str) -> Settings {
        Settings {
            enabled,
            hour: 7,
            minute: 0,
            days_before: None,
            updated_at: at(set),
        }
    }

    #[test]
    fn the_expected_run_is_todays_once_its_time_has_come_else_yesterdays() {
        let s = daily_at_seven(true, "2025-12-01T00:00:00Z");
        assert_eq!(
            expected_tick(at("2025-12-14T07:30:00+07:00"), &s, JKT),
            Some(at("2025-12-14T07:00:00+07:00"))
        );
        assert_eq!(
            expected_tick(at("2025-12-14T07:00:00+07:00"), &s, JKT),
            Some(at("2025-12-14T07:00:00+07:00"))
        );
        assert_eq!(
            expected_tick(at("2025-12-14T06:59:59+07:00"), &s, JKT),
            Some(at("2025-12-13T07:00:00+07:00"))
        );
    }

    #[test]
    fn no_run_is_expected_while_stopped_or_from_before_the_schedule_was_set() {
        let stopped = daily_at_seven(false, "2025-12-01T00:00:00Z");
        assert_eq!(
            expected_tick(at("2025-12-14T08:00:00+07:00"), &stopped, JKT),
            None
        );
        // Set at 07:30 today: today's 07:00 and yesterday's are not the ticker's to run.
        let late = daily_at_seven(true, "2025-12-14T07:30:00+07:00");
        assert_eq!(
            expected_tick(at("2025-12-14T09:00:00+07:00"), &late, JKT),
            None
        );
        assert_eq!(
            expected_tick(at("2025-12-15T07:00:05+07:00"), &late, JKT),
            Some(at("2025-12-15T07:00:00+07:00"))
        );
        // Set during its own minute: that run is expected (the ticker runs it).
        let same_minute = daily_at_seven(true, "2025-12-14T07:00:30+07:00");
        assert_eq!(
            expected_tick(at("2025-12-14T07:40:00+07:00"), &same_minute, JKT),
            Some(at("2025-12-14T07:00:00+07:00"))
        );
    }
}
