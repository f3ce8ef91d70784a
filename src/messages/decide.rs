//! What a gateway outcome does to a message: one pure function, [`decide`], applied by the send
//! job (`job.rs`) and the queue (`queue::settle`). The table is README "Message lifecycle"; the waits are the
//! backoff's, lengthened after a 429 or a timeout (the gateway is struggling: coming back at once
//! makes it worse) and never shorter than the gateway's `Retry-After` (capped).

use std::time::Duration;

use chrono::{DateTime, Utc};

use uuid::Uuid;

use super::Status;
use crate::{
    gateway::{Class, Outcome},
    policy::HoldReason,
    queue::{self, Verdict, backoff::Backoff},
};

/// A message whose recipient's pair limit was hit waits at least this (Cloud API `131056`).
pub const PAIR_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// A `Retry-After` longer than this is cut to it.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// How retries are spaced.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// `SEND_RETRY_AMBIGUOUS`: retry when the gateway may have sent.
    pub retry_ambiguous: bool,
    /// A `Retry-After` longer than this is cut to it.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// The shortest wait after a 429 or a timeout: three backoff bases, within the backoff cap.
    fn throttled_min_wait(&self) -> Duration {
        (self.backoff.ceiling(1) * 3).min(self.backoff.ceiling(u32::MAX))
    }
}

/// What happens to the message and its job.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Sent,
    /// Another attempt at `at`. `ambiguous`: the gateway may have sent this one.
    RetryAt {
        at: DateTime<Utc>,
        error: String,
        ambiguous: bool,
    },
    /// No further attempt.
    Fail {
        reason: String,
    },
    /// Held back without spending an attempt: a 429 or a 503 with `Retry-After` (the cluster
    /// slows down and holds every call), a 401/403 (the send queue pauses).
    Snooze {
        until: DateTime<Utc>,
        reason: HoldReason,
    },
}

/// The `bengkel_sends_total` outcome of an attempt (`message_attempts.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    Retry,
    Ambiguous,
    Failed,
    /// Held by the policy after the call (429, 401): no attempt spent, not counted as a send.
    Snoozed,
}

impl SendOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SendOutcome::Sent => "sent",
            SendOutcome::Retry => "retry",
            SendOutcome::Ambiguous => "ambiguous",
            SendOutcome::Failed => "failed",
            SendOutcome::Snoozed => "snoozed",
        }
    }

    /// Counts one send in `bengkel_sends_total` (a snooze is not one).
    pub fn count(self) {
        if self != SendOutcome::Snoozed {
            metrics::counter!("bengkel_sends_total", "outcome" => self.as_str()).increment(1);
        }
    }
}

/// What an attempt ran into (`message_attempts.class`): the gateway's answer, or an attempt cut
/// off during its call (the process died) found by a later run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptClass {
    Gateway(Class),
    Interrupted,
    /// No call: a status webhook showed that an earlier, ambiguous attempt reached WhatsApp.
    Receipt,
}

impl AttemptClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptClass::Gateway(class) => class.as_str(),
            AttemptClass::Interrupted => "interrupted",
            AttemptClass::Receipt => "receipt",
        }
    }
}

/// One attempt of a message and its new status, as `record` writes it.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub message_id: Uuid,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub outcome: SendOutcome,
    pub class: AttemptClass,
    pub error: Option<String>,
    /// The message's new status: `sent`, `retrying`, `failed`, or back to `queued`/`retrying`
    /// after a held call.
    pub status: Status,
    /// For `retrying`: when the job runs again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// A call the policy does not count (429, 401): held until then, for this reason; the
    /// message goes back to `status` with one attempt fewer.
    pub held: Option<(DateTime<Utc>, HoldReason)>,
    pub response: Option<serde_json::Value>,
}

impl Decision {
    /// The `bengkel_sends_total` outcome.
    pub fn outcome(&self) -> SendOutcome {
        match self {
            Decision::Sent => SendOutcome::Sent,
            Decision::RetryAt {
                ambiguous: false, ..
            } => SendOutcome::Retry,
            Decision::RetryAt {
                ambiguous: true, ..
            } => SendOutcome::Ambiguous,
            Decision::Fail { .. } => SendOutcome::Failed,
            Decision::Snooze { .. } => SendOutcome::Snoozed,
        }
    }

    /// The job's side: a snooze spends no attempt (the run's fetched count stays).
    pub fn verdict(&self, attempts: i32) -> Verdict {
        match self {
            Decision::Sent => Verdict::Complete { attempts },
            Decision::RetryAt { at, error, .. } => queue::retry_at(*at, attempts, error.clone()),
            Decision::Fail { reason } => Verdict::Fail {
                attempts,
                reason: reason.clone(),
            },
            Decision::Snooze { until, reason } => queue::snooze(*until, reason.as_str()),
        }
    }

    /// The message's side: attempt `attempt` (started at `started_at`) and its new status.
    pub fn attempt(
        &self,
        message_id: Uuid,
        attempt: i32,
        started_at: DateTime<Utc>,
        class: AttemptClass,
        response: Option<serde_json::Value>,
    ) -> Attempted {
        Attempted {
            message_id,
            attempt,
            started_at,
            outcome: self.outcome(),
            class,
            error: match self {
                Decision::RetryAt { error, .. } => Some(error.clone()),
                Decision::Fail { reason } => Some(reason.clone()),
                Decision::Snooze { reason, .. } => Some(format!("held: {}", reason.as_str())),
                Decision::Sent => None,
            },
            status: match self {
                Decision::Sent => Status::Sent,
                Decision::RetryAt { .. } => Status::Retrying,
                // back to where it was: this call spent no attempt
                Decision::Snooze { .. } if attempt > 1 => Status::Retrying,
                Decision::Snooze { .. } => Status::Queued,
                Decision::Fail { .. } => Status::Failed,
            },
            next_attempt_at: match self {
                Decision::RetryAt { at, .. } => Some(*at),
                _ => None,
            },
            held: match self {
                Decision::Snooze { until, reason } => Some((*until, *reason)),
                _ => None,
            },
            response,
        }
    }

    /// The gateway's hold after a 429 (or 503 with `Retry-After`): until when.
    pub fn retry_after_until(&self) -> Option<DateTime<Utc>> {
        match self {
            Decision::Snooze {
                until,
                reason: HoldReason::RetryAfter,
            } => Some(*until),
            _ => None,
        }
    }
}

/// Decides after attempt `attempt` of `max_attempts`. `jitter` in `[0, 1]` places the wait in the
/// upper half of the backoff ceiling (passed in, so that this stays pure).
pub fn decide(
    outcome: &Outcome,
    attempt: i32,
    max_attempts: i32,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    jitter: f64,
) -> Decision {
    let exhausted = attempt >= max_attempts;
    let wait = |class: Class, retry_after: Option<Duration>| {
        let mut wait = policy.backoff.delay_with(attempt.max(1) as u32, jitter);
        if matches!(class, Class::RateLimited | Class::Timeout) {
            wait = wait.max(policy.throttled_min_wait());
        }
        if let Some(after) = retry_after {
            wait = wait.max(after.min(policy.retry_after_cap));
        }
        now + chrono::Duration::from_std(wait).unwrap_or_default()
    };
    let snooze = |after: Duration, reason: HoldReason| Decision::Snooze {
        until: now
            + chrono::Duration::from_std(after.min(policy.retry_after_cap)).unwrap_or_default(),
        reason,
    };
    match outcome {
        Outcome::Sent { .. } => Decision::Sent,
        // The delivery policy's holds: the gateway asked us to slow down, or the device is
        // logged out. No attempt is spent (README "Delivery policy").
        Outcome::Retryable {
            class: Class::RateLimited,
            retry_after,
            ..
        } => match retry_after {
            Some(after) => snooze(*after, HoldReason::RetryAfter),
            None => snooze(policy.throttled_min_wait(), HoldReason::RateLimit),
        },
        Outcome::Retryable {
            class: Class::ServerError,
            retry_after: Some(after),
            ..
        } => snooze(*after, HoldReason::RetryAfter),
        // The sender cannot send at all: the queue pauses, the message waits unspent.
        Outcome::Paused { .. } => snooze(Duration::ZERO, HoldReason::Paused),
        // Only this recipient gets too many: this message waits, the others go on.
        Outcome::Retryable {
            class: Class::PairLimited,
            retry_after,
            ..
        } => snooze(
            retry_after.unwrap_or_default().max(PAIR_LIMIT_WAIT),
            HoldReason::PairLimit,
        ),
        Outcome::Retryable {
            class,
            error,
            retry_after,
            ..
        } if !exhausted => Decision::RetryAt {
            at: wait(*class, *retry_after),
            error: error.clone(),
            ambiguous: false,
        },
        Outcome::Ambiguous { class, error } if policy.retry_ambiguous && !exhausted => {
            Decision::RetryAt {
                at: wait(*class, None),
                error: error.clone(),
                ambiguous: true,
            }
        }
        Outcome::Retryable { error, .. } | Outcome::Permanent { error, .. } => Decision::Fail {
            reason: error.clone(),
        },
        Outcome::Ambiguous { error, .. } => Decision::Fail {
            reason: if policy.retry_ambiguous {
                error.clone()
            } else {
                "may have been delivered".into()
            },
        },
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
