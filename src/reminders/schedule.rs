//! When fan-outs run. Every `serve`/`worker` process runs an apalis-cron worker that ticks every
//! few seconds and compares the clock with the schedule stored in `scheduler_settings`; when
//! today's scheduled time has come it *claims* that tick by inserting its `fanout_runs` row
//! (`tick_at` is unique) and enqueues one fan-out job in the same transaction. However many
//! processes tick, one claim wins, so one tick yields one fan-out. Because every tick reads the
//! stored schedule, a change made through the API on any process is followed everywhere within
//! one tick, and a process that starts after a missed tick claims it at once (catch-up).

use std::{str::FromStr, sync::Arc, time::Duration};

use apalis::prelude::{
    Attempt, BoxDynError, Data, TaskId, WorkerBuilder, WorkerBuilderExt, WorkerContext,
};
use apalis_cron::{CronScheduler, Tick};
use chrono::{DateTime, DurationRound, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::{JOB_ID, JOB_NAME, business_date, calendar::DaysBefore, fanout};
use crate::{
    config::Config,
    queue::{self, NewJob},
    templates::{self, Workshop},
};

pub use crate::queue::FANOUT_QUEUE;
/// How often each process compares the clock with the stored schedule (apalis-cron syntax,
/// with seconds).
pub const TICK_EVERY: &str = "*/2 * * * * *";
/// A tick claimed later than this after its time counts as a catch-up.
const ON_TIME: chrono::Duration = chrono::Duration::seconds(60);
/// A failed fan-out job runs again after this long (apalis would retry at once).
const RETRY_AFTER_SECS: i64 = 30;
const FANOUT_MAX_ATTEMPTS: i32 = 5;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Settings {
    pub enabled: bool,
    pub hour: i32,
    pub minute: i32,
    /// The calendar set through the API (`None`: `REMINDER_DAYS_BEFORE`).
    pub days_before: Option<Vec<i32>>,
    pub updated_at: DateTime<Utc>,
}

impl Settings {
    /// The calendar in force: the stored one, else the environment's.
    pub fn calendar(&self, config: &Config) -> DaysBefore {
        self.days_before
            .as_ref()
            .and_then(|d| DaysBefore::from_values(d.iter().map(|v| i64::from(*v))).ok())
            .unwrap_or_else(|| config.reminder_days_before.clone())
    }
}

/// Creates the stored schedule from `REMINDER_SCHEDULER_HOUR`/`_MINUTE` (enabled) unless it
/// exists: the environment gives the initial value, the API changes it.
pub async fn ensure(pool: &PgPool, config: &Config) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO scheduler_settings (job_id, enabled, hour, minute) VALUES ($1, true, $2, $3)
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(JOB_ID)
    .bind(config.reminder_scheduler_hour as i32)
    .bind(config.reminder_scheduler_minute as i32)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn load(pool: &PgPool, config: &Config) -> sqlx::Result<Settings> {
    let found: Option<Settings> = sqlx::query_as(
        "SELECT enabled, hour, minute, days_before, updated_at FROM scheduler_settings WHERE job_id = $1",
    )
    .bind(JOB_ID)
    .fetch_optional(pool)
    .await?;
    match found {
        Some(s) => Ok(s),
        None => {
            ensure(pool, config).await?;
            Box::pin(load(pool, config)).await
        }
    }
}

/// Enables or disables the schedule, optionally at a new time and with a new calendar;
/// persisted for every process.
pub async fn set(
    pool: &PgPool,
    config: &Config,
    enabled: bool,
    time: Option<(i32, i32)>,
    days_before: Option<&DaysBefore>,
) -> sqlx::Result<Settings> {
    ensure(pool, config).await?;
    sqlx::query_as(
        "UPDATE scheduler_settings
         SET enabled = $2, hour = coalesce($3, hour), minute = coalesce($4, minute),
             days_before = coalesce($5, days_before), updated_at = now()
         WHERE job_id = $1
         RETURNING enabled, hour, minute, days_before, updated_at",
    )
    .bind(JOB_ID)
    .bind(enabled)
    .bind(time.map(|t| t.0))
    .bind(time.map(|t| t.1))
    .bind(days_before.map(DaysBefore::to_db))
    .fetch_one(pool)
    .await
}

/// The scheduled instant on business date `date`.
pub fn tick_on(date: NaiveDate, s: &Settings, tz: Tz) -> DateTime<Utc> {
    let local = date
        .and_hms_opt(s.hour.clamp(0, 23) as u32, s.minute.clamp(0, 59) as u32, 0)
        .unwrap_or_default();
    // A time that a DST change skips runs at the first instant after it.
    tz.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .map_or_else(|| local.and_utc(), |t| t.with_timezone(&Utc))
}

/// The next scheduled run after `now`, in the business zone.
pub fn next_run(now: DateTime<Utc>, s: &Settings, tz: Tz) -> DateTime<Tz> {
    let today = business_date(tz, now);
    let t = tick_on(today, s, tz);
    let next = if t > now {
        t
    } else {
        tick_on(today + chrono::Days::new(1), s, tz)
    };
    next.with_timezone(&tz)
}

pub fn trigger_text(s: &Settings) -> String {
    format!("cron[hour='{}', minute='{}']", s.hour, s.minute)
}

/// A tick that should have a fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub tick_at: DateTime<Utc>,
    pub date: NaiveDate,
    pub trigger: &'static str,
}

/// Today's tick, when it has come and the schedule already existed at that time (a schedule
/// set at 10:00 for 08:00 starts tomorrow; one set during its own minute still runs).
pub fn due(now: DateTime<Utc>, s: &Settings, tz: Tz) -> Option<Due> {
    if !s.enabled {
        return None;
    }
    let date = business_date(tz, now);
    let tick_at = tick_on(date, s, tz);
    let set_at = s
        .updated_at
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(s.updated_at);
    if now < tick_at || tick_at < set_at {
        return None;
    }
    let trigger = if now - tick_at <= ON_TIME {
        "cron"
    } else {
        "catch_up"
    };
    Some(Due {
        tick_at,
        date,
        trigger,
    })
}

/// Claims `due` and enqueues its fan-out job, in one transaction. False when another process
/// (or an earlier tick of this one) already claimed it.
pub async fn claim(pool: &PgPool, due: &Due) -> sqlx::Result<bool> {
    let run_id = Uuid::now_v7();
    let job_id = ulid::Ulid::generate().to_string();
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO fanout_runs (id, trigger, business_date, tick_at, job_id) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tick_at) DO NOTHING",
    )
    .bind(run_id)
    .bind(due.trigger)
    .bind(due.date)
    .bind(due.tick_at)
    .bind(&job_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        let payload = serde_json::json!({ "run_id": run_id })
            .to_string()
            .into_bytes();
        let job = NewJob {
            id: job_id,
            payload,
            run_at: None,
            max_attempts: FANOUT_MAX_ATTEMPTS,
        };
        queue::enqueue(&mut tx, FANOUT_QUEUE, vec![job]).await?;
    }
    tx.commit().await?;
    Ok(claimed)
}

/// The workshop's own placeholder values.
pub fn workshop(config: &Config) -> Workshop {
    Workshop {
        service_phone: config.service_phone.clone(),
        name: config.workshop_name.clone(),
    }
}

/// A pass for `date` as things stand now: the stored calendar and the current version of the
/// template.
pub async fn pass(pool: &PgPool, config: &Config, date: NaiveDate) -> anyhow::Result<fanout::Pass> {
    let settings = load(pool, config).await?;
    let template = templates::repo::current(pool, templates::MAINTENANCE)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the built-in template {} is missing",
                templates::MAINTENANCE
            )
        })?;
    Ok(fanout::Pass {
        date,
        days_before: settings.calendar(config),
        interval_months: config.service_interval_months,
        template,
        workshop: workshop(config),
        max_attempts: config.send_max_attempts,
        expires_at: super::end_of_business_day(config.app_timezone, date),
    })
}

/// The daily run: the vehicles' pass, then (`REMINDER_INCLUDE_MANUAL`) the manual records'
/// with the same calendar.
async fn daily(
    pool: &PgPool,
    config: &Config,
    date: NaiveDate,
    run_id: Uuid,
) -> anyhow::Result<fanout::Summary> {
    let pass = pass(pool, config, date).await?;
    let mut summary = fanout::run(pool, &pass, run_id).await?;
    if config.reminder_include_manual {
        let template = templates::repo::current(pool, templates::MANUAL)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!("the built-in template {} is missing", templates::MANUAL)
            })?;
        let manual = crate::manual::remind::Pass {
            date,
            days_before: pass.days_before.clone(),
            interval_months: pass.interval_months,
            only_active: true,
            template,
            workshop: pass.workshop.clone(),
            max_attempts: pass.max_attempts,
            expires_at: pass.expires_at,
        };
        let m = crate::manual::remind::run(pool, &manual).await?;
        summary.manual = Some(fanout::ManualCounts {
            eligible: m.eligible,
            reminder_queued: m.reminder_queued,
            already_queued: m.already_queued,
            skipped: m.skipped,
        });
    }
    Ok(summary)
}

/// Runs the pass of `run_id` (a `fanout_runs` row) and records its result there.
pub async fn execute(
    pool: &PgPool,
    config: &Config,
    run_id: Uuid,
    trigger: &'static str,
    date: NaiveDate,
) -> anyhow::Result<fanout::Summary> {
    sqlx::query(
        "UPDATE fanout_runs SET status = 'running', started_at = now(), error = NULL WHERE id = $1",
    )
    .bind(run_id)
    .execute(pool)
    .await?;
    metrics::counter!("bengkel_fanout_runs_total", "trigger" => trigger).increment(1);
    match daily(pool, config, date, run_id).await {
        Ok(s) => {
            let m = s.manual;
            sqlx::query(
                "UPDATE fanout_runs SET status = 'done', finished_at = now(), eligible = $2,
                        reminder_queued = $3, already_queued = $4, skipped = $5,
                        manual_eligible = $6, manual_reminder_queued = $7,
                        manual_already_queued = $8, manual_skipped = $9
                 WHERE id = $1",
            )
            .bind(run_id)
            .bind(s.eligible as i32)
            .bind(s.reminder_queued as i32)
            .bind(s.already_queued as i32)
            .bind(s.skipped as i32)
            .bind(m.map(|m| m.eligible as i32))
            .bind(m.map(|m| m.reminder_queued as i32))
            .bind(m.map(|m| m.already_queued as i32))
            .bind(m.map(|m| m.skipped as i32))
            .execute(pool)
            .await?;
            tracing::info!(%run_id, trigger, %date, queued = s.reminder_queued,
                already = s.already_queued, skipped = s.skipped, "fan-out done");
            Ok(s)
        }
        Err(e) => {
            tracing::warn!(%run_id, trigger, "fan-out failed: {e:#}");
            let _ = sqlx::query(
                "UPDATE fanout_runs SET status = 'failed', finished_at = now(), error = $2 WHERE id = $1",
            )
            .bind(run_id)
            .bind(format!("{e:#}"))
            .execute(pool)
            .await;
            Err(e)
        }
    }
}

/// A `run-now` pass: recorded like any other, run by the caller.
pub async fn run_manual(
    pool: &PgPool,
    config: &Config,
    date: NaiveDate,
) -> anyhow::Result<fanout::Summary> {
    let run_id = Uuid::now_v7();
    sqlx::query("INSERT INTO fanout_runs (id, trigger, business_date) VALUES ($1, 'manual', $2)")
        .bind(run_id)
        .bind(date)
        .execute(pool)
        .await?;
    execute(pool, config, run_id, "manual", date).await
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobInfo {
    pub id: &'static str,
    pub name: &'static str,
    /// RFC 3339 in `APP_TIMEZONE`, e.g. `2025-12-15T07:00:00+07:00`.
    pub next_run_time: String,
    /// e.g. `cron[hour='7', minute='0']`.
    pub trigger: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LastRun {
    pub id: Uuid,
    pub trigger: String,
    pub business_date: NaiveDate,
    pub tick_at: Option<DateTime<Utc>>,
    pub status: String,
    pub eligible: Option<i32>,
    pub reminder_queued: Option<i32>,
    pub already_queued: Option<i32>,
    pub skipped: Option<i32>,
    /// The manual customers' pass of the run (absent when it had none).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual: Option<fanout::ManualCounts>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = SchedulerStatus)]
pub struct Status {
    pub running: bool,
    /// The reminder calendar: days before the due date on which reminders go out.
    pub days_before: DaysBefore,
    pub jobs: Vec<JobInfo>,
    pub last_run: Option<LastRun>,
}

pub fn jobs(s: &Settings, tz: Tz, now: DateTime<Utc>) -> Vec<JobInfo> {
    if !s.enabled {
        return Vec::new();
    }
    vec![JobInfo {
        id: JOB_ID,
        name: JOB_NAME,
        next_run_time: next_run(now, s, tz).to_rfc3339(),
        trigger: trigger_text(s),
    }]
}

pub async fn status(pool: &PgPool, config: &Config) -> sqlx::Result<Status> {
    let s = load(pool, config).await?;
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        run: LastRun,
        manual_eligible: Option<i32>,
        manual_reminder_queued: Option<i32>,
        manual_already_queued: Option<i32>,
        manual_skipped: Option<i32>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, trigger, business_date, tick_at, status, eligible, reminder_queued, already_queued,
                skipped, error, created_at, started_at, finished_at, manual_eligible,
                manual_reminder_queued, manual_already_queued, manual_skipped
         FROM fanout_runs ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let last_run = row.map(|r| {
        let mut run = r.run;
        run.manual = r.manual_eligible.map(|eligible| fanout::ManualCounts {
            eligible: i64::from(eligible),
            reminder_queued: i64::from(r.manual_reminder_queued.unwrap_or(0)),
            already_queued: i64::from(r.manual_already_queued.unwrap_or(0)),
            skipped: i64::from(r.manual_skipped.unwrap_or(0)),
        });
        run
    });
    Ok(Status {
        running: s.enabled,
        days_before: s.calendar(config),
        jobs: jobs(&s, config.app_timezone, Utc::now()),
        last_run,
    })
}

/// Healthy when the schedule is enabled and its most recent tick (more than five minutes ago,
/// while the schedule existed) has a fan-out that did not fail.
pub async fn healthy(pool: &PgPool, config: &Config, s: &Settings) -> sqlx::Result<bool> {
    if !s.enabled {
        return Ok(false);
    }
    let tz = config.app_timezone;
    let grace = Utc::now() - chrono::Duration::minutes(5);
    let today = business_date(tz, grace);
    let mut last = tick_on(today, s, tz);
    if last > grace {
        last = tick_on(today - chrono::Days::new(1), s, tz);
    }
    let set_at = s
        .updated_at
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap_or(s.updated_at);
    if last < set_at {
        return Ok(true);
    }
    let ok: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM fanout_runs WHERE tick_at = $1 AND status <> 'failed')",
    )
    .bind(last)
    .fetch_one(pool)
    .await?;
    Ok(ok)
}

/// What the scheduler's workers share.
pub struct SchedulerContext {
    pub pool: PgPool,
    pub config: Arc<Config>,
}

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

/// The fan-out job: runs the pass of its `fanout_runs` row (again, after a crash: every pass is
/// idempotent). A failure retries after [`RETRY_AFTER_SECS`]; the run settles its job itself.
async fn run_job(
    payload: Value,
    task_id: TaskId,
    attempt: Attempt,
    worker: WorkerContext,
    ctx: Data<Arc<SchedulerContext>>,
) -> Result<(), BoxDynError> {
    let run = queue::Run {
        job_id: task_id.to_string(),
        worker: worker.name().to_owned(),
        fetched_attempts: i32::try_from(attempt.current())
            .unwrap_or(i32::MAX)
            .saturating_sub(1),
    };
    let attempts = run.attempt();
    let verdict = match fanout_job(&ctx, &payload).await {
        Ok(()) => queue::Verdict::Complete { attempts },
        Err(FanoutFailure::Abort(reason)) => queue::Verdict::Fail { attempts, reason },
        Err(FanoutFailure::Retry(error)) if attempts < FANOUT_MAX_ATTEMPTS => queue::retry_at(
            Utc::now() + chrono::Duration::seconds(RETRY_AFTER_SECS),
            attempts,
            error,
        ),
        Err(FanoutFailure::Retry(reason)) => queue::Verdict::Fail { attempts, reason },
    };
    let mut conn = ctx.pool.acquire().await?;
    queue::settle(&mut conn, &[(run, verdict)]).await?;
    Ok(())
}

enum FanoutFailure {
    Abort(String),
    Retry(String),
}

async fn fanout_job(ctx: &SchedulerContext, payload: &Value) -> Result<(), FanoutFailure> {
    let Some(run_id) = payload
        .get("run_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
    else {
        return Err(FanoutFailure::Abort(format!(
            "unreadable fan-out job payload: {payload}"
        )));
    };
    let run: Option<(String, NaiveDate, String)> =
        sqlx::query_as("SELECT trigger, business_date, status FROM fanout_runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&ctx.pool)
            .await
            .map_err(|e| FanoutFailure::Retry(e.to_string()))?;
    let Some((trigger, date, status)) = run else {
        return Err(FanoutFailure::Abort(format!(
            "fan-out run {run_id} does not exist"
        )));
    };
    if status == "done" {
        return Ok(());
    }
    let trigger = if trigger == "cron" {
        "cron"
    } else {
        "catch_up"
    };
    execute(&ctx.pool, &ctx.config, run_id, trigger, date)
        .await
        .map(|_| ())
        .map_err(|e| FanoutFailure::Retry(format!("{e:#}")))
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
                .build(run_job)
        }))
}

/// How long `wait_seconds` may wait at most.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(hour: i32, minute: i32, set: &str) -> Settings {
        Settings {
            enabled: true,
            hour,
            minute,
            days_before: None,
            updated_at: DateTime::parse_from_rfc3339(set)
                .unwrap()
                .with_timezone(&Utc),
        }
    }
    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    const JKT: Tz = chrono_tz::Asia::Jakarta;

    #[test]
    fn status_texts_are_the_seeds() {
        let s = settings(7, 0, "2025-12-01T00:00:00Z");
        assert_eq!(trigger_text(&s), "cron[hour='7', minute='0']");
        let jobs = jobs(&s, JKT, at("2025-12-14T10:00:00+07:00"));
        assert_eq!(jobs[0].next_run_time, "2025-12-15T07:00:00+07:00");
        assert_eq!(jobs[0].id, "maintenance_reminder_job");
        assert_eq!(jobs[0].name, "Maintenance Reminder WhatsApp");
        assert_eq!(
            next_run(at("2025-12-14T06:59:00+07:00"), &s, JKT).to_rfc3339(),
            "2025-12-14T07:00:00+07:00"
        );
    }

    #[test]
    fn a_tick_is_due_once_its_time_has_come() {
        let s = settings(7, 0, "2025-12-01T00:00:00Z");
        assert_eq!(due(at("2025-12-14T06:59:59+07:00"), &s, JKT), None);
        let d = due(at("2025-12-14T07:00:01+07:00"), &s, JKT).unwrap();
        assert_eq!(d.trigger, "cron");
        assert_eq!(d.tick_at, at("2025-12-14T07:00:00+07:00"));
        assert_eq!(d.date, NaiveDate::from_ymd_opt(2025, 12, 14).unwrap());
        let late = due(at("2025-12-14T09:30:00+07:00"), &s, JKT).unwrap();
        assert_eq!(late.trigger, "catch_up");
        assert_eq!(late.tick_at, d.tick_at);
    }

    #[test]
    fn a_schedule_does_not_catch_up_a_time_before_it_existed() {
        let s = settings(8, 0, "2025-12-14T10:00:00+07:00");
        assert_eq!(due(at("2025-12-14T10:00:05+07:00"), &s, JKT), None);
        let same_minute = settings(10, 0, "2025-12-14T10:00:30+07:00");
        assert!(due(at("2025-12-14T10:00:31+07:00"), &same_minute, JKT).is_some());
        let mut off = settings(7, 0, "2025-12-01T00:00:00Z");
        off.enabled = false;
        assert_eq!(due(at("2025-12-14T07:00:01+07:00"), &off, JKT), None);
    }
}
