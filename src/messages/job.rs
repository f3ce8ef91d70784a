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

use apalis::prelude::{AbortError, Attempt, BoxDynError, Data, TaskId};
use chrono::Utc;
use futures::FutureExt;
use governor::DefaultDirectRateLimiter;
use serde_json::Value;
use sqlx::PgPool;

use super::{Status, repo};
use crate::{
    gateway::{Outcome, SendRequest, StarSender},
    queue::{self, SendJob, backoff::Backoff},
};

/// Everything a send needs; one per process, shared by all its workers.
pub struct SendContext {
    pub pool: PgPool,
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
    task_id: TaskId,
    ctx: Data<Arc<SendContext>>,
) -> Result<(), BoxDynError> {
    let job: SendJob = match serde_json::from_value(payload) {
        Ok(job) => job,
        Err(e) => return Err(abort(format!("unreadable send job payload: {e}"))),
    };
    let attempt = i32::try_from(attempt.current()).unwrap_or(i32::MAX);
    let job_id = task_id.to_string();
    match AssertUnwindSafe(send(&ctx, job, attempt, &job_id))
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

async fn send(
    ctx: &SendContext,
    job: SendJob,
    attempt: i32,
    job_id: &str,
) -> Result<(), BoxDynError> {
    let id = job.message_id;
    let Some(message) = repo::sendable(&ctx.pool, id).await? else {
        return Err(abort(format!("message {id} does not exist")));
    };
    match message.status {
        Status::Sent => return Ok(()), // an earlier run delivered it; a re-run changes nothing
        Status::Cancelled => return Err(abort("message was cancelled")),
        Status::Failed => return Err(abort("message already failed")),
        Status::Sending if !ctx.retry_ambiguous => {
            // A previous attempt died during the gateway call: it may have been delivered.
            let error = "may have been delivered: a previous attempt was interrupted during the gateway call";
            record(
                ctx,
                id,
                job_id,
                attempt,
                Utc::now(),
                Recorded::Fail {
                    error,
                    response: None,
                    class: "interrupted",
                    outcome: "ambiguous",
                },
            )
            .await?;
            return Err(abort(error));
        }
        Status::Queued | Status::Retrying | Status::Sending => {}
    }

    if let Some(limiter) = &ctx.limiter {
        let waited = Instant::now();
        limiter.until_ready().await;
        metrics::histogram!("bengkel_throttle_wait_seconds").record(waited.elapsed().as_secs_f64());
    }
    let started_at = Utc::now();
    if !repo::claim(&ctx.pool, id, attempt).await? {
        return Err(abort(
            "message was cancelled or finished while waiting for the throttle",
        ));
    }

    let request = SendRequest::new(
        &message.to_phone,
        &message.body,
        message.file_url.as_deref(),
    );
    let outcome = ctx.gateway.send(&request).await;
    let last_attempt = attempt >= ctx.max_attempts as i32;

    let recorded = match &outcome {
        Outcome::Sent { response } => Recorded::Sent { response },
        Outcome::Retryable {
            class,
            error,
            response,
        } if !last_attempt => Recorded::Retry {
            error,
            response: response.as_ref(),
            class: class.as_str(),
            outcome: "retry",
            delay: ctx.backoff.delay(attempt.max(1) as u32),
        },
        Outcome::Ambiguous { class, error } if ctx.retry_ambiguous && !last_attempt => {
            Recorded::Retry {
                error,
                response: None,
                class: class.as_str(),
                outcome: "ambiguous",
                delay: ctx.backoff.delay(attempt.max(1) as u32),
            }
        }
        Outcome::Retryable {
            class,
            error,
            response,
        }
        | Outcome::Permanent {
            class,
            error,
            response,
        } => Recorded::Fail {
            error,
            response: response.as_ref(),
            class: class.as_str(),
            outcome: "failed",
        },
        Outcome::Ambiguous { class, error } => Recorded::Fail {
            error: if ctx.retry_ambiguous {
                error
            } else {
                "may have been delivered"
            },
            response: None,
            class: class.as_str(),
            outcome: "failed",
        },
    };
    let result = match &recorded {
        Recorded::Sent { .. } => Ok(()),
        Recorded::Retry { error, .. } => {
            Err(Box::new(SendError((*error).to_owned())) as BoxDynError)
        }
        Recorded::Fail { error, .. } => Err(abort(*error)),
    };
    record(ctx, id, job_id, attempt, started_at, recorded).await?;
    result
}

enum Recorded<'a> {
    Sent {
        response: &'a Value,
    },
    Retry {
        error: &'a str,
        response: Option<&'a Value>,
        class: &'a str,
        outcome: &'a str,
        delay: Duration,
    },
    Fail {
        error: &'a str,
        response: Option<&'a Value>,
        class: &'a str,
        outcome: &'a str,
    },
}

/// Writes the outcome in one transaction, retrying briefly through a database blip: losing a
/// `sent` here would make the next run send again.
async fn record(
    ctx: &SendContext,
    id: uuid::Uuid,
    job_id: &str,
    attempt: i32,
    started_at: chrono::DateTime<Utc>,
    recorded: Recorded<'_>,
) -> Result<(), BoxDynError> {
    let mut wait = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        match record_once(ctx, id, job_id, attempt, started_at, &recorded).await {
            Ok(()) => break,
            Err(e) if tries < 8 => {
                tracing::warn!(message_id = %id, "recording the send outcome failed, retrying: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                tries += 1;
            }
            Err(e) => return Err(Box::new(e)),
        }
    }
    let outcome = match &recorded {
        Recorded::Sent { .. } => "sent",
        Recorded::Retry { outcome, .. } | Recorded::Fail { outcome, .. } => outcome,
    };
    metrics::counter!("bengkel_sends_total", "outcome" => outcome.to_owned()).increment(1);
    Ok(())
}

async fn record_once(
    ctx: &SendContext,
    id: uuid::Uuid,
    job_id: &str,
    attempt: i32,
    started_at: chrono::DateTime<Utc>,
    recorded: &Recorded<'_>,
) -> sqlx::Result<()> {
    let mut tx = ctx.pool.begin().await?;
    let (outcome, class, error) = match recorded {
        Recorded::Sent { response } => {
            repo::mark_sent(&mut tx, id, response).await?;
            ("sent", "ok", None)
        }
        Recorded::Retry {
            error,
            response,
            class,
            outcome,
            delay,
        } => {
            let next = Utc::now() + chrono::Duration::from_std(*delay).unwrap_or_default();
            repo::mark_retrying(&mut tx, id, next, error, *response).await?;
            queue::defer(&mut tx, job_id, next).await?;
            (*outcome, *class, Some(*error))
        }
        Recorded::Fail {
            error,
            response,
            class,
            outcome,
        } => {
            repo::mark_failed(&mut tx, id, error, *response).await?;
            (*outcome, *class, Some(*error))
        }
    };
    repo::record_attempt(
        &mut tx,
        &repo::AttemptRecord {
            message_id: id,
            attempt,
            started_at,
            outcome,
            class,
            error,
        },
    )
    .await?;
    tx.commit().await
}
