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
