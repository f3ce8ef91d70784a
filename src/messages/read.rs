//! Reading messages: one message, its attempts, pages of them, and the few questions other
//! modules ask of the `messages` table (who is being sent to, which jobs the policy holds).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Attempt, DeliveryStatus, Kind, Message, Status};
use crate::{policy::HoldReason, suppressions::Scope};

/// The columns of [`Message`], as a literal so that queries stay `&'static str`.
macro_rules! columns {
    () => {
        "id, kind, to_phone, body, file_url, status, run_at, attempts, max_attempts, \
         next_attempt_at, last_error, gateway_response, sent_at, failed_at, cancelled_at, \
         expires_at, expired_at, respect_window, held_until, held_reason, template_key, \
         template_version, batch_id, client_ref, delivery_status, delivered_at, read_at, \
         undelivered_reason, undelivered_code, gateway_message_id, job_id, created_at, updated_at, \
         CASE WHEN template_key IS NOT NULL THEN jsonb_build_object('key', template_key, \
         'version', template_version, 'language', template_language, 'values', template_values) \
         END AS template, \
         CASE WHEN campaign_id IS NOT NULL THEN jsonb_build_object('id', campaign_id, \
         'step', campaign_step, 'variant', campaign_variant) END AS campaign"
    };
}
pub(super) use columns;

/// Whose messages a caller may see: `None` = everyone's (role ops), else the messages created
/// with this token `sub` (README "Callers see their own messages").
pub type Owner<'a> = Option<&'a str>;

/// One message, if it exists and `owner` may see it.
pub async fn find(
    conn: &mut PgConnection,
    id: Uuid,
    owner: Owner<'_>,
) -> sqlx::Result<Option<Message>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM messages WHERE id = $1 AND ($2::text IS NULL OR created_by = $2)"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(conn)
    .await
}

pub async fn attempts(pool: &PgPool, id: Uuid) -> sqlx::Result<Vec<Attempt>> {
    sqlx::query_as(
        "SELECT attempt, started_at, finished_at, outcome, class, error
         FROM message_attempts WHERE message_id = $1 ORDER BY started_at, attempt",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

pub async fn status(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Status>> {
    sqlx::query_scalar("SELECT status FROM messages WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The current status and `last_error` of each of `ids` that exists.
pub async fn statuses(
    pool: &PgPool,
    ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, Status, Option<String>)>> {
    sqlx::query_as("SELECT id, status, last_error FROM messages WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}

pub struct ListFilter<'a> {
    pub status: Option<Status>,
    pub kind: Option<Kind>,
    pub to: Option<String>,
    /// Only the messages of this `POST /whatsapp/send-batch` call.
    pub batch: Option<Uuid>,
    pub delivery: Option<DeliveryFilter>,
    pub before: Option<Uuid>,
    pub limit: i64,
    pub owner: Owner<'a>,
}

/// The `delivery_status` filter of `GET /whatsapp/messages`: a delivery status, or `none` (no
/// receipt: not sent yet, not reported yet, or a gateway that reports none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = DeliveryStatusFilter)]
pub enum DeliveryFilter {
    Delivered,
    Read,
    Undelivered,
    /// `delivery_status` is null.
    None,
}

impl DeliveryFilter {
    pub const ALL: [DeliveryFilter; 4] = [
        DeliveryFilter::Delivered,
        DeliveryFilter::Read,
        DeliveryFilter::Undelivered,
        DeliveryFilter::None,
    ];

    pub fn as_str(self) -> &'static str {
        self.status().map_or("none", DeliveryStatus::as_str)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The status it asks for (`None`: null).
    pub fn status(self) -> Option<DeliveryStatus> {
        match self {
            DeliveryFilter::Delivered => Some(DeliveryStatus::Delivered),
            DeliveryFilter::Read => Some(DeliveryStatus::Read),
            DeliveryFilter::Undelivered => Some(DeliveryStatus::Undelivered),
            DeliveryFilter::None => None,
        }
    }
}

/// The filters of [`list`] but the batch, on `$1`..`$7` (`$7`: a [`DeliveryFilter`]).
macro_rules! list_filters {
    () => {
        "($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::text IS NULL OR to_phone = $3)
           AND ($4::uuid IS NULL OR id < $4)
           AND ($6::text IS NULL OR created_by = $6)
           AND ($7::text IS NULL OR delivery_status = $7
                OR ($7 = 'none' AND delivery_status IS NULL))"
    };
}

/// Newest first; ids are UUIDv7 so the id is both the order and the cursor. A batch's messages
/// are read by their own statement, `batch_id = $8` written out, so that even a cached generic
/// plan walks `messages_batch_newest` (an `$8 IS NULL OR …` would hide the index from it); so
/// are the messages of one delivery status outside a batch (`delivery_status = $8`, on
/// `messages_delivery_status_newest`: `undelivered` ones are few among many).
pub async fn list(pool: &PgPool, f: &ListFilter<'_>) -> sqlx::Result<Vec<Message>> {
    const ALL: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM messages WHERE ",
        list_filters!(),
        " ORDER BY id DESC LIMIT $5"
    );
    const IN_BATCH: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM messages WHERE batch_id = $8 AND ",
        list_filters!(),
        " ORDER BY id DESC LIMIT $5"
    );
    const OF_DELIVERY_STATUS: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM messages WHERE delivery_status = $8 AND ",
        list_filters!(),
        " ORDER BY id DESC LIMIT $5"
    );
    let delivery_status = f.delivery.and_then(DeliveryFilter::status);
    let statement = match (f.batch, delivery_status) {
        (Some(_), _) => IN_BATCH,
        (None, Some(_)) => OF_DELIVERY_STATUS,
        (None, None) => ALL,
    };
    let query = sqlx::query_as(statement)
        .bind(f.status.map(Status::as_str))
        .bind(f.kind.map(Kind::as_str))
        .bind(&f.to)
        .bind(f.before)
        .bind(f.limit)
        .bind(f.owner)
        .bind(f.delivery.map(DeliveryFilter::as_str));
    match (f.batch, delivery_status) {
        (Some(batch), _) => query.bind(batch).fetch_all(pool).await,
        (None, Some(status)) => query.bind(status.as_str()).fetch_all(pool).await,
        (None, None) => query.fetch_all(pool).await,
    }
}

/// How many messages to `phone` whose kind `scope` blocks are being sent right now.
pub async fn in_flight_to(pool: &PgPool, phone: &str, scope: Scope) -> sqlx::Result<i64> {
    sqlx::query_scalar(concat!(
        "SELECT count(*) FROM messages
         WHERE to_phone = $1 AND status = 'sending' AND ($2 = 'all' OR kind IN ",
        crate::reminder_kinds!(),
        ")"
    ))
    .bind(phone)
    .bind(scope.as_str())
    .fetch_one(pool)
    .await
}

/// A message the policy holds back.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HeldMessage {
    pub id: Uuid,
    pub kind: Kind,
    #[sqlx(rename = "to_phone")]
    pub to: String,
    pub status: Status,
    pub run_at: DateTime<Utc>,
    pub held_until: Option<DateTime<Utc>>,
    pub held_reason: Option<HoldReason>,
}

/// Unsent messages the policy holds back, newest first (`GET /ops/held`).
pub async fn held(
    pool: &PgPool,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<HeldMessage>> {
    sqlx::query_as(
        "SELECT id, kind, to_phone, status, run_at, held_until, held_reason FROM messages
         WHERE held_reason IS NOT NULL AND status IN ('queued', 'retrying')
           AND ($1::uuid IS NULL OR id < $1)
         ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The jobs of unsent messages the policy holds for one of `reasons` (to wake them when the
/// hold ends early).
pub async fn held_jobs(
    conn: &mut PgConnection,
    reasons: &[HoldReason],
) -> sqlx::Result<Vec<String>> {
    let reasons: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
    sqlx::query_scalar(
        "SELECT job_id FROM messages
         WHERE held_reason = ANY($1) AND status IN ('queued', 'retrying')
           AND held_until > now() AND job_id IS NOT NULL",
    )
    .bind(&reasons)
    .fetch_all(conn)
    .await
}
