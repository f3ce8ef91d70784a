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
use rand::RngExt;
use serde_json::Value;
use sqlx::PgPool;

use super::{
    Status,
    decide::{Decision, RetryPolicy, decide},
    repo::{self, Attempted, Claim, Claimed, Held, Recorded},
};
use crate::{
    db::batch::Batcher,
    gateway::{SendRequest, StarSender},
    policy::{
        Gate, Policy, sender,
        throttle::{Acquired, Slot},
    },
    queue::{self, Run, SendJob, Verdict, pause::Pauses, rescue::Process},
};

/// Everything a send needs; one per process, shared by all its workers.
pub struct SendContext {
    pub pool: PgPool,
    /// Marks messages `sending` in groups, on the relaxed pool (asynchronous commit, see
    /// `db::relaxed` and `db::batch`).
    pub claims: Batcher<Claim, Claimed>,
    /// Writes outcomes and verdicts in groups, durably (see `db::batch`).
    pub outcomes: Batcher<Recorded, ()>,
    pub gateway: StarSender,
    /// The delivery policy: this process' view of it and its share of the cluster's rate.
    pub policy: Policy,
    pub retry: RetryPolicy,
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
    // The delivery policy first, from this process' view: a paused queue, the gateway's
    // Retry-After, an open circuit, the send window. A held run is snoozed: back to the queue,
    // no attempt spent, no slot held.
    if ctx.pauses.is_paused(queue::SEND_QUEUE) {
        return hold(ctx, run, id, Utc::now(), "paused").await;
    }
    let past_deadline = job.expires_at.is_some_and(|e| e <= Utc::now());
    let gate = if past_deadline {
        // the claim expires it
        Gate::Go
    } else {
        ctx.policy
            .gate(&id.to_string(), job.window, Utc::now())
            .await
            .map_err(|e| SendError(format!("reading the sender's state: {e}")))?
    };
    if let Gate::Hold { until, reason } = gate {
        return hold(ctx, run, id, until, reason).await;
    }
    // The cluster's rate: waiting for it is not an error and costs no attempt.
    let waited = Instant::now();
    let (rate, burst) = ctx.policy.rate();
    let slot = if past_deadline || gate == Gate::Probe {
        None
    } else {
        // A pause also ends the wait for a slot: the job goes back to the queue at once rather
        // than when its slot comes (a slot given up that way is lost to the rate, not used).
        let acquired = tokio::select! {
            acquired = ctx.policy.throttle.acquire(rate, burst) => acquired,
            () = paused(ctx) => return hold(ctx, run, id, Utc::now(), "paused").await,
        };
        match acquired {
            Acquired::Slot(slot) => Some(slot),
            Acquired::Unlimited => None,
            Acquired::RetryAfter(until) => return hold(ctx, run, id, until, "retry_after").await,
        }
    };
    let wait = waited.elapsed();
    metrics::histogram!("bengkel_throttle_wait_seconds").record(wait.as_secs_f64());
    if wait >= RATE_HOLD_REPORTED {
        metrics::counter!("bengkel_sends_held_total", "reason" => "rate_limit").increment(1);
    }
    if ctx.pauses.is_paused(queue::SEND_QUEUE) {
        give_back(ctx, slot).await;
        return hold(ctx, run, id, Utc::now(), "paused").await;
    }
    // A throttled attempt starts when the throttle let it go.
    let started_at = slot.as_ref().map_or_else(Utc::now, |s| s.released_at);
    let claim = Claim {
        message_id: id,
        attempt: run.attempt(),
    };
    let claimed = ctx
        .claims
        .submit(claim)
        .await
        .map_err(|e| SendError(format!("claiming message {id}: {e}")))?;
    let message = match claimed {
        Claimed::Send(message) => message,
        other => {
            give_back(ctx, slot).await;
            return not_sent(ctx, run, id, started_at, other).await;
        }
    };
    let attempt = message.attempt;
    if attempt > message.max_attempts {
        // The attempt that used up the last one was interrupted during its gateway call.
        let decision = Decision::Fail {
            reason:
                "may have been delivered: the last attempt was interrupted during the gateway call"
                    .into(),
        };
        let verdict = verdict_of(&decision, attempt);
        let attempted = attempted(id, attempt, started_at, &decision, "interrupted", None);
        return settle(ctx, run, verdict, Some(attempted)).await;
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
        &ctx.retry,
        Utc::now(),
        jitter,
    );
    report(ctx, &outcome, &decision).await;
    let class = outcome.class().as_str();
    let response = match outcome {
        crate::gateway::Outcome::Sent { response } => Some(response),
        crate::gateway::Outcome::Retryable { response, .. }
        | crate::gateway::Outcome::Permanent { response, .. } => response,
        crate::gateway::Outcome::Ambiguous { .. } => None,
    };
    let verdict = verdict_of(&decision, attempt);
    let attempted = attempted(id, attempt, started_at, &decision, class, response);
    settle(ctx, run, verdict, Some(attempted)).await
}

/// Returns once this process sees the send queue paused.
async fn paused(ctx: &SendContext) {
    while !ctx.pauses.is_paused(queue::SEND_QUEUE) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A run that waited this long for the cluster's rate counts as held by it.
const RATE_HOLD_REPORTED: std::time::Duration = std::time::Duration::from_millis(50);

/// Tells the sender's shared state what the gateway's answer means for every process: a 429
/// (or 503 with `Retry-After`) slows the cluster down and holds it, a 401/403 pauses the send
/// queue, a connect/timeout/5xx failure counts toward the circuit, any other answer ends the
/// streak. A failed write is logged: the answer's own message is recorded all the same.
async fn report(ctx: &SendContext, outcome: &crate::gateway::Outcome, decision: &Decision) {
    use crate::gateway::Class;
    let class = outcome.class();
    let error = match outcome {
        crate::gateway::Outcome::Retryable { error, .. }
        | crate::gateway::Outcome::Permanent { error, .. }
        | crate::gateway::Outcome::Ambiguous { error, .. } => error.as_str(),
        crate::gateway::Outcome::Sent { .. } => "",
    };
    let result = match (class, decision) {
        (_, Decision::Snooze { until, reason }) if reason == "retry_after" => {
            sender::rate_limited(&ctx.pool, Some(*until), error).await
        }
        (Class::RateLimited, _) => sender::rate_limited(&ctx.pool, None, error).await,
        (Class::Unauthorized, _) => {
            tracing::error!("gateway refused the device ({error}): pausing the send queue");
            sender::unauthorized(&ctx.pool, error).await
        }
        (Class::Connect | Class::Timeout | Class::ServerError, _) => {
            sender::failed(&ctx.pool, error).await
        }
        _ => match ctx.policy.view() {
            // Nothing to reset: no write.
            Some(v) if v.sender.consecutive_failures == 0 && v.sender.circuit == "closed" => Ok(()),
            _ => sender::answered(&ctx.pool).await,
        },
    };
    if let Err(e) = result {
        tracing::warn!("recording the gateway's answer in the sender state failed: {e}");
        return;
    }
    if !matches!(class, Class::Ok) {
        // Every process learns at its next refresh; this one at once.
        let _ = ctx.policy.refresh().await;
    }
}

async fn give_back(ctx: &SendContext, slot: Option<Slot>) {
    if let Some(slot) = slot {
        ctx.policy.throttle.give_back(slot).await;
    }
}

/// Snoozes a run that the policy holds back before its claim, and says so on its message.
async fn hold(
    ctx: &SendContext,
    run: Run,
    message_id: uuid::Uuid,
    until: chrono::DateTime<Utc>,
    reason: &'static str,
) -> Result<(), SendError> {
    metrics::counter!("bengkel_sends_held_total", "reason" => reason).increment(1);
    ctx.outcomes
        .submit(Recorded {
            run,
            verdict: queue::snooze(until, reason),
            attempted: None,
            held: Some(Held {
                message_id,
                until,
                reason,
            }),
        })
        .await
        .map_err(|e| SendError(format!("recording the hold: {e}")))
}

/// The claim did not hand the message over: held by the policy (the claim marked it), opted
/// out or expired (the claim moved it), or not sendable at all.
async fn not_sent(
    ctx: &SendContext,
    run: Run,
    id: uuid::Uuid,
    started_at: chrono::DateTime<Utc>,
    claimed: Claimed,
) -> Result<(), SendError> {
    let unspent = run.fetched_attempts;
    match claimed {
        Claimed::Held { until, reason } => {
            let reason = crate::policy::HELD_REASONS
                .into_iter()
                .find(|r| *r == reason)
                .unwrap_or("paused");
            metrics::counter!("bengkel_sends_held_total", "reason" => reason).increment(1);
            settle(ctx, run, queue::snooze(until, reason), None).await
        }
        Claimed::OptedOut { kind } => {
            metrics::counter!("bengkel_messages_suppressed_total", "kind" => kind.as_str())
                .increment(1);
            settle(ctx, run, Verdict::Cancelled { attempts: unspent }, None).await
        }
        Claimed::Expired { kind } => {
            metrics::counter!("bengkel_messages_expired_total", "kind" => kind.as_str())
                .increment(1);
            metrics::counter!("bengkel_sends_total", "outcome" => "expired").increment(1);
            settle(ctx, run, Verdict::Expired { attempts: unspent }, None).await
        }
        Claimed::Send(_) | Claimed::Unsendable => unsendable(ctx, run, id, started_at).await,
    }
}

fn attempted(
    message_id: uuid::Uuid,
    attempt: i32,
    started_at: chrono::DateTime<Utc>,
    decision: &Decision,
    class: &'static str,
    response: Option<Value>,
) -> Attempted {
    Attempted {
        message_id,
        attempt,
        started_at,
        outcome: decision.metric(),
        class,
        error: match decision {
            Decision::RetryAt { error, .. } => Some(error.clone()),
            Decision::Fail { reason } => Some(reason.clone()),
            Decision::Snooze { reason, .. } => Some(format!("held: {reason}")),
            Decision::Sent => None,
        },
        status: match decision {
            Decision::Sent => Status::Sent,
            Decision::RetryAt { .. } => Status::Retrying,
            // back to where it was: this call spent no attempt
            Decision::Snooze { .. } if attempt > 1 => Status::Retrying,
            Decision::Snooze { .. } => Status::Queued,
            Decision::Fail { .. } => Status::Failed,
        },
        next_attempt_at: match decision {
            Decision::RetryAt { at, .. } => Some(*at),
            _ => None,
        },
        held: match decision {
            Decision::Snooze { until, reason } => Some((*until, reason.clone())),
            _ => None,
        },
        response,
    }
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
        Some(Status::Expired) => {
            let attempts = run.fetched_attempts;
            settle(ctx, run, Verdict::Expired { attempts }, None).await
        }
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
                held: None,
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

/// The job's side of a decision: a snooze spends no attempt (the run's fetched count stays).
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
            held: None,
        })
        .await
        .map_err(|e| SendError(format!("recording the outcome: {e}")))?;
    if let Some(outcome) = outcome.filter(|o| *o != "snoozed") {
        metrics::counter!("bengkel_sends_total", "outcome" => outcome).increment(1);
    }
    Ok(())
}
