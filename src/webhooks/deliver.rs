//! The delivery job (queue [`super::QUEUE`], its own workers): one HTTP attempt per run.
//!
//! [`claim`] → [`attempt`] → [`record`]
//!
//! - **claim**, one transaction under the subscription's lock: a delivery whose subscription is
//!   gone or disabled is cancelled; one whose message has an earlier event still pending waits for
//!   it (order); one whose subscription has [`super::MAX_IN_FLIGHT`] deliveries being sent waits for a
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
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    AttemptClass, DisabledReason, Settings, net,
    outbox::DeliveryJob,
    post::{Attempted, attempt},
    waiters::{CAPACITY_WAIT, Waiters, Waiting},
};
use crate::queue::{self, Run, Verdict, rescue::Process};

/// What the delivery workers share.
pub struct DeliveryContext {
    pub pool: PgPool,
    pub settings: Settings,
    pub client: reqwest::Client,
    pub process: Process,
    pub waiters: Waiters,
}

impl DeliveryContext {
    pub fn new(pool: PgPool, settings: Settings, process: Process) -> anyhow::Result<Self> {
        let client = net::client(settings.timeout, settings.allow_private)?;
        Ok(Self {
            pool,
            settings,
            client,
            process,
            waiters: Waiters::default(),
        })
    }

    /// How long a claimed delivery counts as in flight: one attempt and a margin. A worker that
    /// dies mid-attempt frees its slot when this passes.
    pub(super) fn lease(&self) -> Duration {
        self.settings.timeout + Duration::from_secs(10)
    }
}

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
    let work = {
        let (ctx, run) = (ctx.clone(), run.clone());
        async move { execute(&ctx, run, payload).await }
    };
    queue::run_guarded(&ctx.pool, &ctx.process, run, "webhook delivery", work).await
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
    Ok(queue::settle_alone(pool, run, verdict).await?)
}

/// A delivery handed to this run.
#[derive(Debug)]
pub struct Claimed {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub message_id: Option<Uuid>,
    pub event_id: String,
    pub event_type: String,
    pub data: Value,
    pub event_at: DateTime<Utc>,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
}

/// What `webhook_claim` (migrations/20261206000013_webhooks.sql) answers.
#[derive(sqlx::FromRow)]
struct ClaimRow {
    outcome: String,
    until: Option<DateTime<Utc>>,
    subscription_id: Option<Uuid>,
    message_id: Option<Uuid>,
    event_id: Option<String>,
    event_type: Option<String>,
    data: Option<Value>,
    event_at: Option<DateTime<Utc>>,
    url: Option<String>,
    secret: Option<String>,
    previous_secret: Option<String>,
}

impl ClaimRow {
    fn claimed(self, id: Uuid) -> Option<Claimed> {
        Some(Claimed {
            id,
            subscription_id: self.subscription_id?,
            message_id: self.message_id,
            event_id: self.event_id?,
            event_type: self.event_type?,
            data: self.data?,
            event_at: self.event_at?,
            url: self.url?,
            secret: self.secret?,
            previous_secret: self.previous_secret,
        })
    }
}

/// Hands the delivery to this run, or ends the run (settled) and returns `None`. A run that
/// finds its subscription's slots taken waits here for one (up to [`CAPACITY_WAIT`]) before it
/// snoozes: a snooze costs a fetch and a claim more, and a burst to one receiver would spend
/// most of its work on them.
async fn claim(
    ctx: &DeliveryContext,
    run: &Run,
    delivery_id: Uuid,
) -> Result<Option<Claimed>, DeliveryError> {
    let lease = TimeDelta::from_std(ctx.lease()).unwrap_or(TimeDelta::seconds(60));
    let deadline = Instant::now() + CAPACITY_WAIT;
    let mut waiting: Option<Waiting<'_>> = None;
    loop {
        // The claim and, when it does not hand the delivery over, the run's verdict commit
        // together: a delivery never waits without its job snoozed (see the migration
        // `webhook_order_wakeup`).
        let mut tx = ctx.pool.begin().await?;
        let row: ClaimRow = sqlx::query_as("SELECT * FROM webhook_claim($1, $2, $3)")
            .bind(delivery_id)
            .bind(&run.job_id)
            .bind(lease)
            .fetch_one(&mut *tx)
            .await?;
        let verdict = match row.outcome.as_str() {
            "claimed" => {
                let claimed = row.claimed(delivery_id);
                if claimed.is_some() {
                    tx.commit().await?;
                    return Ok(claimed);
                }
                Verdict::Fail {
                    attempts: run.attempt(),
                    reason: "its event or subscription is missing".into(),
                }
            }
            "capacity" => {
                if let (None, Some(sub)) = (&waiting, row.subscription_id) {
                    waiting = ctx.waiters.enter(sub);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if let Some(w) = waiting.as_ref().filter(|_| !left.is_zero()) {
                    tx.commit().await?;
                    let _ = tokio::time::timeout(left, w.notify.notified()).await;
                    continue;
                }
                let until = row
                    .until
                    .unwrap_or_else(|| Utc::now() + TimeDelta::seconds(1));
                queue::snooze(
                    until,
                    "webhook delivery waits for a slot of its subscription",
                )
            }
            "order" => {
                let until = row.until.unwrap_or_else(|| Utc::now() + lease);
                queue::snooze(
                    until,
                    "webhook delivery waits for an earlier event of its message",
                )
            }
            "cancelled" => Verdict::Cancelled {
                attempts: run.fetched_attempts,
            },
            // A replay gave the delivery a new job, or it was finished meanwhile.
            "stale" => Verdict::Complete {
                attempts: run.fetched_attempts,
            },
            _ => Verdict::Fail {
                attempts: run.attempt(),
                reason: "its delivery no longer exists".into(),
            },
        };
        queue::settle(&mut tx, &[(run.clone(), verdict)]).await?;
        tx.commit().await?;
        return Ok(None);
    }
}

/// Where the delivery goes after an attempt.
enum Next {
    Succeeded,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// Records the attempt and its consequences in one transaction: the attempt, the delivery's
/// state and a success on the subscription in one statement, then the deliveries to wake; on a
/// failure the subscription's failure state (and its disabling); the job's verdict.
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
    let (status, next_at) = match next {
        Next::Succeeded => ("succeeded", None),
        Next::RetryAt(at) => ("pending", Some(at)),
        Next::Failed => ("failed", None),
    };
    let ok = attempted.class == AttemptClass::Ok;
    let retrying = matches!(next, Next::RetryAt(_));
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(
        "WITH d AS (
            UPDATE webhook_deliveries SET status = $7, next_attempt_at = $8,
                   attempts = attempts + 1,
                   finished_at = CASE WHEN $7 = 'pending' THEN NULL ELSE now() END
            WHERE id = $1 AND job_id = $9
            RETURNING attempts
         ), a AS (
            INSERT INTO webhook_attempts (delivery_id, attempt, at, http_status, class, duration_ms,
                                          response_excerpt)
            SELECT $1, d.attempts, $2, $3, $4, $5, $6 FROM d
            ON CONFLICT DO NOTHING
         ), slot AS (
            UPDATE webhook_slots SET delivery_id = NULL, until = NULL
            WHERE subscription_id = $11 AND delivery_id = $1
         ), s AS (
            UPDATE webhook_subscriptions SET last_success_at = now(), failing_since = NULL
            WHERE $10 AND id = $11
              AND (failing_since IS NOT NULL OR last_success_at IS NULL
                   OR last_success_at < now() - interval '1 second')
         )
         SELECT 1 FROM d",
    )
    .bind(claimed.id)
    .bind(attempted.at)
    .bind(attempted.http_status.map(i32::from))
    .bind(attempted.class)
    .bind(i32::try_from(attempted.duration.as_millis()).unwrap_or(i32::MAX))
    .bind(&attempted.excerpt)
    .bind(status)
    .bind(next_at)
    .bind(&run.job_id)
    .bind(ok)
    .bind(claimed.subscription_id)
    .execute(&mut *tx)
    .await?;
    // Whom to wake: a statement of its own, so that its snapshot sees a claim that waited for
    // this delivery's update (it locks the earlier deliveries FOR SHARE) and committed its
    // snooze. The next event of its message waits while this one is to be retried.
    let mut wake: Vec<String> = sqlx::query_scalar(
        "(SELECT job_id FROM webhook_deliveries
          WHERE subscription_id = $1 AND message_id = $2 AND status = 'pending' AND NOT $3
            AND waiting = 'order' AND id <> $4
          ORDER BY seq LIMIT 1)
         UNION ALL
         (SELECT job_id FROM webhook_deliveries
          WHERE subscription_id = $1 AND status = 'pending' AND waiting = 'capacity'
          ORDER BY seq LIMIT 1)",
    )
    .bind(claimed.subscription_id)
    .bind(claimed.message_id)
    .bind(retrying)
    .bind(claimed.id)
    .fetch_all(&mut *tx)
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
    let disabled = if ok {
        None
    } else {
        failed(ctx, &mut tx, claimed, attempted.class).await?
    };
    if disabled.is_some() {
        // Its subscription is disabled: nothing of it is woken, and this delivery, if it was to be
        // retried, is cancelled with the others.
        wake.clear();
        if retrying {
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
    }
    queue::wake(&mut tx, &wake).await?;
    queue::settle(&mut tx, &[(run.clone(), verdict)]).await?;
    tx.commit().await?;
    ctx.waiters.finished(claimed.subscription_id);
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

/// A failed attempt on the subscription: failing since its first failure after a success;
/// disabled on `410`, or when failing for `WEBHOOK_DISABLE_AFTER`. Returns why, when it was.
async fn failed(
    ctx: &DeliveryContext,
    conn: &mut PgConnection,
    claimed: &Claimed,
    class: AttemptClass,
) -> sqlx::Result<Option<DisabledReason>> {
    if class == AttemptClass::Gone {
        return disable(conn, claimed.subscription_id, DisabledReason::Gone).await;
    }
    let failing_since: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE webhook_subscriptions SET failing_since = coalesce(failing_since, now())
         WHERE id = $1 RETURNING failing_since",
    )
    .bind(claimed.subscription_id)
    .fetch_optional(&mut *conn)
    .await?;
    let limit = TimeDelta::from_std(ctx.settings.disable_after).unwrap_or(TimeDelta::MAX);
    if failing_since.is_some_and(|since| Utc::now() - since >= limit) {
        disable(conn, claimed.subscription_id, DisabledReason::Failing).await
    } else {
        Ok(None)
    }
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
           AND NOT EXISTS (SELECT 1 FROM webhook_slots sl
                           WHERE sl.delivery_id = webhook_deliveries.id AND sl.until > now())
         RETURNING job_id",
    )
    .bind(subscription_id)
    .fetch_all(&mut *conn)
    .await?;
    queue::cancel_waiting_many(conn, &jobs).await?;
    Ok(jobs.len() as u64)
}
