//! What the scheduler API shows: the schedule's job with its next run, the last fan-out, and
//! whether the scheduler is healthy.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::{
    settings::{Settings, load},
    tick::{latest_due, next_run, trigger_text},
};
use crate::{
    config::Config,
    reminders::{JOB_ID, JOB_NAME, calendar::DaysBefore, fanout},
};

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
    /// `skipped` by reason (`null` for a run recorded before reasons were kept).
    #[sqlx(rename = "skipped_reasons")]
    #[schema(value_type = Option<BTreeMap<String, i64>>)]
    pub skipped_by_reason: Option<Json<BTreeMap<String, i64>>>,
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
        manual_skipped_reasons: Option<Json<BTreeMap<String, i64>>>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, trigger, business_date, tick_at, status, eligible, reminder_queued, already_queued,
                skipped, error, created_at, started_at, finished_at, manual_eligible,
                manual_reminder_queued, manual_already_queued, manual_skipped, skipped_reasons, manual_skipped_reasons
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
            skipped_by_reason: r.manual_skipped_reasons.map(|j| j.0).unwrap_or_default(),
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
    let grace = Utc::now() - chrono::Duration::minutes(5);
    let Some(last) = latest_due(grace, s, config.app_timezone) else {
        return Ok(true);
    };
    let ok: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM fanout_runs WHERE tick_at = $1 AND status <> 'failed')",
    )
    .bind(last)
    .fetch_one(pool)
    .await?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::{
        super::settings::fixtures::{JKT, at, settings},
        *,
    };

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
}
