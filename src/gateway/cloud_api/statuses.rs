//! Status webhooks of the Cloud API (SPEC §13): each `(wamid, status)` is kept once in
//! `cloud_api_statuses`, matched to its message by `biz_opaque_callback_data` (our message id)
//! or by its wamid, and applied as a receipt of §12 (`delivered`, `read`; `failed` →
//! `undelivered`). A status whose message is not known yet — it can beat our own outcome
//! commit — waits, and is tried again until [`EARLY_STATUS_TTL`] after it arrived; then it is
//! dropped and counted. A send cut off mid-call looks here ([`sent_as`]) before calling again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{codes, payload::Status};
use crate::messages::{
    DeliveryStatus,
    receipts::{self, Receipt},
};

/// How long a status whose message is not known yet is tried again.
pub const EARLY_STATUS_TTL: Duration = Duration::from_secs(600);

/// What [`record`] did with one payload's statuses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Statuses stored now for the first time.
    pub new: usize,
    /// Statuses Meta had sent before (same wamid and status, another payload).
    pub duplicates: usize,
    /// Statuses matched to their message now.
    pub applied: usize,
    /// Statuses still waiting for their message (the payload is tried again).
    pub waiting: usize,
    /// Statuses given up on now: no message of ours after [`EARLY_STATUS_TTL`].
    pub dropped: usize,
    /// What each receipt did (for `bengkel_receipts_total`).
    pub receipts: Vec<receipts::Applied>,
    /// The error codes of `failed` statuses stored now (for `bengkel_cloud_api_errors_total`).
    pub failed_codes: Vec<Option<i64>>,
}

impl Recorded {
    /// Counts it once its transaction committed.
    pub fn count(&self) {
        for code in &self.failed_codes {
            codes::count(*code);
        }
        if self.dropped > 0 {
            metrics::counter!("bengkel_cloud_api_statuses_dropped_total")
                .increment(self.dropped as u64);
        }
        if self.duplicates > 0 {
            metrics::counter!("bengkel_cloud_api_statuses_duplicate_total")
                .increment(self.duplicates as u64);
        }
        receipts::count(&self.receipts);
    }
}

/// A status's time: its `timestamp` (unix seconds), else when its payload arrived.
fn status_time(status: &Status, received_at: DateTime<Utc>) -> DateTime<Utc> {
    status
        .timestamp
        .as_deref()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .unwrap_or(received_at)
}

/// Stores `statuses` of payload `payload_id` (arrived `received_at`) and applies every one of
/// that payload's statuses whose message is known, on `conn`'s transaction.
pub async fn record(
    conn: &mut PgConnection,
    payload_id: Uuid,
    received_at: DateTime<Utc>,
    statuses: &[Status],
) -> sqlx::Result<Recorded> {
    let mut done = Recorded::default();
    if !statuses.is_empty() {
        let wamids: Vec<&str> = statuses.iter().map(|s| s.id.as_str()).collect();
        let kinds: Vec<&str> = statuses.iter().map(|s| s.status.as_str()).collect();
        let callbacks: Vec<Option<&str>> = statuses
            .iter()
            .map(|s| s.biz_opaque_callback_data.as_deref())
            .collect();
        let recipients: Vec<Option<&str>> =
            statuses.iter().map(|s| s.recipient_id.as_deref()).collect();
        let times: Vec<DateTime<Utc>> = statuses
            .iter()
            .map(|s| status_time(s, received_at))
            .collect();
        let errors: Vec<Option<Value>> = statuses
            .iter()
            .map(|s| (!s.errors.is_empty()).then(|| serde_json::to_value(&s.errors).ok())?)
            .collect();
        // Per status of the payload: stored now, or there before from this payload (a rerun)
        // or from another (a duplicate).
        let rows: Vec<(String, String, bool, bool)> = sqlx::query_as(
            "WITH input AS (
                SELECT DISTINCT ON (wamid, status) * FROM unnest($1::text[], $2::text[], $3::text[],
                                            $4::text[], $5::timestamptz[], $6::jsonb[])
                    AS t(wamid, status, callback, recipient, at, errors)
             ), stored AS (
                INSERT INTO cloud_api_statuses (wamid, status, callback, recipient, at, errors,
                                                payload_id, received_at)
                SELECT wamid, status, callback, recipient, at, errors, $7, $8 FROM input
                ON CONFLICT (wamid, status) DO NOTHING
                RETURNING wamid, status
             )
             SELECT i.wamid, i.status, s.wamid IS NOT NULL,
                    s.wamid IS NULL AND earlier.payload_id IS DISTINCT FROM $7
             FROM input i
             LEFT JOIN stored s ON s.wamid = i.wamid AND s.status = i.status
             LEFT JOIN cloud_api_statuses earlier
                    ON earlier.wamid = i.wamid AND earlier.status = i.status",
        )
        .bind(&wamids)
        .bind(&kinds)
        .bind(&callbacks)
        .bind(&recipients)
        .bind(&times)
        .bind(&errors)
        .bind(payload_id)
        .bind(received_at)
        .fetch_all(&mut *conn)
        .await?;
        for (wamid, status, new, duplicate) in rows {
            done.new += usize::from(new);
            done.duplicates += usize::from(duplicate);
            if new && status == "failed" {
                let code = statuses
                    .iter()
                    .find(|s| s.id == wamid && s.status.as_str() == "failed")
                    .and_then(|s| s.errors.first())
                    .and_then(|e| e.code);
                done.failed_codes.push(code);
            }
        }
    }
    apply(conn, payload_id, received_at, &mut done).await?;
    Ok(done)
}

/// Matches the payload's unapplied statuses to their messages and applies their receipts;
/// drops those past [`EARLY_STATUS_TTL`].
async fn apply(
    conn: &mut PgConnection,
    payload_id: Uuid,
    received_at: DateTime<Utc>,
    done: &mut Recorded,
) -> sqlx::Result<()> {
    let matched: Vec<(Uuid, String, DateTime<Utc>, Option<Value>)> = sqlx::query_as(
        "WITH pending AS (
            SELECT s.wamid, s.status,
                   coalesce(
                       (SELECT m.id FROM messages m
                        WHERE s.callback ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                          AND m.id = s.callback::uuid),
                       (SELECT m.id FROM messages m WHERE m.gateway_message_id = s.wamid LIMIT 1)
                   ) AS message_id
            FROM cloud_api_statuses s
            WHERE s.payload_id = $1 AND s.applied_at IS NULL AND s.dropped_at IS NULL
         )
         UPDATE cloud_api_statuses s SET message_id = p.message_id, applied_at = now()
         FROM pending p
         WHERE s.wamid = p.wamid AND s.status = p.status AND p.message_id IS NOT NULL
         RETURNING p.message_id, s.status, s.at, s.errors",
    )
    .bind(payload_id)
    .fetch_all(&mut *conn)
    .await?;
    done.applied = matched.len();
    let mut receipts: Vec<Receipt> = matched
        .into_iter()
        .filter_map(|(message_id, status, at, errors)| receipt(message_id, &status, at, errors))
        .collect();
    receipts.sort_by_key(|r| r.at);
    done.receipts = receipts::apply(conn, &receipts).await?;
    let expired =
        Utc::now() - received_at > chrono::Duration::from_std(EARLY_STATUS_TTL).unwrap_or_default();
    let left: i64 = if expired {
        sqlx::query_scalar(
            "WITH d AS (
                UPDATE cloud_api_statuses SET dropped_at = now()
                WHERE payload_id = $1 AND applied_at IS NULL AND dropped_at IS NULL
                RETURNING 1)
             SELECT count(*) FROM d",
        )
    } else {
        sqlx::query_scalar(
            "SELECT count(*) FROM cloud_api_statuses
             WHERE payload_id = $1 AND applied_at IS NULL AND dropped_at IS NULL",
        )
    }
    .bind(payload_id)
    .fetch_one(&mut *conn)
    .await?;
    let left = usize::try_from(left).unwrap_or_default();
    if expired {
        done.dropped = left;
    } else {
        done.waiting = left;
    }
    Ok(())
}

/// The receipt a status is: `delivered`, `read`, or `failed` → `undelivered` with its first
/// error. `sent` (and a status Meta adds later) changes no receipt.
fn receipt(
    message_id: Uuid,
    status: &str,
    at: DateTime<Utc>,
    errors: Option<Value>,
) -> Option<Receipt> {
    let status = match status {
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" => DeliveryStatus::Undelivered,
        _ => return None,
    };
    let first = errors.as_ref().and_then(|e| e.get(0));
    let text = |field: &str| first.and_then(|e| e.get(field)).and_then(Value::as_str);
    Some(Receipt {
        message_id,
        status,
        at,
        reason: first.map(|_| {
            [text("title"), text("message")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ")
        }),
        code: first
            .and_then(|e| e.get("code"))
            .map(|c| c.as_i64().map_or_else(|| c.to_string(), |n| n.to_string())),
    })
}

/// The wamid of a status that reached us for message `id` (by its callback data or its
/// message id), if any: proof that an earlier attempt did reach WhatsApp.
pub async fn sent_as(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT wamid FROM cloud_api_statuses WHERE callback = $1 OR message_id = $2
         ORDER BY received_at LIMIT 1",
    )
    .bind(id.to_string())
    .bind(id)
    .fetch_optional(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_status_is_an_undelivered_receipt_with_its_first_error() {
        let at = Utc::now();
        let r = receipt(
            Uuid::nil(),
            "failed",
            at,
            Some(serde_json::json!([{"code": 131026, "title": "Message undeliverable", "message": "x"}])),
        )
        .unwrap();
        assert_eq!(r.status, DeliveryStatus::Undelivered);
        assert_eq!(r.code.as_deref(), Some("131026"));
        assert_eq!(r.reason.as_deref(), Some("Message undeliverable: x"));
        assert!(receipt(Uuid::nil(), "sent", at, None).is_none());
        assert!(receipt(Uuid::nil(), "deleted", at, None).is_none());
        assert_eq!(
            receipt(Uuid::nil(), "read", at, None).unwrap().status,
            DeliveryStatus::Read
        );
    }
}
