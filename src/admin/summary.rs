//! The daily summary (SPEC §14): when the day's reminder run (vehicles and manual records) has
//! no message left unsent — or once the send window has closed — one message per admin phone
//! from template `admin_daily_summary` with the day's counts (the console's *Today*).
//!
//! Every process with workers asks every `ADMIN_SUMMARY_CHECK_SECS` ([`run`]). The day's run is
//! the latest `cron` or `catch_up` run of the business date (a `run-now` is not the day's run);
//! it must have finished. The decision to send is the insert of the date's row in
//! `admin_daily_summaries`, in the transaction that stores the messages: however many processes
//! decide at once, one row and one message per phone.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgPool, types::Json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{ADMIN_DAILY_SUMMARY, NOTIFICATIONS};
use crate::{
    config::Config,
    console::today::{self, Counts},
    reminders::{business_date, end_of_business_day},
    suppressions,
};

/// How `{date}` is written.
pub const DATE_FORMAT: &str = "%d-%m-%Y";

/// What made the day's summary go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The run had no reminder left unsent.
    Drained,
    /// The send window closed with reminders unsent (held, waiting, retrying).
    WindowClose,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drained => "drained",
            Self::WindowClose => "window_close",
        }
    }
}

/// A summary this process sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub date: NaiveDate,
    pub trigger: Trigger,
    pub message_ids: Vec<Uuid>,
}

/// Asks every `ADMIN_SUMMARY_CHECK_SECS` until `shutdown`; does nothing without admin phones or
/// with `ADMIN_DAILY_SUMMARY=false`.
pub async fn run(pool: PgPool, config: Arc<Config>, shutdown: CancellationToken) {
    if !enabled(&config) {
        return;
    }
    let mut tick = tokio::time::interval(config.admin.summary_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match check(&pool, &config, Utc::now()).await {
            Ok(Some(sent)) => tracing::info!(date = %sent.date, trigger = sent.trigger.as_str(),
                messages = sent.message_ids.len(), "daily summary sent"),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("daily summary check failed: {e}");
                // The database is away: do not ask again at once.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}

fn enabled(config: &Config) -> bool {
    config.admin.daily_summary && !config.admin.phones.is_empty()
}

/// Sends the summary of the business date of `now` when it is due and not sent yet.
pub async fn check(
    pool: &PgPool,
    config: &Config,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<Sent>> {
    if !enabled(config) {
        return Ok(None);
    }
    let date = business_date(config.app_timezone, now);
    let sent: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM admin_daily_summaries WHERE business_date = $1)",
    )
    .bind(date)
    .fetch_one(pool)
    .await?;
    if sent {
        return Ok(None);
    }
    let run: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM fanout_runs
         WHERE business_date = $1 AND trigger IN ('cron', 'catch_up')
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(date)
    .fetch_optional(pool)
    .await?;
    let Some((run_id, status)) = run else {
        return Ok(None);
    };
    if status != "done" && status != "failed" {
        return Ok(None);
    }
    let trigger = if status == "done" && !unsent(pool, date).await? {
        Trigger::Drained
    } else if now >= closes(pool, config, date).await? {
        Trigger::WindowClose
    } else {
        return Ok(None);
    };
    send(pool, config, date, run_id, trigger).await
}

/// Whether a reminder of `date` (vehicle or manual record) is still to be sent.
async fn unsent(pool: &PgPool, date: NaiveDate) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM reminders r JOIN messages m ON m.id = r.message_id
                        WHERE r.reminder_date = $1
                          AND m.status IN ('queued', 'sending', 'retrying'))
             OR EXISTS (SELECT 1 FROM manual_reminders r JOIN messages m ON m.id = r.message_id
                        WHERE r.reminder_date = $1
                          AND m.status IN ('queued', 'sending', 'retrying'))",
    )
    .bind(date)
    .fetch_one(pool)
    .await
}

/// When the summary of `date` is due at the latest: the send window's close that day, or a
/// minute before the day's end (when the reminders expire) for a window open then.
pub async fn closes(
    pool: &PgPool,
    config: &Config,
    date: NaiveDate,
) -> sqlx::Result<DateTime<Utc>> {
    let tz = config.app_timezone;
    let window = crate::policy::settings::load(pool)
        .await?
        .map(|s| s.send_window);
    Ok(window
        .and_then(|w| w.closing_on(date, tz))
        .unwrap_or_else(|| end_of_business_day(tz, date) - chrono::Duration::minutes(1)))
}

/// Claims `date`'s summary and queues its messages, in one transaction; `None` when another
/// process claimed it first.
async fn send(
    pool: &PgPool,
    config: &Config,
    date: NaiveDate,
    run_id: Uuid,
    trigger: Trigger,
) -> sqlx::Result<Option<Sent>> {
    let mut tx = pool.begin().await?;
    // A concurrent claim waits here for the first to commit, then inserts nothing.
    let claimed: Option<NaiveDate> = sqlx::query_scalar(
        "INSERT INTO admin_daily_summaries (business_date, trigger, run_id, counts)
         VALUES ($1, $2, $3, '{}') ON CONFLICT (business_date) DO NOTHING RETURNING business_date",
    )
    .bind(date)
    .bind(trigger.as_str())
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_none() {
        return Ok(None);
    }
    let counts = today::counts(&mut tx, date).await?;
    let message_ids = super::queue(
        &mut tx,
        config,
        ADMIN_DAILY_SUMMARY,
        &values(date, &counts, config),
    )
    .await?;
    sqlx::query(
        "UPDATE admin_daily_summaries SET counts = $2, message_ids = $3 WHERE business_date = $1",
    )
    .bind(date)
    .bind(Json(&counts))
    .bind(&message_ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::counter!(NOTIFICATIONS, "source" => "summary", "result" => trigger.as_str())
        .increment(1);
    Ok(Some(Sent {
        date,
        trigger,
        message_ids,
    }))
}

/// The placeholder values of `date`'s summary. `-` where there is nothing to count: no finished
/// pass (`eligible`, `skipped`), no skip (`skipped_reasons`), no receipt at all (`delivered`,
/// `read`, `undelivered`: StarSender without its webhook gives none).
pub fn values(date: NaiveDate, c: &Counts, config: &Config) -> Vec<(&'static str, String)> {
    let or_dash = |n: Option<i64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let reasons = c.skipped_by_reason.clone().unwrap_or_default();
    let skipped_reasons = if reasons.is_empty() {
        "-".to_owned()
    } else {
        let mut by_count: Vec<(&String, &i64)> = reasons.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        by_count
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Skipped by the pass because the number had opted out, and cancelled after it opted out.
    let opted_out = reasons.get(suppressions::OPTED_OUT).copied().unwrap_or(0) + c.opted_out;
    let receipt = |n: i64| {
        if c.with_receipts == 0 {
            "-".to_owned()
        } else {
            n.to_string()
        }
    };
    vec![
        ("workshop_name", config.workshop_name.clone()),
        ("date", date.format(DATE_FORMAT).to_string()),
        ("eligible", or_dash(c.eligible)),
        ("queued", c.queued.to_string()),
        ("sent", c.sent.to_string()),
        ("failed", c.failed.to_string()),
        ("skipped", or_dash(c.skipped)),
        ("skipped_reasons", skipped_reasons),
        ("expired", c.expired.to_string()),
        ("opted_out", opted_out.to_string()),
        ("delivered", receipt(c.delivered)),
        ("read", receipt(c.read)),
        ("undelivered", receipt(c.undelivered)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(values: &'a [(&'static str, String)], key: &str) -> &'a str {
        values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("<missing>")
    }

    #[test]
    fn without_a_pass_or_receipts_the_counts_show_a_dash() {
        let config = Config::from_map(&Default::default()).unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let v = values(date, &Counts::default(), &config);
        assert_eq!(value(&v, "date"), "07-12-2026");
        for key in [
            "eligible",
            "skipped",
            "skipped_reasons",
            "delivered",
            "read",
            "undelivered",
        ] {
            assert_eq!(value(&v, key), "-", "{key}");
        }
        assert_eq!(value(&v, "sent"), "0");
    }

    #[test]
    fn reasons_go_most_frequent_first_and_opt_outs_add_up() {
        let config = Config::from_map(&Default::default()).unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let counts = Counts {
            eligible: Some(10),
            skipped: Some(4),
            skipped_by_reason: Some(
                [
                    ("customer has no name".to_owned(), 1),
                    (suppressions::OPTED_OUT.to_owned(), 3),
                ]
                .into(),
            ),
            cancelled: 2,
            opted_out: 2,
            sent: 4,
            delivered: 3,
            read: 1,
            with_receipts: 3,
            ..Default::default()
        };
        let v = values(date, &counts, &config);
        assert_eq!(
            value(&v, "skipped_reasons"),
            "opted out 3, customer has no name 1"
        );
        assert_eq!(value(&v, "opted_out"), "5");
        assert_eq!(value(&v, "delivered"), "3");
        assert_eq!(value(&v, "read"), "1");
        assert_eq!(value(&v, "undelivered"), "0");
    }
}
