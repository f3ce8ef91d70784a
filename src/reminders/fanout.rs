//! One fan-out pass for a business date over the vehicles (a [`pass::Pass`]): the vehicles due
//! on the calendar's dates — first those with an explicit `next_visit_date`, then those due by
//! their `last_visit_date` (README "Reminder calendar"); one indexed range query per page, never
//! a query per vehicle — each reminded once per `(vehicle_id, reminder_date)` (`reminders`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Instant,
};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    Candidate, Verdict,
    calendar::{self, DaysBefore, DueWalk},
    pass::{self, Followers, Outcome},
    verdict,
};
use crate::{
    messages::{Kind, request::NewMessage},
    templates::{Current, Workshop},
};

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
    /// Every candidate is skipped with this reason (`templates::cloud_api::unsendable`).
    pub unsendable: Option<String>,
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
    /// `skipped` by reason (`opted out`, `no usable number`, …).
    pub skipped_by_reason: BTreeMap<String, i64>,
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
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ManualCounts {
    pub eligible: i64,
    pub reminder_queued: i64,
    pub already_queued: i64,
    pub skipped: i64,
    /// The records in the date window that were skipped, by reason.
    pub skipped_by_reason: BTreeMap<String, i64>,
}

/// Runs one pass ([`pass::walk`]) and counts what it did.
pub async fn run(pool: &PgPool, pass: &Pass, run_id: Uuid) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let total_customers: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(pool)
        .await?;
    let walked = pass::walk(pool, pass).await?;
    let summary = Summary {
        run_id,
        date: pass.date,
        total_customers,
        eligible: walked.eligible,
        reminder_queued: walked.reminder_queued,
        already_queued: walked.already_queued,
        skipped: walked.skipped,
        skipped_by_reason: walked.skipped_by_reason,
        reminder_sent: sent_on(pool, pass.date).await?,
        manual: None,
        details: walked.details,
        details_truncated: walked.details_truncated,
    };
    metrics::histogram!("bengkel_fanout_duration_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("bengkel_fanout_reminders_queued_total")
        .increment(summary.reminder_queued as u64);
    Ok(summary)
}

impl pass::Pass for Pass {
    type Walk = DueWalk;
    type Cursor = (NaiveDate, Uuid);
    type Candidate = Candidate;
    type Detail = Detail;

    const CREATED_BY: &'static str = "fanout";

    fn kind(&self) -> Kind {
        Kind::Maintenance
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    fn unsendable(&self) -> Option<&str> {
        self.unsendable.as_deref()
    }

    fn walks(&self) -> Vec<(DueWalk, (NaiveDate, Uuid))> {
        calendar::due_walks(&self.days_before, self.date, self.interval_months)
    }

    async fn page(
        &self,
        pool: &PgPool,
        walk: &DueWalk,
        after: &(NaiveDate, Uuid),
        limit: i64,
    ) -> sqlx::Result<Vec<Candidate>> {
        let query = match *walk {
            DueWalk::Next { due } => sqlx::query_as(NEXT_VISIT_WALK)
                .bind(due)
                .bind(after.1)
                .bind(limit),
            DueWalk::Last { due, from, to } => sqlx::query_as(LAST_VISIT_WALK)
                .bind(from)
                .bind(to)
                .bind(due)
                .bind(after.0)
                .bind(after.1)
                .bind(limit)
                .bind(self.interval_months as i32),
        };
        query.fetch_all(pool).await
    }

    fn cursor(c: &Candidate) -> (NaiveDate, Uuid) {
        (c.walk_date, c.vehicle_id)
    }

    fn key(c: &Candidate) -> Uuid {
        c.vehicle_id
    }

    fn judge(&self, c: &Candidate) -> Result<NewMessage, String> {
        match verdict(c, self.date, &self.template, &self.workshop) {
            Verdict::Remind { to, body, template } => {
                let mut message =
                    NewMessage::internal(Kind::Maintenance, to, body, None).with_template(template);
                message.expires_at = Some(self.expires_at);
                Ok(message)
            }
            Verdict::Skip(reason) => Err(reason),
        }
    }

    async fn follow(
        &self,
        conn: &mut PgConnection,
        rows: &[(&Candidate, Uuid)],
    ) -> sqlx::Result<HashSet<Uuid>> {
        let reminder_ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
        let vehicle_ids: Vec<Uuid> = rows.iter().map(|(c, _)| c.vehicle_id).collect();
        let customer_ids: Vec<Uuid> = rows.iter().map(|(c, _)| c.customer_id).collect();
        let visits: Vec<NaiveDate> = rows.iter().map(|(c, _)| c.due_date).collect();
        let message_ids: Vec<Uuid> = rows.iter().map(|(_, id)| *id).collect();
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
        .bind(self.date)
        .bind(&message_ids)
        .fetch_all(conn)
        .await?;
        Ok(inserted.into_iter().collect())
    }

    async fn existing(&self, pool: &PgPool, keys: &[Uuid]) -> sqlx::Result<HashMap<Uuid, Uuid>> {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT vehicle_id, message_id FROM reminders
             WHERE reminder_date = $1 AND vehicle_id = ANY($2)",
        )
        .bind(self.date)
        .bind(keys)
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    fn detail(&self, c: &Candidate, outcome: Outcome<'_>) -> Option<Detail> {
        Some(Detail {
            vehicle_id: c.vehicle_id,
            no_pol: c.no_pol.clone(),
            customer_nama: c.nama.clone(),
            customer_hp: c.hp.clone(),
            next_visit_date: c.due_date,
            due_source: c.due_source.clone(),
            days_until_visit: (c.due_date - self.date).num_days(),
            status: outcome.status().into(),
            reason: outcome.reason(),
            message_id: outcome.message_id(),
            message: outcome.text().map(str::to_owned),
        })
    }
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

impl pass::Listed for Detail {
    fn message_id(&self) -> Option<Uuid> {
        self.message_id
    }

    fn finish(&mut self, status: String, reason: Option<String>) {
        self.status = status;
        self.reason = reason;
    }
}

/// For `wait_seconds`: waits until no reminder of `date` is still on its way (or the deadline),
/// then reports each listed vehicle's outcome (`sent` / `failed` / `expired`) and the sent count.
pub async fn wait_for_outcomes(
    pool: &PgPool,
    summary: &mut Summary,
    wait: std::time::Duration,
) -> sqlx::Result<()> {
    pass::settle(
        pool,
        Followers::Vehicles,
        summary.date,
        wait,
        &mut summary.details,
    )
    .await?;
    summary.reminder_sent = sent_on(pool, summary.date).await?;
    Ok(())
}
