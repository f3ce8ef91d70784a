//! SQL for messages. Small functions over a connection or transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Attempt, Kind, Message, Status, request::NewMessage};
use crate::queue::{self, NewJob};

/// The columns of [`Message`], as a literal so that queries stay `&'static str`.
macro_rules! columns {
    () => {
        "id, kind, to_phone, body, file_url, status, run_at, attempts, max_attempts, \
         next_attempt_at, last_error, gateway_response, sent_at, failed_at, cancelled_at, job_id, \
         created_at, updated_at"
    };
}

/// Who asked, and with which `Idempotency-Key`.
pub struct Origin<'a> {
    pub created_by: &'a str,
    pub idempotency_key: Option<&'a str>,
}

pub enum Stored {
    Created(Message),
    /// The same key with the same request: the original message.
    Replayed(Message),
    /// The same key with another request.
    KeyConflict,
}

/// Stores a message and its send job in one transaction.
pub async fn store(
    pool: &PgPool,
    new: &NewMessage,
    origin: Origin<'_>,
    max_attempts: u32,
) -> sqlx::Result<Stored> {
    let mut tx = pool.begin().await?;
    let message_id = Uuid::now_v7();
    let job = NewJob::send(message_id, new.run_at, max_attempts);
    let inserted: Option<Message> = sqlx::query_as(concat!("INSERT INTO messages (id, kind, to_phone, body, file_url, run_at, job_id, max_attempts,
                               created_by, idempotency_scope, idempotency_key, request_fingerprint)
         VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7, $8, $9, $9, $10, $11)
         ON CONFLICT (idempotency_scope, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING ", columns!(), ""))
    .bind(message_id)
    .bind(new.kind)
    .bind(new.to.as_str())
    .bind(&new.body)
    .bind(&new.file)
    .bind(new.run_at)
    .bind(&job.id)
    .bind(max_attempts as i32)
    .bind(origin.created_by)
    .bind(origin.idempotency_key)
    .bind(&new.fingerprint)
    .fetch_optional(&mut *tx)
    .await?;

    let Some(message) = inserted else {
        // Only reachable with a key: a committed message holds it (a concurrent duplicate
        // waited for that commit on the unique index).
        tx.rollback().await?;
        let existing: Option<(String, Message)> = sqlx::query_as(concat!(
            "SELECT request_fingerprint, ",
            columns!(),
            " FROM messages
             WHERE idempotency_scope = $1 AND idempotency_key = $2"
        ))
        .bind(origin.created_by)
        .bind(origin.idempotency_key)
        .fetch_optional(pool)
        .await
        .map(|row: Option<FingerprintedMessage>| row.map(|r| (r.request_fingerprint, r.message)))?;
        return Ok(match existing {
            Some((fp, m)) if fp == new.fingerprint => Stored::Replayed(m),
            _ => Stored::KeyConflict,
        });
    };
    queue::enqueue(&mut tx, queue::SEND_QUEUE, vec![job]).await?;
    tx.commit().await?;
    metrics::counter!("bengkel_messages_enqueued_total", "kind" => new.kind.as_str()).increment(1);
    Ok(Stored::Created(message))
}

#[derive(sqlx::FromRow)]
struct FingerprintedMessage {
    request_fingerprint: String,
    #[sqlx(flatten)]
    message: Message,
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Message>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM messages WHERE id = $1"
    ))
    .bind(id)
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

pub struct ListFilter {
    pub status: Option<Status>,
    pub kind: Option<Kind>,
    pub to: Option<String>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Newest first; ids are UUIDv7 so the id is both the order and the cursor.
pub async fn list(pool: &PgPool, f: &ListFilter) -> sqlx::Result<Vec<Message>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM messages
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::text IS NULL OR to_phone = $3)
           AND ($4::uuid IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5"
    ))
    .bind(f.status.map(Status::as_str))
    .bind(f.kind.map(Kind::as_str))
    .bind(&f.to)
    .bind(f.before)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

pub enum Cancelled {
    Done(Box<Message>),
    NotFound,
    /// Sending right now or already finished.
    TooLate(Status),
}

/// Cancels a message that is not yet sent, and its waiting job, in one transaction.
pub async fn cancel(pool: &PgPool, id: Uuid) -> sqlx::Result<Cancelled> {
    let mut tx = pool.begin().await?;
    let current: Option<(Status, Option<String>)> =
        sqlx::query_as("SELECT status, job_id FROM messages WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((status, job_id)) = current else {
        return Ok(Cancelled::NotFound);
    };
    if !matches!(status, Status::Queued | Status::Retrying) {
        return Ok(Cancelled::TooLate(status));
    }
    if let Some(job_id) = job_id {
        // A job that a worker already holds finds the message cancelled and stops itself.
        queue::cancel_waiting(&mut tx, &job_id).await?;
    }
    let message: Message = sqlx::query_as(concat!(
        "UPDATE messages SET status = 'cancelled', cancelled_at = now(), next_attempt_at = NULL,
                updated_at = now()
         WHERE id = $1 RETURNING ",
        columns!(),
        ""
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Cancelled::Done(Box::new(message)))
}

/// The worker's view of a message it is about to send.
#[derive(Debug, sqlx::FromRow)]
pub struct Sendable {
    pub id: Uuid,
    pub kind: Kind,
    pub to_phone: String,
    pub body: String,
    pub file_url: Option<String>,
    pub status: Status,
    pub job_id: Option<String>,
}

pub async fn sendable(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Sendable>> {
    sqlx::query_as(
        "SELECT id, kind, to_phone, body, file_url, status, job_id FROM messages WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Marks the message `sending` for attempt `attempt`; false when it was cancelled or finished
/// meanwhile.
pub async fn claim(pool: &PgPool, id: Uuid, attempt: i32) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE messages SET status = 'sending', attempts = $2, updated_at = now()
         WHERE id = $1 AND status IN ('queued', 'retrying', 'sending')",
    )
    .bind(id)
    .bind(attempt)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The recorded result of one attempt.
pub struct AttemptRecord<'a> {
    pub message_id: Uuid,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub outcome: &'a str,
    pub class: &'a str,
    pub error: Option<&'a str>,
}

pub async fn record_attempt(conn: &mut PgConnection, r: &AttemptRecord<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO message_attempts (message_id, attempt, started_at, outcome, class, error)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(r.message_id)
    .bind(r.attempt)
    .bind(r.started_at)
    .bind(r.outcome)
    .bind(r.class)
    .bind(r.error)
    .execute(conn)
    .await?;
    Ok(())
}

/// `sending` → `sent`. False when the message was not `sending` (nothing changed).
pub async fn mark_sent(
    conn: &mut PgConnection,
    id: Uuid,
    response: &serde_json::Value,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE messages SET status = 'sent', sent_at = now(), gateway_response = $2,
                last_error = NULL, next_attempt_at = NULL, updated_at = now()
         WHERE id = $1 AND status = 'sending'",
    )
    .bind(id)
    .bind(response)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn mark_retrying(
    conn: &mut PgConnection,
    id: Uuid,
    next_attempt_at: DateTime<Utc>,
    error: &str,
    response: Option<&serde_json::Value>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE messages SET status = 'retrying', next_attempt_at = $2, last_error = $3,
                gateway_response = coalesce($4, gateway_response), updated_at = now()
         WHERE id = $1 AND status = 'sending'",
    )
    .bind(id)
    .bind(next_attempt_at)
    .bind(error)
    .bind(response)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_failed(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    response: Option<&serde_json::Value>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE messages SET status = 'failed', failed_at = now(), next_attempt_at = NULL,
                last_error = $2, gateway_response = coalesce($3, gateway_response), updated_at = now()
         WHERE id = $1 AND status IN ('queued', 'sending', 'retrying')",
    )
    .bind(id)
    .bind(error)
    .bind(response)
    .execute(conn)
    .await?;
    Ok(())
}
