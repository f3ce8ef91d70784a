//! SQL for subscriptions, their deliveries and replays (`webhook_subscriptions`,
//! `webhook_deliveries`, `webhook_attempts`; the outbox writes events and deliveries).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    DeliveryStatus, EventType, MAX_REPLAY, MAX_SUBSCRIPTIONS, ROTATION_OVERLAP, Subscription,
    deliver,
    outbox::{self, DeliveryJob, JOB_MAX_ATTEMPTS},
    sign,
};
use crate::queue::{self, NewJob};

macro_rules! columns {
    () => {
        "id, url, events, description, enabled, disabled_reason, failing_since, created_at"
    };
}

/// A new subscription and its secret (shown once).
pub struct Created {
    pub subscription: Subscription,
    pub secret: String,
}

/// Adds a subscription, unless there are [`MAX_SUBSCRIPTIONS`] already (`None`).
pub async fn create(
    pool: &PgPool,
    url: &str,
    events: &[EventType],
    description: Option<&str>,
    by: &str,
) -> sqlx::Result<Option<Created>> {
    let mut tx = pool.begin().await?;
    // Two creations at once must not both see 49.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bengkel-whatsapp:webhook-subscriptions'))")
        .execute(&mut *tx)
        .await?;
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_subscriptions WHERE deleted_at IS NULL")
            .fetch_one(&mut *tx)
            .await?;
    if live >= MAX_SUBSCRIPTIONS {
        return Ok(None);
    }
    let secret = sign::new_secret();
    let types: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    let subscription: Subscription = sqlx::query_as(concat!(
        "INSERT INTO webhook_subscriptions (id, url, events, description, secret, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING ",
        columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(url)
    .bind(&types)
    .bind(description)
    .bind(&secret)
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_slots (subscription_id, slot)
         SELECT $1, s FROM generate_series(0, $2 - 1) AS s",
    )
    .bind(subscription.id)
    .bind(super::MAX_IN_FLIGHT as i32)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Created {
        subscription,
        secret,
    }))
}

/// Every subscription (at most [`MAX_SUBSCRIPTIONS`]), oldest first.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Subscription>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM webhook_subscriptions WHERE deleted_at IS NULL ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Subscription>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM webhook_subscriptions WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// What `PATCH /webhooks/{id}` changes (`None`: unchanged).
#[derive(Debug, Default)]
pub struct Patch {
    pub url: Option<String>,
    pub events: Option<Vec<EventType>>,
    /// `Some(None)`: cleared.
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// Applies `patch`. Enabling clears the failure state and resends nothing; disabling cancels
/// the pending deliveries.
pub async fn update(pool: &PgPool, id: Uuid, patch: &Patch) -> sqlx::Result<Option<Subscription>> {
    let mut tx = pool.begin().await?;
    let types: Option<Vec<&str>> = patch
        .events
        .as_ref()
        .map(|e| e.iter().map(|t| t.as_str()).collect());
    let updated: Option<Subscription> = sqlx::query_as(concat!(
        "UPDATE webhook_subscriptions SET
             url = coalesce($2, url),
             events = coalesce($3, events),
             description = CASE WHEN $4 THEN $5 ELSE description END,
             enabled = coalesce($6, enabled),
             disabled_reason = CASE WHEN $6 IS NULL THEN disabled_reason
                                    WHEN $6 THEN NULL
                                    WHEN enabled THEN 'manual'
                                    ELSE disabled_reason END,
             failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END,
             updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(&patch.url)
    .bind(&types)
    .bind(patch.description.is_some())
    .bind(patch.description.clone().flatten())
    .bind(patch.enabled)
    .fetch_optional(&mut *tx)
    .await?;
    if updated.is_some() && patch.enabled == Some(false) {
        deliver::cancel_pending(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(updated)
}

/// Deletes a subscription (kept, hidden, for its deliveries' history); its pending deliveries
/// are cancelled. Returns it as it was.
pub async fn delete(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Subscription>> {
    let mut tx = pool.begin().await?;
    let deleted: Option<Subscription> = sqlx::query_as(concat!(
        "UPDATE webhook_subscriptions SET deleted_at = now(), enabled = false, updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING ",
        columns!()
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if deleted.is_some() {
        deliver::cancel_pending(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

/// A new secret; the current one keeps signing (a second signature) for [`ROTATION_OVERLAP`].
/// Returns the new secret.
pub async fn rotate(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<String>> {
    let secret = sign::new_secret();
    let done = sqlx::query(
        "UPDATE webhook_subscriptions SET previous_secret = secret, secret = $2,
                previous_secret_until = now() + $3, updated_at = now()
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(&secret)
    .bind(ROTATION_OVERLAP)
    .execute(pool)
    .await?;
    Ok((done.rows_affected() == 1).then_some(secret))
}

/// Queues a `webhook.test` event to this subscription only. `false`: no such subscription. Its
/// data adds nothing to the fields every event has (all null here).
pub async fn test(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let data = outbox::without_message(Value::Object(Default::default()));
    let written = outbox::emit_to(&mut tx, id, EventType::WebhookTest, &data).await?;
    tx.commit().await?;
    Ok(written == 1)
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = WebhookAttempt)]
pub struct AttemptView {
    pub at: DateTime<Utc>,
    /// The receiver's status; null when there was no answer.
    pub http_status: Option<i32>,
    pub class: super::AttemptClass,
    pub duration_ms: i32,
    /// The start of the receiver's answer, or the connection error.
    pub response_excerpt: Option<String>,
}

impl<'de> serde::Deserialize<'de> for super::AttemptClass {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        super::AttemptClass::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown attempt class {raw}")))
    }
}

/// A delivery as `GET /webhooks/{id}/deliveries` shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct Delivery {
    pub id: Uuid,
    /// The event's id: the `webhook-id` header, the same on every attempt and replay.
    pub event_id: String,
    #[schema(value_type = EventType)]
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub event_type: String,
    pub status: DeliveryStatus,
    /// The message the event is about, when it is about one.
    pub message_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first.
    #[sqlx(json)]
    pub attempts: Vec<AttemptView>,
    /// Pass as `cursor` for the page after this delivery.
    #[serde(skip)]
    pub seq: i64,
}

/// What to list.
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<EventType>,
    pub since: Option<DateTime<Utc>>,
    /// `seq` of the last delivery of the previous page.
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// A subscription's deliveries, newest first.
pub async fn deliveries(
    pool: &PgPool,
    subscription_id: Uuid,
    filter: &DeliveryFilter,
) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as(
        "SELECT d.id, d.event_id, d.type, d.status, d.message_id, d.created_at, d.next_attempt_at,
                d.finished_at, d.seq,
                coalesce((SELECT jsonb_agg(jsonb_build_object(
                              'at', a.at, 'http_status', a.http_status, 'class', a.class,
                              'duration_ms', a.duration_ms, 'response_excerpt', a.response_excerpt)
                              ORDER BY a.attempt)
                          FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]') AS attempts
         FROM webhook_deliveries d
         WHERE d.subscription_id = $1
           AND ($2::text IS NULL OR d.status = $2)
           AND ($3::text IS NULL OR d.type = $3)
           AND ($4::timestamptz IS NULL OR d.created_at >= $4)
           AND ($5::bigint IS NULL OR d.seq < $5)
         ORDER BY d.seq DESC
         LIMIT $6",
    )
    .bind(subscription_id)
    .bind(filter.status.map(DeliveryStatus::as_str))
    .bind(filter.event_type.map(EventType::as_str))
    .bind(filter.since)
    .bind(filter.before_seq)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}

/// What a replay found.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Queued again: this many.
    Queued(u64),
    NotFound,
    /// Its subscription is disabled (or deleted).
    Disabled,
    /// Being sent right now.
    InFlight,
}

/// Sends one delivery again now: same event (id and body), a new job; its attempts go on.
pub async fn replay_one(pool: &PgPool, delivery_id: Uuid) -> sqlx::Result<Replay> {
    let mut tx = pool.begin().await?;
    let found: Option<(bool, bool)> = sqlx::query_as(
        "SELECT s.enabled AND s.deleted_at IS NULL,
                EXISTS (SELECT 1 FROM webhook_slots sl WHERE sl.delivery_id = d.id AND sl.until > now())
         FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
         WHERE d.id = $1 FOR UPDATE OF d",
    )
    .bind(delivery_id)
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match found {
        None => Replay::NotFound,
        Some((false, _)) => Replay::Disabled,
        Some((true, true)) => Replay::InFlight,
        Some((true, false)) => Replay::Queued(requeue(&mut tx, &[delivery_id]).await?),
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Sends again the deliveries of a subscription made in `[since, until)` (in `status`, when
/// given), at most [`MAX_REPLAY`], oldest first. Those being sent right now are left alone.
pub async fn replay_range(
    pool: &PgPool,
    subscription_id: Uuid,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    status: Option<DeliveryStatus>,
) -> sqlx::Result<Replay> {
    let mut tx = pool.begin().await?;
    let live: Option<bool> = sqlx::query_scalar(
        "SELECT enabled FROM webhook_subscriptions WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
    )
    .bind(subscription_id)
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match live {
        None => Replay::NotFound,
        Some(false) => Replay::Disabled,
        Some(true) => {
            let ids: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM webhook_deliveries
                 WHERE subscription_id = $1 AND created_at >= $2
                   AND ($3::timestamptz IS NULL OR created_at < $3)
                   AND ($4::text IS NULL OR status = $4)
                   AND NOT EXISTS (SELECT 1 FROM webhook_slots sl
                                   WHERE sl.delivery_id = webhook_deliveries.id AND sl.until > now())
                 ORDER BY seq LIMIT $5
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(subscription_id)
            .bind(since)
            .bind(until)
            .bind(status.map(DeliveryStatus::as_str))
            .bind(MAX_REPLAY)
            .fetch_all(&mut *tx)
            .await?;
            Replay::Queued(requeue(&mut tx, &ids).await?)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Gives deliveries a new job each, due now (their old job, if waiting, is cancelled).
async fn requeue(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let jobs: Vec<NewJob> = ids
        .iter()
        .map(|id| NewJob {
            id: queue::new_job_id(),
            payload: serde_json::to_vec(&DeliveryJob { delivery_id: *id }).unwrap_or_default(),
            run_at: None,
            max_attempts: JOB_MAX_ATTEMPTS,
        })
        .collect();
    let new_ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
    let old: Vec<String> = sqlx::query_scalar(
        "WITH n AS (SELECT * FROM unnest($1::uuid[], $2::text[]) AS n(id, job_id)),
              old AS (SELECT d.id, d.job_id FROM webhook_deliveries d JOIN n ON n.id = d.id)
         UPDATE webhook_deliveries d SET job_id = n.job_id, status = 'pending', finished_at = NULL,
                next_attempt_at = NULL, waiting = NULL, pending_since = now(), after_earlier = true
         FROM n, old WHERE d.id = n.id AND old.id = n.id
         RETURNING old.job_id",
    )
    .bind(ids)
    .bind(&new_ids)
    .fetch_all(&mut *conn)
    .await?;
    queue::cancel_waiting_many(&mut *conn, &old).await?;
    queue::enqueue(conn, super::QUEUE, jobs).await
}

/// Subscriptions disabled by their failures (`gone`, `failing`; not those an operator disabled),
/// and the age of the oldest pending delivery, counted from when it was made or replayed (the
/// sampler's gauges).
pub async fn health(pool: &PgPool) -> sqlx::Result<(i64, f64)> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_subscriptions
                 WHERE NOT enabled AND deleted_at IS NULL AND disabled_reason IN ('gone', 'failing')),
                coalesce((SELECT extract(epoch FROM now() - min(pending_since))::float8
                          FROM webhook_deliveries WHERE status = 'pending'), 0)",
    )
    .fetch_one(pool)
    .await
}

/// Deletes the deliveries that finished more than `older_than_days` days ago (the retention of
/// `JOB_RETENTION_DAYS`, as for their jobs), their attempts, and the events no delivery names
/// any more. Returns how many deliveries were deleted.
pub async fn purge(conn: &mut PgConnection, older_than_days: i32) -> sqlx::Result<u64> {
    let deleted: Vec<(Uuid, String)> = sqlx::query_as(
        "DELETE FROM webhook_deliveries
         WHERE status <> 'pending' AND finished_at < now() - make_interval(days => $1::int)
         RETURNING id, event_id",
    )
    .bind(older_than_days)
    .fetch_all(&mut *conn)
    .await?;
    if deleted.is_empty() {
        return Ok(0);
    }
    let (ids, events): (Vec<Uuid>, Vec<String>) = deleted.into_iter().unzip();
    sqlx::query("DELETE FROM webhook_attempts WHERE delivery_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM webhook_events e WHERE e.id = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id)",
    )
    .bind(&events)
    .execute(&mut *conn)
    .await?;
    Ok(ids.len() as u64)
}
