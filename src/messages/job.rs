//! The send job: one gateway call per run, outcome recorded in one transaction.
//!
//! Retries are ours, not apalis': on a retryable failure the job's `run_at` moves to the backoff
//! time in the same transaction that marks the message `retrying`, and the handler returns an
//! ordinary error so apalis counts the attempt and leaves the row `Failed` until it is due again.
//! Terminal outcomes return [`AbortError`] (apalis `Killed`): no further runs.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Instant};

use apalis::prelude::{AbortError, Attempt, BoxDynError, Data};
use chrono::Utc;
use futures::FutureExt;
use governor::DefaultDirectRateLimiter;
use serde_json::Value;
use sqlx::PgPool;

use super::{
    Status,
    repo::{self, Claim, Claimed, Recorded},
};
use crate::{
    db::batch::Batcher,
    gateway::{Outcome, SendRequest, StarSender},
    queue::{SendJob, backoff::Backoff},
};

/// Everything a send needs; one per process, shared by all its workers.
pub struct SendContext {
    pub pool: PgPool,
    /// Asynchronous commit, for the `sending` mark and apalis' bookkeeping (see `db::relaxed`).
    pub relaxed_pool: PgPool,
    /// Marks messages `sending` in groups, on `relaxed_pool` (see `db::batch`).
    pub claims: Batcher<Claim, Option<Claimed>>,
    /// Writes outcomes in groups, durably (see `db::batch`).
    pub outcomes: Batcher<Recorded, ()>,
    pub gateway: StarSender,
    /// `None` when `SEND_RATE_PER_SECOND=0` (no throttle).
    pub limiter: Option<Arc<DefaultDirectRateLimiter>>,
    pub backoff: Backoff,
    pub retry_ambiguous: bool,
    pub max_attempts: u32,
    /// This process' view of paused queues.
    pub pauses: crate::ops::pause::Pauses,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(String);

fn abort(reason: impl Into<String>) -> BoxDynError {
    Box::new(AbortError::new(SendError(reason.into())))
}

/// The apalis handler. A panic inside is caught and becomes an error, so the job is always
/// acknowledged and never stays locked by a live worker.
pub async fn handle(
    payload: Value,
    attempt: Attempt,
    ctx: Data<Arc<SendContext>>,
) -> Result<(), BoxDynError> {
    let job: SendJob = match serde_json::from_value(payload) {
        Ok(job) => job,
        Err(e) => return Err(abort(format!("unreadable send job payload: {e}"))),
    };
    let attempt = i32::try_from(attempt.current()).unwrap_or(i32::MAX);
    match AssertUnwindSafe(send(&ctx, job, attempt))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(_) => {
            tracing::error!(message_id = %job.message_id, "send job panicked; will retry");
            Err(Box::new(SendError("send job panicked".into())))
        }
    }
}

async fn send(ctx: &SendContext, job: SendJob, attempt: i32) -> Result<(), BoxDynError> {
    let id = job.message_id;
    // The limiter first: a message cancelled while we wait is found so by the claim. A job
    // fetched just before its queue was paused, or waiting here when it is, goes back to the
    // queue with no attempt spent.
    let waited = Instant::now();
    loop {
        if ctx.pauses.is_paused(crate::queue::SEND_QUEUE) {
            crate::ops::pause::hand_back(&ctx.pool, id).await?;
            return Ok(());
        }
        let Some(limiter) = &ctx.limiter else { break };
        match limiter.check() {
            Ok(()) => {
                metrics::histogram!("bengkel_throttle_wait_seconds")
                    .record(waited.elapsed().as_secs_f64());
                break;
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                tokio::time::sleep(wait.min(crate::ops::pause::REFRESH)).await;
            }
        }
    }
    let started_at = Utc::now();
    let recorded =
        |outcome, class, error: Option<&str>, status, next_attempt_at, response| Recorded {
            message_id: id,
            attempt,
            started_at,
            outcome,
            class,
            error: error.map(str::to_owned),
            status,
            next_attempt_at,
            response,
        };
    let claim = Claim {
        message_id: id,
        attempt,
    };
    let Some(message) = ctx.claims.submit(claim).await? else {
        return match repo::status(&ctx.pool, id).await? {
            None => Err(abort(format!("message {id} does not exist"))),
            Some(Status::Sent) => Ok(()), // an earlier run delivered it; a re-run changes nothing
            Some(Status::Cancelled) => Err(abort("message was cancelled")),
            Some(Status::Sending) => {
                // A previous attempt died during the gateway call and ambiguous retries are off.
                let error = "may have been delivered: a previous attempt was interrupted during the gateway call";
                record(
                    ctx,
                    recorded(
                        "failed",
                        "interrupted",
                        Some(error),
                        Status::Failed,
                        None,
                        None,
                    ),
                )
                .await?;
                Err(abort(error))
            }
            Some(other) => Err(abort(format!("message is {}", other.as_str()))),
        };
    };
    if message.previous == Status::Sending {
        tracing::warn!(message_id = %id, attempt, "previous attempt was interrupted mid-call; sending again (SEND_RETRY_AMBIGUOUS)");
    }

    let request = SendRequest::new(
        &message.to_phone,
        &message.body,
        message.file_url.as_deref(),
    );
    let outcome = ctx.gateway.send(&request).await;
    let last_attempt = attempt >= ctx.max_attempts as i32;
    let next = || {
        Utc::now()
            + chrono::Duration::from_std(ctx.backoff.delay(attempt.max(1) as u32))
                .unwrap_or_default()
    };

    let class = outcome.class().as_str();
    let recorded = match outcome {
        Outcome::Sent { response } => {
            recorded("sent", class, None, Status::Sent, None, Some(response))
        }
        Outcome::Retryable {
            error, response, ..
        } if !last_attempt => recorded(
            "retry",
            class,
            Some(&error),
            Status::Retrying,
            Some(next()),
            response,
        ),
        Outcome::Ambiguous { error, .. } if ctx.retry_ambiguous && !last_attempt => recorded(
            "ambiguous",
            class,
            Some(&error),
            Status::Retrying,
            Some(next()),
            None,
        ),
        Outcome::Retryable {
            error, response, ..
        }
        | Outcome::Permanent {
            error, response, ..
        } => recorded(
            "failed",
            class,
            Some(&error),
            Status::Failed,
            None,
            response,
        ),
        Outcome::Ambiguous { error, .. } => {
            let error = if ctx.retry_ambiguous {
                error.as_str()
            } else {
                "may have been delivered"
            };
            recorded("failed", class, Some(error), Status::Failed, None, None)
        }
    };
    let result: Result<(), BoxDynError> = match recorded.status {
        Status::Sent => Ok(()),
        Status::Retrying => Err(Box::new(SendError(
            recorded.error.clone().unwrap_or_default(),
        ))),
        _ => Err(abort(
            recorded.error.clone().unwrap_or_else(|| "failed".into()),
        )),
    };
    record(ctx, recorded).await?;
    result
}

/// Returns once the outcome is committed.
async fn record(ctx: &SendContext, recorded: Recorded) -> Result<(), BoxDynError> {
    let outcome = recorded.outcome;
    ctx.outcomes.submit(recorded).await?;
    metrics::counter!("bengkel_sends_total", "outcome" => outcome).increment(1);
    Ok(())
}
