//! Storing messages: the one insert path of every kind of send — a single send, a group of
//! single sends committed together (`enqueue.rs`), a `POST /whatsapp/send-batch` call, a manual
//! send, the reminder passes. One statement stores the messages and their send jobs; a message
//! to a number whose opt-out covers its kind (README "Opt-out") is stored `cancelled` with
//! `last_error` = `recipient opted out` and gets no job.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Accepted, Status, record, request::NewMessage};
use crate::{
    queue::{self, NewJob},
    suppressions::RECIPIENT_OPTED_OUT,
};

/// One message to store.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Chosen by the caller when it refers to the message in the same transaction (reminder
    /// rows); else [`Uuid::now_v7`].
    pub id: Uuid,
    pub new: &'a NewMessage,
    /// The `sub` of the token that asked (or the pass that made it): the message's owner.
    pub created_by: &'a str,
    /// The request's `Idempotency-Key`, in the owner's key space.
    pub idempotency_key: Option<&'a str>,
    /// The item's `client_ref` in a send-batch call.
    pub client_ref: Option<&'a str>,
}

impl<'a> Item<'a> {
    /// A message with a new id and no key.
    pub fn new(new: &'a NewMessage, created_by: &'a str) -> Self {
        Self {
            id: Uuid::now_v7(),
            new,
            created_by,
            idempotency_key: None,
            client_ref: None,
        }
    }
}

/// What became of one item.
#[derive(Debug, Clone)]
pub enum Stored {
    /// Stored now: `queued` with its job, or `cancelled` (opted out) without one.
    Created(Accepted),
    /// The same key with the same request: the original message as it is now.
    Replayed(Accepted),
    /// The same key with another request.
    KeyConflict,
}

impl Stored {
    /// Stored now, and to be sent (not opted out).
    pub fn is_queued(&self) -> bool {
        matches!(self, Stored::Created(a) if a.status == Status::Queued)
    }
}

/// The insert of messages and their jobs from the input arrays; `$on_conflict` is empty, or
/// the idempotency clause for a call with keys (kept out of the others: the speculative insert
/// it needs costs on every row).
macro_rules! insert_messages {
    ($on_conflict:literal) => {
        concat!(
            "WITH input AS (
                SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                     $6::timestamptz[], $7::text[], $8::text[], $9::text[],
                                     $10::text[], $11::timestamptz[], $12::bool[], $13::bytea[],
                                     $14::text[], $15::int[], $16::text[], $21::text[],
                                     $22::text[]) WITH ORDINALITY
                    AS i(id, kind, to_phone, body, file_url, run_at, job_id, created_by,
                         idempotency_key, fingerprint, expires_at, respect_window, payload,
                         template_key, template_version, client_ref, template_language,
                         template_values, ord)
             ), m AS (
                INSERT INTO messages (id, kind, to_phone, body, file_url, run_at, job_id,
                                      max_attempts, created_by, idempotency_scope, idempotency_key,
                                      request_fingerprint, expires_at, respect_window, status,
                                      last_error, cancelled_at, template_key, template_version,
                                      batch_id, client_ref, template_language, template_values)
                SELECT i.id, i.kind, i.to_phone, i.body, i.file_url, coalesce(i.run_at, now()),
                       CASE WHEN s.blocked THEN NULL ELSE i.job_id END, $17, i.created_by,
                       CASE WHEN i.idempotency_key IS NOT NULL THEN i.created_by END,
                       i.idempotency_key, i.fingerprint, i.expires_at, i.respect_window,
                       CASE WHEN s.blocked THEN 'cancelled' ELSE 'queued' END,
                       CASE WHEN s.blocked THEN $18 END,
                       CASE WHEN s.blocked THEN now() END,
                       i.template_key, i.template_version, $19::uuid, i.client_ref,
                       i.template_language, i.template_values::jsonb
                FROM input i CROSS JOIN LATERAL (SELECT ",
            $crate::suppressed!("i.to_phone", "i.kind"),
            " AS blocked) s
                ORDER BY i.ord ",
            $on_conflict,
            "
                RETURNING id, kind, to_phone, status, run_at, last_error, job_id, max_attempts
             ), queued AS (
                SELECT m.*, i.payload FROM m JOIN input i ON i.id = m.id WHERE m.job_id IS NOT NULL
             ), ",
            $crate::enqueue_cte!(
                "queued",
                "$20",
                "queued.payload",
                // campaign messages are bulk: they yield to every other kind (`queue::Class`)
                concat!(
                    "CASE WHEN queued.kind = 'campaign' THEN ",
                    $crate::bulk_priority!(),
                    " ELSE 0 END"
                )
            ),
            "
             SELECT id, kind, to_phone, status, run_at, last_error FROM m"
        )
    };
}

/// Stores `items` and their send jobs with one statement on `conn` (pass a transaction when
/// the caller writes more around it). Answers per item, in order. An item whose key is already
/// held — by a committed message, or by an earlier item of the same call — is a replay or a
/// conflict. Messages stored `cancelled` move the rows that follow them (reminder rows the
/// caller inserted before).
pub async fn store(
    conn: &mut PgConnection,
    items: &[Item<'_>],
    batch_id: Option<Uuid>,
    max_attempts: u32,
) -> sqlx::Result<Vec<Stored>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let n = items.len();
    let mut c = Columns::with_capacity(n);
    for item in items {
        c.push(item, max_attempts);
    }
    let keyed = items.iter().any(|i| i.idempotency_key.is_some());
    let statement = if keyed {
        insert_messages!(
            "ON CONFLICT (idempotency_scope, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
        )
    } else {
        insert_messages!("")
    };
    let inserted: Vec<Accepted> = sqlx::query_as(statement)
        .bind(&c.ids)
        .bind(&c.kinds)
        .bind(&c.tos)
        .bind(&c.bodies)
        .bind(&c.files)
        .bind(&c.run_ats)
        .bind(&c.job_ids)
        .bind(&c.created_by)
        .bind(&c.keys)
        .bind(&c.fingerprints)
        .bind(&c.expires)
        .bind(&c.windows)
        .bind(&c.payloads)
        .bind(&c.template_keys)
        .bind(&c.template_versions)
        .bind(&c.client_refs)
        .bind(max_attempts as i32)
        .bind(RECIPIENT_OPTED_OUT)
        .bind(batch_id)
        .bind(queue::SEND_QUEUE)
        .bind(&c.template_languages)
        .bind(&c.template_values)
        .fetch_all(&mut *conn)
        .await?;
    let opted_out: Vec<super::Change> = inserted
        .iter()
        .filter(|m| m.status == Status::Cancelled)
        .map(|m| super::Change::opted_out(m.id, m.kind))
        .collect();
    if !opted_out.is_empty() {
        record::follow(&mut *conn, &opted_out).await?;
    }
    let mut by_id: HashMap<Uuid, Accepted> = inserted.into_iter().map(|m| (m.id, m)).collect();
    let mut out = Vec::with_capacity(n);
    for item in items {
        match (by_id.remove(&item.id), item.idempotency_key) {
            (Some(m), _) => {
                let counter = if m.status == Status::Cancelled {
                    "bengkel_messages_suppressed_total"
                } else {
                    "bengkel_messages_enqueued_total"
                };
                metrics::counter!(counter, "kind" => m.kind.as_str()).increment(1);
                out.push(Stored::Created(m));
            }
            (None, Some(key)) => out.push(replay(&mut *conn, item, key).await?),
            (None, None) => {
                return Err(sqlx::Error::Protocol(format!(
                    "message {} without a key was not stored",
                    item.id
                )));
            }
        }
    }
    Ok(out)
}

/// [`store`] for messages that rows of the caller's follow (reminder passes), with the ids the
/// caller chose (`ids[i]` for `messages[i]`), on its transaction. Returns the ids of the
/// messages stored `cancelled` because their number opted out.
pub async fn store_followed(
    conn: &mut PgConnection,
    ids: &[Uuid],
    messages: &[NewMessage],
    created_by: &str,
    max_attempts: u32,
) -> sqlx::Result<std::collections::HashSet<Uuid>> {
    let items: Vec<Item<'_>> = ids
        .iter()
        .zip(messages)
        .map(|(id, new)| Item {
            id: *id,
            ..Item::new(new, created_by)
        })
        .collect();
    let stored = store(conn, &items, None, max_attempts).await?;
    Ok(stored
        .into_iter()
        .filter_map(|s| match s {
            Stored::Created(a) if a.status == Status::Cancelled => Some(a.id),
            _ => None,
        })
        .collect())
}

/// One message without a key, on its own (an implicit transaction).
pub async fn store_one(
    pool: &PgPool,
    new: &NewMessage,
    created_by: &str,
    max_attempts: u32,
) -> sqlx::Result<Accepted> {
    let mut conn = pool.acquire().await?;
    let item = Item::new(new, created_by);
    match store(&mut conn, &[item], None, max_attempts).await?.pop() {
        Some(Stored::Created(m) | Stored::Replayed(m)) => Ok(m),
        _ => Err(sqlx::Error::RowNotFound),
    }
}

/// The message that holds `key` in the item's owner's key space: a replay when it came from the
/// same request, else a conflict.
async fn replay(conn: &mut PgConnection, item: &Item<'_>, key: &str) -> sqlx::Result<Stored> {
    let existing: Option<ReplayRow> = sqlx::query_as(
        "SELECT request_fingerprint, id, kind, to_phone, status, run_at, last_error
         FROM messages WHERE idempotency_scope = $1 AND idempotency_key = $2",
    )
    .bind(item.created_by)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    Ok(match existing {
        Some(ReplayRow {
            request_fingerprint: Some(fingerprint),
            message,
        }) if fingerprint == item.new.fingerprint => Stored::Replayed(message),
        _ => Stored::KeyConflict,
    })
}

#[derive(sqlx::FromRow)]
struct ReplayRow {
    request_fingerprint: Option<String>,
    #[sqlx(flatten)]
    message: Accepted,
}

/// The input arrays of the insert, one entry per item.
struct Columns<'a> {
    ids: Vec<Uuid>,
    kinds: Vec<&'static str>,
    tos: Vec<&'a str>,
    bodies: Vec<&'a str>,
    files: Vec<Option<&'a str>>,
    run_ats: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    job_ids: Vec<String>,
    created_by: Vec<&'a str>,
    keys: Vec<Option<&'a str>>,
    fingerprints: Vec<Option<&'a str>>,
    expires: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    windows: Vec<bool>,
    payloads: Vec<Vec<u8>>,
    template_keys: Vec<Option<&'a str>>,
    template_versions: Vec<Option<i32>>,
    client_refs: Vec<Option<&'a str>>,
    template_languages: Vec<Option<&'static str>>,
    /// JSON objects, as text (cast to `jsonb` by the insert).
    template_values: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            ids: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            tos: Vec::with_capacity(n),
            bodies: Vec::with_capacity(n),
            files: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
            job_ids: Vec::with_capacity(n),
            created_by: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            fingerprints: Vec::with_capacity(n),
            expires: Vec::with_capacity(n),
            windows: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            template_keys: Vec::with_capacity(n),
            template_versions: Vec::with_capacity(n),
            client_refs: Vec::with_capacity(n),
            template_languages: Vec::with_capacity(n),
            template_values: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, item: &Item<'a>, max_attempts: u32) {
        let m = item.new;
        let job = NewJob::send(m.job(item.id), m.run_at, max_attempts);
        self.ids.push(item.id);
        self.kinds.push(m.kind.as_str());
        self.tos.push(m.to.as_str());
        self.bodies.push(m.body.as_str());
        self.files.push(m.file.as_deref());
        self.run_ats.push(m.run_at);
        self.job_ids.push(job.id);
        self.created_by.push(item.created_by);
        self.keys.push(item.idempotency_key);
        // Compared only for a key's replay.
        self.fingerprints
            .push(item.idempotency_key.map(|_| m.fingerprint.as_str()));
        self.expires.push(m.expires_at);
        self.windows.push(m.respect_window);
        self.payloads.push(job.payload);
        let t = m.template.as_ref();
        self.template_keys.push(t.map(|t| t.key.as_str()));
        self.template_versions.push(t.map(|t| t.version));
        self.template_languages.push(t.map(|t| t.language.as_str()));
        self.template_values.push(t.map(|t| t.values.as_str()));
        self.client_refs.push(item.client_ref);
    }
}
