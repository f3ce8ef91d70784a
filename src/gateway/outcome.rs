//! What one gateway call came to, whichever gateway made it: the [`Outcome`] the send job
//! decides on (`messages::decide`) and the [`Class`] it is counted under.

use std::time::Duration;

use serde_json::Value;

/// What the worker needs to know about one gateway call.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Accepted by the gateway (StarSender: 2xx with `"success": true`; Cloud API: 2xx with a
    /// `wamid`).
    Sent { response: Value },
    /// Worth another attempt later (`success:false`, 408, 429, 5xx, refused before sending), or
    /// held by the policy without spending one (rate and pair limits; see `decide`).
    Retryable {
        class: Class,
        error: String,
        response: Option<Value>,
        /// The gateway's `Retry-After` (429/503), from now.
        retry_after: Option<Duration>,
    },
    /// A retry cannot help (other 4xx, an undeliverable number, a refused template).
    Permanent {
        class: Class,
        error: String,
        response: Option<Value>,
    },
    /// The sender itself cannot send (key refused, token invalid, account restricted): the
    /// message is held without spending an attempt and the send queue pauses with `reason`.
    Paused {
        class: Class,
        error: String,
        response: Option<Value>,
        reason: &'static str,
    },
    /// The gateway may have sent it (timeout after the request went out, a 2xx we cannot read).
    Ambiguous { class: Class, error: String },
}

/// The gateway response classes of `bengkel_gateway_responses_total` (README "Operations").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Ok,
    SuccessFalse,
    Unauthorized,
    /// The account may not send (Cloud API `368`).
    Restricted,
    ClientError,
    RateLimited,
    /// Too many messages to one recipient (Cloud API `131056`): only that message waits.
    PairLimited,
    ServerError,
    Timeout,
    Connect,
    InvalidBody,
}

impl Class {
    pub const ALL: [Class; 11] = [
        Class::Ok,
        Class::SuccessFalse,
        Class::Unauthorized,
        Class::Restricted,
        Class::ClientError,
        Class::RateLimited,
        Class::PairLimited,
        Class::ServerError,
        Class::Timeout,
        Class::Connect,
        Class::InvalidBody,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::SuccessFalse => "success_false",
            Class::Unauthorized => "unauthorized",
            Class::Restricted => "restricted",
            Class::ClientError => "client_error",
            Class::RateLimited => "rate_limited",
            Class::PairLimited => "pair_limited",
            Class::ServerError => "server_error",
            Class::Timeout => "timeout",
            Class::Connect => "connect",
            Class::InvalidBody => "invalid_body",
        }
    }
}

impl Outcome {
    pub fn class(&self) -> Class {
        match self {
            Outcome::Sent { .. } => Class::Ok,
            Outcome::Retryable { class, .. }
            | Outcome::Permanent { class, .. }
            | Outcome::Paused { class, .. }
            | Outcome::Ambiguous { class, .. } => *class,
        }
    }

    /// Why it was not sent (`None` when it was).
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Sent { .. } => None,
            Outcome::Retryable { error, .. }
            | Outcome::Permanent { error, .. }
            | Outcome::Paused { error, .. }
            | Outcome::Ambiguous { error, .. } => Some(error),
        }
    }

    /// What the gateway answered, as it answered.
    pub fn response(&self) -> Option<&Value> {
        match self {
            Outcome::Sent { response } => Some(response),
            Outcome::Retryable { response, .. }
            | Outcome::Permanent { response, .. }
            | Outcome::Paused { response, .. } => response.as_ref(),
            Outcome::Ambiguous { .. } => None,
        }
    }

    /// What the gateway answered, as it answered (kept on the message).
    pub fn into_response(self) -> Option<Value> {
        match self {
            Outcome::Sent { response } => Some(response),
            Outcome::Retryable { response, .. }
            | Outcome::Permanent { response, .. }
            | Outcome::Paused { response, .. } => response,
            Outcome::Ambiguous { .. } => None,
        }
    }

    /// The gateway's id of a sent message (the Cloud API's `wamid`; StarSender gives none that
    /// its callbacks use).
    pub fn gateway_message_id(&self) -> Option<&str> {
        match self {
            Outcome::Sent { response } => response
                .pointer("/messages/0/id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty()),
            _ => None,
        }
    }

    /// The Cloud API's error code in the answer (`error.code`), if any.
    pub fn error_code(&self) -> Option<i64> {
        self.response()?.pointer("/error/code")?.as_i64()
    }

    /// Attaches a `Retry-After` to a retryable outcome.
    pub fn with_retry_after(self, after: Option<Duration>) -> Outcome {
        match self {
            Outcome::Retryable {
                class,
                error,
                response,
                ..
            } => Outcome::Retryable {
                class,
                error,
                response,
                retry_after: after,
            },
            other => other,
        }
    }
}

/// A call that failed below HTTP: refused before sending (nothing can have been sent), or cut
/// off after the request went out (it may have been).
pub fn transport_error(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        return Outcome::Retryable {
            class: Class::Connect,
            error: format!("could not connect to the gateway: {e}"),
            response: None,
            retry_after: None,
        };
    }
    if e.is_timeout() {
        return Outcome::Ambiguous {
            class: Class::Timeout,
            error: format!("gateway did not answer in time: {e}"),
        };
    }
    Outcome::Ambiguous {
        class: Class::InvalidBody,
        error: format!("the gateway connection broke after the request went out: {e}"),
    }
}

/// A body that broke off after the status line came: the gateway may have sent.
pub fn body_error(status: reqwest::StatusCode, e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::Ambiguous {
            class: Class::Timeout,
            error: format!("gateway answered {status} but the body timed out: {e}"),
        }
    } else {
        Outcome::Ambiguous {
            class: Class::InvalidBody,
            error: format!("gateway answered {status} but the body broke off: {e}"),
        }
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3), as a wait from `now` (a
/// date in the past is no wait). Anything else is ignored.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

/// Sends `request` and classifies what came back: a transport error, a body that could not be
/// read, or `classify(status, body)` with the response's `Retry-After`.
pub async fn exchange(
    request: reqwest::RequestBuilder,
    classify: impl FnOnce(u16, &[u8]) -> Outcome,
) -> Outcome {
    match request.send().await {
        Err(e) => transport_error(&e),
        Ok(response) => {
            let status = response.status();
            let retry_after = retry_after_of(&response);
            match response.bytes().await {
                Err(e) => body_error(status, &e),
                Ok(body) => classify(status.as_u16(), &body).with_retry_after(retry_after),
            }
        }
    }
}

/// The `Retry-After` of a response, as a wait from now.
pub fn retry_after_of(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()))
}

/// A gateway's answer as JSON, with every NUL character removed from its strings and keys:
/// what the gateway says is stored (jsonb, text), PostgreSQL refuses NUL in both, and one such
/// answer would fail the whole group of outcomes it is written with. `None` if not JSON.
pub fn answer_json(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok().map(without_nul)
}

/// The first 300 bytes of a body as text, for an error message.
pub fn body_excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).replace('\0', "")
}

fn without_nul(value: Value) -> Value {
    let clean = |s: String| {
        if s.contains('\0') {
            s.replace('\0', "")
        } else {
            s
        }
    };
    match value {
        Value::String(s) => Value::String(clean(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (clean(k), without_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 08:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn every_class_has_its_own_label() {
        let labels: std::collections::HashSet<_> = Class::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), Class::ALL.len());
    }

    #[test]
    fn the_wamid_of_a_sent_message_is_read_from_its_answer() {
        let sent = Outcome::Sent {
            response: serde_json::json!({"messages": [{"id": "wamid.X"}]}),
        };
        assert_eq!(sent.gateway_message_id(), Some("wamid.X"));
        let starsender = Outcome::Sent {
            response: serde_json::json!({"success": true}),
        };
        assert_eq!(starsender.gateway_message_id(), None);
    }
}
