//! Withdrawing messages before they are sent, and giving failed ones another go: cancel (by a
//! caller, by an opt-out, by an operator's job cancel), expire (the deadline sweep), requeue.
//! Each moves the message, its waiting job (through `queue`'s verbs) and the rows that follow
//! it, in one transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    Change, Kind, Message, Status,
    read::{Owner, columns},
    record::follow,
};
use crate::{
    queue,
    suppressions::{RECIPIENT_OPTED_OUT, Scope},
};

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
    // Rows are locked in id order, as `claim::claim_many` locks them: no deadlock with a claim.
    let rows: Vec<(Uuid, Kind, Option<String>)> = sqlx::query_as(concat!(
        "WITH picked AS (
            SELECT id FROM messages
            WHERE to_phone = $1 AND status IN ('queued', 'retrying') AND kind <> 'admin'
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
    let changes: Vec<Change> = rows.iter().map(|r| Change::opted_out(r.0, r.1)).collect();
    follow(conn, &changes).await?;
    Ok(rows.into_iter().map(|r| r.1).collect())
}

/// What a cancelled campaign's unsent messages say (`last_error`).
pub const CAMPAIGN_CANCELLED: &str = "campaign cancelled";

/// A campaign cancelled (SPEC §15): its messages not yet sent (`queued` or `retrying`) are
/// cancelled with `last_error` = [`CAMPAIGN_CANCELLED`], their waiting jobs too, on the caller's
/// transaction; one being sent right now is left to finish. Returns how many.
pub async fn cancel_for_campaign(conn: &mut PgConnection, campaign: Uuid) -> sqlx::Result<u64> {
    // Rows are locked in id order, as `claim::claim_many` locks them: no deadlock with a claim.
    let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "WITH picked AS (
            SELECT id FROM messages
            WHERE campaign_id = $1 AND status IN ('queued', 'retrying')
            ORDER BY id FOR UPDATE
         )
         UPDATE messages SET status = 'cancelled', cancelled_at = now(), last_error = $2,
                next_attempt_at = NULL, held_until = NULL, held_reason = NULL, updated_at = now()
         FROM picked WHERE messages.id = picked.id
         RETURNING messages.id, messages.job_id",
    )
    .bind(campaign)
    .bind(CAMPAIGN_CANCELLED)
    .fetch_all(&mut *conn)
    .await?;
    let job_ids: Vec<String> = rows.iter().filter_map(|r| r.1.clone()).collect();
    queue::cancel_waiting_many(&mut *conn, &job_ids).await?;
    let changes: Vec<Change> = rows
        .iter()
        .map(|r| Change {
            kind: Some(Kind::Campaign),
            ..Change::new(r.0, Status::Cancelled, Some(CAMPAIGN_CANCELLED.to_owned()))
        })
        .collect();
    follow(conn, &changes).await?;
    Ok(rows.len() as u64)
}

pub enum Cancelled {
    Done(Box<Message>),
    NotFound,
    /// Sending right now or already finished.
    TooLate(Status),
}

/// Cancels a message that is not yet sent, and its waiting job, in one transaction; its
/// reminder row follows.
pub async fn cancel(pool: &PgPool, id: Uuid, owner: Owner<'_>) -> sqlx::Result<Cancelled> {
    let mut tx = pool.begin().await?;
    let current: Option<(Status, Option<String>)> = sqlx::query_as(
        "SELECT status, job_id FROM messages
             WHERE id = $1 AND ($2::text IS NULL OR created_by = $2) FOR UPDATE",
    )
    .bind(id)
    .bind(owner)
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
    follow(&mut tx, &[Change::new(id, Status::Cancelled, None)]).await?;
    tx.commit().await?;
    Ok(Cancelled::Done(Box::new(message)))
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
        .map(|id| Change::new(*id, Status::Queued, None))
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
        .map(|id| Change::new(*id, Status::Cancelled, None))
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
        .map(|(id, _, error)| Change::new(*id, Status::Expired, error.clone()))
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
