//! Recording how runs ended: each attempt and its message's new status, the rows that follow a
//! finished message (reminder log and report, manual record), and each job's verdict — for a
//! group of runs, in one transaction (`db::group_commit`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Change, Kind, Status, decide::Attempted};
use crate::{
    policy::HoldReason,
    queue::{self, Run, Verdict},
};

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
    pub reason: HoldReason,
}

/// Records many runs in one transaction: each attempt and its message's new status (one
/// statement), the rows that follow a finished message (reminder log and report, manual record),
/// and each job's verdict. A message already finished (a re-run) is not moved again, so a
/// delivery is counted once.
pub async fn record_runs(pool: &PgPool, batch: &[Recorded]) -> sqlx::Result<Vec<()>> {
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
    let reasons: Vec<&str> = held.iter().map(|h| h.reason.as_str()).collect();
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
    let outcomes: Vec<&str> = batch.iter().map(|r| r.outcome.as_str()).collect();
    let classes: Vec<&str> = batch.iter().map(|r| r.class.as_str()).collect();
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
                -- an attempt that may have sent: when it began; a held call keeps the mark, any
                -- other attempt (the wait for its receipt is over) clears it
                ambiguous_since = CASE WHEN i.outcome = 'ambiguous' THEN i.started_at
                    WHEN i.held_until IS NOT NULL THEN messages.ambiguous_since END,
                -- the Cloud API's `wamid`, which its status webhooks name
                gateway_message_id = CASE WHEN i.status = 'sent'
                    THEN coalesce(i.response #>> '{messages,0,id}', messages.gateway_message_id)
                    ELSE messages.gateway_message_id END,
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
            ..Change::new(id, status, error)
        })
        .collect())
}

/// The rows that follow a message (reminder log, manual reminders) follow `changes`, and the
/// changes' webhook events are written.
pub(super) async fn follow(conn: &mut PgConnection, changes: &[Change]) -> sqlx::Result<()> {
    // Only what may concern them: a group of ad-hoc sends costs no statement here.
    let of = |kind| -> Vec<Change> { changes.iter().filter(|c| c.may_be(kind)).cloned().collect() };
    crate::reminders::log::follow(&mut *conn, &of(Kind::Maintenance)).await?;
    crate::manual::repo::follow(&mut *conn, &of(Kind::Manual)).await?;
    // `bengkel_campaign_messages_total{outcome}` (SPEC §15): a campaign message that became final.
    for c in changes.iter().filter(|c| c.kind == Some(Kind::Campaign)) {
        if matches!(
            c.status,
            Status::Sent | Status::Failed | Status::Cancelled | Status::Expired
        ) {
            metrics::counter!("bengkel_campaign_messages_total", "outcome" => c.status.as_str())
                .increment(1);
        }
    }
    // Their events (`message.sent`, …, `batch.finished`) on the same transaction: the outbox.
    crate::webhooks::outbox::message_changes(conn, changes).await?;
    Ok(())
}
