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

/// Stores a message and its send job in one statement (so one implicit transaction and one
/// round trip): the job is inserted only if the message was, with the message's own `run_at`.
pub async fn store(
    pool: &PgPool,
    new: &NewMessage,
    origin: Origin<'_>,
    max_attempts: u32,
) -> sqlx::Result<Stored> {
    let message_id = Uuid::now_v7();
    let job = NewJob::send(message_id, new.run_at, max_attempts);
    let inserted: Option<Message> = sqlx::query_as(concat!(
        "WITH m AS (
            INSERT INTO messages (id, kind, to_phone, body, file_url, run_at, job_id, max_attempts,
                                  created_by, idempotency_scope, idempotency_key, request_fingerprint)
            VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7, $8, $9, $9, $10, $11)
            ON CONFLICT (idempotency_scope, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING *
         ), job AS (
            INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
            SELECT m.job_id, $12, $13, 'Pending', 0, m.max_attempts, m.run_at, 0 FROM m
         )
         SELECT ",
        columns!(),
        " FROM m"
    ))
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
    .bind(queue::SEND_QUEUE)
    .bind(&job.payload)
    .fetch_optional(pool)
    .await?;

    let Some(message) = inserted else {
        // Only reachable with a key: a committed message holds it (a concurrent duplicate
        // waited for that commit on the unique index).
        let existing: Option<FingerprintedMessage> = sqlx::query_as(concat!(
            "SELECT request_fingerprint, ",
            columns!(),
            " FROM messages WHERE idempotency_scope = $1 AND idempotency_key = $2"
        ))
        .bind(origin.created_by)
        .bind(origin.idempotency_key)
        .fetch_optional(pool)
        .await?;
        return Ok(match existing {
            Some(row) if row.request_fingerprint == new.fingerprint => {
                Stored::Replayed(row.message)
            }
            _ => Stored::KeyConflict,
        });
    };
    metrics::counter!("bengkel_messages_enqueued_total", "kind" => new.kind.as_str()).increment(1);
    Ok(Stored::Created(message))
}

/// Stores many messages and their jobs with two set-wise statements on the caller's transaction
/// (no idempotency keys). Returns the new ids in input order.
pub async fn store_batch(
    conn: &mut PgConnection,
    messages: &[NewMessage],
    created_by: &str,
    max_attempts: u32,
) -> sqlx::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = messages.iter().map(|_| Uuid::now_v7()).collect();
    store_batch_with_ids(conn, &ids, messages, created_by, max_attempts).await?;
    Ok(ids)
}

/// [`store_batch`] with the message ids chosen by the caller (`ids[i]` for `messages[i]`), for
/// callers that reference the messages in the same transaction (reminders).
pub async fn store_batch_with_ids(
    conn: &mut PgConnection,
    ids: &[Uuid],
    messages: &[NewMessage],
    created_by: &str,
    max_attempts: u32,
) -> sqlx::Result<()> {
    let n = messages.len();
    let mut jobs = Vec::with_capacity(n);
    let (mut kinds, mut tos, mut bodies, mut files, mut run_ats) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (m, id) in messages.iter().zip(ids) {
        let job = NewJob::send(*id, m.run_at, max_attempts);
        kinds.push(m.kind.as_str());
        tos.push(m.to.as_str());
        bodies.push(m.body.as_str());
        files.push(m.file.as_deref());
        run_ats.push(m.run_at);
        jobs.push(job);
    }
    let job_ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    sqlx::query(
        "INSERT INTO messages (id, kind, to_phone, body, file_url, run_at, job_id, max_attempts, created_by)
         SELECT m.id, m.kind, m.to_phone, m.body, m.file_url, coalesce(m.run_at, now()), m.job_id, $8, $9
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])
              AS m(id, kind, to_phone, body, file_url, run_at, job_id)",
    )
    .bind(ids)
    .bind(&kinds)
    .bind(&tos)
    .bind(&bodies)
    .bind(&files)
    .bind(&run_ats)
    .bind(&job_ids)
    .bind(max_attempts as i32)
    .bind(created_by)
    .execute(&mut *conn)
    .await?;
    queue::enqueue(conn, queue::SEND_QUEUE, jobs).await?;
    for kind in &kinds {
        metrics::counter!("bengkel_messages_enqueued_total", "kind" => *kind).increment(1);
    }
    Ok(())
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
    for table in [
        "UPDATE reminders SET status = 'cancelled', updated_at = now() WHERE message_id = $1",
        "UPDATE manual_reminders SET status = 'cancelled', updated_at = now() WHERE message_id = $1",
    ] {
        sqlx::query(table).bind(id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Cancelled::Done(Box::new(message)))
}

/// The worker's view of a message it has claimed.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    /// The status before the claim: `sending` means a previous attempt was interrupted.
    pub previous: Status,
    pub to_phone: String,
    pub body: String,
    pub file_url: Option<String>,
}

/// A request to claim a message for attempt `attempt`.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub message_id: Uuid,
    pub attempt: i32,
}

/// Marks each message `sending` for its attempt and returns what to send, per claim in order;
/// `None` where the message is not sendable (finished, cancelled, missing, or found `sending`
/// while `take_interrupted` is false). One statement for the whole batch.
pub async fn claim_batch(
    pool: &PgPool,
    claims: &[Claim],
    take_interrupted: bool,
) -> sqlx::Result<Vec<Option<Claimed>>> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.message_id).collect();
    let attempts: Vec<i32> = claims.iter().map(|c| c.attempt).collect();
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::int[]) AS t(id, attempt)
         ), before AS (
            SELECT m.id, m.status FROM messages m JOIN input i ON i.id = m.id
            ORDER BY m.id FOR UPDATE OF m
         )
         UPDATE messages m SET status = 'sending', attempts = i.attempt, updated_at = now()
         FROM before b JOIN input i ON i.id = b.id
         WHERE m.id = b.id
           AND (b.status IN ('queued', 'retrying') OR (b.status = 'sending' AND $3))
         RETURNING m.id, b.status AS previous, m.to_phone, m.body, m.file_url",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(take_interrupted)
    .fetch_all(pool)
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, Claimed> =
        rows.into_iter().map(|r| (r.id, r.claimed)).collect();
    Ok(ids.iter().map(|id| by_id.remove(id)).collect())
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    #[sqlx(flatten)]
    claimed: Claimed,
}

pub async fn status(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Status>> {
    sqlx::query_scalar("SELECT status FROM messages WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The recorded result of one attempt, and what it does to its message.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub message_id: Uuid,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    /// `sent`, `retry`, `ambiguous` or `failed` (the `bengkel_sends_total` outcome).
    pub outcome: &'static str,
    /// The gateway response class, or `interrupted`.
    pub class: &'static str,
    pub error: Option<String>,
    /// The message's new status: `sent`, `retrying` or `failed`.
    pub status: Status,
    /// For `retrying`: when the job runs again (its `run_at` moves with it).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub response: Option<serde_json::Value>,
}

/// Records many attempts and moves their messages (and, for retries, their jobs) in one
/// statement, with the domain bookkeeping of a finished message in the same transaction: its
/// reminder row (`sent`/`failed`) and, when sent, the `whatsapp_report` frequency or the manual
/// record's `reminder_sent_count` / `last_reminder_sent`.
pub async fn record_batch(pool: &PgPool, batch: &[Recorded]) -> sqlx::Result<Vec<()>> {
    let ids: Vec<Uuid> = batch.iter().map(|r| r.message_id).collect();
    let attempts: Vec<i32> = batch.iter().map(|r| r.attempt).collect();
    let started: Vec<DateTime<Utc>> = batch.iter().map(|r| r.started_at).collect();
    let outcomes: Vec<&str> = batch.iter().map(|r| r.outcome).collect();
    let classes: Vec<&str> = batch.iter().map(|r| r.class).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|r| r.error.as_deref()).collect();
    let statuses: Vec<&str> = batch.iter().map(|r| r.status.as_str()).collect();
    let nexts: Vec<Option<DateTime<Utc>>> = batch.iter().map(|r| r.next_attempt_at).collect();
    let responses: Vec<Option<&serde_json::Value>> =
        batch.iter().map(|r| r.response.as_ref()).collect();
    sqlx::query(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::timestamptz[], $9::jsonb[])
                AS t(message_id, attempt, started_at, outcome, class, error, status, next_at, response)
         ), m AS (
            UPDATE messages SET
                status = i.status,
                sent_at = CASE WHEN i.status = 'sent' THEN now() END,
                failed_at = CASE WHEN i.status = 'failed' THEN now() END,
                next_attempt_at = i.next_at,
                last_error = i.error,
                gateway_response = coalesce(i.response, messages.gateway_response),
                updated_at = now()
            FROM input i
            WHERE messages.id = i.message_id AND messages.status IN ('queued', 'sending', 'retrying')
            RETURNING messages.id, messages.job_id, messages.status, messages.last_error, i.next_at
         ), job AS (
            UPDATE apalis.jobs SET run_at = m.next_at FROM m
            WHERE m.next_at IS NOT NULL AND apalis.jobs.id = m.job_id
         ), reminder AS (
            -- A maintenance reminder follows its message to the end. Only messages that moved
            -- out of queued/sending/retrying in this statement get here, so a re-run of a
            -- finished job changes nothing and the report counts each delivery once.
            UPDATE reminders SET
                status = m.status,
                sent_at = CASE WHEN m.status = 'sent' THEN now() END,
                reason = CASE WHEN m.status = 'failed' THEN m.last_error END,
                updated_at = now()
            FROM m
            WHERE reminders.message_id = m.id AND m.status IN ('sent', 'failed')
            RETURNING reminders.customer_id, reminders.vehicle_id, reminders.status
         ), report AS (
            INSERT INTO whatsapp_report (id_customer, id_vehicle, last_message_date, frequency)
            SELECT r.customer_id, r.vehicle_id, now(), count(*)
            FROM reminder r
            -- a vehicle or customer deleted since the fan-out has no report row to keep
            JOIN vehicles v ON v.id = r.vehicle_id
            JOIN customers c ON c.id = r.customer_id
            WHERE r.status = 'sent'
            GROUP BY r.customer_id, r.vehicle_id
            ON CONFLICT (id_customer, id_vehicle) DO UPDATE SET
                frequency = whatsapp_report.frequency + excluded.frequency,
                last_message_date = excluded.last_message_date,
                updated_at = now()
         ), manual AS (
            -- A manual-customer reminder, the same way; its record counts deliveries.
            UPDATE manual_reminders SET
                status = m.status,
                sent_at = CASE WHEN m.status = 'sent' THEN now() END,
                reason = CASE WHEN m.status = 'failed' THEN m.last_error END,
                updated_at = now()
            FROM m
            WHERE manual_reminders.message_id = m.id AND m.status IN ('sent', 'failed')
            RETURNING manual_reminders.manual_id, manual_reminders.status
         ), manual_count AS (
            UPDATE manual_whatsapp SET
                reminder_sent_count = reminder_sent_count + d.n,
                last_reminder_sent = now()
            FROM (SELECT manual_id, count(*) AS n FROM manual WHERE status = 'sent' GROUP BY manual_id) d
            WHERE manual_whatsapp.id = d.manual_id
         )
         INSERT INTO message_attempts (message_id, attempt, started_at, outcome, class, error)
         SELECT message_id, attempt, started_at, outcome, class, error FROM input
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&started)
    .bind(&outcomes)
    .bind(&classes)
    .bind(&errors)
    .bind(&statuses)
    .bind(&nexts)
    .bind(&responses)
    .execute(pool)
    .await?;
    Ok(vec![(); batch.len()])
}
