//! Unit tests of [`super::request`]: what a send request may be.

use chrono::{Duration, Utc};
use serde_json::Value;

use super::request::*;
use crate::error::AppError;

fn json(v: Value) -> Result<NewMessage, AppError> {
    from_json(v.as_object().unwrap()).map(|c| match c {
        Checked::Ready(m) => m,
        Checked::Template(_) => panic!("a template send"),
    })
}

fn fields(r: Result<NewMessage, AppError>) -> Vec<String> {
    match r {
        Err(AppError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn a_valid_request_is_normalized() {
    let m = json(serde_json::json!({"to": "0812 3456 789", "body": "  halo  "})).unwrap();
    assert_eq!(m.to.as_str(), "628123456789");
    assert_eq!(m.body, "halo");
    assert!(m.run_at.is_none());
}

#[test]
fn every_invalid_field_is_reported_at_once() {
    let r = json(serde_json::json!({"to": "12", "body": " ", "file": "ftp://x/y", "delay": -1}));
    assert_eq!(fields(r), ["to", "body", "file", "delay"]);
    assert_eq!(fields(json(serde_json::json!({}))), ["to", "body"]);
    assert_eq!(
        fields(json(
            serde_json::json!({"to": 628123456789u64, "body": "x"})
        )),
        ["to"]
    );
}

#[test]
fn a_send_has_exactly_one_of_body_and_template() {
    let to = "0812345678";
    let check = |v: Value| from_json(v.as_object().unwrap());
    assert_eq!(fields(json(serde_json::json!({"to": to}))), ["body"]);
    assert_eq!(
        fields(json(
            serde_json::json!({"to": to, "body": null, "template": null})
        )),
        ["body"]
    );
    let both = check(serde_json::json!({"to": to, "body": "x", "template": {"key": "promo"}}));
    assert_eq!(fields(both.map(|_| unreachable_message())), ["template"]);
    let bad = check(serde_json::json!({"to": "1", "template": {"values": {"kode": "1"}}}));
    assert_eq!(
        fields(bad.map(|_| unreachable_message())),
        ["template.key", "template.values.kode", "to"]
    );
    let fingerprint = |values: Value| match check(serde_json::json!({
        "to": to, "template": {"key": "promo", "values": values}
    })) {
        Ok(c @ Checked::Template(_)) => c.fingerprint().to_owned(),
        other => panic!("expected a template send, got {other:?}"),
    };
    let a = fingerprint(serde_json::json!({"nama": "Budi", "hari": 2}));
    assert_eq!(
        a,
        fingerprint(serde_json::json!({"hari": "2", "nama": "Budi"}))
    );
    assert_ne!(
        a,
        fingerprint(serde_json::json!({"nama": "Ani", "hari": 2}))
    );
    assert!(a.contains("\"body\":null"), "{a}");
}

/// For `fields` of a result that must be an error.
fn unreachable_message() -> NewMessage {
    panic!("expected a validation error")
}

#[test]
fn delay_and_schedule_rules() {
    let now_ms = Utc::now().timestamp_millis();
    let both =
        json(serde_json::json!({"to": "0812345678", "body": "x", "delay": 5, "schedule": now_ms}));
    assert_eq!(fields(both), ["schedule"]);
    let past =
        json(serde_json::json!({"to": "0812345678", "body": "x", "schedule": now_ms - 120_000}));
    assert_eq!(fields(past), ["schedule"]);
    let far = json(
        serde_json::json!({"to": "0812345678", "body": "x", "schedule": now_ms + 367 * 86_400_000i64}),
    );
    assert_eq!(fields(far), ["schedule"]);
    let too_long =
        json(serde_json::json!({"to": "0812345678", "body": "x", "delay": MAX_DELAY_SECS + 1}));
    assert_eq!(fields(too_long), ["delay"]);
    let ok = json(serde_json::json!({"to": "0812345678", "body": "x", "delay": 60})).unwrap();
    assert!(ok.run_at.unwrap() > Utc::now() + Duration::seconds(55));
    let body = "x".repeat(MAX_BODY_CHARS + 1);
    assert_eq!(
        fields(json(serde_json::json!({"to": "0812345678", "body": body}))),
        ["body"]
    );
}

#[test]
fn deadline_rules() {
    let to = |extra: Value| {
        let mut body = serde_json::json!({"to": "0812345678", "body": "x"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        json(body)
    };
    let in_an_hour = (Utc::now() + Duration::hours(1)).to_rfc3339();
    assert_eq!(
        fields(to(
            serde_json::json!({"expires_at": in_an_hour, "ttl_seconds": 5})
        )),
        ["expires_at", "ttl_seconds"]
    );
    assert_eq!(
        fields(to(
            serde_json::json!({"expires_at": in_an_hour, "delay": 3600})
        )),
        ["expires_at"]
    );
    assert_eq!(
        fields(to(serde_json::json!({"expires_at": "2099-01-01 10:00"}))),
        ["expires_at"]
    );
    assert_eq!(
        fields(to(serde_json::json!({"ttl_seconds": MAX_TTL_SECS + 1}))),
        ["ttl_seconds"]
    );
    assert_eq!(
        fields(to(serde_json::json!({"respect_window": "true"}))),
        ["respect_window"]
    );
    let m =
        to(serde_json::json!({"delay": 60, "ttl_seconds": 30, "respect_window": true})).unwrap();
    assert_eq!(
        m.expires_at.unwrap() - m.run_at.unwrap(),
        Duration::seconds(30)
    );
    assert!(m.respect_window && m.job(uuid::Uuid::nil()).window);
    // A request without the new fields keeps its old fingerprint.
    let plain = to(serde_json::json!({"respect_window": false})).unwrap();
    assert!(
        !plain.fingerprint.contains("expires_at"),
        "{}",
        plain.fingerprint
    );
    assert!(!plain.fingerprint.contains("respect_window"));
}
