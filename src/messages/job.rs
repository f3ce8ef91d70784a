//! The send job: one gateway call per run, outcome recorded in one transaction.
//!
//! Retries are ours, not apalis': on a retryable failure the job's `run_at` moves to the backoff
//! time in the same transaction that marks the message `retrying`, and the handler returns an
//! ordinary error so apalis counts the attempt and leaves the row `Failed` until it is due again.
//! Terminal outcomes return [`AbortError`] (apalis `Killed`): no further runs.

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use apalis::prelude::{AbortError, Attempt, BoxDynError, Data};
use chrono::Utc;
use futures::FutureExt;
use governor::DefaultDirectRateLimiter;
use serde_json::Value;
use sqlx::PgPool;

use super::{
    Status,
    repo::{self, AttemptRecord, Transition},
};
use crate::{
    gateway::{Outcome, SendRequest, StarSender},
    queue::{SendJob, backoff::Backoff},
};

/// Everything a send needs; one per process, shared by all its workers.
pub struct SendContext {
    pub pool: PgPool,
    /// For the `sending` mark only: asynchronous commit (see `worker::send_context`).
    pub claim_pool: PgPool,
    pub gateway: StarSender,
    /// `None` when `SEND_RATE_PER_SECOND=0` (no throttle).
    pub limiter: Option<Arc<DefaultDirectRateLimiter>>,
    pub backoff: Backoff,
    pub retry_ambiguous: bool,
    pub max_attempts: u32,
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
    // The limiter first: a message cancelled while we wait is found so by the claim.
    if let Some(limiter) = &ctx.limiter {
        let waited = Instant::now();
        limiter.until_ready().await;
        metrics::histogram!("bengkel_throttle_wait_seconds").record(waited.elapsed().as_secs_f64());
    }
    let started_at = Utc::now();
    let Some(message) = repo::claim(&ctx.claim_pool, id, attempt, ctx.retry_ambiguous).await?
    else {
        return match repo::status(&ctx.pool, id).await? {
            None => Err(abort(format!("message {id} does not exist"))),
            Some(Status::Sent) => Ok(()), // an earlier run delivered it; a re-run changes nothing
            Some(Status::Cancelled) => Err(abort("message was cancelled")),
            Some(Status::Sending) => {
                // A previous attempt died during the gateway call and ambiguous retries are off.
                let error = "may have been delivered: a previous attempt was interrupted during the gateway call";
                let attempt_record = AttemptRecord::new(
                    id,
                    attempt,
                    started_at,
                    "failed",
                    "interrupted",
                    Some(error),
                );
                record(ctx, &attempt_record, Transition::Fail { response: None }).await?;
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
    let (label, error, transition) = match &outcome {
        Outcome::Sent { response } => ("sent", None, Transition::Sent { response }),
        Outcome::Retryable {
            error, response, ..
        } if !last_attempt => (
            "retry",
            Some(error.as_str()),
            Transition::Retry {
                next: next(),
                response: response.as_ref(),
            },
        ),
        Outcome::Ambiguous { error, .. } if ctx.retry_ambiguous && !last_attempt => (
            "ambiguous",
            Some(error.as_str()),
            Transition::Retry {
                next: next(),
                response: None,
            },
        ),
        Outcome::Retryable {
            error, response, ..
        }
        | Outcome::Permanent {
            error, response, ..
        } => (
            "failed",
            Some(error.as_str()),
            Transition::Fail {
                response: response.as_ref(),
            },
        ),
        Outcome::Ambiguous { error, .. } => (
            "failed",
            Some(if ctx.retry_ambiguous {
                error.as_str()
            } else {
                "may have been delivered"
            }),
            Transition::Fail { response: None },
        ),
    };
    let result: Result<(), BoxDynError> = match transition {
        Transition::Sent { .. } => Ok(()),
        Transition::Retry { .. } => Err(Box::new(SendError(error.unwrap_or_default().to_owned()))),
        Transition::Fail { .. } => Err(abort(error.unwrap_or("failed"))),
    };
    record(
        ctx,
        &AttemptRecord::new(id, attempt, started_at, label, class, error),
        transition,
    )
    .await?;
    result
}

/// Writes the outcome, retrying briefly through a database blip: losing a `sent` here would
/// make the next run send again.
async fn record(
    ctx: &SendContext,
    r: &AttemptRecord<'_>,
    transition: Transition<'_>,
) -> Result<(), BoxDynError> {
    let mut wait = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        let result = async {
            let mut conn = ctx.pool.acquire().await?;
            repo::record(&mut conn, r, transition).await
        }
        .await;
        match result {
            Ok(()) => break,
            Err(e) if tries < 8 => {
                tracing::warn!(message_id = %r.message_id, "recording the send outcome failed, retrying: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                tries += 1;
            }
            Err(e) => return Err(Box::new(e)),
        }
    }
    metrics::counter!("bengkel_sends_total", "outcome" => r.outcome.to_owned()).increment(1);
    Ok(())
}
