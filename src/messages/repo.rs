//! SQL for messages. Small functions over a connection or transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Attempt, Change, Kind, Message, Status, request::NewMessage};
use crate::{
    queue::{self, NewJob, Run, Verdict},
    suppressions::{RECIPIENT_OPTED_OUT, Scope},
};

/// The columns of [`Message`], as a literal so that queries stay `&'static str`.
macro_rules! columns {
    () => {
        "id, kind, to_phone, body, file_url, status, run_at, attempts, max_attempts, \
         next_attempt_at, last_error, gateway_response, sent_at, failed_at, cancelled_at, \
         expires_at, expired_at, respect_window, held_until, held_reason, template_key, \
     template_version, batch_id, client_ref, job_id, created_at, \
         updated_at"
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
/// A message to a number whose opt-out covers its kind (README "Opt-out") is stored `cancelled`
/// with `last_error` = `recipient opted out` and gets no job.
pub async fn store(
    pool: &PgPool,
    new: &NewMessage,
    origin: Origin<'_>,
    max_attempts: u32,
) -> sqlx::Result<Stored> {
    let message_id = Uuid::now_v7();
    let job = NewJob::send(new.job(message_id), new.run_at, max_attempts);
    let inserted: Option<Message> = sqlx::query_as(concat!(
        "WITH m AS (
            INSERT INTO messages (id, kind, to_phone, body, file_url, run_at, job_id, max_attempts,
                                  created_by, idempotency_scope, idempotency_key, request_fingerprint,
                                  expires_at, respect_window, status, last_error, cancelled_at)
            SELECT $1, $2, $3, $4, $5, coalesce($6, now()), CASE WHEN s.blocked THEN NULL ELSE $7 END,
                   $8, $9, $9, $10, $11, $14, $15,
                   CASE WHEN s.blocked THEN 'cancelled' ELSE 'queued' END,
                   CASE WHEN s.blocked THEN $16 END,
                   CASE WHEN s.blocked THEN now() END
            FROM (SELECT ",
        crate::suppressed!("$3", "$2"),
        " AS blocked) s
            ON CONFLICT (idempotency_scope, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING *
         ), queued AS (SELECT * FROM m WHERE job_id IS NOT NULL), ",
        crate::enqueue_cte!("queued", "$12", "$13"),
        "
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
    .bind(new.expires_at)
    .bind(new.respect_window)
    .bind(RECIPIENT_OPTED_OUT)
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
    if message.job_id.is_some() {
        metrics::counter!("bengkel_messages_enqueued_total", "kind" => new.kind.as_str())
            .increment(1);
    } else {
        metrics::counter!("bengkel_messages_suppressed_total", "kind" => new.kind.as_str())
            .increment(1);
    }
    Ok(Stored::Created(message))
}

/// One `POST /whatsapp/send` (or query-string send) to store, with its idempotency origin.
#[derive(Debug, Clone)]
pub struct Enqueue {
    pub new: NewMessage,
    pub created_by: String,
    pub idempotency_key: Option<String>,
}

/// Stores a group of single sends with one statement and one commit ([`store`] for each, in
/// effect): the same opt-out and idempotency rules per request — a key already used (also by
/// another request of the same group) is a replay or a conflict. Answers in order.
pub async fn store_group(
    pool: &PgPool,
    group: &[Enqueue],
    max_attempts: u32,
) -> sqlx::Result<Vec<Stored>> {
    let n = group.len();
    let ids: Vec<Uuid> = group.iter().map(|_| Uuid::now_v7()).collect();
    let jobs: Vec<NewJob> = group
        .iter()
        .zip(&ids)
        .map(|(e, id)| NewJob::send(e.new.job(*id), e.new.run_at, max_attempts))
        .collect();
    let mut cols = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut keys, mut fingerprints, mut expires, mut windows) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in group {
        cols.0.push(e.new.kind.as_str());
        cols.1.push(e.new.to.as_str());
        cols.2.push(e.new.body.as_str());
        cols.3.push(e.new.file.as_deref());
        cols.4.push(e.new.run_at);
        cols.5.push(e.created_by.as_str());
        keys.push(e.idempotency_key.as_deref());
        fingerprints.push(e.new.fingerprint.as_str());
        expires.push(e.new.expires_at);
        windows.push(e.new.respect_window);
    }
    for j in &jobs {
        cols.6.push(j.id.as_str());
    }
    let payloads: Vec<&[u8]> = jobs.iter().map(|j| j.payload.as_slice()).collect();
    let order: Vec<i32> = (0..n as i32).collect();
    let mut tx = pool.begin().await?;
    let inserted: Vec<Message> = sqlx::query_as(concat!(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[],
                                 $11::timestamptz[], $12::bool[], $13::bytea[], $14::int[])
                AS i(id, kind, to_phone, body, file_url, run_at, job_id, created_by, idempotency_key,
                     fingerprint, expires_at, respect_window, payload, ord)
         ), m AS (
            INSERT INTO messages (id, kind, to_phone, body, file_url, run_at, job_id, max_attempts,
                                  created_by, idempotency_scope, idempotency_key, request_fingerprint,
                                  expires_at, respect_window, status, last_error, cancelled_at)
            SELECT i.id, i.kind, i.to_phone, i.body, i.file_url, coalesce(i.run_at, now()),
                   CASE WHEN s.blocked THEN NULL ELSE i.job_id END, $15, i.created_by, i.created_by,
                   i.idempotency_key, i.fingerprint, i.expires_at, i.respect_window,
                   CASE WHEN s.blocked THEN 'cancelled' ELSE 'queued' END,
                   CASE WHEN s.blocked THEN $16 END,
                   CASE WHEN s.blocked THEN now() END
            FROM input i CROSS JOIN LATERAL (SELECT ",
        crate::suppressed!("i.to_phone", "i.kind"),
        " AS blocked) s
            ORDER BY i.ord
            ON CONFLICT (idempotency_scope, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING *
         ), queued AS (
            SELECT m.*, i.payload FROM m JOIN input i ON i.id = m.id WHERE m.job_id IS NOT NULL
         ), ",
        crate::enqueue_cte!("queued", "$17", "queued.payload"),
        "
         SELECT ",
        columns!(),
        " FROM m"
    ))
    .bind(&ids)
    .bind(&cols.0)
    .bind(&cols.1)
    .bind(&cols.2)
    .bind(&cols.3)
    .bind(&cols.4)
    .bind(&cols.6)
    .bind(&cols.5)
    .bind(&keys)
    .bind(&fingerprints)
    .bind(&expires)
    .bind(&windows)
    .bind(&payloads)
    .bind(&order)
    .bind(max_attempts as i32)
    .bind(RECIPIENT_OPTED_OUT)
    .bind(queue::SEND_QUEUE)
    .fetch_all(&mut *tx)
    .await?;
    let mut by_id: std::collections::HashMap<Uuid, Message> =
        inserted.into_iter().map(|m| (m.id, m)).collect();
    let mut out = Vec::with_capacity(n);
    for (e, id) in group.iter().zip(&ids) {
        if let Some(m) = by_id.remove(id) {
            let counter = if m.job_id.is_some() {
                "bengkel_messages_enqueued_total"
            } else {
                "bengkel_messages_suppressed_total"
            };
            metrics::counter!(counter, "kind" => e.new.kind.as_str()).increment(1);
            out.push(Stored::Created(m));
            continue;
        }
        // Not inserted: its key is held — by a committed message, or by an earlier request of
        // this group (visible here, in the same transaction).
        let existing: Option<FingerprintedMessage> = sqlx::query_as(concat!(
            "SELECT request_fingerprint, ",
            columns!(),
            " FROM messages WHERE idempotency_scope = $1 AND idempotency_key = $2"
        ))
        .bind(&e.created_by)
        .bind(e.idempotency_key.as_deref())
        .fetch_optional(&mut *tx)
        .await?;
        out.push(match existing {
            Some(row) if row.request_fingerprint == e.new.fingerprint => {
                Stored::Replayed(row.message)
            }
            _ => Stored::KeyConflict,
        });
    }
    tx.commit().await?;
    metrics::histogram!("bengkel_enqueue_group_size").record(n as f64);
    Ok(out)
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
/// callers that reference the messages in the same transaction (reminders). Returns the ids of
/// the messages stored `cancelled` because their number opted out.
pub async fn store_batch_with_ids(
    conn: &mut PgConnection,
    ids: &[Uuid],
    messages: &[NewMessage],
    created_by: &str,
    max_attempts: u32,
) -> sqlx::Result<std::collections::HashSet<Uuid>> {
    store_batch_tagged(conn, ids, messages, created_by, max_attempts, None).await
}

/// The `POST /whatsapp/send-batch` call a group of messages came in: stored on each message as
/// `batch_id`, with the item's `client_ref` (`client_refs[i]` for `messages[i]`).
#[derive(Debug, Clone, Copy)]
pub struct BatchTag<'a> {
    pub batch_id: Uuid,
    pub client_refs: &'a [Option<String>],
}

/// [`store_batch_with_ids`], the messages tagged with the batch call they came in (`None`: no
/// batch, both columns NULL).
pub async fn store_batch_tagged(
    conn: &mut PgConnection,
    ids: &[Uuid],
    messages: &[NewMessage],
    created_by: &str,
    max_attempts: u32,
    batch: Option<BatchTag<'_>>,
) -> sqlx::Result<std::collections::HashSet<Uuid>> {
    let n = messages.len();
    let batch_id = batch.map(|b| b.batch_id);
    let client_refs: Vec<Option<&str>> = (0..n)
        .map(|i| batch.and_then(|b| b.client_refs.get(i)?.as_deref()))
        .collect();
    let mut jobs = Vec::with_capacity(n);
    let (mut expires, mut windows) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut template_keys, mut template_versions) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut kinds, mut tos, mut bodies, mut files, mut run_ats) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (m, id) in messages.iter().zip(ids) {
        let job = NewJob::send(m.job(*id), m.run_at, max_attempts);
        expires.push(m.expires_at);
        windows.push(m.respect_window);
        template_keys.push(m.template.as_ref().map(|t| t.0.as_str()));
        template_versions.push(m.template.as_ref().map(|t| t.1));
        kinds.push(m.kind.as_str());
        tos.push(m.to.as_str());
        bodies.push(m.body.as_str());
        files.push(m.file.as_deref());
        run_ats.push(m.run_at);
        jobs.push(job);
    }
    let job_ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    // A message to a number whose opt-out covers its kind is stored `cancelled`, without a job
    // (README "Opt-out"); the passes skip such numbers before, this covers an opt-out that
    // arrived in between.
    let blocked: Vec<Uuid> = sqlx::query_scalar(concat!(
        "WITH ins AS (
         INSERT INTO messages (id, kind, to_phone, body, file_url, run_at, job_id, max_attempts, created_by,
                               expires_at, respect_window, status, last_error, cancelled_at,
                               template_key, template_version, batch_id, client_ref)
         SELECT m.id, m.kind, m.to_phone, m.body, m.file_url, coalesce(m.run_at, now()),
                CASE WHEN s.blocked THEN NULL ELSE m.job_id END, $8, $9,
                m.expires_at, m.respect_window,
                CASE WHEN s.blocked THEN 'cancelled' ELSE 'queued' END,
                CASE WHEN s.blocked THEN $12 END,
                CASE WHEN s.blocked THEN now() END,
                m.template_key, m.template_version, $15::uuid, m.client_ref
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
                     $10::timestamptz[], $11::bool[], $13::text[], $14::int[], $16::text[])
              AS m(id, kind, to_phone, body, file_url, run_at, job_id, expires_at, respect_window,
                   template_key, template_version, client_ref)
              CROSS JOIN LATERAL (SELECT ",
        crate::suppressed!("m.to_phone", "m.kind"),
        " AS blocked) s
         RETURNING id, job_id
         )
         SELECT id FROM ins WHERE job_id IS NULL",
    ))
    .bind(ids)
    .bind(&kinds)
    .bind(&tos)
    .bind(&bodies)
    .bind(&files)
    .bind(&run_ats)
    .bind(&job_ids)
    .bind(max_attempts as i32)
    .bind(created_by)
    .bind(&expires)
    .bind(&windows)
    .bind(RECIPIENT_OPTED_OUT)
    .bind(&template_keys)
    .bind(&template_versions)
    .bind(batch_id)
    .bind(&client_refs)
    .fetch_all(&mut *conn)
    .await?;
    let blocked: std::collections::HashSet<Uuid> = blocked.into_iter().collect();
    let mut queued = Vec::with_capacity(n);
    for ((job, id), kind) in jobs.into_iter().zip(ids).zip(&kinds) {
        if blocked.contains(id) {
            metrics::counter!("bengkel_messages_suppressed_total", "kind" => *kind).increment(1);
        } else {
            metrics::counter!("bengkel_messages_enqueued_total", "kind" => *kind).increment(1);
            queued.push(job);
        }
    }
    if !queued.is_empty() {
        queue::enqueue(&mut *conn, queue::SEND_QUEUE, queued).await?;
    }
    if !blocked.is_empty() {
        // Rows the caller inserted before (reminder rows) follow their message.
        let changes: Vec<Change> = blocked.iter().map(|id| opted_out_change(*id)).collect();
        follow(conn, &changes).await?;
    }
    Ok(blocked)
}

fn opted_out_change(message_id: Uuid) -> Change {
    change(
        message_id,
        Status::Cancelled,
        Some(RECIPIENT_OPTED_OUT.to_owned()),
    )
}

/// A number that just opted out (README "Opt-out"): its messages not yet sent whose kind `scope`
/// blocks (`queued` or `retrying`) are cancelled with `last_error` = `recipient opted out`, their
/// waiting jobs too, and their reminder rows follow; on the caller's transaction. A message being
/// sent right now is left to finish ([`in_flight_to`] tells). Returns the kinds of the
/// messages cancelled, one per message.
pub async fn cancel_for_recipient(
    conn: &mut PgConnection,
    phone: &str,
    scope: Scope,
) -> sqlx::Result<Vec<Kind>> {
    // Rows are locked in id order, as `claim_batch` locks them: no deadlock with a claim.
    let rows: Vec<(Uuid, Kind, Option<String>)> = sqlx::query_as(concat!(
        "WITH picked AS (
            SELECT id FROM messages
            WHERE to_phone = $1 AND status IN ('queued', 'retrying')
              AND ($2 = 'all' OR kind IN ",
        crate::reminder_kinds!(),
        ")
            ORDER BY id FOR UPDATE
         )
         UPDATE messages SET status = 'cancelled', cancelled_at = now(), last_error = $3,
                next_attempt_at = NULL, held_until = NULL, held_reason = NULL, updated_at = now()
         FROM picked WHERE messages.id = picked.id
         RETURNING messages.id, messages.kind, messages.job_id",
    ))
    .bind(phone)
    .bind(scope.as_str())
    .bind(RECIPIENT_OPTED_OUT)
    .fetch_all(&mut *conn)
    .await?;
    let job_ids: Vec<String> = rows.iter().filter_map(|r| r.2.clone()).collect();
    // A job a worker holds is left alone: its run finds the message cancelled.
    queue::cancel_waiting_many(&mut *conn, &job_ids).await?;
    let changes: Vec<Change> = rows.iter().map(|r| opted_out_change(r.0)).collect();
    follow(conn, &changes).await?;
    Ok(rows.into_iter().map(|r| r.1).collect())
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
    /// Only the messages of this `POST /whatsapp/send-batch` call.
    pub batch: Option<Uuid>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// The filters of [`list`] but the batch, on `$1`..`$5`.
macro_rules! list_filters {
    () => {
        "($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::text IS NULL OR to_phone = $3)
           AND ($4::uuid IS NULL OR id < $4)"
    };
}

/// Newest first; ids are UUIDv7 so the id is both the order and the cursor. A batch's messages
/// are read by their own statement, `batch_id = $6` written out, so that even a cached generic
/// plan walks `messages_batch_newest` (an `$6 IS NULL OR …` would hide the index from it).
pub async fn list(pool: &PgPool, f: &ListFilter) -> sqlx::Result<Vec<Message>> {
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
        " FROM messages WHERE batch_id = $6 AND ",
        list_filters!(),
        " ORDER BY id DESC LIMIT $5"
    );
    let query = sqlx::query_as(if f.batch.is_some() { IN_BATCH } else { ALL })
        .bind(f.status.map(Status::as_str))
        .bind(f.kind.map(Kind::as_str))
        .bind(&f.to)
        .bind(f.before)
        .bind(f.limit);
    match f.batch {
        Some(batch) => query.bind(batch).fetch_all(pool).await,
        None => query.fetch_all(pool).await,
    }
}

pub enum Cancelled {
    Done(Box<Message>),
    NotFound,
    /// Sending right now or already finished.
    TooLate(Status),
}

/// Cancels a message that is not yet sent, and its waiting job, in one transaction; its
/// reminder row follows.
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
        // A job that a worker already holds finds the message cancelled and settles so.
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
    follow(&mut tx, &[change(id, Status::Cancelled, None)]).await?;
    tx.commit().await?;
    Ok(Cancelled::Done(Box::new(message)))
}

fn change(message_id: Uuid, status: Status, error: Option<String>) -> Change {
    Change {
        message_id,
        status,
        error,
        kind: None,
    }
}

/// The rows that follow a message (reminder log, manual reminders) follow `changes`.
async fn follow(conn: &mut PgConnection, changes: &[Change]) -> sqlx::Result<()> {
    // Only what may concern them: a group of ad-hoc sends costs no statement here.
    let of = |kind| -> Vec<Change> { changes.iter().filter(|c| c.may_be(kind)).cloned().collect() };
    crate::reminders::log::follow(&mut *conn, &of(Kind::Maintenance)).await?;
    crate::manual::repo::follow(conn, &of(Kind::Manual)).await
}

/// The messages of jobs an operator requeued: `queued` again with fresh attempts, due now; their
/// reminder rows follow. Same transaction as `queue::requeue`.
pub async fn requeued(conn: &mut PgConnection, job_ids: &[String]) -> sqlx::Result<u64> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE messages SET status = 'queued', attempts = 0, next_attempt_at = NULL, last_error = NULL,
                failed_at = NULL, cancelled_at = NULL, expired_at = NULL, run_at = now(),
                updated_at = now()
         WHERE job_id = ANY($1)
         RETURNING id",
    )
    .bind(job_ids)
    .fetch_all(&mut *conn)
    .await?;
    let changes: Vec<Change> = ids
        .iter()
        .map(|id| change(*id, Status::Queued, None))
        .collect();
    follow(conn, &changes).await?;
    Ok(ids.len() as u64)
}

/// The message of a job an operator cancelled (`queue::cancel_waiting` in the same
/// transaction), with its reminder row.
pub async fn cancelled_job(conn: &mut PgConnection, job_id: &str) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE messages SET status = 'cancelled', cancelled_at = now(), next_attempt_at = NULL,
                updated_at = now()
         WHERE job_id = $1 AND status IN ('queued', 'retrying', 'sending')
         RETURNING id",
    )
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await?;
    let changes: Vec<Change> = ids
        .iter()
        .map(|id| change(*id, Status::Cancelled, None))
        .collect();
    follow(conn, &changes).await
}

/// What one pass of the expiry sweep did.
#[derive(Debug, Default)]
pub struct ExpiredBatch {
    /// The messages that became `expired`, with their kind (for the metrics).
    pub expired: Vec<(Uuid, Kind)>,
    /// How many due messages the pass looked at: a full pass means there may be more.
    pub examined: usize,
}

/// Expires up to `limit` unsent messages whose deadline has passed (README "Delivery policy":
/// deadlines), on the caller's transaction: `expired`, no longer held or waiting for a retry,
/// their waiting jobs killed (`queue::expire_waiting`) and their reminder rows following. Rows
/// another transaction holds (a claim, a cancel, another process' sweep) are skipped, never
/// waited for; so is a message whose job is locked right now: the next pass takes them.
///
/// Only deadlines after `since` are looked at (the index walks deadlines, sent messages' too):
/// the sweep passes the time of its previous pass, less a margin.
pub async fn expire_due(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<ExpiredBatch> {
    let due: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "SELECT id, job_id FROM messages
         WHERE expires_at IS NOT NULL AND expires_at > $2 AND expires_at <= now()
           AND status IN ('queued', 'retrying')
         ORDER BY expires_at
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    if due.is_empty() {
        return Ok(ExpiredBatch::default());
    }
    let job_ids: Vec<String> = due.iter().filter_map(|(_, job)| job.clone()).collect();
    let settled: std::collections::HashSet<String> = queue::expire_waiting(&mut *conn, &job_ids)
        .await?
        .into_iter()
        .collect();
    let ids: Vec<Uuid> = due
        .iter()
        .filter(|(_, job)| job.as_ref().is_none_or(|j| settled.contains(j)))
        .map(|(id, _)| *id)
        .collect();
    let expired: Vec<(Uuid, Kind, Option<String>)> = sqlx::query_as(
        "UPDATE messages SET status = 'expired', expired_at = now(), next_attempt_at = NULL,
                held_until = NULL, held_reason = NULL,
                last_error = 'expired: not sent by '
                    || to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                updated_at = now()
         WHERE id = ANY($1)
         RETURNING id, kind, last_error",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let changes: Vec<Change> = expired
        .iter()
        .map(|(id, _, error)| change(*id, Status::Expired, error.clone()))
        .collect();
    follow(conn, &changes).await?;
    Ok(ExpiredBatch {
        expired: expired
            .into_iter()
            .map(|(id, kind, _)| (id, kind))
            .collect(),
        examined: due.len(),
    })
}

/// The worker's view of a message it may send now.
#[derive(Debug, sqlx::FromRow)]
pub struct Sendable {
    /// The status before the claim: `sending` means a previous attempt was interrupted.
    pub previous: Status,
    /// The attempt this is: the run's, or — after an interrupted attempt that may have reached
    /// the gateway — one more than that attempt.
    pub attempt: i32,
    /// The job row's limit, fixed when the message was stored (the only source of it).
    pub max_attempts: i32,
    pub to_phone: String,
    pub body: String,
    pub file_url: Option<String>,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claimed {
    /// Marked `sending`: call the gateway.
    Send(Sendable),
    /// Held back by the delivery policy until then (`held_until`/`held_reason` are set on the
    /// message; its status is unchanged): `retry_after`, `circuit_open`, `send_window`,
    /// `recipient_spacing`.
    Held {
        until: DateTime<Utc>,
        reason: String,
    },
    /// The number opted out in the message's scope: the message is now `cancelled`.
    OptedOut { kind: Kind },
    /// Past its deadline: the message is now `expired`.
    Expired { kind: Kind },
    /// Finished, cancelled, gone, or found `sending` while ambiguous retries are off.
    Unsendable,
}

/// A request to claim a message for attempt `attempt`.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub message_id: Uuid,
    pub attempt: i32,
}

/// The delivery policy as it stands when a group of claims is made.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules {
    /// `SEND_RETRY_AMBIGUOUS`: a message found `sending` is sent again.
    pub take_interrupted: bool,
    /// Whether now is inside the send window, and when it next opens.
    pub in_window: bool,
    pub next_opening: DateTime<Utc>,
    /// Two calls to one number at least this far apart (0 = no spacing).
    pub spacing_secs: u32,
}

/// The message's reason to be held, as the claim statement writes it.
const MESSAGE_EXPIRED: &str = "expired: not sent by its deadline";

/// Claims a group of messages in one transaction: each is checked against the delivery policy
/// (opt-out, deadline, the sender's holds, the send window, per-recipient spacing) and either
/// marked `sending` — the number's last call recorded — or held, cancelled or expired; the rows
/// that follow a cancelled or expired message follow. Results per claim, in order.
pub async fn claim_batch(
    pool: &PgPool,
    claims: &[Claim],
    rules: ClaimRules,
) -> sqlx::Result<Vec<Claimed>> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.message_id).collect();
    let attempts: Vec<i32> = claims.iter().map(|c| c.attempt).collect();
    let mut tx = pool.begin().await?;
    if rules.spacing_secs > 0 {
        // Claims of two groups with a message to the same number take turns: the second reads
        // that number's last send only once the first has committed it. (Without this, each
        // statement read the number's row as it was when it began, and two groups claimed in
        // parallel could both send to one number at once.) Its own statement, so that the
        // claim's snapshot is taken after the wait; in key order, so that two groups never wait
        // for each other.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(k)
             FROM (SELECT DISTINCT hashtextextended('bengkel-whatsapp:recipient:' || to_phone, 0) AS k
                   FROM messages WHERE id = ANY($1) ORDER BY k) numbers",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        concat!(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::int[]) AS t(id, attempt)
         ), s AS (
            SELECT retry_after_until, circuit, probe_by, reopen_at
            FROM sender_state WHERE sender = $8
         ), before AS (
            SELECT m.id, m.status, m.job_id, m.kind, m.to_phone, m.expires_at, m.respect_window,
                   CASE WHEN m.status = 'sending' THEN greatest(i.attempt, m.attempts + 1)
                        ELSE i.attempt END AS attempt
            FROM messages m JOIN input i ON i.id = m.id
            ORDER BY m.id FOR UPDATE OF m
         ), judged AS MATERIALIZED (
            SELECT b.*,
                CASE
                  WHEN NOT (b.status IN ('queued', 'retrying') OR (b.status = 'sending' AND $3)) THEN 'skip'
                  WHEN ",
        crate::suppressed!("b.to_phone", "b.kind"),
        "
                       THEN 'opted_out'
                  WHEN b.expires_at <= now() THEN 'expired'
                  WHEN (SELECT retry_after_until FROM s) > now() THEN 'retry_after'
                  WHEN (SELECT circuit FROM s) = 'open'
                       OR ((SELECT circuit FROM s) = 'half_open'
                           AND (SELECT probe_by FROM s) IS DISTINCT FROM b.id::text) THEN 'circuit_open'
                  WHEN (b.kind <> 'adhoc' OR b.respect_window) AND NOT $4 THEN 'send_window'
                  ELSE 'ok'
                END AS verdict,
                -- a lookup per message: as a join, the planner hashed the whole table (one row
                -- per number ever sent to) on every claim
                (SELECT r.last_sent_at FROM recipient_sends r WHERE r.phone = b.to_phone) AS last_sent_at
            FROM before b
         ), d AS (
            SELECT j.*,
                CASE
                  WHEN j.verdict <> 'ok' OR $6 <= 0 THEN j.verdict
                  WHEN j.last_sent_at > clock_timestamp() - make_interval(secs => $6) THEN 'recipient_spacing'
                  WHEN row_number() OVER (PARTITION BY j.to_phone, j.verdict ORDER BY j.id) > 1
                       THEN 'recipient_spacing'
                  ELSE 'ok'
                END AS disposition,
                CASE j.verdict
                  WHEN 'retry_after' THEN (SELECT retry_after_until FROM s)
                  -- open: until the cool-down ends; half-open: soon (the probe may close it)
                  WHEN 'circuit_open' THEN CASE WHEN (SELECT circuit FROM s) = 'open'
                      THEN greatest((SELECT reopen_at FROM s), now() + interval '1 second')
                      ELSE now() + interval '5 seconds' END
                  WHEN 'send_window' THEN $5
                  ELSE greatest(coalesce(j.last_sent_at, clock_timestamp()), clock_timestamp())
                       + make_interval(secs => greatest($6, 0))
                END AS until
            FROM judged j
         ), sending AS (
            UPDATE messages m SET status = 'sending', attempts = d.attempt, held_until = NULL,
                   held_reason = NULL, updated_at = now()
            FROM d WHERE m.id = d.id AND d.disposition = 'ok'
            RETURNING m.id
         ), held AS (
            UPDATE messages m SET held_until = d.until, held_reason = d.disposition, updated_at = now()
            FROM d WHERE m.id = d.id
              AND d.disposition IN ('retry_after', 'circuit_open', 'send_window', 'recipient_spacing')
            RETURNING m.id
         ), withdrawn AS (
            UPDATE messages m SET
                status = CASE d.disposition WHEN 'expired' THEN 'expired' ELSE 'cancelled' END,
                cancelled_at = CASE WHEN d.disposition = 'opted_out' THEN now() ELSE m.cancelled_at END,
                expired_at = CASE WHEN d.disposition = 'expired' THEN now() ELSE m.expired_at END,
                last_error = CASE d.disposition WHEN 'expired' THEN $9 ELSE $10 END,
                next_attempt_at = NULL, held_until = NULL, held_reason = NULL, updated_at = now()
            FROM d WHERE m.id = d.id AND d.disposition IN ('opted_out', 'expired')
            RETURNING m.id
         ), spaced AS (
            INSERT INTO recipient_sends (phone, last_sent_at)
            -- the call follows this statement by its commit and an HTTP request: recorded a
            -- little later than now, so that two calls (not two claims) are the spacing apart
            SELECT DISTINCT ON (d.to_phone) d.to_phone, clock_timestamp() + interval '250 milliseconds' FROM d
            WHERE d.disposition = 'ok' AND $7
            ON CONFLICT (phone) DO UPDATE SET last_sent_at = excluded.last_sent_at
         )
         SELECT d.id, d.disposition, d.until, d.kind, d.status AS previous, d.attempt,
                coalesce(j.max_attempts, m.max_attempts) AS max_attempts,
                m.to_phone, m.body, m.file_url
         FROM d JOIN messages m ON m.id = d.id LEFT JOIN apalis.jobs j ON j.id = d.job_id"
        ),
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(rules.take_interrupted)
    .bind(rules.in_window)
    .bind(rules.next_opening)
    .bind(rules.spacing_secs as i32)
    .bind(rules.spacing_secs > 0)
    .bind(crate::policy::sender::SENDER)
    .bind(MESSAGE_EXPIRED)
    .bind(crate::suppressions::RECIPIENT_OPTED_OUT)
    .fetch_all(&mut *tx)
    .await?;
    let changes: Vec<Change> = rows
        .iter()
        .filter_map(|r| match r.disposition.as_str() {
            "opted_out" => Some(change(
                r.id,
                Status::Cancelled,
                Some(crate::suppressions::RECIPIENT_OPTED_OUT.into()),
            )),
            "expired" => Some(change(r.id, Status::Expired, Some(MESSAGE_EXPIRED.into()))),
            _ => None,
        })
        .collect();
    follow(&mut tx, &changes).await?;
    tx.commit().await?;
    let mut by_id: std::collections::HashMap<Uuid, Claimed> =
        rows.into_iter().map(|r| (r.id, r.into_claimed())).collect();
    Ok(ids
        .iter()
        .map(|id| by_id.remove(id).unwrap_or(Claimed::Unsendable))
        .collect())
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    disposition: String,
    until: Option<DateTime<Utc>>,
    kind: Kind,
    #[sqlx(flatten)]
    sendable: Sendable,
}

impl ClaimedRow {
    fn into_claimed(self) -> Claimed {
        match self.disposition.as_str() {
            "ok" => Claimed::Send(self.sendable),
            "opted_out" => Claimed::OptedOut { kind: self.kind },
            "expired" => Claimed::Expired { kind: self.kind },
            "skip" => Claimed::Unsendable,
            reason => Claimed::Held {
                until: self.until.unwrap_or_else(Utc::now),
                reason: reason.to_owned(),
            },
        }
    }
}

pub async fn status(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Status>> {
    sqlx::query_scalar("SELECT status FROM messages WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// How one run ended: the verdict for its job and, when it called the gateway (or found its
/// message unsendable), what that does to the message.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub run: Run,
    pub verdict: Verdict,
    pub attempted: Option<Attempted>,
    /// Held back by the policy before its claim: shown on the message.
    pub held: Option<Held>,
}

/// A message held back by the delivery policy (`held_until`, `held_reason`).
#[derive(Debug, Clone)]
pub struct Held {
    pub message_id: Uuid,
    pub until: DateTime<Utc>,
    pub reason: &'static str,
}

/// One attempt of a message and its new status.
#[derive(Debug, Clone)]
pub struct Attempted {
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
    /// For `retrying`: when the job runs again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// A call the policy does not count (429, 401): held until then, for this reason; the
    /// message goes back to `status` with one attempt fewer.
    pub held: Option<(DateTime<Utc>, String)>,
    pub response: Option<serde_json::Value>,
}

/// Records many runs in one transaction: each attempt and its message's new status (one
/// statement), the rows that follow a finished message (reminder log and report, manual record),
/// and each job's verdict. A message already finished (a re-run) is not moved again, so a
/// delivery is counted once.
pub async fn record_batch(pool: &PgPool, batch: &[Recorded]) -> sqlx::Result<Vec<()>> {
    let attempted: Vec<&Attempted> = batch.iter().filter_map(|r| r.attempted.as_ref()).collect();
    let mut tx = pool.begin().await?;
    if !attempted.is_empty() {
        let changes = record_attempts(&mut tx, &attempted).await?;
        follow(&mut tx, &changes).await?;
    }
    let held: Vec<&Held> = batch.iter().filter_map(|r| r.held.as_ref()).collect();
    if !held.is_empty() {
        mark_held(&mut tx, &held).await?;
    }
    let verdicts: Vec<(Run, Verdict)> = batch
        .iter()
        .map(|r| (r.run.clone(), r.verdict.clone()))
        .collect();
    queue::settle(&mut tx, &verdicts).await?;
    tx.commit().await?;
    Ok(vec![(); batch.len()])
}

/// Shows why unsent messages are held back.
async fn mark_held(conn: &mut PgConnection, held: &[&Held]) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = held.iter().map(|h| h.message_id).collect();
    let untils: Vec<DateTime<Utc>> = held.iter().map(|h| h.until).collect();
    let reasons: Vec<&str> = held.iter().map(|h| h.reason).collect();
    sqlx::query(
        "UPDATE messages m SET held_until = h.until, held_reason = h.reason, updated_at = now()
         FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS h(id, until, reason)
         WHERE m.id = h.id AND m.status IN ('queued', 'retrying')",
    )
    .bind(&ids)
    .bind(&untils)
    .bind(&reasons)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts the attempts and moves their messages; returns the messages that finished.
async fn record_attempts(
    conn: &mut PgConnection,
    batch: &[&Attempted],
) -> sqlx::Result<Vec<Change>> {
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
    let held_untils: Vec<Option<DateTime<Utc>>> =
        batch.iter().map(|r| r.held.as_ref().map(|h| h.0)).collect();
    let held_reasons: Vec<Option<&str>> = batch
        .iter()
        .map(|r| r.held.as_ref().map(|h| h.1.as_str()))
        .collect();
    let finished: Vec<(Uuid, Status, Option<String>, Kind)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::timestamptz[], $9::jsonb[],
                                 $10::timestamptz[], $11::text[])
                AS t(message_id, attempt, started_at, outcome, class, error, status, next_at, response,
                     held_until, held_reason)
         ), m AS (
            UPDATE messages SET
                status = i.status,
                -- a held call spent no attempt
                attempts = CASE WHEN i.held_until IS NOT NULL THEN i.attempt - 1 ELSE messages.attempts END,
                held_until = i.held_until,
                held_reason = i.held_reason,
                sent_at = CASE WHEN i.status = 'sent' THEN now() END,
                failed_at = CASE WHEN i.status = 'failed' THEN now() END,
                next_attempt_at = i.next_at,
                last_error = i.error,
                gateway_response = coalesce(i.response, messages.gateway_response),
                updated_at = now()
            FROM input i
            WHERE messages.id = i.message_id AND messages.status IN ('queued', 'sending', 'retrying')
            RETURNING messages.id, messages.status, messages.last_error, messages.kind
         ), a AS (
            INSERT INTO message_attempts (message_id, attempt, started_at, outcome, class, error)
            SELECT message_id, attempt, started_at, outcome, class, error FROM input
            ON CONFLICT DO NOTHING
         )
         SELECT id, status, last_error, kind FROM m WHERE status IN ('sent', 'failed')",
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
    .bind(&held_untils)
    .bind(&held_reasons)
    .fetch_all(conn)
    .await?;
    Ok(finished
        .into_iter()
        .map(|(id, status, error, kind)| Change {
            kind: Some(kind),
            ..change(id, status, error)
        })
        .collect())
}
