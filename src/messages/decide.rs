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
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::new(Duration::from_secs(10), Duration::from_secs(3600)),
            retry_ambiguous: true,
            retry_after_cap: Duration::from_secs(3600),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn retryable(class: Class, retry_after: Option<Duration>) -> Outcome {
        Outcome::Retryable {
            class,
            error: "boom".into(),
            response: None,
            retry_after,
        }
    }

    fn wait_of(d: &Decision) -> i64 {
        match d {
            Decision::RetryAt { at, .. } => (*at - now()).num_seconds(),
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn success_is_sent_whatever_the_attempt() {
        let sent = Outcome::Sent {
            response: serde_json::json!({"success": true}),
        };
        assert_eq!(decide(&sent, 8, 8, &policy(), now(), 1.0), Decision::Sent);
    }

    #[test]
    fn a_server_error_retries_with_the_backoff_until_attempts_run_out() {
        let e = retryable(Class::ServerError, None);
        // attempt 3: ceiling 40 s, jitter 1 → 40 s; jitter 0 → 20 s
        assert_eq!(wait_of(&decide(&e, 3, 8, &policy(), now(), 1.0)), 40);
        assert_eq!(wait_of(&decide(&e, 3, 8, &policy(), now(), 0.0)), 20);
        assert_eq!(
            decide(&e, 8, 8, &policy(), now(), 1.0),
            Decision::Fail {
                reason: "boom".into()
            }
        );
    }

    #[test]
    fn success_false_and_connect_errors_retry_like_server_errors() {
        for class in [Class::SuccessFalse, Class::Connect] {
            let d = decide(&retryable(class, None), 1, 8, &policy(), now(), 1.0);
            assert_eq!(wait_of(&d), 10, "{class:?}");
            assert_eq!(d.outcome().as_str(), "retry");
        }
    }

    fn snoozed(d: &Decision) -> (i64, &str) {
        match d {
            Decision::Snooze { until, reason } => ((*until - now()).num_seconds(), reason.as_str()),
            other => panic!("not a snooze: {other:?}"),
        }
    }

    #[test]
    fn a_429_snoozes_without_an_attempt_until_retry_after() {
        let d = decide(
            &retryable(Class::RateLimited, None),
            8,
            8,
            &policy(),
            now(),
            0.0,
        );
        assert_eq!(snoozed(&d), (30, "rate_limit"), "even on the last attempt");
        let d = decide(
            &retryable(Class::RateLimited, Some(Duration::from_secs(120))),
            1,
            8,
            &policy(),
            now(),
            1.0,
        );
        assert_eq!(snoozed(&d), (120, "retry_after"));
        let d = decide(
            &retryable(Class::ServerError, Some(Duration::from_secs(86_400))),
            1,
            8,
            &policy(),
            now(),
            1.0,
        );
        assert_eq!(snoozed(&d), (3600, "retry_after"), "Retry-After is capped");
        // a 503 without Retry-After is a server error like any other
        let d = decide(
            &retryable(Class::ServerError, None),
            1,
            8,
            &policy(),
            now(),
            1.0,
        );
        assert_eq!(wait_of(&d), 10);
    }

    #[test]
    fn a_sender_that_cannot_send_snoozes_for_the_paused_queue() {
        let paused = Outcome::Paused {
            class: Class::Unauthorized,
            error: "logged out".into(),
            response: None,
            reason: "gateway unauthorized",
        };
        assert_eq!(
            snoozed(&decide(&paused, 8, 8, &policy(), now(), 1.0)),
            (0, "paused")
        );
    }

    #[test]
    fn a_pair_limit_holds_only_that_message_for_a_minute_or_its_retry_after() {
        let d = decide(
            &retryable(Class::PairLimited, None),
            8,
            8,
            &policy(),
            now(),
            1.0,
        );
        assert_eq!(
            snoozed(&d),
            (60, "pair_limit"),
            "no attempt spent, even the last"
        );
        assert_eq!(d.retry_after_until(), None, "the cluster is not held");
        let d = decide(
            &retryable(Class::PairLimited, Some(Duration::from_secs(90))),
            1,
            8,
            &policy(),
            now(),
            1.0,
        );
        assert_eq!(snoozed(&d), (90, "pair_limit"));
    }

    #[test]
    fn a_timeout_is_ambiguous_and_waits_longer() {
        let timeout = Outcome::Ambiguous {
            class: Class::Timeout,
            error: "no answer".into(),
        };
        let d = decide(&timeout, 1, 8, &policy(), now(), 0.0);
        assert_eq!(d.outcome().as_str(), "ambiguous");
        assert_eq!(wait_of(&d), 30);
        let strict = RetryPolicy {
            retry_ambiguous: false,
            ..policy()
        };
        assert_eq!(
            decide(&timeout, 1, 8, &strict, now(), 0.0),
            Decision::Fail {
                reason: "may have been delivered".into()
            }
        );
    }

    #[test]
    fn other_4xx_fail_at_once() {
        let permanent = Outcome::Permanent {
            class: Class::ClientError,
            error: "rejected".into(),
            response: None,
        };
        assert_eq!(
            decide(&permanent, 1, 8, &policy(), now(), 1.0),
            Decision::Fail {
                reason: "rejected".into()
            }
        );
    }

    #[test]
    fn the_job_rows_limit_decides_not_a_default() {
        let e = retryable(Class::ServerError, None);
        assert!(matches!(
            decide(&e, 2, 2, &policy(), now(), 1.0),
            Decision::Fail { .. }
        ));
        assert!(matches!(
            decide(&e, 2, 4, &policy(), now(), 1.0),
            Decision::RetryAt { .. }
        ));
    }
}
