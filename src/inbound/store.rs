//! SQL for `inbound_payloads`, `inbound_messages` and `whatsapp_contacts` (the `inbound` module
//! owns them): a payload kept with its job, the job's reads and marks, the list, and a number's
//! `last_inbound_at`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Gateway, Keyword, QUEUE};
use crate::queue::{self, NewJob};

/// `max_attempts` of a payload job: a processing that fails on the database is tried again
/// with the send backoff; a payload that cannot be processed fails at once.
pub const JOB_MAX_ATTEMPTS: i32 = 10;

/// The payload of an inbound job.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PayloadJob {
    pub payload_id: Uuid,
}

/// Keeps a request's body as it came, with the job that will process it, on the caller's
/// transaction (the webhook answers once it committed). `content_type` is kept for the parser
/// (cut to 200 characters). Returns the payload's id.
pub async fn store_payload(
    conn: &mut PgConnection,
    gateway: Gateway,
    content_type: Option<&str>,
    body: &[u8],
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    let job = PayloadJob { payload_id: id };
    let job = NewJob {
        id: queue::new_job_id(),
        // Serializing a UUID cannot fail.
        payload: serde_json::to_vec(&job).unwrap_or_default(),
        run_at: None,
        max_attempts: JOB_MAX_ATTEMPTS,
    };
    let content_type: Option<String> =
        content_type.map(|c| c.chars().filter(|c| *c != '\0').take(200).collect());
    sqlx::query(
        "INSERT INTO inbound_payloads (id, gateway, content_type, body, job_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(gateway)
    .bind(content_type)
    .bind(body)
    .bind(&job.id)
    .execute(&mut *conn)
    .await?;
    queue::enqueue(conn, QUEUE, vec![job]).await?;
    Ok(id)
}

/// A stored payload, as its job reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Payload {
    pub id: Uuid,
    pub gateway: Gateway,
    pub received_at: DateTime<Utc>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub processed_at: Option<DateTime<Utc>>,
    pub result: Option<String>,
}

/// The payload, locked for the caller's transaction (a second run of its job waits, then finds
/// it processed).
pub async fn lock_payload(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Payload>> {
    sqlx::query_as(
        "SELECT id, gateway, received_at, content_type, body, processed_at, result
         FROM inbound_payloads WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Notes what processing concluded; `processed`: it was applied (else it gave up, and a requeue
/// of its job may try again).
pub async fn mark(
    conn: &mut PgConnection,
    id: Uuid,
    result: &str,
    processed: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE inbound_payloads
         SET result = left($2, 2000), processed_at = CASE WHEN $3 THEN now() END
         WHERE id = $1",
    )
    .bind(id)
    .bind(result)
    .bind(processed)
    .execute(conn)
    .await?;
    Ok(())
}

/// When `phone` (normalized) last wrote to us, if ever.
pub async fn last_inbound_at(
    conn: &mut PgConnection,
    phone: &str,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT last_inbound_at FROM whatsapp_contacts WHERE phone = $1")
        .bind(phone)
        .fetch_optional(conn)
        .await
}

/// Moves `phone`'s `last_inbound_at` to `at` unless it is later already.
pub async fn touch_contact(
    conn: &mut PgConnection,
    phone: &str,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO whatsapp_contacts (phone, last_inbound_at) VALUES ($1, $2)
         ON CONFLICT (phone) DO UPDATE
             SET last_inbound_at = excluded.last_inbound_at
         WHERE whatsapp_contacts.last_inbound_at < excluded.last_inbound_at",
    )
    .bind(phone)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// An inbound message as `GET /inbound/messages` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct InboundMessage {
    pub id: Uuid,
    pub gateway: Gateway,
    /// The sender, normalized (`62…`).
    #[sqlx(rename = "from_phone")]
    #[schema(example = "628123456789")]
    pub from: String,
    pub text: Option<String>,
    /// The gateway's time of the message, when it gave one.
    pub sent_at: Option<DateTime<Utc>>,
    /// When the webhook request reached us.
    pub received_at: DateTime<Utc>,
    /// The keyword the text was (`optout`, `optin`), if any.
    pub keyword: Option<Keyword>,
}

/// What `GET /inbound/messages` asks for.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub from: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Older than this message (the previous page's `next_cursor`).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Newest first (ids are time-ordered).
pub async fn list(pool: &PgPool, f: &ListFilter) -> sqlx::Result<Vec<InboundMessage>> {
    sqlx::query_as(
        "SELECT id, gateway, from_phone, text, sent_at, received_at, keyword FROM inbound_messages
         WHERE ($1::text IS NULL OR from_phone = $1)
           AND ($2::timestamptz IS NULL OR received_at >= $2)
           AND ($3::uuid IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
    )
    .bind(f.from.as_deref())
    .bind(f.since)
    .bind(f.before)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}
