//! One fan-out pass for a business date: walk the vehicles due on the calendar's dates a page at
//! a time — first those with an explicit `next_visit_date`, then those due by their
//! `last_visit_date` (README "Reminder calendar"); one indexed range query per page, never a
//! query per vehicle — and for each page, in one
//! transaction, insert the reminder rows under their unique `(vehicle_id, reminder_date)` key
//! with `ON CONFLICT DO NOTHING` and store a message + send job for exactly the rows inserted.
//! Running it again — sequentially, concurrently, after a crash half-way — creates nothing new.

use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    Candidate, Verdict,
    calendar::{self, DaysBefore},
    verdict,
};
use crate::{
    messages::{Kind, request::NewMessage, store},
    suppressions,
    templates::{Current, Workshop},
};

/// Vehicles per page (and per transaction).
pub const PAGE: i64 = 2_000;
/// The response lists at most this many vehicles.
pub const MAX_DETAILS: usize = 1_000;

/// What a pass needs to know.
#[derive(Debug, Clone)]
pub struct Pass {
    pub date: NaiveDate,
    /// The calendar: vehicles due this many days after `date` are reminded.
    pub days_before: DaysBefore,
    /// `SERVICE_INTERVAL_MONTHS`: due after the last visit when no next visit is set.
    pub interval_months: u32,
    /// The template version current when the pass started, and the workshop's values.
    pub template: Current,
    pub workshop: Workshop,
    pub max_attempts: u32,
    /// The reminders' deadline: the end of `date` in the workshop's time zone
    /// (`super::end_of_business_day`). Unsent by then, they expire.
    pub expires_at: DateTime<Utc>,
}

/// One vehicle of the response (README "Maintenance reminders").
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = FanoutDetail)]
pub struct Detail {
    pub vehicle_id: Uuid,
    pub no_pol: Option<String>,
    pub customer_nama: Option<String>,
    pub customer_hp: Option<String>,
    /// The due date: the explicit next visit, or the last visit plus `SERVICE_INTERVAL_MONTHS`.
    pub next_visit_date: NaiveDate,
    /// `next_visit_date` or `last_visit_date`: where the due date comes from.
    pub due_source: String,
    pub days_until_visit: i64,
    /// `queued`, `already_queued`, `skipped`; after `wait_seconds` also `sent` / `failed` /
    /// `expired` (not sent by the end of the business day).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The result of a pass (README "Maintenance reminders"). `eligible` counts every vehicle in the date window:
/// `reminder_queued + already_queued + skipped`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = FanoutSummary)]
pub struct Summary {
    pub run_id: Uuid,
    pub date: NaiveDate,
    pub total_customers: i64,
    pub eligible: i64,
    pub reminder_queued: i64,
    pub already_queued: i64,
    pub skipped: i64,
    /// Reminders of this date delivered so far (all passes).
    pub reminder_sent: i64,
    /// The daily run's pass over manual customers (README "Reminder calendar"); absent when
    /// the run did not include it (`run-now`, `REMINDER_INCLUDE_MANUAL=false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual: Option<ManualCounts>,
    pub details: Vec<Detail>,
    pub details_truncated: bool,
}

/// What the manual pass of a daily run did.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct ManualCounts {
    pub eligible: i64,
    pub reminder_queued: i64,
    pub already_queued: i64,
    pub skipped: i64,
}

/// Runs one pass. Memory is one page plus at most [`MAX_DETAILS`] details, whatever the
/// number of vehicles.
pub async fn run(pool: &PgPool, pass: &Pass, run_id: Uuid) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let total_customers: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(pool)
        .await?;
    let mut summary = Summary {
        run_id,
        date: pass.date,
        total_customers,
        eligible: 0,
        reminder_queued: 0,
        already_queued: 0,
        skipped: 0,
        reminder_sent: 0,
        manual: None,
        details: Vec::new(),
        details_truncated: false,
    };
    // One due date at a time: each walk is then a plain ordered range of one index (a set of
    // dates in one query makes the planner sort every match of the window for each page).
    let due = pass.days_before.due_dates(pass.date);
    let months = pass.interval_months as i32;
    for walk in [Walk::NextVisit, Walk::LastVisit] {
        for &date in &due {
            let (from, to) = match walk {
                Walk::NextVisit => (date, date),
                Walk::LastVisit => calendar::last_visit_range(date, date, pass.interval_months),
            };
            let mut cursor = (from, Uuid::nil());
            loop {
                let query = match walk {
                    Walk::NextVisit => sqlx::query_as(NEXT_VISIT_WALK)
                        .bind(date)
                        .bind(cursor.1)
                        .bind(PAGE),
                    Walk::LastVisit => sqlx::query_as(LAST_VISIT_WALK)
                        .bind(from)
                        .bind(to)
                        .bind(date)
                        .bind(cursor.0)
                        .bind(cursor.1)
                        .bind(PAGE)
                        .bind(months),
                };
                let page: Vec<Candidate> = query.fetch_all(pool).await?;
                let Some(last) = page.last() else { break };
                cursor = (last.walk_date, last.vehicle_id);
                let full = page.len() as i64 == PAGE;
                fan_out_page(pool, pass, &page, &mut summary).await?;
                if !full {
                    break;
                }
            }
        }
    }
    summary.reminder_sent = sent_on(pool, pass.date).await?;
    metrics::histogram!("bengkel_fanout_duration_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("bengkel_fanout_reminders_queued_total")
        .increment(summary.reminder_queued as u64);
    Ok(summary)
}

/// The two walks of a pass, each over its own index in its own order.
#[derive(Debug, Clone, Copy)]
enum Walk {
    /// [`NEXT_VISIT_WALK`].
    NextVisit,
    /// [`LAST_VISIT_WALK`].
    LastVisit,
}

/// Vehicles due on `$1` by their `next_visit_date`, after id `$2`, `$3` at a time (index
/// `vehicles_next_visit (next_visit_date, id)`).
const NEXT_VISIT_WALK: &str = "SELECT v.id AS vehicle_id, v.customer_id, v.no_pol, v.model,
        v.next_visit_date AS due_date, 'next_visit_date' AS due_source,
        v.next_visit_date AS walk_date, c.nama, c.hp, c.salutation, c.language
     FROM vehicles v JOIN customers c ON c.id = v.customer_id
     WHERE v.next_visit_date = $1 AND v.id > $2
     ORDER BY v.id
     LIMIT $3";

/// Vehicles with no `next_visit_date` due on `$3` by `last_visit_date` + `$7` months: last
/// visits in `$1..=$2` (`calendar::last_visit_range`) after `($4, $5)`, `$6` at a time (partial
/// index `vehicles_last_visit (last_visit_date, id)`).
const LAST_VISIT_WALK: &str = "SELECT v.id AS vehicle_id, v.customer_id, v.no_pol, v.model,
        (v.last_visit_date + make_interval(months => $7))::date AS due_date,
        'last_visit_date' AS due_source,
        v.last_visit_date AS walk_date, c.nama, c.hp, c.salutation, c.language
     FROM vehicles v JOIN customers c ON c.id = v.customer_id
     WHERE v.next_visit_date IS NULL
       AND v.last_visit_date >= $1 AND v.last_visit_date <= $2
       AND (v.last_visit_date + make_interval(months => $7))::date = $3
       AND (v.last_visit_date, v.id) > ($4, $5)
     ORDER BY v.last_visit_date, v.id
     LIMIT $6";

/// Reminders of `date` whose message was delivered.
pub async fn sent_on(pool: &PgPool, date: NaiveDate) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM reminders WHERE reminder_date = $1 AND status = 'sent'",
    )
    .bind(date)
    .fetch_one(pool)
    .await
}

async fn fan_out_page(
    pool: &PgPool,
    pass: &Pass,
    page: &[Candidate],
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut remind: Vec<(&Candidate, NewMessage, Uuid)> = Vec::with_capacity(page.len());
    let mut verdicts: Vec<Option<String>> = Vec::with_capacity(page.len());
    let judged: Vec<Verdict> = page
        .iter()
        .map(|c| verdict(c, pass.date, &pass.template, &pass.workshop))
        .collect();
    // Numbers on the opt-out list (README "Opt-out"): one query for the page.
    let phones: Vec<&str> = judged
        .iter()
        .filter_map(|v| match v {
            Verdict::Remind { to, .. } => Some(to.as_str()),
            Verdict::Skip(_) => None,
        })
        .collect();
    let opted_out = suppressions::repo::blocked_among(pool, &phones, Kind::Maintenance).await?;
    for (c, judged) in page.iter().zip(judged) {
        match judged {
            Verdict::Remind { to, .. } if opted_out.contains(to.as_str()) => {
                verdicts.push(Some(suppressions::OPTED_OUT.to_owned()));
            }
            Verdict::Remind { to, body } => {
                verdicts.push(None);
                let mut message = NewMessage::internal(Kind::Maintenance, to, body, None)
                    .from_template(&pass.template);
                message.expires_at = Some(pass.expires_at);
                remind.push((c, message, Uuid::now_v7()));
            }
            Verdict::Skip(reason) => verdicts.push(Some(reason)),
        }
    }

    // The reminder rows first (their message ids are chosen here; the foreign key is checked
    // at commit), then messages and jobs for exactly the rows that were new.
    let mut tx = pool.begin().await?;
    let reminder_ids: Vec<Uuid> = remind.iter().map(|_| Uuid::now_v7()).collect();
    let vehicle_ids: Vec<Uuid> = remind.iter().map(|(c, ..)| c.vehicle_id).collect();
    let customer_ids: Vec<Uuid> = remind.iter().map(|(c, ..)| c.customer_id).collect();
    let visits: Vec<NaiveDate> = remind.iter().map(|(c, ..)| c.due_date).collect();
    let message_ids: Vec<Uuid> = remind.iter().map(|(.., id)| *id).collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO reminders (id, vehicle_id, customer_id, reminder_date, next_visit_date, message_id)
         SELECT r.id, r.vehicle_id, r.customer_id, $5, r.next_visit_date, r.message_id
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::date[], $6::uuid[])
              AS r(id, vehicle_id, customer_id, next_visit_date, message_id)
         ON CONFLICT (vehicle_id, reminder_date) DO NOTHING
         RETURNING message_id",
    )
    .bind(&reminder_ids)
    .bind(&vehicle_ids)
    .bind(&customer_ids)
    .bind(&visits)
    .bind(pass.date)
    .bind(&message_ids)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let (new_ids, new_messages): (Vec<Uuid>, Vec<NewMessage>) = remind
        .iter()
        .filter(|(.., id)| inserted.contains(id))
        .map(|(_, m, id)| (*id, m.clone()))
        .unzip();
    if !new_ids.is_empty() {
        store::store_followed(
            &mut tx,
            &new_ids,
            &new_messages,
            "fanout",
            pass.max_attempts,
        )
        .await?;
    }
    tx.commit().await?;

    // Already queued by an earlier (or concurrent) pass: their message ids, for the details.
    let room = MAX_DETAILS.saturating_sub(summary.details.len());
    let mut existing = std::collections::HashMap::new();
    if room > 0 && inserted.len() < remind.len() {
        let others: Vec<Uuid> = remind
            .iter()
            .filter(|(.., id)| !inserted.contains(id))
            .map(|(c, ..)| c.vehicle_id)
            .take(room)
            .collect();
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT vehicle_id, message_id FROM reminders
             WHERE reminder_date = $1 AND vehicle_id = ANY($2)",
        )
        .bind(pass.date)
        .bind(&others)
        .fetch_all(pool)
        .await?;
        existing.extend(rows);
    }

    let mut reminded = remind.iter();
    for (c, skip) in page.iter().zip(verdicts) {
        let days_until_visit = (c.due_date - pass.date).num_days();
        let detail = |status: &str, reason, message_id, message| Detail {
            vehicle_id: c.vehicle_id,
            no_pol: c.no_pol.clone(),
            customer_nama: c.nama.clone(),
            customer_hp: c.hp.clone(),
            next_visit_date: c.due_date,
            due_source: c.due_source.clone(),
            days_until_visit,
            status: status.into(),
            reason,
            message_id,
            message,
        };
        let item = match skip {
            Some(reason) => {
                summary.skipped += 1;
                detail("skipped", Some(reason), None, None)
            }
            None => {
                let Some((_, message, id)) = reminded.next() else {
                    anyhow::bail!("fan-out page bookkeeping out of step");
                };
                if inserted.contains(id) {
                    summary.reminder_queued += 1;
                    detail("queued", None, Some(*id), Some(message.body.clone()))
                } else {
                    summary.already_queued += 1;
                    let existing_id = existing.get(&c.vehicle_id).copied();
                    detail(
                        "already_queued",
                        None,
                        existing_id,
                        Some(message.body.clone()),
                    )
                }
            }
        };
        summary.eligible += 1;
        if summary.details.len() < MAX_DETAILS {
            summary.details.push(item);
        } else {
            summary.details_truncated = true;
        }
    }
    Ok(())
}

/// For `wait_seconds`: waits until no reminder of `date` is still on its way (or the deadline),
/// then reports each listed vehicle's outcome (`sent` / `failed` / `expired`) and the sent count.
pub async fn wait_for_outcomes(
    pool: &PgPool,
    summary: &mut Summary,
    wait: std::time::Duration,
) -> sqlx::Result<()> {
    wait_settled(pool, OPEN_REMINDERS, summary.date, wait).await?;
    let ids: Vec<Uuid> = summary
        .details
        .iter()
        .filter_map(|d| d.message_id)
        .collect();
    let outcomes = final_outcomes(pool, &ids).await?;
    for d in &mut summary.details {
        if let Some((status, reason)) = d.message_id.and_then(|id| outcomes.get(&id)) {
            d.status = status.clone();
            d.reason = reason.clone();
        }
    }
    summary.reminder_sent = sent_on(pool, summary.date).await?;
    Ok(())
}

/// Reminders of a date (`$1`) whose message is still on its way.
pub const OPEN_REMINDERS: &str =
    "SELECT count(*) FROM reminders r JOIN messages m ON m.id = r.message_id
     WHERE r.reminder_date = $1 AND m.status IN ('queued', 'sending', 'retrying')";

/// Polls `open_sql` (a count for a date `$1`) until it is 0 or `wait` has passed.
pub async fn wait_settled(
    pool: &PgPool,
    open_sql: &'static str,
    date: NaiveDate,
    wait: std::time::Duration,
) -> sqlx::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let open: i64 = sqlx::query_scalar(open_sql)
            .bind(date)
            .fetch_one(pool)
            .await?;
        if open == 0 || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// For messages that finished: `sent`, `expired` with the reason, or `failed` with the reason (a
/// cancelled one counts as failed). Messages still on their way are absent.
pub async fn final_outcomes(
    pool: &PgPool,
    ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, (String, Option<String>)>> {
    let rows: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, last_error FROM messages WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, status, error)| match status.as_str() {
            "sent" => Some((id, ("sent".to_owned(), None))),
            "failed" | "cancelled" => Some((id, ("failed".to_owned(), error.or(Some(status))))),
            "expired" => Some((id, ("expired".to_owned(), error))),
            _ => None,
        })
        .collect())
}
