//! Which tick is due and who runs it. Every process ticks every [`TICK_EVERY`] and compares the
//! clock with the stored schedule; when today's scheduled time has come it *claims* that tick by
//! inserting its `fanout_runs` row (`tick_at` is unique) and enqueues one fan-out job in the same
//! transaction. However many processes tick, one claim wins, so one tick yields one fan-out; a
//! process that starts after a missed tick claims it at once (catch-up).

use chrono::{DateTime, DurationRound, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use uuid::Uuid;

use super::{job, settings::Settings};
use crate::{queue, reminders::business_date};

/// How often each process compares the clock with the stored schedule (apalis-cron syntax,
/// with seconds).
pub const TICK_EVERY: &str = "*/2 * * * * *";
/// A tick claimed later than this after its time counts as a catch-up.
const ON_TIME: chrono::Duration = chrono::Duration::seconds(60);

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

/// The latest scheduled time at or before `now` that should have a fan-out: today's once it has
/// come, else yesterday's. None while the schedule is off, and when the schedule was set after
/// that time (the ticker does not catch up a time from before the schedule existed: see
/// `schedule::tick::due`).
pub fn latest_due(now: DateTime<Utc>, s: &Settings, tz: Tz) -> Option<DateTime<Utc>> {
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
        queue::enqueue(&mut tx, queue::FANOUT_QUEUE, vec![job::new(job_id, run_id)]).await?;
    }
    tx.commit().await?;
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::{
        super::settings::fixtures::{JKT, at, settings},
        *,
    };

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

    #[test]
    fn the_latest_due_run_is_todays_once_its_time_has_come_else_yesterdays() {
        let s = settings(7, 0, "2025-12-01T00:00:00Z");
        for (now, want) in [
            ("2025-12-14T07:30:00+07:00", "2025-12-14T07:00:00+07:00"),
            ("2025-12-14T07:00:00+07:00", "2025-12-14T07:00:00+07:00"),
            ("2025-12-14T06:59:59+07:00", "2025-12-13T07:00:00+07:00"),
        ] {
            assert_eq!(latest_due(at(now), &s, JKT), Some(at(want)), "{now}");
        }
    }

    #[test]
    fn no_run_is_due_while_stopped_or_from_before_the_schedule_was_set() {
        let mut stopped = settings(7, 0, "2025-12-01T00:00:00Z");
        stopped.enabled = false;
        assert_eq!(
            latest_due(at("2025-12-14T08:00:00+07:00"), &stopped, JKT),
            None
        );
        // Set at 07:30 today: today's 07:00 and yesterday's are not the ticker's to run.
        let late = settings(7, 0, "2025-12-14T07:30:00+07:00");
        assert_eq!(
            latest_due(at("2025-12-14T09:00:00+07:00"), &late, JKT),
            None
        );
        assert_eq!(
            latest_due(at("2025-12-15T07:00:05+07:00"), &late, JKT),
            Some(at("2025-12-15T07:00:00+07:00"))
        );
        // Set during its own minute: that run is due (the ticker runs it).
        let same_minute = settings(7, 0, "2025-12-14T07:00:30+07:00");
        assert_eq!(
            latest_due(at("2025-12-14T07:40:00+07:00"), &same_minute, JKT),
            Some(at("2025-12-14T07:00:00+07:00"))
        );
    }
}
