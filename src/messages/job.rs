//! The send job: one gateway call per run, its outcome recorded in one transaction with its
//! job's verdict (see `queue` and `docs/lifecycle.md`).
//!
//! A run: snooze if the queue is paused → wait for the throttle → claim the message (`sending`)
//! → call the gateway → [`decide`] → record. The run is its own tokio task: if apalis' worker
//! stops under it (a database outage ends its fetch stream and the monitor restarts it), the
//! gateway call still completes and its outcome is still recorded — the outcome writer waits for
//! the database — instead of leaving the message `sending` to be sent again later.

use std::{sync::Arc, time::Instant};

use apalis::prelude::{Attempt, BoxDynError, Data, TaskId, WorkerContext};
use chrono::Utc;
use governor::DefaultDirectRateLimiter;
use rand::RngExt;
use serde_json::Value;
use sqlx::PgPool;

use super::{
    Status,
    decide::{Decision, RetryPolicy, decide},
    repo::{self, Attempted, Claim, Claimed, Recorded},
};
use crate::{
    db::batch::Batcher,
    gateway::{SendRequest, StarSender},
    queue::{self, Run, SendJob, Verdict, pause::Pauses, rescue::Process},
};

/// Everything a send needs; one per process, shared by all its workers.
pub struct SendContext {
    pub pool: PgPool,
    /// Marks messages `sending` in groups, on the relaxed pool (asynchronous commit, see
    /// `db::relaxed` and `db::batch`).
    pub claims: Batcher<Claim, Option<Claimed>>,
    /// Writes outcomes and verdicts in groups, durably (see `db::batch`).
    pub outcomes: Batcher<Recorded, ()>,
    pub gateway: StarSender,
    /// `None` when `SEND_RATE_PER_SECOND=0` (no throttle).
    pub limiter: Option<Arc<DefaultDirectRateLimiter>>,
    pub policy: RetryPolicy,
    /// This process' view of paused queues.
    pub pauses: Pauses,
    /// This process' runs in flight (for orphan rescue).
    pub process: Process,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(String);

/// The apalis handler: runs [`run`] as its own task and waits for it. apalis' result is not
/// persisted (the run settles its job itself), so what it returns only reaches the logs.
pub async fn handle(
    payload: Value,
    task_id: TaskId,
    attempt: Attempt,
    worker: WorkerContext,
    ctx: Data<Arc<SendContext>>,
) -> Result<(), BoxDynError> {
    let run = Run {
        job_id: task_id.to_string(),
        worker: worker.name().to_owned(),
        fetched_attempts: i32::try_from(attempt.current())
            .unwrap_or(i32::MAX)
            .saturating_sub(1),
    };
    let ctx: Arc<SendContext> = (*ctx).clone();
    let in_flight = ctx.process.enter(&run.job_id);
    let task = tokio::spawn(async move {
        let result = execute(&ctx, run, payload).await;
        // Released only after the verdict is written (or given up on).
        drop(in_flight);
        result
    });
    match task.await {
        Ok(result) => result.map_err(|e| Box::new(e) as BoxDynError),
        Err(e) => {
            // A panic in a run: its job stays held until this process stops (then it is
            // rescued); the message is at worst `sending`, which the next run treats as
            // ambiguous.
            tracing::error!("send run panicked: {e}");
            Err(Box::new(SendError("send run panicked".into())))
        }
    }
}

/// One run of a send job, from the payload to the recorded verdict. Public so that a test can
/// run one unit of work directly.
pub async fn execute(ctx: &SendContext, run: Run, payload: Value) -> Result<(), SendError> {
    let job: SendJob = match serde_json::from_value(payload) {
        Ok(job) => job,
        Err(e) => {
            let reason = format!("unreadable send job payload: {e}");
            return settle(ctx, run.clone(), fail(&run, reason), None).await;
        }
    };
    let id = job.message_id;
    // The throttle first: a message cancelled while we wait is found so by the claim. A job
    // fetched just before its queue was paused, or waiting here when it is, is snoozed: back to
    // the queue, no attempt spent, no slot held.
    let waited = Instant::now();
    loop {
        if ctx.pauses.is_paused(queue::SEND_QUEUE) {
            return settle(ctx, run, queue::snooze(Utc::now(), "paused"), None).await;
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
                tokio::time::sleep(wait.min(queue::pause::REFRESH)).await;
            }
        }
    }
    let started_at = Utc::now();
    let claim = Claim {
        message_id: id,
        attempt: run.attempt(),
    };
    let claimed = ctx
        .claims
        .submit(claim)
        .await
        .map_err(|e| SendError(format!("claiming message {id}: {e}")))?;
    let Some(message) = claimed else {
        return unsendable(ctx, run, id, started_at).await;
    };
    let attempt = message.attempt;
    let attempted = |decision: &Decision, class: &'static str, response| Attempted {
        message_id: id,
        attempt,
        started_at,
        outcome: decision.metric(),
        class,
        error: match decision {
            Decision::RetryAt { error, .. } => Some(error.clone()),
            Decision::Fail { reason } => Some(reason.clone()),
            _ => None,
        },
        status: match decision {
            Decision::Sent => Status::Sent,
            Decision::RetryAt { .. } => Status::Retrying,
            _ => Status::Failed,
        },
        next_attempt_at: match decision {
            Decision::RetryAt { at, .. } => Some(*at),
            _ => None,
        },
        response,
    };
    if attempt > message.max_attempts {
        // The attempt that used up the last one was interrupted during its gateway call.
        let decision = Decision::Fail {
            reason:
                "may have been delivered: the last attempt was interrupted during the gateway call"
                    .into(),
        };
        let verdict = verdict_of(&decision, attempt);
        return settle(
            ctx,
            run,
            verdict,
            Some(attempted(&decision, "interrupted", None)),
        )
        .await;
    }
    if message.previous == Status::Sending {
        tracing::warn!(message_id = %id, attempt, "previous attempt was interrupted mid-call; sending again (SEND_RETRY_AMBIGUOUS)");
    }

    let request = SendRequest::new(
        &message.to_phone,
        &message.body,
        message.file_url.as_deref(),
    );
    let outcome = ctx.gateway.send(&request).await;
    let jitter = rand::rng().random_range(0.0..=1.0);
    let decision = decide(
        &outcome,
        attempt,
        message.max_attempts,
        &ctx.policy,
        Utc::now(),
        jitter,
    );
    let class = outcome.class().as_str();
    let response = match outcome {
        crate::gateway::Outcome::Sent { response } => Some(response),
        crate::gateway::Outcome::Retryable { response, .. }
        | crate::gateway::Outcome::Permanent { response, .. } => response,
        crate::gateway::Outcome::Ambiguous { .. } => None,
    };
    let verdict = verdict_of(&decision, attempt);
    settle(
        ctx,
        run,
        verdict,
        Some(attempted(&decision, class, response)),
    )
    .await
}

/// The claim found nothing to send: the message is finished, cancelled, gone, or was
/// interrupted mid-call while ambiguous retries are off.
async fn unsendable(
    ctx: &SendContext,
    run: Run,
    id: uuid::Uuid,
    started_at: chrono::DateTime<Utc>,
) -> Result<(), SendError> {
    let status = repo::status(&ctx.pool, id)
        .await
        .map_err(|e| SendError(format!("reading message {id}: {e}")))?;
    let attempts = run.attempt();
    match status {
        // An earlier run delivered it; a re-run changes nothing.
        Some(Status::Sent) => settle(ctx, run, Verdict::Complete { attempts }, None).await,
        Some(Status::Cancelled) => settle(ctx, run, Verdict::Cancelled { attempts }, None).await,
        None => {
            let reason = format!("message {id} does not exist");
            settle(ctx, run.clone(), fail(&run, reason), None).await
        }
        Some(Status::Sending) => {
            let reason = "may have been delivered: a previous attempt was interrupted during the gateway call";
            let decision = Decision::Fail {
                reason: reason.into(),
            };
            let attempted = Attempted {
                message_id: id,
                attempt: attempts,
                started_at,
                outcome: "failed",
                class: "interrupted",
                error: Some(reason.into()),
                status: Status::Failed,
                next_attempt_at: None,
                response: None,
            };
            settle(ctx, run, verdict_of(&decision, attempts), Some(attempted)).await
        }
        Some(other) => {
            let reason = format!("message is {}", other.as_str());
            settle(ctx, run.clone(), fail(&run, reason), None).await
        }
    }
}

fn fail(run: &Run, reason: String) -> Verdict {
    Verdict::Fail {
        attempts: run.attempt(),
        reason,
    }
}

/// The job's side of a decision.
fn verdict_of(decision: &Decision, attempts: i32) -> Verdict {
    match decision {
        Decision::Sent => Verdict::Complete { attempts },
        Decision::RetryAt { at, error, .. } => queue::retry_at(*at, attempts, error.clone()),
        Decision::Fail { reason } => Verdict::Fail {
            attempts,
            reason: reason.clone(),
        },
        Decision::Snooze { until, reason } => queue::snooze(*until, reason.clone()),
    }
}

/// Writes the run's verdict (and its message's attempt) and returns once it is committed.
async fn settle(
    ctx: &SendContext,
    run: Run,
    verdict: Verdict,
    attempted: Option<Attempted>,
) -> Result<(), SendError> {
    let outcome = attempted.as_ref().map(|a| a.outcome);
    ctx.outcomes
        .submit(Recorded {
            run,
            verdict,
            attempted,
        })
        .await
        .map_err(|e| SendError(format!("recording the outcome: {e}")))?;
    if let Some(outcome) = outcome {
        metrics::counter!("bengkel_sends_total", "outcome" => outcome).increment(1);
    }
    Ok(())
}
