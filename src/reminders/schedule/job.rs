//! The fan-out job: the daily run of a `fanout_runs` row — the vehicles' pass, then
//! (`REMINDER_INCLUDE_MANUAL`) the manual records' — recorded in its row. A claimed tick
//! enqueues it ([`new`]); `run-now` runs it in the request ([`run_manual`]).

use std::sync::Arc;

use apalis::prelude::{Attempt, BoxDynError, Data, TaskId, WorkerContext};
use chrono::{NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::settings::load;
use crate::{
    config::Config,
    queue::{self, NewJob},
    reminders::{end_of_business_day, fanout},
    templates::{self, Workshop},
};

/// A failed fan-out job runs again after this long (apalis would retry at once).
const RETRY_AFTER_SECS: i64 = 30;
const MAX_ATTEMPTS: i32 = 5;

/// What the scheduler's workers share.
pub struct SchedulerContext {
    pub pool: PgPool,
    pub config: Arc<Config>,
}

/// The fan-out job `job_id` of the run `run_id`.
pub fn new(job_id: String, run_id: Uuid) -> NewJob {
    NewJob {
        id: job_id,
        payload: serde_json::json!({ "run_id": run_id })
            .to_string()
            .into_bytes(),
        run_at: None,
        max_attempts: MAX_ATTEMPTS,
    }
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
    let unsendable =
        templates::cloud_api::unsendable(pool, config.gateway.kind, templates::MAINTENANCE).await?;
    Ok(fanout::Pass {
        date,
        days_before: settings.calendar(config),
        interval_months: config.service_interval_months,
        template,
        workshop: workshop(config),
        max_attempts: config.send_max_attempts,
        unsendable,
        expires_at: end_of_business_day(config.app_timezone, date),
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
            unsendable: templates::cloud_api::unsendable(
                pool,
                config.gateway.kind,
                templates::MANUAL,
            )
            .await?,
            expires_at: pass.expires_at,
        };
        let m = crate::manual::remind::run(pool, &manual).await?;
        summary.manual = Some(fanout::ManualCounts {
            eligible: m.eligible,
            reminder_queued: m.reminder_queued,
            already_queued: m.already_queued,
            skipped: m.skipped,
            skipped_by_reason: m.skipped_by_reason,
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
            let m = s.manual.as_ref();
            sqlx::query(
                "UPDATE fanout_runs SET status = 'done', finished_at = now(), eligible = $2,
                        reminder_queued = $3, already_queued = $4, skipped = $5,
                        manual_eligible = $6, manual_reminder_queued = $7,
                        manual_already_queued = $8, manual_skipped = $9, skipped_reasons = $10,
                        manual_skipped_reasons = $11
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
            .bind(sqlx::types::Json(&s.skipped_by_reason))
            .bind(m.map(|m| sqlx::types::Json(&m.skipped_by_reason)))
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

/// The fan-out job: runs the pass of its `fanout_runs` row (again, after a crash: every pass is
/// idempotent). A failure retries after [`RETRY_AFTER_SECS`]; the run settles its job itself.
pub(super) async fn run_job(
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
        Err(FanoutFailure::Retry(error)) if attempts < MAX_ATTEMPTS => queue::retry_at(
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
