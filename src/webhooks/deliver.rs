//! The delivery job (queue [`super::QUEUE`], its own workers): one HTTP attempt per run.
//!
//! [`claim`] → [`attempt`] → [`record`]
//!
//! - **claim**, one transaction under the subscription's lock: a delivery whose subscription is
//!   gone or disabled is cancelled; one whose message has an earlier event still pending waits for
//!   it (order); one whose subscription has [`MAX_IN_FLIGHT`] deliveries being sent waits for a
//!   slot (capacity) — both are snoozes (no attempt spent), woken by the delivery that finishes
//!   first. Otherwise it is marked in flight, with a lease, and the transaction commits: no
//!   connection is held while the receiver answers.
//! - **attempt**: the exact bytes signed are the bytes posted; the address is checked at connect
//!   time (`net`).
//! - **record**, one transaction: the attempt, the delivery's new state, the subscription's
//!   failure state (disabled on `410` or after `WEBHOOK_DISABLE_AFTER` of failures, its pending
//!   deliveries cancelled), the job's verdict, and the next waiting delivery woken.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use apalis::prelude::{Attempt, BoxDynError, Data, TaskId, WorkerContext};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    AttemptClass, DisabledReason, MAX_IN_FLIGHT, Settings, net, outbox::DeliveryJob, sign,
};
use crate::queue::{self, Run, Verdict, rescue::Process};

/// What the delivery workers share.
pub struct DeliveryContext {
    pub pool: PgPool,
    pub settings: Settings,
    pub client: reqwest::Client,
    pub process: Process,
}

impl DeliveryContext {
    pub fn new(pool: PgPool, settings: Settings, process: Process) -> anyhow::Result<Self> {
        let client = net::client(settings.timeout, settings.allow_private)?;
        Ok(Self {
            pool,
            settings,
            client,
            process,
        })
    }

    /// How long a claimed delivery counts as in flight: one attempt and a margin. A worker that
    /// dies mid-attempt frees its slot when this passes.
    fn lease(&self) -> Duration {
        self.settings.timeout + Duration::from_secs(10)
    }
}

/// The most of a receiver's answer kept with an attempt.
const EXCERPT_BYTES: usize = 512;
/// A run that panicked is looked at again after this (no attempt spent).
const AFTER_PANIC: TimeDelta = TimeDelta::seconds(30);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(String);

impl From<sqlx::Error> for DeliveryError {
    fn from(e: sqlx::Error) -> Self {
        DeliveryError(format!("database: {e}"))
    }
}

/// The apalis handler: the run is its own task, in flight in this process until its verdict is
/// written (so that the orphan rescue never takes it from a live process).
pub async fn handle(
    payload: Value,
    task_id: TaskId,
    attempt: Attempt,
    worker: WorkerContext,
    ctx: Data<Arc<DeliveryContext>>,
) -> Result<(), BoxDynError> {
    let run = Run::of(&task_id, &attempt, &worker);
    let ctx: Arc<DeliveryContext> = (*ctx).clone();
    let in_flight = ctx.process.enter(&run.job_id);
    let task = tokio::spawn({
        let (ctx, run) = (ctx.clone(), run.clone());
        async move { execute(&ctx, run, payload).await }
    });
    let result = match task.await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(job_id = %run.job_id, "webhook delivery run panicked: {e}");
            let verdict = queue::snooze(Utc::now() + AFTER_PANIC, "delivery run panicked");
            settle_alone(&ctx.pool, run, verdict).await
        }
    };
    drop(in_flight);
    result.map_err(|e| Box::new(e) as BoxDynError)
}

/// One run: claim, attempt, record.
pub async fn execute(ctx: &DeliveryContext, run: Run, payload: Value) -> Result<(), DeliveryError> {
    let job: DeliveryJob = match serde_json::from_value(payload) {
        Ok(job) => job,
        Err(e) => {
            let verdict = Verdict::Fail {
                attempts: run.attempt(),
                reason: format!("unreadable delivery job: {e}"),
            };
            return settle_alone(&ctx.pool, run, verdict).await;
        }
    };
    let Some(claimed) = claim(ctx, &run, job.delivery_id).await? else {
        return Ok(());
    };
    let attempted = attempt(ctx, &claimed).await;
    record(ctx, &run, &claimed, &attempted).await
}

async fn settle_alone(pool: &PgPool, run: Run, verdict: Verdict) -> Result<(), DeliveryError> {
    let mut tx = pool.begin().await?;
    queue::settle(&mut tx, &[(run, verdict)]).await?;
    tx.commit().await?;
    Ok(())
}

/// A delivery handed to this run.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub message_id: Option<Uuid>,
    /// The attempt this run makes (of the delivery, replays included).
    pub attempts: i32,
    pub event_id: String,
    pub event_type: String,
    pub data: Value,
    pub event_at: DateTime<Utc>,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    status: String,
    job_id: String,
    seq: i64,
    message_id: Option<Uuid>,
    subscription_id: Uuid,
    live: bool,
}

/// Hands the delivery to this run, or ends the run (settled) and returns `None`.
async fn claim(
    ctx: &DeliveryContext,
    run: &Run,
    delivery_id: Uuid,
) -> Result<Option<Claimed>, DeliveryError> {
    let mut tx = ctx.pool.begin().await?;
    // Claims of one subscription's deliveries take turns, so that the in-flight count is exact
    // across processes.
    let locked: Option<Uuid> =
        sqlx::query_scalar("SELECT subscription_id FROM webhook_deliveries WHERE id = $1")
            .bind(delivery_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(subscription_id) = locked else {
        let verdict = Verdict::Fail {
            attempts: run.attempt(),
            reason: "its delivery no longer exists".into(),
        };
        queue::settle(&mut tx, &[(run.clone(), verdict)]).await?;
        tx.commit().await?;
        return Ok(None);
    };
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('webhook-subscription:' || $1::text, 0))",
    )
    .bind(subscription_id)
    .execute(&mut *tx)
    .await?;
    let row: Row = sqlx::query_as(
        "SELECT d.status, d.job_id, d.seq, d.message_id, d.subscription_id,
                (s.enabled AND s.deleted_at IS NULL) AS live
         FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
         WHERE d.id = $1 FOR UPDATE OF d",
    )
    .bind(delivery_id)
    .fetch_one(&mut *tx)
    .await?;
    let end = |verdict: Verdict| vec![(run.clone(), verdict)];
    if row.job_id != run.job_id || row.status != "pending" {
        // A replay gave the delivery a new job, or it was finished meanwhile: this run is over.
        let verdict = if row.status == "cancelled" {
            Verdict::Cancelled {
                attempts: run.fetched_attempts,
            }
        } else {
            Verdict::Complete {
                attempts: run.fetched_attempts,
            }
        };
        queue::settle(&mut tx, &end(verdict)).await?;
        tx.commit().await?;
        return Ok(None);
    }
    if !row.live {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now(), waiting = NULL,
                    in_flight_until = NULL, next_attempt_at = NULL
             WHERE id = $1",
        )
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?;
        let verdict = Verdict::Cancelled {
            attempts: run.fetched_attempts,
        };
        queue::settle(&mut tx, &end(verdict)).await?;
        tx.commit().await?;
        return Ok(None);
    }
    if let Some(until) = earlier_pending(&mut tx, &row, ctx.lease()).await? {
        wait(&mut tx, run, delivery_id, "order", until).await?;
        tx.commit().await?;
        return Ok(None);
    }
    let (busy, free_at): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(in_flight_until) FROM webhook_deliveries
         WHERE subscription_id = $1 AND in_flight_until > now() AND id <> $2",
    )
    .bind(row.subscription_id)
    .bind(delivery_id)
    .fetch_one(&mut *tx)
    .await?;
    if busy >= MAX_IN_FLIGHT {
        let until = free_at.unwrap_or_else(|| Utc::now() + TimeDelta::seconds(1));
        wait(&mut tx, run, delivery_id, "capacity", until).await?;
        tx.commit().await?;
        return Ok(None);
    }
    let lease = TimeDelta::from_std(ctx.lease()).unwrap_or(TimeDelta::seconds(60));
    let claimed: Claimed = sqlx::query_as(
        "WITH d AS (
            UPDATE webhook_deliveries SET in_flight_until = now() + $2, waiting = NULL,
                   attempts = attempts + 1
            WHERE id = $1
            RETURNING id, subscription_id, message_id, attempts, event_id
         )
         SELECT d.id, d.subscription_id, d.message_id, d.attempts, d.event_id,
                e.type AS event_type, e.data, e.created_at AS event_at, s.url, s.secret,
                CASE WHEN s.previous_secret_until > now() THEN s.previous_secret END AS previous_secret
         FROM d JOIN webhook_events e ON e.id = d.event_id
                JOIN webhook_subscriptions s ON s.id = d.subscription_id",
    )
    .bind(delivery_id)
    .bind(lease)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(claimed))
}

/// When an earlier event of the same message is still pending for this subscription: when to
/// look again (its retry, or the end of its lease; it wakes this one when it finishes).
async fn earlier_pending(
    conn: &mut PgConnection,
    row: &Row,
    lease: Duration,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    let Some(message_id) = row.message_id else {
        return Ok(None);
    };
    type Times = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let earlier: Option<Times> = sqlx::query_as(
        "SELECT next_attempt_at, in_flight_until FROM webhook_deliveries
         WHERE subscription_id = $1 AND message_id = $2 AND seq < $3 AND status = 'pending'
         ORDER BY seq LIMIT 1",
    )
    .bind(row.subscription_id)
    .bind(message_id)
    .bind(row.seq)
    .fetch_optional(conn)
    .await?;
    Ok(earlier.map(|(next, lease_end)| {
        let fallback = Utc::now() + TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(60));
        next.or(lease_end).map_or(fallback, |t| {
            t.max(Utc::now()) + TimeDelta::milliseconds(100)
        })
    }))
}

/// Snoozes this run (no attempt spent) until `until`, noting why, so that whoever frees the way
/// wakes it.
async fn wait(
    conn: &mut PgConnection,
    run: &Run,
    delivery_id: Uuid,
    why: &str,
    until: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE webhook_deliveries SET waiting = $2 WHERE id = $1")
        .bind(delivery_id)
        .bind(why)
        .execute(&mut *conn)
        .await?;
    let verdict = queue::snooze(until, format!("webhook delivery waits ({why})"));
    queue::settle(conn, &[(run.clone(), verdict)]).await?;
    Ok(())
}

/// What one HTTP attempt gave.
#[derive(Debug)]
pub struct Attempted {
    pub at: DateTime<Utc>,
    pub class: AttemptClass,
    pub http_status: Option<u16>,
    pub duration: Duration,
    pub excerpt: Option<String>,
    pub retry_after: Option<Duration>,
}

/// The body of an event as posted: `{"type", "timestamp", "data"}`, minified. The same bytes
/// for every attempt and replay of the event (its data is stored; keys come out sorted).
pub fn body(event_type: &str, at: DateTime<Utc>, data: &Value) -> Vec<u8> {
    let body = json!({
        "type": event_type,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": data,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Posts the event once.
async fn attempt(ctx: &DeliveryContext, claimed: &Claimed) -> Attempted {
    let at = Utc::now();
    let started = Instant::now();
    let done = |class, http_status, excerpt: Option<String>, retry_after| Attempted {
        at,
        class,
        http_status,
        duration: started.elapsed(),
        excerpt,
        retry_after,
    };
    let url = match reqwest::Url::parse(&claimed.url) {
        Ok(url) => url,
        Err(e) => {
            return done(
                AttemptClass::Connect,
                None,
                Some(format!("bad URL: {e}")),
                None,
            );
        }
    };
    if !ctx.settings.allow_private
        && let Some(ip) = net::literal_ip(&url).filter(|ip| net::is_private(*ip))
    {
        let why = format!("{ip} is a private or loopback address: not sent");
        return done(AttemptClass::Blocked, None, Some(why), None);
    }
    let body = body(&claimed.event_type, claimed.event_at, &claimed.data);
    let timestamp = at.timestamp();
    let mut secrets = vec![claimed.secret.as_str()];
    secrets.extend(claimed.previous_secret.as_deref());
    let signature = sign::header(&secrets, &claimed.event_id, timestamp, &body);
    let sent = ctx
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &claimed.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let excerpt = excerpt(response).await;
            done(
                AttemptClass::of_status(status),
                Some(status),
                excerpt,
                retry_after,
            )
        }
        Err(e) => {
            let class = if net::is_blocked(&e) {
                AttemptClass::Blocked
            } else if e.is_timeout() {
                AttemptClass::Timeout
            } else {
                AttemptClass::Connect
            };
            done(class, None, Some(error_chain(&e)), None)
        }
    }
}

/// The first [`EXCERPT_BYTES`] of an answer's body (the rest is not read).
async fn excerpt(mut response: reqwest::Response) -> Option<String> {
    let mut kept = Vec::new();
    while kept.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(EXCERPT_BYTES);
    let text = String::from_utf8_lossy(&kept).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(EXCERPT_BYTES).collect()
}

/// `Retry-After` in seconds or as an HTTP date.
fn parse_retry_after(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(raw).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// Where the delivery goes after an attempt.
enum Next {
    Succeeded,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// Records the attempt and its consequences in one transaction.
async fn record(
    ctx: &DeliveryContext,
    run: &Run,
    claimed: &Claimed,
    attempted: &Attempted,
) -> Result<(), DeliveryError> {
    let next = match attempted.class {
        AttemptClass::Ok => Next::Succeeded,
        AttemptClass::Gone => Next::Failed,
        class => match ctx.settings.schedule.next(
            run.attempt(),
            class,
            attempted.http_status,
            attempted.retry_after,
        ) {
            Some(delay) => {
                Next::RetryAt(Utc::now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX))
            }
            None => Next::Failed,
        },
    };
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at, http_status, class, duration_ms,
                                       response_excerpt)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT DO NOTHING",
    )
    .bind(claimed.id)
    .bind(claimed.attempts)
    .bind(attempted.at)
    .bind(attempted.http_status.map(i32::from))
    .bind(attempted.class)
    .bind(i32::try_from(attempted.duration.as_millis()).unwrap_or(i32::MAX))
    .bind(&attempted.excerpt)
    .execute(&mut *tx)
    .await?;
    let (status, next_at) = match next {
        Next::Succeeded => ("succeeded", None),
        Next::RetryAt(at) => ("pending", Some(at)),
        Next::Failed => ("failed", None),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $2, next_attempt_at = $3, in_flight_until = NULL,
                finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END
         WHERE id = $1 AND job_id = $4",
    )
    .bind(claimed.id)
    .bind(status)
    .bind(next_at)
    .bind(&run.job_id)
    .execute(&mut *tx)
    .await?;
    let mut verdict = match next {
        Next::Succeeded => Verdict::Complete {
            attempts: run.attempt(),
        },
        Next::RetryAt(at) => queue::retry_at(
            at,
            run.attempt(),
            format!("webhook attempt: {}", attempted.class.as_str()),
        ),
        Next::Failed => Verdict::Fail {
            attempts: run.attempt(),
            reason: format!("webhook delivery failed: {}", attempted.class.as_str()),
        },
    };
    let disabled = match attempted.class {
        AttemptClass::Ok => {
            sqlx::query(
                "UPDATE webhook_subscriptions SET last_success_at = now(), failing_since = NULL
                 WHERE id = $1 AND (failing_since IS NOT NULL OR last_success_at IS NULL
                                    OR last_success_at < now() - interval '1 second')",
            )
            .bind(claimed.subscription_id)
            .execute(&mut *tx)
            .await?;
            None
        }
        AttemptClass::Gone => {
            disable(&mut tx, claimed.subscription_id, DisabledReason::Gone).await?
        }
        _ => {
            let failing_since: Option<DateTime<Utc>> = sqlx::query_scalar(
                "UPDATE webhook_subscriptions SET failing_since = coalesce(failing_since, now())
                 WHERE id = $1 RETURNING failing_since",
            )
            .bind(claimed.subscription_id)
            .fetch_optional(&mut *tx)
            .await?;
            let limit = TimeDelta::from_std(ctx.settings.disable_after).unwrap_or(TimeDelta::MAX);
            if failing_since.is_some_and(|since| Utc::now() - since >= limit) {
                disable(&mut tx, claimed.subscription_id, DisabledReason::Failing).await?
            } else {
                None
            }
        }
    };
    if disabled.is_some() && matches!(next, Next::RetryAt(_)) {
        // Its subscription is disabled: this delivery is cancelled with the others.
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now(),
                    next_attempt_at = NULL
             WHERE id = $1",
        )
        .bind(claimed.id)
        .execute(&mut *tx)
        .await?;
        verdict = Verdict::Cancelled {
            attempts: run.attempt(),
        };
    }
    wake_next(
        &mut tx,
        claimed,
        matches!(next, Next::RetryAt(_)) && disabled.is_none(),
    )
    .await?;
    queue::settle(&mut tx, &[(run.clone(), verdict)]).await?;
    tx.commit().await?;
    metrics::counter!("bengkel_webhook_attempts_total", "class" => attempted.class.as_str())
        .increment(1);
    metrics::histogram!("bengkel_webhook_attempt_duration_seconds")
        .record(attempted.duration.as_secs_f64());
    if let Some(reason) = disabled {
        tracing::warn!(
            subscription_id = %claimed.subscription_id,
            reason = ?reason,
            "webhook subscription disabled"
        );
    }
    Ok(())
}

/// Disables a subscription and cancels its pending deliveries (their waiting jobs too).
pub async fn disable(
    conn: &mut PgConnection,
    subscription_id: Uuid,
    reason: DisabledReason,
) -> sqlx::Result<Option<DisabledReason>> {
    let changed = sqlx::query(
        "UPDATE webhook_subscriptions SET enabled = false, disabled_reason = $2, updated_at = now()
         WHERE id = $1 AND enabled",
    )
    .bind(subscription_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    cancel_pending(conn, subscription_id).await?;
    Ok((changed.rows_affected() == 1).then_some(reason))
}

/// Cancels a subscription's pending deliveries that no worker holds, with their jobs. One being
/// sent right now finishes its attempt; its next run finds the subscription disabled.
pub async fn cancel_pending(conn: &mut PgConnection, subscription_id: Uuid) -> sqlx::Result<u64> {
    let jobs: Vec<String> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET status = 'cancelled', finished_at = now(),
                next_attempt_at = NULL, waiting = NULL
         WHERE subscription_id = $1 AND status = 'pending'
           AND (in_flight_until IS NULL OR in_flight_until < now())
         RETURNING job_id",
    )
    .bind(subscription_id)
    .fetch_all(&mut *conn)
    .await?;
    queue::cancel_waiting_many(conn, &jobs).await?;
    Ok(jobs.len() as u64)
}

/// Wakes what this delivery's attempt held up: the next event of its message (unless this one
/// is to be retried: the next must keep waiting), and one delivery waiting for a slot.
async fn wake_next(conn: &mut PgConnection, claimed: &Claimed, retrying: bool) -> sqlx::Result<()> {
    let jobs: Vec<String> = sqlx::query_scalar(
        "(SELECT job_id FROM webhook_deliveries
          WHERE subscription_id = $1 AND message_id = $2 AND status = 'pending' AND NOT $3
            AND waiting = 'order'
          ORDER BY seq LIMIT 1)
         UNION ALL
         (SELECT job_id FROM webhook_deliveries
          WHERE subscription_id = $1 AND status = 'pending' AND waiting = 'capacity'
          ORDER BY seq LIMIT 1)",
    )
    .bind(claimed.subscription_id)
    .bind(claimed.message_id)
    .bind(retrying)
    .fetch_all(&mut *conn)
    .await?;
    queue::wake(conn, &jobs).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_minified_and_stable() {
        let at = DateTime::parse_from_rfc3339("2026-12-06T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let data = json!({"to": "6281", "message_id": "m", "attempts": 1});
        let bytes = body("message.sent", at, &data);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"data":{"attempts":1,"message_id":"m","to":"6281"},"timestamp":"2026-12-06T10:00:00.500000Z","type":"message.sent"}"#
        );
        assert_eq!(bytes, body("message.sent", at, &data));
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("soon"), None);
        let later = (Utc::now() + TimeDelta::seconds(300)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(290) && d <= Duration::from_secs(300),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("Mon, 01 Jan 2001 00:00:00 +0000"), None);
    }
}
