//! Today's reminder run: the reminders (vehicles and manual records) of today's business date,
//! each with its message, and the counts over all of them.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use crate::messages::{DeliveryStatus, Status};

/// The most reminders the list shows (`truncated` says there were more).
pub const MAX_ROWS: i64 = 1_000;

/// One reminder of the day with its message.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = ConsoleReminder)]
pub struct Reminder {
    /// `vehicle` (a customer's vehicle) or `manual` (a manual record).
    pub source: String,
    pub reminder_id: Uuid,
    /// The customer's `nama` or the manual record's `customer_name`.
    pub name: Option<String>,
    pub no_pol: Option<String>,
    /// The number the message goes to (normalized).
    pub phone: String,
    pub message_id: Uuid,
    pub status: Status,
    pub delivery_status: Option<DeliveryStatus>,
    pub held_reason: Option<String>,
    pub last_error: Option<String>,
    /// The send job (for `POST /ops/jobs/{id}/requeue`).
    pub job_id: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Counts over every reminder of the day (not only the listed ones).
#[derive(Debug, Default, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = ConsoleCounts)]
pub struct Counts {
    /// Vehicles and manual records in the date window of the day's latest finished pass (its
    /// `eligible`, manual pass included when it ran); `null` before any pass finished today.
    #[sqlx(skip)]
    pub eligible: Option<i64>,
    /// Of those, skipped by that pass (no usable number, opted out, …); `null` likewise.
    #[sqlx(skip)]
    pub skipped: Option<i64>,
    /// `skipped` by reason; `null` likewise (and for a pass recorded before reasons were kept).
    #[sqlx(skip)]
    pub skipped_by_reason: Option<BTreeMap<String, i64>>,
    /// Reminders stored for the day.
    pub total: i64,
    /// Not sent yet: `queued`, `sending` or `retrying`.
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub expired: i64,
    pub cancelled: i64,
    /// Of `cancelled`, those whose number is on the opt-out list now.
    pub opted_out: i64,
    /// Receipts: delivered (read ones included).
    pub delivered: i64,
    pub read: i64,
    /// Receipts: accepted by the gateway, then reported as not deliverable.
    pub undelivered: i64,
    /// Reminders with any receipt (0: the gateway gave none, e.g. StarSender without its
    /// webhook).
    pub with_receipts: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ConsoleToday)]
pub struct Today {
    /// The business date in `APP_TIMEZONE`.
    pub date: NaiveDate,
    pub counts: Counts,
    /// Newest first (by message); with `?status=`, only reminders whose message has it.
    pub items: Vec<Reminder>,
    /// More than 1,000 reminders matched; the oldest are left out.
    pub truncated: bool,
}

/// Every reminder of `$1` (vehicles, then manual records) with its message's columns.
macro_rules! day_rows {
    () => {
        "SELECT 'vehicle' AS source, r.id AS reminder_id, c.nama AS name, v.no_pol, \
                m.to_phone AS phone, m.id AS message_id, m.status, m.delivery_status, \
                m.held_reason, m.last_error, m.job_id, m.attempts, m.created_at \
           FROM reminders r JOIN messages m ON m.id = r.message_id \
           LEFT JOIN customers c ON c.id = r.customer_id \
           LEFT JOIN vehicles v ON v.id = r.vehicle_id \
          WHERE r.reminder_date = $1 \
         UNION ALL \
         SELECT 'manual', mr.id, mw.customer_name, mw.nopol, \
                m.to_phone, m.id, m.status, m.delivery_status, \
                m.held_reason, m.last_error, m.job_id, m.attempts, m.created_at \
           FROM manual_reminders mr JOIN messages m ON m.id = mr.message_id \
           JOIN manual_whatsapp mw ON mw.id = mr.manual_id \
          WHERE mr.reminder_date = $1"
    };
}

/// The day's reminders, newest first, at most [`MAX_ROWS`] (and whether there were more);
/// `status` keeps those whose message has it.
pub async fn reminders(
    conn: &mut PgConnection,
    date: NaiveDate,
    status: Option<Status>,
) -> sqlx::Result<(Vec<Reminder>, bool)> {
    let mut rows: Vec<Reminder> = sqlx::query_as(concat!(
        "SELECT * FROM (",
        day_rows!(),
        ") t WHERE ($2::text IS NULL OR t.status = $2) \
         ORDER BY t.created_at DESC, t.message_id DESC LIMIT $3"
    ))
    .bind(date)
    .bind(status.map(Status::as_str))
    .bind(MAX_ROWS + 1)
    .fetch_all(&mut *conn)
    .await?;
    let truncated = rows.len() as i64 > MAX_ROWS;
    rows.truncate(MAX_ROWS as usize);
    Ok((rows, truncated))
}

/// The day's counts; `eligible` and `skipped` from its latest finished pass.
pub async fn counts(conn: &mut PgConnection, date: NaiveDate) -> sqlx::Result<Counts> {
    let mut counts: Counts = sqlx::query_as(concat!(
        "WITH t AS (",
        day_rows!(),
        ") SELECT count(*) AS total, \
           count(*) FILTER (WHERE status IN ('queued', 'sending', 'retrying')) AS queued, \
           count(*) FILTER (WHERE status = 'sent') AS sent, \
           count(*) FILTER (WHERE status = 'failed') AS failed, \
           count(*) FILTER (WHERE status = 'expired') AS expired, \
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled, \
           count(*) FILTER (WHERE status = 'cancelled' \
               AND EXISTS (SELECT 1 FROM suppressions s WHERE s.phone = t.phone)) AS opted_out, \
           count(*) FILTER (WHERE delivery_status IN ('delivered', 'read')) AS delivered, \
           count(*) FILTER (WHERE delivery_status = 'read') AS read, \
           count(*) FILTER (WHERE delivery_status = 'undelivered') AS undelivered, \
           count(delivery_status) AS with_receipts \
         FROM t"
    ))
    .bind(date)
    .fetch_one(&mut *conn)
    .await?;
    // The manual pass's numbers are NULL when the run had none.
    type Reasons = Option<Json<BTreeMap<String, i64>>>;
    let pass: Option<(Option<i64>, Option<i64>, Reasons, Reasons)> = sqlx::query_as(
        "SELECT (eligible + coalesce(manual_eligible, 0))::bigint, \
                (skipped + coalesce(manual_skipped, 0))::bigint, \
                skipped_reasons, manual_skipped_reasons \
         FROM fanout_runs WHERE business_date = $1 AND status = 'done' \
         ORDER BY finished_at DESC NULLS LAST LIMIT 1",
    )
    .bind(date)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((eligible, skipped, reasons, manual_reasons)) = pass else {
        return Ok(counts);
    };
    counts.eligible = eligible;
    counts.skipped = skipped;
    if let Some(Json(mut reasons)) = reasons {
        for (reason, n) in manual_reasons.map(|j| j.0).unwrap_or_default() {
            *reasons.entry(reason).or_default() += n;
        }
        // The manual pass's `skipped` also counts the records outside the date window, which
        // are not in `eligible`: of the eligible, these many were skipped.
        counts.skipped = Some(reasons.values().sum());
        counts.skipped_by_reason = Some(reasons);
    }
    Ok(counts)
}
