//! The sender's shared state in `sender_state` (one row): the cluster-wide token bucket, the
//! adaptive slow-down after a 429 and the circuit breaker (README "Delivery policy"). Every
//! change is one atomic statement, so any number of processes share one limit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{HoldReason, clamped_secs, throttle};
use crate::gateway::{Class, Outcome};
use crate::queue::{self, pause};

/// The one sender (a StarSender device).
pub const SENDER: &str = "starsender";
/// A 429 halves the effective rate, never below this.
pub const RATE_FLOOR: f64 = 0.05;
/// The first cool-down of an open circuit, doubled after each failed probe up to the cap.
pub const COOLDOWN_FIRST_SECS: i32 = 30;
pub const COOLDOWN_MAX_SECS: i32 = 600;
/// The circuit breaker's queue holds (`queue_holds.reason`, the same words as the messages').
pub const HOLD_CIRCUIT: HoldReason = HoldReason::CircuitOpen;
pub const HOLD_RETRY_AFTER: HoldReason = HoldReason::RetryAfter;
/// Who paused the send queue after a 401/403, and why (`GET /ops/queues`: `paused_by`,
/// `paused_reason`).
pub const PAUSED_BY_CIRCUIT: &str = "circuit";

/// The circuit breaker's state (`sender_state.circuit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Calls go out.
    Closed,
    /// Calls are held for a cool-down.
    Open,
    /// One probe call is out; its answer closes or reopens the circuit.
    HalfOpen,
}

/// The effective rate: the configured one, or after a 429 the halved rate growing back by 10 %
/// of the configured rate per minute once 60 s passed without another 429. Over `s`
/// (sender_state) and `p` (delivery_policy).
macro_rules! effective_rate {
    () => {
        "(CASE WHEN s.slowed_rate IS NULL OR p.rate_per_second <= 0 THEN p.rate_per_second
               ELSE least(p.rate_per_second,
                          s.slowed_rate + 0.1 * p.rate_per_second
                              * greatest(0, extract(epoch FROM now() - s.rate_limited_at) - 60) / 60)
          END)"
    };
}

pub async fn seed(pool: &PgPool, burst: u32) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sender_state (sender, tokens) VALUES ($1, $2) ON CONFLICT (sender) DO NOTHING",
    )
    .bind(SENDER)
    .bind(f64::from(burst))
    .execute(pool)
    .await?;
    Ok(())
}

/// What `GET /ops/sender` shows (and each process' view of it).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SenderState {
    /// The configured rate (calls per second, 0 = no limit).
    pub rate_configured: f64,
    /// The rate in force: halved after a 429, growing back.
    pub rate_effective: f64,
    pub burst: i32,
    /// No call goes out before this (the gateway's `Retry-After`).
    pub retry_after_until: Option<DateTime<Utc>>,
    pub circuit: Circuit,
    pub consecutive_failures: i32,
    pub opened_at: Option<DateTime<Utc>>,
    /// When an open circuit lets its probe call through.
    pub reopen_at: Option<DateTime<Utc>>,
    /// Until when the half-open probe is out.
    #[serde(skip)]
    pub probe_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

pub async fn state(pool: &PgPool) -> sqlx::Result<Option<SenderState>> {
    sqlx::query_as(concat!(
        "SELECT p.rate_per_second AS rate_configured, ",
        effective_rate!(),
        " AS rate_effective, p.burst,
                s.retry_after_until, s.circuit, s.consecutive_failures, s.opened_at, s.reopen_at,
                s.probe_until, s.last_error, s.last_error_at
         FROM sender_state s, delivery_policy p WHERE s.sender = $1"
    ))
    .bind(SENDER)
    .fetch_optional(pool)
    .await
}

/// Slots granted by the bucket: `granted` calls, the i-th (1-based) not before
/// `now + max(0, (i - tokens) / rate)`; none while `retry_after_until` is ahead.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Grant {
    pub now: DateTime<Utc>,
    /// The bucket's tokens after the refill, before this grant (may be below zero).
    pub tokens: f64,
    pub rate: f64,
    pub granted: i32,
    pub retry_after_until: Option<DateTime<Utc>>,
}

impl Grant {
    /// How long after `now` the `i`-th slot (1-based) opens: within the reservation's horizon
    /// by construction, and never more than [`throttle::MAX_WAIT`].
    pub fn offset(&self, i: i32) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        clamped_secs((f64::from(i) - self.tokens) / self.rate, throttle::MAX_WAIT)
    }

    /// When to ask again after a grant of nothing: when the next slot could come within
    /// `horizon`, but never later than [`throttle::MAX_WAIT`] (the policy may change meanwhile).
    pub fn next_try(&self, horizon: Duration) -> Duration {
        if self.rate <= 0.0 {
            return Duration::from_millis(100);
        }
        let until_one = (1.0 - self.tokens) / self.rate - horizon.as_secs_f64();
        clamped_secs(until_one, throttle::MAX_WAIT)
    }
}

/// Takes up to `want` slots that open within `horizon`, after giving back `returned` unused
/// ones. One statement on the sender's row.
pub async fn reserve<'e>(
    db: impl sqlx::PgExecutor<'e>,
    want: u32,
    returned: u32,
    horizon: Duration,
) -> sqlx::Result<Option<Grant>> {
    sqlx::query_as(concat!(
        "WITH cur AS (
            SELECT s.sender, s.retry_after_until, p.burst::float8 AS burst, p.rate_per_second AS cfg, ",
        effective_rate!(),
        " AS rate,
                   s.tokens, s.refilled_at
            FROM sender_state s, delivery_policy p WHERE s.sender = $1 FOR UPDATE OF s
         ), clock AS (
            -- the bucket's time: read once the row is locked (now() is the statement's start,
            -- before any wait for the lock), and never behind the last refill, so that no
            -- stretch of time is counted twice
            SELECT cur.*, greatest(clock_timestamp(), cur.refilled_at) AS t FROM cur
         ), filled AS (
            SELECT clock.*, least(clock.burst,
                       clock.tokens + $3 + clock.rate * extract(epoch FROM clock.t - clock.refilled_at)) AS x
            FROM clock
         ), g AS (
            SELECT filled.*,
                   CASE WHEN filled.retry_after_until > filled.t THEN 0
                        ELSE greatest(0, least($2::float8, floor(filled.x + filled.rate * $4)))::int END AS granted
            FROM filled
         )
         UPDATE sender_state t SET tokens = g.x - g.granted, refilled_at = g.t,
                slowed_rate = CASE WHEN g.rate >= g.cfg THEN NULL ELSE t.slowed_rate END
         FROM g WHERE t.sender = g.sender
         RETURNING g.t AS now, g.x AS tokens, g.rate, g.granted, g.retry_after_until"
    ))
    .bind(SENDER)
    .bind(f64::from(want))
    .bind(f64::from(returned))
    .bind(horizon.as_secs_f64())
    .fetch_optional(db)
    .await
}

/// A 429 (or a 503 with `Retry-After`): the effective rate halves for every process (floor
/// [`RATE_FLOOR`]), the bucket is emptied, and nothing is fetched or called before `until`.
pub async fn rate_limited(
    pool: &PgPool,
    until: Option<DateTime<Utc>>,
    error: &str,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(concat!(
        "UPDATE sender_state s SET
            slowed_rate = CASE WHEN p.rate_per_second > 0
                               THEN greatest($2, ",
        effective_rate!(),
        " / 2) END,
            rate_limited_at = now(),
            retry_after_until = CASE WHEN $3::timestamptz > coalesce(s.retry_after_until, now())
                                     THEN $3 ELSE s.retry_after_until END,
            tokens = least(s.tokens, 0),
            last_error = $4, last_error_at = now()
         FROM delivery_policy p WHERE s.sender = $1"
    ))
    .bind(SENDER)
    .bind(RATE_FLOOR)
    .bind(until)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    if let Some(until) = until {
        pause::hold(&mut tx, queue::SEND_QUEUE, HOLD_RETRY_AFTER.as_str(), until).await?;
    }
    tx.commit().await
}

/// One more consecutive connect/timeout/5xx failure. Opens the circuit at the threshold, or
/// again (cool-down doubled) when it was the half-open probe that failed.
pub async fn failed(pool: &PgPool, error: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let reopen: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "WITH cur AS (
            SELECT s.sender, s.circuit, s.consecutive_failures + 1 AS failures, s.cooldown_secs,
                   p.circuit_failure_threshold AS threshold
            FROM sender_state s, delivery_policy p WHERE s.sender = $1 FOR UPDATE OF s
         ), next AS (
            SELECT cur.*,
                   CASE WHEN cur.circuit = 'half_open' THEN least($3, cur.cooldown_secs * 2)
                        WHEN cur.circuit = 'closed' AND cur.failures >= cur.threshold THEN $2
                        ELSE NULL END AS open_for
            FROM cur
         )
         UPDATE sender_state s SET
            consecutive_failures = next.failures,
            last_error = $4, last_error_at = now(),
            circuit = CASE WHEN next.open_for IS NOT NULL THEN 'open' ELSE s.circuit END,
            cooldown_secs = coalesce(next.open_for, s.cooldown_secs),
            opened_at = CASE WHEN next.open_for IS NOT NULL THEN now() ELSE s.opened_at END,
            reopen_at = CASE WHEN next.open_for IS NOT NULL
                             THEN now() + make_interval(secs => next.open_for) ELSE s.reopen_at END,
            probe_by = CASE WHEN next.open_for IS NOT NULL THEN NULL ELSE s.probe_by END,
            probe_until = CASE WHEN next.open_for IS NOT NULL THEN NULL ELSE s.probe_until END
         FROM next WHERE s.sender = next.sender
         RETURNING CASE WHEN next.open_for IS NOT NULL THEN s.reopen_at END",
    )
    .bind(SENDER)
    .bind(COOLDOWN_FIRST_SECS)
    .bind(COOLDOWN_MAX_SECS)
    .bind(error)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(Some(until)) = reopen {
        tracing::warn!(%until, "gateway circuit open: {error}");
        pause::hold(&mut tx, queue::SEND_QUEUE, HOLD_CIRCUIT.as_str(), until).await?;
    }
    tx.commit().await
}

/// The gateway answered (any answer that is not a connect/timeout/5xx failure): the streak
/// ends and an open or half-open circuit closes. Writes only when there is something to reset.
pub async fn answered(pool: &PgPool) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let closed: Option<String> = sqlx::query_scalar(
        "UPDATE sender_state SET consecutive_failures = 0, circuit = 'closed',
                cooldown_secs = $2, opened_at = NULL, reopen_at = NULL, probe_by = NULL,
                probe_until = NULL
         WHERE sender = $1 AND (consecutive_failures > 0 OR circuit <> 'closed')
         RETURNING circuit",
    )
    .bind(SENDER)
    .bind(COOLDOWN_FIRST_SECS)
    .fetch_optional(&mut *tx)
    .await?;
    if closed.is_some() {
        pause::release_hold(&mut tx, queue::SEND_QUEUE, HOLD_CIRCUIT.as_str()).await?;
        // What the open circuit snoozed goes now, not at the end of a cool-down or a probe's
        // lease.
        let held = crate::messages::read::held_jobs(&mut tx, &[HOLD_CIRCUIT]).await?;
        queue::wake(&mut tx, &held).await?;
    }
    tx.commit().await
}

/// The device is logged out, the key revoked or the account restricted: the send queue pauses
/// for the whole cluster until an operator resumes it, saying `reason`.
pub async fn unauthorized(pool: &PgPool, error: &str, reason: &str) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE sender_state SET last_error = $2, last_error_at = now() WHERE sender = $1")
        .bind(SENDER)
        .bind(error)
        .execute(&mut *tx)
        .await?;
    pause::pause_in(&mut tx, queue::SEND_QUEUE, PAUSED_BY_CIRCUIT, Some(reason)).await?;
    tx.commit().await
}

/// Becomes the half-open probe of an open circuit whose cool-down is over (or whose previous
/// probe vanished): true for exactly one caller. The queue stays held while the probe is out.
pub async fn try_probe(pool: &PgPool, who: &str, lease: Duration) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let until: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE sender_state SET circuit = 'half_open', probe_by = $2,
                probe_until = now() + make_interval(secs => $3)
         WHERE sender = $1
           AND ((circuit = 'open' AND reopen_at <= now())
                OR (circuit = 'half_open' AND (probe_until IS NULL OR probe_until <= now())))
         RETURNING probe_until",
    )
    .bind(SENDER)
    .bind(who)
    .bind(lease.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(until) = until {
        pause::hold(&mut tx, queue::SEND_QUEUE, HOLD_CIRCUIT.as_str(), until).await?;
    }
    tx.commit().await?;
    Ok(until.is_some())
}

/// Tells the sender's shared state what the gateway's answer means for every process: a 429
/// (or 503 with `Retry-After`) slows the cluster down and holds it until `retry_after_until`
/// (the decision's snooze, `None` for a 429 without one), a sender that cannot send (401/403,
/// Cloud API `190`/`368`) pauses the send queue, a
/// connect/timeout/5xx failure counts toward the circuit, any other answer ends the streak. A
/// failed write is logged: the message's own outcome is recorded all the same.
pub async fn observe(
    policy: &super::Policy,
    pool: &PgPool,
    outcome: &Outcome,
    retry_after_until: Option<DateTime<Utc>>,
) {
    let class = outcome.class();
    let error = outcome.error().unwrap_or_default();
    let paused = match outcome {
        Outcome::Paused { reason, .. } => Some(*reason),
        _ => None,
    };
    let result = match (paused, class, retry_after_until) {
        (_, _, Some(until)) => rate_limited(pool, Some(until), error).await,
        (Some(reason), _, None) => {
            tracing::error!("the gateway cannot send ({error}): pausing the send queue ({reason})");
            unauthorized(pool, error, reason).await
        }
        (None, Class::RateLimited, None) => rate_limited(pool, None, error).await,
        (None, Class::Connect | Class::Timeout | Class::ServerError, None) => {
            failed(pool, error).await
        }
        _ => match policy.view() {
            // Nothing to reset: no write.
            Some(v)
                if v.sender.consecutive_failures == 0 && v.sender.circuit == Circuit::Closed =>
            {
                Ok(())
            }
            _ => answered(pool).await,
        },
    };
    if let Err(e) = result {
        tracing::warn!("recording the gateway's answer in the sender state failed: {e}");
        return;
    }
    if class != Class::Ok {
        // Every process learns at its next refresh; this one at once.
        let _ = policy.refresh().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(tokens: f64, rate: f64) -> Grant {
        Grant {
            now: Utc::now(),
            tokens,
            rate,
            granted: 0,
            retry_after_until: None,
        }
    }

    #[test]
    fn slots_open_one_interval_apart_after_the_tokens_in_hand() {
        let g = grant(2.0, 10.0);
        assert_eq!(g.offset(1), Duration::ZERO);
        assert_eq!(g.offset(2), Duration::ZERO);
        assert_eq!(g.offset(3), Duration::from_millis(100));
        let g = grant(-1.0, 4.0);
        assert_eq!(g.offset(1), Duration::from_millis(500));
        assert_eq!(
            g.next_try(Duration::from_millis(250)),
            Duration::from_millis(250)
        );
        assert_eq!(grant(0.0, 0.0).offset(5), Duration::ZERO);
    }

    #[test]
    fn waits_from_any_rate_are_bounded_and_never_panic() {
        for rate in [1e-30, 1e-7, f64::MIN_POSITIVE, 0.05] {
            let g = grant(-3.0, rate);
            assert!(g.offset(1_000) <= throttle::MAX_WAIT, "{rate}");
            assert!(
                g.next_try(Duration::from_millis(250)) <= throttle::MAX_WAIT,
                "{rate}"
            );
        }
        let nan = grant(f64::NAN, 1.0);
        assert_eq!(nan.offset(1), Duration::ZERO);
        assert_eq!(nan.next_try(Duration::ZERO), Duration::ZERO);
        let inf = grant(f64::NEG_INFINITY, 1.0);
        assert_eq!(inf.offset(1), throttle::MAX_WAIT);
    }
}
