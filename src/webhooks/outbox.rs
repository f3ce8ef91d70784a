//! The outbox (SPEC §12 "Outbox — nothing lost, nothing invented"): an event is written **on the
//! transaction that makes its change** — one `webhook_events` row, and one delivery row and one
//! job in queue [`super::QUEUE`] per enabled subscription that wants its type — in one statement.
//! A rolled-back change emits nothing; a committed one has its deliveries queued. With no
//! subscription wanting an event, nothing is written (the statement still runs, and finds none).

use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::EventType;
use crate::messages::Change;

/// `max_attempts` of a delivery job. The job's verdicts decide when a delivery is exhausted
/// (`WEBHOOK_RETRY_SCHEDULE`, read by the process that runs it); this only has to be above any
/// schedule's length (at most 50 delays).
pub const JOB_MAX_ATTEMPTS: i32 = 100;

/// The payload of a delivery job.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DeliveryJob {
    pub delivery_id: Uuid,
}

/// SQL: after a CTE `ev (ord, type, message_id, data)` of events, and `subs` (the subscriptions
/// that may receive them, with `id` and `events`): the events that some subscription wants,
/// their deliveries and their jobs (`$1` = [`JOB_MAX_ATTEMPTS`]). Returns the events written, per type.
macro_rules! deliver_ctes {
    () => {
        deliver_ctes!(" SELECT e.type, count(*) FROM e GROUP BY e.type")
    };
    ($select:literal) => {
        concat!(
            ", e AS (
                INSERT INTO webhook_events (id, type, message_id, data)
                SELECT 'evt_' || apalis_job_id(), ev.type, ev.message_id, ev.data FROM ev
                WHERE EXISTS (SELECT 1 FROM subs WHERE ev.type = ANY (subs.events))
                ORDER BY ev.ord, ev.message_id
                RETURNING id, seq, type, message_id
             ), d AS (
                INSERT INTO webhook_deliveries (id, seq, event_id, subscription_id, type, message_id,
                                                job_id, after_earlier)
                SELECT webhook_uuid(), e.seq, e.id, subs.id, e.type, e.message_id, apalis_job_id(),
                       e.message_id IS NOT NULL AND (
                           EXISTS (SELECT 1 FROM webhook_deliveries p
                                   WHERE p.subscription_id = subs.id AND p.message_id = e.message_id
                                     AND p.status = 'pending')
                           OR EXISTS (SELECT 1 FROM e e2 JOIN subs s2 ON e2.type = ANY (s2.events)
                                      WHERE s2.id = subs.id AND e2.message_id = e.message_id
                                        AND e2.seq < e.seq))
                FROM e JOIN subs ON e.type = ANY (subs.events)
                -- due a moment after the change commits: a job due at once would make the
                -- change's transaction NOTIFY, and PostgreSQL commits notifying transactions
                -- one at a time (the webhook workers poll every 200 ms)
                RETURNING id, job_id, $1::int AS max_attempts,
                          now() + interval '50 milliseconds' AS run_at
             ), ",
            $crate::enqueue_cte!(
                "d",
                "'webhooks'",
                "convert_to('{\"delivery_id\":\"' || d.id || '\"}', 'UTF8')"
            ),
            $select
        )
    };
}

/// SQL: the enabled subscriptions as `subs`.
macro_rules! enabled_subs {
    () => {
        "subs AS (SELECT id, events FROM webhook_subscriptions WHERE enabled AND deleted_at IS NULL)"
    };
}

/// SQL: the fields every event about a message has, from `messages` row `$m`.
macro_rules! message_fields {
    ($m:literal) => {
        concat!(
            "jsonb_build_object('message_id', ",
            $m,
            ".id, 'kind', ",
            $m,
            ".kind, 'to', ",
            $m,
            ".to_phone, 'client_ref', ",
            $m,
            ".client_ref, 'batch_id', ",
            $m,
            ".batch_id)"
        )
    };
}

/// SQL: the data of `batch.finished` for batch `$b`: its messages counted by outcome.
macro_rules! finished_data {
    ($b:literal) => {
        concat!(
            "(SELECT jsonb_build_object('message_id', NULL, 'kind', NULL, 'to', NULL,
                     'client_ref', NULL, 'batch_id', ",
            $b,
            ", 'total', count(*),
                     'sent', count(*) FILTER (WHERE m.status = 'sent'),
                     'failed', count(*) FILTER (WHERE m.status = 'failed'),
                     'cancelled', count(*) FILTER (WHERE m.status = 'cancelled'),
                     'expired', count(*) FILTER (WHERE m.status = 'expired'))
              FROM messages m WHERE m.batch_id = ",
            $b,
            ")"
        )
    };
}

/// An event built by its caller (`data` whole, or the extra fields of a message event: those
/// of [`message_fields!`] are added from the message).
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    pub message_id: Option<Uuid>,
    pub data: Value,
}

/// The data of an event about no message: `extra` and the fields every event has, null.
pub fn without_message(extra: Value) -> Value {
    let mut data = serde_json::json!({
        "message_id": null, "kind": null, "to": null, "client_ref": null, "batch_id": null,
    });
    if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    data
}

/// Writes `events` for every enabled subscription that wants them. Returns the events written.
pub async fn emit(conn: &mut PgConnection, events: &[Event]) -> sqlx::Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let types: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let ids: Vec<Option<Uuid>> = events.iter().map(|e| e.message_id).collect();
    let data: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    let written = sqlx::query_as(concat!(
        "WITH ", enabled_subs!(), ", ev AS (
            SELECT i.ord, i.type, i.message_id,
                   CASE WHEN m.id IS NULL THEN i.data ELSE ", message_fields!("m"), " || i.data END AS data
            FROM unnest($2::text[], $3::uuid[], $4::jsonb[]) WITH ORDINALITY AS i(type, message_id, data, ord)
            LEFT JOIN messages m ON m.id = i.message_id
            WHERE EXISTS (SELECT 1 FROM subs)
         )",
        deliver_ctes!()
    ))
    .bind(JOB_MAX_ATTEMPTS)
    .bind(&types)
    .bind(&ids)
    .bind(&data)
    .fetch_all(conn)
    .await?;
    Ok(counted(written))
}

/// Writes one event for subscription `subscription_id` only (`webhook.test`), whatever the
/// types it wants. Returns the events written (0: no such subscription).
pub async fn emit_to(
    conn: &mut PgConnection,
    subscription_id: Uuid,
    kind: EventType,
    data: &Value,
) -> sqlx::Result<u64> {
    let written = sqlx::query_as(concat!(
        "WITH subs AS (SELECT id, ARRAY[$2::text] AS events FROM webhook_subscriptions
                       WHERE id = $4 AND deleted_at IS NULL),
              ev AS (SELECT 1 AS ord, $2::text AS type, NULL::uuid AS message_id, $3::jsonb AS data)",
        deliver_ctes!()
    ))
    .bind(JOB_MAX_ATTEMPTS)
    .bind(kind.as_str())
    .bind(data)
    .bind(subscription_id)
    .fetch_all(conn)
    .await?;
    Ok(counted(written))
}

/// The events of messages that just changed (`messages::record::follow` calls this on the
/// change's transaction, after the message rows are written):
/// - `sent` → `message.sent`, then the receipts that came before it (a receipt is only emitted
///   for a sent message, so a `message.read` never precedes its `message.sent`), then
///   `reminder.sent` for a vehicle or manual reminder;
/// - `failed`, `cancelled`, `expired` → `message.failed` / `.cancelled` / `.expired`;
/// - the batch (§11) of a message that became final, when it was its last open one →
///   `batch.finished`; a requeued message (`queued`) opens its batch again.
pub async fn message_changes(conn: &mut PgConnection, changes: &[Change]) -> sqlx::Result<u64> {
    if changes.is_empty() {
        return Ok(0);
    }
    let (ids, statuses, _) = crate::messages::change_columns(changes);
    let written = sqlx::query_as(concat!(
        "WITH ", enabled_subs!(), ", c AS (
            SELECT * FROM unnest($2::uuid[], $3::text[]) AS c(message_id, status)
         ), cm AS (
            SELECT c.status AS change, m.* FROM c JOIN messages m ON m.id = c.message_id
         ), batches AS (
            SELECT batch_id, sum(CASE WHEN change = 'queued' THEN -1 ELSE 1 END)::int AS closed
            FROM cm WHERE batch_id IS NOT NULL
            GROUP BY batch_id
         ), progress AS (
            UPDATE batch_progress p SET
                open = p.open - b.closed,
                finished_at = CASE WHEN p.open - b.closed <= 0 THEN now() END
            FROM batches b WHERE p.batch_id = b.batch_id
            RETURNING p.batch_id, p.open
         ), ev AS (
            SELECT 0 AS ord, 'message.' || cm.change AS type, cm.id AS message_id, ",
        message_fields!("cm"),
        " || CASE cm.change
                WHEN 'sent' THEN jsonb_build_object('sent_at', webhook_time(cm.sent_at),
                     'attempts', cm.attempts, 'gateway_message_id', cm.gateway_message_id)
                WHEN 'failed' THEN jsonb_build_object('attempts', cm.attempts,
                     'last_error', left(cm.last_error, 2000),
                     'error_class', (SELECT a.class FROM message_attempts a WHERE a.message_id = cm.id
                                     ORDER BY a.attempt DESC LIMIT 1))
                ELSE jsonb_build_object('reason', coalesce(left(cm.last_error, 2000), cm.change))
              END AS data
            FROM cm WHERE cm.change IN ('sent', 'failed', 'cancelled', 'expired')
              AND EXISTS (SELECT 1 FROM subs)
            UNION ALL
            SELECT 1, 'message.delivered', cm.id, ",
        message_fields!("cm"),
        " || jsonb_build_object('delivered_at', webhook_time(cm.delivered_at))
            FROM cm WHERE cm.change = 'sent' AND cm.delivered_at IS NOT NULL
            UNION ALL
            SELECT 2, 'message.read', cm.id, ",
        message_fields!("cm"),
        " || jsonb_build_object('read_at', webhook_time(cm.read_at))
            FROM cm WHERE cm.change = 'sent' AND cm.read_at IS NOT NULL
            UNION ALL
            SELECT 3, 'message.undelivered', cm.id, ",
        message_fields!("cm"),
        " || jsonb_build_object('reason', cm.undelivered_reason, 'gateway_code', cm.undelivered_code)
            FROM cm WHERE cm.change = 'sent' AND cm.delivery_status = 'undelivered'
            UNION ALL
            SELECT 4, 'reminder.sent', cm.id, ",
        message_fields!("cm"),
        " || jsonb_build_object('reminder_id', r.id, 'source', 'vehicle', 'vehicle_id', r.vehicle_id,
                               'manual_id', NULL, 'customer_id', r.customer_id,
                               'reminder_date', r.reminder_date)
            FROM cm JOIN reminders r ON r.message_id = cm.id
            WHERE cm.change = 'sent' AND cm.kind = 'maintenance' AND EXISTS (SELECT 1 FROM subs)
            UNION ALL
            SELECT 4, 'reminder.sent', cm.id, ",
        message_fields!("cm"),
        " || jsonb_build_object('reminder_id', mr.id, 'source', 'manual', 'vehicle_id', NULL,
                               'manual_id', mr.manual_id, 'customer_id', NULL,
                               'reminder_date', mr.reminder_date)
            FROM cm JOIN manual_reminders mr ON mr.message_id = cm.id
            WHERE cm.change = 'sent' AND cm.kind = 'manual' AND EXISTS (SELECT 1 FROM subs)
         )",
        deliver_ctes!(
            " SELECT e.type, count(*), NULL::uuid FROM e GROUP BY e.type
              UNION ALL
              SELECT NULL, 0, p.batch_id FROM progress p WHERE p.open = 0"
        )
    ))
    .bind(JOB_MAX_ATTEMPTS)
    .bind(&ids)
    .bind(&statuses)
    .fetch_all(&mut *conn)
    .await?;
    let mut events = Vec::new();
    let mut finished = Vec::new();
    for (kind, n, batch) in written {
        match (kind, batch) {
            (Some(kind), _) => events.push((kind, n)),
            (None, Some(batch)) => finished.push(batch),
            (None, None) => {}
        }
    }
    let mut total = counted(events);
    if !finished.is_empty() {
        total += batches_finished(conn, &finished).await?;
    }
    Ok(total)
}

/// `batch.finished` for batches whose last open message just became final. A statement of its
/// own, after the one that updated their progress rows: that update waited for a concurrent
/// transaction that updated a row first, and the counts read here see its messages too (the
/// previous statement's snapshot was taken before it committed).
async fn batches_finished(conn: &mut PgConnection, batches: &[Uuid]) -> sqlx::Result<u64> {
    let written = sqlx::query_as(concat!(
        "WITH ",
        enabled_subs!(),
        ", ev AS (
            SELECT 5 AS ord, 'batch.finished' AS type, NULL::uuid AS message_id, ",
        finished_data!("f.batch_id"),
        " AS data
            FROM unnest($2::uuid[]) AS f(batch_id)
            WHERE EXISTS (SELECT 1 FROM subs)
         )",
        deliver_ctes!()
    ))
    .bind(JOB_MAX_ATTEMPTS)
    .bind(batches)
    .fetch_all(conn)
    .await?;
    Ok(counted(written))
}

/// Counts the events written (`bengkel_webhook_events_total{type}`; on the change's transaction,
/// so a rolled-back change is counted all the same). Returns how many.
fn counted(written: Vec<(String, i64)>) -> u64 {
    let mut total = 0;
    for (kind, n) in written {
        let n = u64::try_from(n).unwrap_or(0);
        metrics::counter!("bengkel_webhook_events_total", "type" => kind).increment(n);
        total += n;
    }
    total
}

/// A §11 batch was stored: its progress row (how many of its messages are not final yet), and
/// `batch.finished` at once when none is (every item went to an opted-out number).
pub async fn batch_opened(conn: &mut PgConnection, batch_id: Uuid) -> sqlx::Result<()> {
    let open: Option<i32> = sqlx::query_scalar(
        "INSERT INTO batch_progress (batch_id, total, open, finished_at)
         SELECT $1, count(*), count(*) FILTER (WHERE status NOT IN ('sent', 'failed', 'cancelled', 'expired')),
                CASE WHEN bool_and(status IN ('sent', 'failed', 'cancelled', 'expired')) THEN now() END
         FROM messages WHERE batch_id = $1
         HAVING count(*) > 0
         RETURNING open",
    )
    .bind(batch_id)
    .fetch_optional(&mut *conn)
    .await?;
    if open == Some(0) {
        let data = finished_data(conn, batch_id).await?;
        emit(
            conn,
            &[Event {
                kind: EventType::BatchFinished,
                message_id: None,
                data,
            }],
        )
        .await?;
    }
    Ok(())
}

async fn finished_data(conn: &mut PgConnection, batch_id: Uuid) -> sqlx::Result<Value> {
    sqlx::query_scalar(concat!("SELECT ", finished_data!("$1::uuid")))
        .bind(batch_id)
        .fetch_one(conn)
        .await
}
