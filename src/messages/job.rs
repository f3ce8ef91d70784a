//! The send job: one gateway call per run, its outcome recorded in one transaction with its
//! job's verdict (see `queue` and `docs/lifecycle.md`). [`execute`] reads as the run goes:
//!
//! [`parse`] → [`gate`] → [`slot`] → [`claim`] → [`call`](super::cloud_send::call) → [`decide`](super::decide::decide)
//! → [`record`]
//!
//! Each step either hands the next one what it needs or ends the run with what to record
//! ([`Ended`]): a hold is a snooze (no attempt spent), a message the claim did not hand over
//! settles its job as the message now is. The run is its own tokio task (see [`handle`]): if
//! apalis' worker stops under it (a database outage ends its fetch stream and the monitor
//! restarts it), the gateway call still completes and its outcome is still recorded — the
//! outcome writer waits for the database — instead of leaving the message `sending` to be sent
//! again later.

use std::time::{Duration, Instant};

use apalis::prelude::{Attempt, BoxDynError, Data, TaskId, WorkerContext};
use chrono::{DateTime, Utc};
use rand::RngExt;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Kind, Status,
    claim::{Claim, Claimed, Sendable},
    cloud_send,
    context::SendContext,
    decide::{AttemptClass, Decision, SendOutcome, decide},
    read,
    record::{Held, Recorded},
};
use crate::{
    gateway::Gateway,
    policy::{
        Gate, HoldReason, sender,
        throttle::{Acquired, Slot},
    },
    queue::{self, Run, SendJob, Verdict},
};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(String);

/// A run that waited this long for the cluster's rate counts as held by it.
const RATE_HOLD_REPORTED: Duration = Duration::from_millis(50);
/// A run that panicked is looked at again after this (its job snoozed, no attempt spent).
const AFTER_PANIC: Duration = Duration::from_secs(30);

/// The apalis handler: runs [`execute`] as its own task and waits for it. apalis' result is not
/// persisted (the run settles its job itself), so what it returns only reaches the logs.
pub async fn handle(
    payload: Value,
    task_id: TaskId,
    attempt: Attempt,
    worker: WorkerContext,
    ctx: Data<std::sync::Arc<SendContext>>,
) -> Result<(), BoxDynError> {
    let run = Run::of(&task_id, &attempt, &worker);
    let ctx: std::sync::Arc<SendContext> = (*ctx).clone();
    let bulk = payload.get("bulk").and_then(Value::as_bool) == Some(true);
    let result = guarded(&ctx, run, |ctx, run| async move {
        execute(&ctx, run, payload).await
    })
    .await;
    if bulk {
        // Settled: its worker may take the next bulk job now rather than at its next poll.
        ctx.wakeups.wake(queue::SEND_QUEUE);
    }
    result.map_err(|e| Box::new(e) as BoxDynError)
}

/// Runs `work` as its own task, registered as in flight until its verdict is written — also
/// when apalis drops this future (its worker stopped under the run): the task goes on and the
/// job stays ours until it is settled. A run that panics does not keep its job: the job is
/// snoozed for [`AFTER_PANIC`] (no attempt spent) and runs again then; its message is at worst
/// `sending`, which the next run treats as ambiguous. Public so that a test can hand it a run
/// that panics.
pub async fn guarded<F, Fut>(
    ctx: &std::sync::Arc<SendContext>,
    run: Run,
    work: F,
) -> Result<(), SendError>
where
    F: FnOnce(std::sync::Arc<SendContext>, Run) -> Fut,
    Fut: Future<Output = Result<(), SendError>> + Send + 'static,
{
    let in_flight = ctx.process.enter(&run.job_id);
    let attempt = tokio::spawn(work(ctx.clone(), run.clone()));
    let ctx = ctx.clone();
    let settled = tokio::spawn(async move {
        let result = match attempt.await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(job_id = %run.job_id, "send run panicked: {e}");
                let until =
                    Utc::now() + chrono::Duration::from_std(AFTER_PANIC).unwrap_or_default();
                let verdict = queue::snooze(until, "send run panicked");
                record(&ctx, Ended::settle(run, verdict)).await
            }
        };
        // Released only after the verdict is written (or given up on).
        drop(in_flight);
        result
    });
    settled
        .await
        .unwrap_or_else(|e| Err(SendError(format!("settling the run: {e}"))))
}

/// One run of a send job, from the payload to the recorded verdict. Public so that a test can
/// run one unit of work directly.
pub async fn execute(ctx: &SendContext, run: Run, payload: Value) -> Result<(), SendError> {
    let ended = match steps(ctx, &run, payload).await {
        Ok(ended) => ended,
        Err(Stop::Ended(ended)) => *ended,
        Err(Stop::Failed(e)) => return Err(e),
    };
    record(ctx, ended).await
}

/// The run, step by step; every early end is a [`Stop`].
async fn steps(ctx: &SendContext, run: &Run, payload: Value) -> Result<Ended, Stop> {
    let job = parse(run, payload)?;
    let probe = gate(ctx, run, &job).await?;
    let slot = slot(ctx, run, &job, probe).await?;
    // A throttled attempt starts when the throttle let it go.
    let started_at = slot.as_ref().map_or_else(Utc::now, |s| s.released_at);
    let message = claim(ctx, run, job.message_id, slot, started_at).await?;
    if let Some(ended) = settled_by_status(ctx, run, job.message_id, &message, started_at).await? {
        return Ok(ended);
    }
    if message.attempt > message.max_attempts {
        // The attempt that used up the last one was interrupted during its gateway call.
        return Err(interrupted(run, job.message_id, message.attempt, started_at).into());
    }
    if message.previous == Status::Sending {
        tracing::warn!(message_id = %job.message_id, attempt = message.attempt, "previous attempt was interrupted mid-call; sending again (SEND_RETRY_AMBIGUOUS)");
    }
    let outcome = cloud_send::call(ctx, job.message_id, &message).await;
    let jitter = rand::rng().random_range(0.0..=1.0);
    let decision = decide(
        &outcome,
        message.attempt,
        message.max_attempts,
        &ctx.retry,
        Utc::now(),
        jitter,
    );
    sender::observe(
        &ctx.policy,
        &ctx.pool,
        &outcome,
        decision.retry_after_until(),
    )
    .await;
    let class = AttemptClass::Gateway(outcome.class());
    Ok(Ended::decided(
        run.clone(),
        &decision,
        decision.attempt(
            job.message_id,
            message.attempt,
            started_at,
            class,
            outcome.into_response(),
        ),
    ))
}

/// Reads the payload; an unreadable one fails its job (a retry cannot make it readable).
fn parse(run: &Run, payload: Value) -> Result<SendJob, Stop> {
    serde_json::from_value(payload)
        .map_err(|e| Ended::fail(run, format!("unreadable send job payload: {e}")).into())
}

/// The delivery policy from this process' view, before the run waits for anything: a paused
/// queue, the gateway's Retry-After, an open circuit, the send window. Returns whether this
/// run is the half-open circuit's probe.
async fn gate(ctx: &SendContext, run: &Run, job: &SendJob) -> Result<bool, Stop> {
    if ctx.pauses.is_paused(queue::SEND_QUEUE) {
        return Err(Ended::held(run, job.message_id, Utc::now(), HoldReason::Paused).into());
    }
    if job.expires_at.is_some_and(|e| e <= Utc::now()) {
        // the claim expires it
        return Ok(false);
    }
    let gate = ctx
        .policy
        .gate(&job.message_id.to_string(), job.window, Utc::now())
        .await
        .map_err(|e| Stop::Failed(SendError(format!("reading the sender's state: {e}"))))?;
    match gate {
        Gate::Go => Ok(false),
        Gate::Probe => Ok(true),
        Gate::Hold { until, reason } => Err(Ended::held(run, job.message_id, until, reason).into()),
    }
}

/// Waits for a slot of the cluster's rate: not an error, no attempt spent; a campaign message's
/// run lets this process' other runs go first (`queue::Class`). A pause ends the
/// wait (the job goes back to the queue at once rather than when its slot comes; a slot given
/// up that way is lost to the rate, not used). A probe and a message past its deadline take no
/// slot.
async fn slot(
    ctx: &SendContext,
    run: &Run,
    job: &SendJob,
    probe: bool,
) -> Result<Option<Slot>, Stop> {
    let id = job.message_id;
    if probe || job.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Ok(None);
    }
    let waited = Instant::now();
    let (rate, burst) = ctx.policy.rate();
    let acquired = tokio::select! {
        acquired = ctx.policy.throttle.acquire(rate, burst, job.class()) => acquired,
        () = paused(ctx) => return Err(Ended::held(run, id, Utc::now(), HoldReason::Paused).into()),
    };
    let slot = match acquired {
        Acquired::Slot(slot) => Some(slot),
        Acquired::Unlimited => None,
        Acquired::RetryAfter(until) => {
            return Err(Ended::held(run, id, until, HoldReason::RetryAfter).into());
        }
    };
    let wait = waited.elapsed();
    metrics::histogram!("bengkel_throttle_wait_seconds").record(wait.as_secs_f64());
    if wait >= RATE_HOLD_REPORTED {
        HoldReason::RateLimit.count();
    }
    if ctx.pauses.is_paused(queue::SEND_QUEUE) {
        give_back(ctx, slot).await;
        return Err(Ended::held(run, id, Utc::now(), HoldReason::Paused).into());
    }
    Ok(slot)
}

/// Marks the message `sending` (the claim checks the whole policy once more). A message the
/// claim does not hand over ends the run as the message now is; so does one whose last
/// attempt was interrupted during its gateway call.
async fn claim(
    ctx: &SendContext,
    run: &Run,
    id: Uuid,
    slot: Option<Slot>,
    started_at: DateTime<Utc>,
) -> Result<Sendable, Stop> {
    let claim = Claim {
        message_id: id,
        attempt: run.attempt(),
    };
    let claimed = ctx
        .claims
        .submit(claim)
        .await
        .map_err(|e| Stop::Failed(SendError(format!("claiming message {id}: {e}"))))?;
    match claimed {
        Claimed::Send(message) => Ok(message),
        other => {
            give_back(ctx, slot).await;
            Err(not_sent(ctx, run, id, started_at, other).await?.into())
        }
    }
}

/// On the Cloud API, an attempt that may have reached WhatsApp (cut off mid-call, or timed
/// out after sending) is not repeated blindly: a status webhook of it (its
/// `biz_opaque_callback_data` is the message id) arriving within `AMBIGUOUS_RECEIPT_WAIT_SECS`
/// of that attempt marks the message `sent` with no second call. Without one by then, the run
/// goes on and calls again. StarSender sends no statuses: nothing to wait for.
async fn settled_by_status(
    ctx: &SendContext,
    run: &Run,
    id: Uuid,
    message: &Sendable,
    started_at: DateTime<Utc>,
) -> Result<Option<Ended>, Stop> {
    let (Gateway::CloudApi(_), Some(since)) = (&ctx.gateway, message.ambiguous_since) else {
        return Ok(None);
    };
    let deadline = since + chrono::Duration::from_std(ctx.ambiguous_wait).unwrap_or_default();
    let found = cloud_send::status_by(&ctx.pool, id, deadline)
        .await
        .map_err(|e| Stop::Failed(SendError(format!("looking for a status of {id}: {e}"))))?;
    Ok(found.map(|wamid| {
        let response = json!({"messages": [{"id": wamid}], "resolved_by": "status webhook"});
        let attempted = Decision::Sent.attempt(
            id,
            message.attempt,
            started_at,
            AttemptClass::Receipt,
            Some(response),
        );
        Ended::decided(run.clone(), &Decision::Sent, attempted)
    }))
}

/// Writes the run's verdict (and its message's attempt or hold), returns once it is committed,
/// then counts it.
async fn record(ctx: &SendContext, ended: Ended) -> Result<(), SendError> {
    ctx.outcomes
        .submit(ended.recorded)
        .await
        .map_err(|e| SendError(format!("recording the outcome: {e}")))?;
    match ended.count {
        Count::Nothing => {}
        Count::Held(reason) => reason.count(),
        Count::Send(outcome) => outcome.count(),
        Count::OptedOut(kind) => {
            metrics::counter!("bengkel_messages_suppressed_total", "kind" => kind.as_str())
                .increment(1);
        }
        Count::Expired(kind) => {
            metrics::counter!("bengkel_messages_expired_total", "kind" => kind.as_str())
                .increment(1);
            metrics::counter!("bengkel_sends_total", "outcome" => "expired").increment(1);
        }
    }
    Ok(())
}

/// Returns once this process sees the send queue paused.
async fn paused(ctx: &SendContext) {
    while !ctx.pauses.is_paused(queue::SEND_QUEUE) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn give_back(ctx: &SendContext, slot: Option<Slot>) {
    if let Some(slot) = slot {
        ctx.policy.throttle.give_back(slot).await;
    }
}

/// The claim did not hand the message over: held by the policy (the claim marked it), opted
/// out or expired (the claim moved it), or not sendable at all.
async fn not_sent(
    ctx: &SendContext,
    run: &Run,
    id: Uuid,
    started_at: DateTime<Utc>,
    claimed: Claimed,
) -> Result<Ended, Stop> {
    let unspent = run.fetched_attempts;
    Ok(match claimed {
        Claimed::Held { until, reason } => Ended {
            count: Count::Held(reason),
            ..Ended::settle(run.clone(), queue::snooze(until, reason.as_str()))
        },
        Claimed::OptedOut { kind } => Ended {
            count: Count::OptedOut(kind),
            ..Ended::settle(run.clone(), Verdict::Cancelled { attempts: unspent })
        },
        Claimed::Expired { kind } => Ended {
            count: Count::Expired(kind),
            ..Ended::settle(run.clone(), Verdict::Expired { attempts: unspent })
        },
        Claimed::Send(_) | Claimed::Unsendable => unsendable(ctx, run, id, started_at).await?,
    })
}

/// The claim found nothing to send: the message is finished, cancelled, gone, or was
/// interrupted mid-call while ambiguous retries are off.
async fn unsendable(
    ctx: &SendContext,
    run: &Run,
    id: Uuid,
    started_at: DateTime<Utc>,
) -> Result<Ended, Stop> {
    let status = read::status(&ctx.pool, id)
        .await
        .map_err(|e| Stop::Failed(SendError(format!("reading message {id}: {e}"))))?;
    let attempts = run.attempt();
    let settle = |verdict| Ended::settle(run.clone(), verdict);
    Ok(match status {
        // An earlier run delivered it; a re-run changes nothing.
        Some(Status::Sent) => settle(Verdict::Complete { attempts }),
        Some(Status::Cancelled) => settle(Verdict::Cancelled { attempts }),
        Some(Status::Expired) => settle(Verdict::Expired {
            attempts: run.fetched_attempts,
        }),
        None => Ended::fail(run, format!("message {id} does not exist")),
        Some(Status::Sending) => interrupted(run, id, attempts, started_at),
        Some(other) => Ended::fail(run, format!("message is {}", other.as_str())),
    })
}

/// The message's previous attempt was cut off during its gateway call and may have reached
/// the gateway, and no attempt may follow (attempts used up, or ambiguous retries off).
fn interrupted(run: &Run, id: Uuid, attempt: i32, started_at: DateTime<Utc>) -> Ended {
    let decision = Decision::Fail {
        reason:
            "may have been delivered: a previous attempt was interrupted during the gateway call"
                .into(),
    };
    let attempted = decision.attempt(id, attempt, started_at, AttemptClass::Interrupted, None);
    Ended::decided(run.clone(), &decision, attempted)
}

/// Why the run stopped before its last step.
enum Stop {
    /// It ended: record this.
    Ended(Box<Ended>),
    /// Nothing can be recorded (the database is unreachable): apalis logs it; the job's row is
    /// rescued by the orphan rescue.
    Failed(SendError),
}

impl From<Ended> for Stop {
    fn from(ended: Ended) -> Self {
        Stop::Ended(Box::new(ended))
    }
}

/// How a run ended: what to record, and what to count once it is recorded.
struct Ended {
    recorded: Recorded,
    count: Count,
}

enum Count {
    Nothing,
    Held(HoldReason),
    Send(SendOutcome),
    OptedOut(Kind),
    Expired(Kind),
}

impl Ended {
    /// Only the job's verdict.
    fn settle(run: Run, verdict: Verdict) -> Self {
        Self {
            recorded: Recorded {
                run,
                verdict,
                attempted: None,
                held: None,
            },
            count: Count::Nothing,
        }
    }

    /// The job fails without an attempt of its message.
    fn fail(run: &Run, reason: String) -> Self {
        let attempts = run.attempt();
        Self::settle(run.clone(), Verdict::Fail { attempts, reason })
    }

    /// Held back by the policy before its claim: snoozed, and the hold shown on the message.
    fn held(run: &Run, message_id: Uuid, until: DateTime<Utc>, reason: HoldReason) -> Self {
        Self {
            recorded: Recorded {
                held: Some(Held {
                    message_id,
                    until,
                    reason,
                }),
                ..Self::settle(run.clone(), queue::snooze(until, reason.as_str())).recorded
            },
            count: Count::Held(reason),
        }
    }

    /// An attempt and what the decision does to its message and job.
    fn decided(run: Run, decision: &Decision, attempted: super::decide::Attempted) -> Self {
        let verdict = decision.verdict(attempted.attempt);
        Self {
            count: Count::Send(attempted.outcome),
            recorded: Recorded {
                run,
                verdict,
                attempted: Some(attempted),
                held: None,
            },
        }
    }
}
