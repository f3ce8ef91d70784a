//! Delivery receipts (SPEC §12 "Receipts"): what WhatsApp reported after the gateway accepted a
//! message, kept as the message's `delivery_status` (`delivered_at`, `read_at`,
//! `undelivered_reason`, `undelivered_code`). A gateway (§13) parses its status webhooks into
//! [`Receipt`]s and calls [`apply`] on its transaction; [`count`] after the commit.
//!
//! Receipts only move forward: null → `delivered` → `read`, a `read` without a `delivered` sets
//! both. Duplicates and receipts that arrive out of order change nothing: a `delivered` after
//! the `read`, a second `read`, an `undelivered` after `delivered`/`read`. An `undelivered` is
//! taken only from null; a `delivered` or `read` that comes after it wins (WhatsApp's later
//! positive receipt is the one to believe: the phone did get it), and clears the reason.
//!
//! Events: each change of a `sent` message writes its webhook events (`message.delivered`,
//! `message.read`, `message.undelivered`) on the same transaction. A receipt that comes before
//! its message is `sent` (the gateway's webhook can beat our own commit) is stored without an
//! event; `webhooks::outbox::message_changes` writes them after `message.sent` when the message
//! becomes `sent`, so that a consumer never sees `message.read` before `message.sent`. A message
//! that never becomes `sent` (failed after an ambiguous call) keeps its receipts and has no
//! events for them.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{DeliveryStatus, Status};
use crate::webhooks::{EventType, outbox};

/// What a receipt reports: one of the delivery statuses.
pub type ReceiptStatus = DeliveryStatus;

/// A reason longer than this (in characters) is cut: it is outside text, and goes into events.
pub const MAX_REASON_CHARS: usize = 2000;
/// A gateway code longer than this (in characters) is cut.
pub const MAX_CODE_CHARS: usize = 100;

/// One status report of the gateway about one of our messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: Uuid,
    pub status: ReceiptStatus,
    /// When it happened, as the gateway says (kept to the microsecond, as PostgreSQL keeps it).
    pub at: DateTime<Utc>,
    /// `undelivered`: the gateway's text (ignored otherwise).
    pub reason: Option<String>,
    /// `undelivered`: the gateway's code (ignored otherwise).
    pub code: Option<String>,
}

/// What one receipt did, in the order of the receipts given to [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The message's delivery status moved from `from` to `to`.
    Changed {
        from: Option<DeliveryStatus>,
        to: DeliveryStatus,
        /// Its webhook events were written now (the message is `sent`); otherwise they are
        /// written when the message becomes `sent`.
        emitted: bool,
    },
    /// A duplicate, or a receipt that came after a later one: nothing changed.
    Unchanged,
    /// No message has this id (not an error: a gateway may report on messages we do not know).
    UnknownMessage,
}

/// Applies `receipts`, in their order, on `conn`'s transaction: the messages are locked in id
/// order (as a send's claim locks them, so that the two never wait for each other), moved
/// forward in one statement, and the events of the changes of `sent` messages are written in
/// one more. Returns what each receipt did.
///
/// `bengkel_receipts_total{status}` is the caller's to count, after its commit ([`count`]): a
/// rolled-back transaction changed nothing.
pub async fn apply(conn: &mut PgConnection, receipts: &[Receipt]) -> sqlx::Result<Vec<Applied>> {
    if receipts.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = receipts.iter().map(|r| r.message_id).collect();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, status, delivery_status, delivered_at, read_at, undelivered_reason,
                undelivered_code
         FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut messages: HashMap<Uuid, Row> = rows.into_iter().map(|r| (r.id, r)).collect();
    let mut applied = Vec::with_capacity(receipts.len());
    let mut events = Vec::new();
    for receipt in receipts {
        let Some(row) = messages.get_mut(&receipt.message_id) else {
            applied.push(Applied::UnknownMessage);
            continue;
        };
        let Some(step) = row.state.step(receipt) else {
            applied.push(Applied::Unchanged);
            continue;
        };
        row.changed = true;
        let emitted = row.status == Status::Sent;
        if emitted {
            events.extend(step.events.into_iter().map(|(kind, data)| outbox::Event {
                kind,
                message_id: Some(row.id),
                data,
            }));
        }
        applied.push(Applied::Changed {
            from: step.from,
            to: step.to,
            emitted,
        });
    }
    let changed: Vec<&Row> = messages.values().filter(|r| r.changed).collect();
    if !changed.is_empty() {
        store(&mut *conn, &changed).await?;
    }
    outbox::emit(conn, &events).await?;
    Ok(applied)
}

/// Counts the changes of committed receipts (`bengkel_receipts_total{status}`, the status each
/// moved to). Call it after the transaction of [`apply`] committed.
pub fn count(applied: &[Applied]) {
    for a in applied {
        if let Applied::Changed { to, .. } = a {
            metrics::counter!("bengkel_receipts_total", "status" => to.as_str()).increment(1);
        }
    }
}

/// Writes the receipt columns of the changed messages (locked by [`apply`]).
async fn store(conn: &mut PgConnection, changed: &[&Row]) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = changed.iter().map(|r| r.id).collect();
    let statuses: Vec<Option<&str>> = changed
        .iter()
        .map(|r| r.state.delivery_status.map(DeliveryStatus::as_str))
        .collect();
    let delivered: Vec<Option<DateTime<Utc>>> =
        changed.iter().map(|r| r.state.delivered_at).collect();
    let read: Vec<Option<DateTime<Utc>>> = changed.iter().map(|r| r.state.read_at).collect();
    let reasons: Vec<Option<&str>> = changed
        .iter()
        .map(|r| r.state.undelivered_reason.as_deref())
        .collect();
    let codes: Vec<Option<&str>> = changed
        .iter()
        .map(|r| r.state.undelivered_code.as_deref())
        .collect();
    sqlx::query(
        "UPDATE messages m SET delivery_status = c.delivery_status, delivered_at = c.delivered_at,
                read_at = c.read_at, undelivered_reason = c.reason, undelivered_code = c.code,
                updated_at = now()
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[],
                     $6::text[]) AS c(id, delivery_status, delivered_at, read_at, reason, code)
         WHERE m.id = c.id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&delivered)
    .bind(&read)
    .bind(&reasons)
    .bind(&codes)
    .execute(conn)
    .await?;
    Ok(())
}

/// A locked message: its status, its receipts, and whether a receipt changed them.
#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    status: Status,
    #[sqlx(flatten)]
    state: Receipted,
    #[sqlx(skip)]
    changed: bool,
}

/// What a message's receipts say so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
struct Receipted {
    delivery_status: Option<DeliveryStatus>,
    delivered_at: Option<DateTime<Utc>>,
    read_at: Option<DateTime<Utc>>,
    undelivered_reason: Option<String>,
    undelivered_code: Option<String>,
}

/// One receipt's change: the status before and after, and the events it makes (type and the
/// fields a message event adds to those every message event has).
#[derive(Debug, PartialEq)]
struct Step {
    from: Option<DeliveryStatus>,
    to: DeliveryStatus,
    events: Vec<(EventType, serde_json::Value)>,
}

impl Receipted {
    /// Applies `receipt` if it moves the message forward (the rules in the module's comment).
    fn step(&mut self, receipt: &Receipt) -> Option<Step> {
        use DeliveryStatus::{Delivered, Read, Undelivered};
        let from = self.delivery_status;
        let at = receipt.at.trunc_subsecs(6);
        let mut events = Vec::new();
        match (from, receipt.status) {
            (None | Some(Undelivered), Delivered | Read) => {
                self.undelivered_reason = None;
                self.undelivered_code = None;
                let delivered_at = *self.delivered_at.get_or_insert(at);
                events.push((
                    EventType::MessageDelivered,
                    json!({ "delivered_at": time(delivered_at) }),
                ));
                if receipt.status == Read {
                    self.read_at = Some(at);
                    events.push((EventType::MessageRead, json!({ "read_at": time(at) })));
                }
            }
            (Some(Delivered), Read) => {
                self.read_at = Some(at);
                events.push((EventType::MessageRead, json!({ "read_at": time(at) })));
            }
            (None, Undelivered) => {
                self.undelivered_reason = clean(receipt.reason.as_deref(), MAX_REASON_CHARS);
                self.undelivered_code = clean(receipt.code.as_deref(), MAX_CODE_CHARS);
                events.push((
                    EventType::MessageUndelivered,
                    json!({
                        "reason": self.undelivered_reason,
                        "gateway_code": self.undelivered_code,
                    }),
                ));
            }
            (Some(Delivered), Delivered | Undelivered)
            | (Some(Read), _)
            | (Some(Undelivered), Undelivered) => return None,
        }
        self.delivery_status = Some(receipt.status);
        Some(Step {
            from,
            to: receipt.status,
            events,
        })
    }
}

/// A time as events write it (`webhook_time` in SQL): RFC 3339, UTC, microseconds.
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Outside text as a column keeps it: without NUL (PostgreSQL refuses it in `text`), at most
/// `max` characters; empty → none.
fn clean(text: Option<&str>, max: usize) -> Option<String> {
    let text: String = text?.chars().filter(|c| *c != '\0').take(max).collect();
    (!text.trim().is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use DeliveryStatus::{Delivered, Read, Undelivered};

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn receipt(status: DeliveryStatus, secs: i64) -> Receipt {
        Receipt {
            message_id: Uuid::nil(),
            status,
            at: at(secs),
            reason: None,
            code: None,
        }
    }

    fn kinds(step: &Step) -> Vec<EventType> {
        step.events.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn receipts_move_forward_from_nothing_to_delivered_to_read() {
        let mut s = Receipted::default();
        let step = s.step(&receipt(Delivered, 1)).unwrap();
        assert_eq!((step.from, step.to), (None, Delivered));
        assert_eq!(kinds(&step), [EventType::MessageDelivered]);
        let step = s.step(&receipt(Read, 2)).unwrap();
        assert_eq!((step.from, step.to), (Some(Delivered), Read));
        assert_eq!(kinds(&step), [EventType::MessageRead]);
        assert_eq!(step.events[0].1, json!({"read_at": time(at(2))}));
        assert_eq!(
            (s.delivery_status, s.delivered_at, s.read_at),
            (Some(Read), Some(at(1)), Some(at(2)))
        );
    }

    #[test]
    fn a_read_without_a_delivered_sets_both_with_its_time_and_makes_both_events() {
        let mut s = Receipted::default();
        let step = s.step(&receipt(Read, 5)).unwrap();
        assert_eq!((step.from, step.to), (None, Read));
        assert_eq!(
            step.events,
            [
                (
                    EventType::MessageDelivered,
                    json!({"delivered_at": time(at(5))})
                ),
                (EventType::MessageRead, json!({"read_at": time(at(5))})),
            ]
        );
        assert_eq!((s.delivered_at, s.read_at), (Some(at(5)), Some(at(5))));
    }

    #[test]
    fn duplicates_and_late_receipts_change_nothing() {
        let mut s = Receipted::default();
        s.step(&receipt(Delivered, 1)).unwrap();
        let delivered = s.clone();
        assert_eq!(s.step(&receipt(Delivered, 3)), None);
        assert_eq!(s.step(&receipt(Undelivered, 3)), None);
        assert_eq!(s, delivered);
        s.step(&receipt(Read, 4)).unwrap();
        let read = s.clone();
        for status in DeliveryStatus::ALL {
            assert_eq!(s.step(&receipt(status, 9)), None, "{status:?} after read");
        }
        assert_eq!(s, read);
    }

    #[test]
    fn undelivered_only_from_nothing_and_a_later_positive_receipt_wins() {
        let mut s = Receipted::default();
        let step = s
            .step(&Receipt {
                reason: Some("not on \0WhatsApp".into()),
                code: Some("131026".into()),
                ..receipt(Undelivered, 1)
            })
            .unwrap();
        assert_eq!(
            step.events,
            [(
                EventType::MessageUndelivered,
                json!({"reason": "not on WhatsApp", "gateway_code": "131026"})
            )]
        );
        assert_eq!(s.step(&receipt(Undelivered, 2)), None);
        let step = s.step(&receipt(Read, 3)).unwrap();
        assert_eq!((step.from, step.to), (Some(Undelivered), Read));
        assert_eq!(
            kinds(&step),
            [EventType::MessageDelivered, EventType::MessageRead]
        );
        assert_eq!((s.undelivered_reason, s.undelivered_code), (None, None));
    }

    #[test]
    fn times_are_kept_to_the_microsecond_and_written_as_the_outbox_writes_them() {
        let mut s = Receipted::default();
        let nanos = at(0) + chrono::Duration::nanoseconds(123_456_789);
        s.step(&Receipt {
            at: nanos,
            ..receipt(Delivered, 0)
        })
        .unwrap();
        let kept = s.delivered_at.unwrap();
        assert_eq!(kept.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(time(kept), "2027-01-15T08:00:00.123456Z");
    }

    #[test]
    fn outside_text_is_cut_and_blank_is_none() {
        assert_eq!(clean(Some("  "), 10), None);
        assert_eq!(clean(None, 10), None);
        assert_eq!(clean(Some("ééééé"), 3).as_deref(), Some("ééé"));
    }
}
