//! The persisted schedule (`scheduler_settings`): on or off, the time of day, the calendar.
//! The environment gives the initial value, the API changes it; every process reads it on each
//! tick, so a change made on one is followed by all.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{
    config::Config,
    reminders::{JOB_ID, calendar::DaysBefore},
};

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

/// What the schedule's unit tests share.
#[cfg(test)]
pub(super) mod fixtures {
    use chrono::{DateTime, Utc};
    use chrono_tz::Tz;

    use super::Settings;

    pub const JKT: Tz = chrono_tz::Asia::Jakarta;

    /// An instant (RFC 3339).
    pub fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A schedule at `hour:minute`, enabled, last changed at `set` (RFC 3339).
    pub fn settings(hour: i32, minute: i32, set: &str) -> Settings {
        Settings {
            enabled: true,
            hour,
            minute,
            days_before: None,
            updated_at: at(set),
        }
    }
}
