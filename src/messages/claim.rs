//! Claiming messages for a send: the last check of the delivery policy, in one statement for a
//! group of runs, before any gateway call.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{Change, Kind, Status, record::follow};
use crate::policy::{ClaimRules, HoldReason};

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
    /// When an attempt that may have reached the gateway began (cut off mid-call, or timed out
    /// after sending): on the Cloud API, a status webhook of it is looked for before calling again.
    pub ambiguous_since: Option<DateTime<Utc>>,
    pub kind: Kind,
    /// Rendered from a template (`template_key` set): on the Cloud API it may go as the mapped
    /// Meta template. A message that is neither this nor a reminder always goes as text.
    pub templated: bool,
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
        reason: HoldReason,
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

/// The message's reason to be held, as the claim statement writes it.
const MESSAGE_EXPIRED: &str = "expired: not sent by its deadline";

/// Claims a group of messages in one transaction: each is checked against the delivery policy
/// (opt-out, deadline, the sender's holds, the send window, per-recipient spacing) and either
/// marked `sending` — the number's last call recorded — or held, cancelled or expired; the rows
/// that follow a cancelled or expired message follow. Results per claim, in order.
pub async fn claim_many(
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
                        ELSE i.attempt END AS attempt,
                   -- a message found `sending` was cut off mid-call, about when it was claimed
                   CASE WHEN m.status = 'sending' THEN coalesce(m.ambiguous_since, m.updated_at)
                        ELSE m.ambiguous_since END AS ambiguous_since
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
                  WHEN (b.kind IN ('maintenance', 'manual', 'campaign') OR b.respect_window) AND NOT $4 THEN 'send_window'
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
                   held_reason = NULL, ambiguous_since = d.ambiguous_since, updated_at = now()
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
                m.to_phone, m.body, m.file_url, d.ambiguous_since,
                m.template_key IS NOT NULL AS templated
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
        .filter_map(|r| match r.disposition {
            Disposition::OptedOut => Some(Change::opted_out(r.id, r.kind)),
            Disposition::Expired => Some(Change::new(
                r.id,
                Status::Expired,
                Some(MESSAGE_EXPIRED.into()),
            )),
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

/// What the claim statement decided for one message (its `disposition` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
enum Disposition {
    /// Marked `sending`.
    Ok,
    /// Not `queued`/`retrying` (nor `sending` with ambiguous retries on).
    Skip,
    OptedOut,
    Expired,
    RetryAfter,
    CircuitOpen,
    SendWindow,
    RecipientSpacing,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    disposition: Disposition,
    until: Option<DateTime<Utc>>,
    kind: Kind,
    #[sqlx(flatten)]
    sendable: Sendable,
}

impl ClaimedRow {
    fn into_claimed(self) -> Claimed {
        let held = |reason| Claimed::Held {
            until: self.until.unwrap_or_else(Utc::now),
            reason,
        };
        match self.disposition {
            Disposition::Ok => Claimed::Send(self.sendable),
            Disposition::OptedOut => Claimed::OptedOut { kind: self.kind },
            Disposition::Expired => Claimed::Expired { kind: self.kind },
            Disposition::Skip => Claimed::Unsendable,
            Disposition::RetryAfter => held(HoldReason::RetryAfter),
            Disposition::CircuitOpen => held(HoldReason::CircuitOpen),
            Disposition::SendWindow => held(HoldReason::SendWindow),
            Disposition::RecipientSpacing => held(HoldReason::RecipientSpacing),
        }
    }
}
