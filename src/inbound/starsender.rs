//! StarSender's inbound shape: a JSON object or an `application/x-www-form-urlencoded` form with
//! at least `from` (the customer's number) and `message` (the text), often `timestamp`. Every
//! other field is left alone (it stays in the stored raw body). Pure: the webhook route checks
//! a request with it before anything is stored, the job parses the stored bytes with it again.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::{
    error::{AppError, FieldError},
    http::extract::NUL_MESSAGE,
    messages::phone::PhoneNumber,
};

/// One message, as StarSender posted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub from: PhoneNumber,
    pub text: String,
    /// `timestamp`, when it was a time (unix seconds or milliseconds, or RFC 3339).
    pub sent_at: Option<DateTime<Utc>>,
}

/// Why a body is not a StarSender message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// Neither a JSON object nor a form (`400`).
    Unreadable(String),
    /// A readable body without what a message needs (`422`, every field named).
    Invalid(Vec<FieldError>),
}

impl Malformed {
    /// What the payload's `result` says.
    pub fn describe(&self) -> String {
        match self {
            Malformed::Unreadable(why) => why.clone(),
            Malformed::Invalid(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

impl From<Malformed> for AppError {
    fn from(m: Malformed) -> Self {
        match m {
            Malformed::Unreadable(why) => AppError::BadRequest(why),
            Malformed::Invalid(errors) => AppError::Validation(errors),
        }
    }
}

const NEITHER: &str = "the body must be a JSON object or an application/x-www-form-urlencoded form";

/// Reads `body` as `content_type` says (JSON, `+json`, or a form); with another or no content
/// type, as what it looks like (`{…}` is JSON, `a=b&…` a form).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Parsed, Malformed> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let looks_json = || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let fields = if media == "application/x-www-form-urlencoded" {
        form(body)?
    } else if media == "application/json" || media.ends_with("+json") || looks_json() {
        json(body)?
    } else if std::str::from_utf8(body).is_ok_and(|s| s.contains('=')) {
        form(body)?
    } else {
        return Err(Malformed::Unreadable(NEITHER.into()));
    };
    fields_of(&fields)
}

fn json(body: &[u8]) -> Result<Map<String, Value>, Malformed> {
    match crate::http::extract::parse_json(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Malformed::Unreadable(NEITHER.into())),
        Err(AppError::BadRequest(why)) => Err(Malformed::Unreadable(why)),
        Err(other) => Err(Malformed::Unreadable(other.to_string())),
    }
}

/// A form's fields as strings; `from`, `message` or `timestamp` twice is refused (which one
/// counts would be a guess).
fn form(body: &[u8]) -> Result<Map<String, Value>, Malformed> {
    if std::str::from_utf8(body).is_err() {
        return Err(Malformed::Unreadable("the form is not valid UTF-8".into()));
    }
    let mut map = Map::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if map.contains_key(k.as_ref()) {
            if matches!(k.as_ref(), "from" | "message" | "timestamp") {
                return Err(Malformed::Unreadable(format!("the form names {k:?} twice")));
            }
            continue;
        }
        map.insert(k.into_owned(), Value::String(v.into_owned()));
    }
    Ok(map)
}

/// A value as text: a string, or a number as written.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A WhatsApp address as some gateways write it (`628…@s.whatsapp.net`, `628…@c.us`) is its
/// number; a group (`…@g.us`) is not a customer.
fn number_part(raw: &str) -> Option<&str> {
    match raw.trim().split_once('@') {
        None => Some(raw),
        Some((number, "s.whatsapp.net" | "c.us")) => Some(number),
        Some(_) => None,
    }
}

fn fields_of(map: &Map<String, Value>) -> Result<Parsed, Malformed> {
    let mut errors = Vec::new();
    let from = match map.get("from").filter(|v| !v.is_null()) {
        None => {
            errors.push(FieldError::new("from", "is required"));
            None
        }
        Some(v) => match text_of(v) {
            None => {
                errors.push(FieldError::new("from", "must be a phone number"));
                None
            }
            Some(raw) if raw.contains('\0') => {
                errors.push(FieldError::new("from", NUL_MESSAGE));
                None
            }
            Some(raw) => match number_part(&raw).map(PhoneNumber::parse) {
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    errors.push(FieldError::new("from", e.to_string()));
                    None
                }
                None => {
                    errors.push(FieldError::new(
                        "from",
                        "must be a phone number (not a group)",
                    ));
                    None
                }
            },
        },
    };
    let text = match map.get("message").filter(|v| !v.is_null()) {
        None => {
            errors.push(FieldError::new("message", "is required"));
            None
        }
        Some(v) => match text_of(v) {
            None => {
                errors.push(FieldError::new("message", "must be a string"));
                None
            }
            Some(t) if t.contains('\0') => {
                errors.push(FieldError::new("message", NUL_MESSAGE));
                None
            }
            Some(t) => Some(t),
        },
    };
    let sent_at = map.get("timestamp").and_then(timestamp);
    match (from, text) {
        (Some(from), Some(text)) if errors.is_empty() => Ok(Parsed {
            from,
            text,
            sent_at,
        }),
        _ => Err(Malformed::Invalid(errors)),
    }
}

/// Unix seconds (milliseconds when the number is that large), as a number or a string, or an
/// RFC 3339 time. Anything else is no time: the message is kept without it.
fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    let raw = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    if let Ok(n) = raw.parse::<f64>() {
        if !n.is_finite() || n <= 0.0 {
            return None;
        }
        let millis = if n >= 1e11 { n } else { n * 1000.0 };
        if millis > 1e15 {
            return None;
        }
        return DateTime::from_timestamp_millis(millis as i64);
    }
    crate::http::fields::rfc3339(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ct: Option<&str>, body: &str) -> Parsed {
        parse(ct, body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e:?}"))
    }

    fn invalid(ct: Option<&str>, body: &str) -> Vec<String> {
        match parse(ct, body.as_bytes()) {
            Err(Malformed::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn json_and_forms_give_the_same_message() {
        let json = ok(
            Some("application/json"),
            r#"{"from": "0812-3456-789", "message": "STOP", "timestamp": 1796000000, "device": "x"}"#,
        );
        let form = ok(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            "from=%2B62+812+3456+789&message=STOP&timestamp=1796000000&device=x",
        );
        assert_eq!(json, form);
        assert_eq!(json.from.as_str(), "628123456789");
        assert_eq!(json.sent_at.unwrap().timestamp(), 1_796_000_000);
        // no or another content type: what it looks like
        assert_eq!(
            ok(None, r#" {"from": 628123456789, "message": "STOP"}"#).text,
            "STOP"
        );
        assert_eq!(
            ok(Some("text/plain"), "message=hi&from=628123456789").text,
            "hi"
        );
        assert_eq!(
            ok(
                None,
                r#"{"from": "628123456789@s.whatsapp.net", "message": ""}"#
            )
            .text,
            ""
        );
    }

    #[test]
    fn timestamps_are_seconds_milliseconds_or_rfc3339_and_otherwise_ignored() {
        let at = |ts: &str| {
            ok(
                None,
                &format!(r#"{{"from": "628123456789", "message": "x", "timestamp": {ts}}}"#),
            )
            .sent_at
            .map(|t| t.timestamp_millis())
        };
        assert_eq!(at("1796000000"), Some(1_796_000_000_000));
        assert_eq!(at("\"1796000000\""), Some(1_796_000_000_000));
        assert_eq!(at("1796000000123"), Some(1_796_000_000_123));
        assert_eq!(at("\"2026-12-06T10:00:00+07:00\""), Some(1_796_526_000_000));
        for junk in ["\"soon\"", "-5", "1e300", "null", "[1]", "0"] {
            assert_eq!(at(junk), None, "{junk}");
        }
    }

    #[test]
    fn what_lacks_a_sender_or_a_text_is_named() {
        assert_eq!(invalid(None, r#"{"message": "x"}"#), ["from"]);
        assert_eq!(invalid(None, "{}"), ["from", "message"]);
        assert_eq!(
            invalid(None, r#"{"from": "12", "message": {"text": "x"}}"#),
            ["from", "message"]
        );
        assert_eq!(
            invalid(None, r#"{"from": "1203630@g.us", "message": "x"}"#),
            ["from"]
        );
        assert_eq!(
            invalid(None, r#"{"from": "628123456789", "message": "a\u0000b"}"#),
            ["message"]
        );
        assert_eq!(
            invalid(Some("application/x-www-form-urlencoded"), "a=b"),
            ["from", "message"]
        );
    }

    #[test]
    fn what_is_neither_json_nor_a_form_is_unreadable() {
        for (ct, body) in [
            (Some("application/json"), "{"),
            (Some("application/json"), "[1, 2]"),
            (None, "just text"),
            (None, ""),
            (Some("application/json"), r#"{"from": "1", "from": "2"}"#),
            (
                Some("application/x-www-form-urlencoded"),
                "from=1&from=2&message=x",
            ),
        ] {
            assert!(
                matches!(parse(ct, body.as_bytes()), Err(Malformed::Unreadable(_))),
                "{body}"
            );
        }
        assert!(matches!(
            parse(Some("application/x-www-form-urlencoded"), b"from=\xff"),
            Err(Malformed::Unreadable(_))
        ));
    }
}
