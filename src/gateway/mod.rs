//! The StarSender gateway: the request we send and how we read its answer (README "Sending").

pub mod cloud_api;
pub mod sandbox;

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, Secret};

/// What the worker needs to know about one gateway call.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 2xx with `"success": true`.
    Sent { response: Value },
    /// Worth another attempt later (`success:false`, 408, 429, 5xx, refused before sending).
    Retryable {
        class: Class,
        error: String,
        response: Option<Value>,
        /// The gateway's `Retry-After` (429/503), from now.
        retry_after: Option<Duration>,
    },
    /// A retry cannot help (other 4xx).
    Permanent {
        class: Class,
        error: String,
        response: Option<Value>,
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
    ClientError,
    RateLimited,
    ServerError,
    Timeout,
    Connect,
    InvalidBody,
}

impl Class {
    pub const ALL: [Class; 9] = [
        Class::Ok,
        Class::SuccessFalse,
        Class::Unauthorized,
        Class::ClientError,
        Class::RateLimited,
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
            Class::ClientError => "client_error",
            Class::RateLimited => "rate_limited",
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
            | Outcome::Ambiguous { class, .. } => *class,
        }
    }

    /// Why it was not sent (`None` when it was).
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Sent { .. } => None,
            Outcome::Retryable { error, .. }
            | Outcome::Permanent { error, .. }
            | Outcome::Ambiguous { error, .. } => Some(error),
        }
    }

    /// What the gateway answered, as it answered (kept on the message).
    pub fn into_response(self) -> Option<Value> {
        match self {
            Outcome::Sent { response } => Some(response),
            Outcome::Retryable { response, .. } | Outcome::Permanent { response, .. } => response,
            Outcome::Ambiguous { .. } => None,
        }
    }
}

/// The JSON body StarSender expects. `file` only with `messageType: media`.
#[derive(Debug, Serialize)]
pub struct StarSenderBody<'a> {
    #[serde(rename = "messageType")]
    pub message_type: &'static str,
    pub to: &'a str,
    pub body: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<&'a str>,
}

impl<'a> StarSenderBody<'a> {
    pub fn new(to: &'a str, body: &'a str, file: Option<&'a str>) -> Self {
        Self {
            message_type: if file.is_some() { "media" } else { "text" },
            to,
            body,
            file,
        }
    }
}

#[derive(Clone)]
pub struct StarSender {
    http: reqwest::Client,
    url: String,
    api_key: Secret,
}

impl StarSender {
    pub fn new(url: String, api_key: Secret, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self { http, url, api_key })
    }

    pub fn from_config(
        config: &Config,
        sandbox_url: Option<String>,
        sandbox_key: Secret,
    ) -> anyhow::Result<Self> {
        match (&config.starsender_api_key, sandbox_url) {
            (Some(key), _) => Self::new(
                config.starsender_api_url.clone(),
                key.clone(),
                config.starsender_timeout,
            ),
            (None, Some(url)) => Self::new(url, sandbox_key, config.starsender_timeout),
            (None, None) => {
                anyhow::bail!("no STARSENDER_API_KEY and no sandbox gateway to send to")
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One call; never panics, every failure becomes an [`Outcome`].
    pub async fn send(&self, request: &StarSenderBody<'_>) -> Outcome {
        let started = Instant::now();
        let result = self
            .http
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, self.api_key.expose())
            .json(request)
            .send()
            .await;
        let outcome = match result {
            Err(e) => classify_transport_error(&e),
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                match response.bytes().await {
                    Err(e) if e.is_timeout() => Outcome::Ambiguous {
                        class: Class::Timeout,
                        error: format!("gateway answered {status} but the body timed out: {e}"),
                    },
                    Err(e) => Outcome::Ambiguous {
                        class: Class::InvalidBody,
                        error: format!("gateway answered {status} but the body broke off: {e}"),
                    },
                    Ok(body) => {
                        with_retry_after(classify_response(status.as_u16(), &body), retry_after)
                    }
                }
            }
        };
        metrics::histogram!("bengkel_gateway_request_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("bengkel_gateway_responses_total", "class" => outcome.class().as_str())
            .increment(1);
        outcome
    }
}

fn classify_transport_error(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        // Refused or reset before the request went out: nothing can have been sent.
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

/// The table of README "Sending", from status and body.
/// Attaches a `Retry-After` to a retryable outcome.
fn with_retry_after(outcome: Outcome, after: Option<Duration>) -> Outcome {
    match outcome {
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

/// `value` with every NUL character removed from its strings and keys.
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

pub fn classify_response(status: u16, body: &[u8]) -> Outcome {
    // What the gateway says is stored (jsonb, text): PostgreSQL refuses NUL in both, and one
    // such answer would fail the whole group of outcomes it is written with.
    let json: Option<Value> = serde_json::from_slice(body).ok().map(without_nul);
    let gateway_message = json
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).replace('\0', ""));
    match status {
        200..=299 => match json {
            Some(v) if v.get("success") == Some(&Value::Bool(true)) => {
                Outcome::Sent { response: v }
            }
            Some(v) => Outcome::Retryable {
                class: Class::SuccessFalse,
                error: format!("gateway answered success:false: {gateway_message}"),
                response: Some(v),
                retry_after: None,
            },
            None => Outcome::Ambiguous {
                class: Class::InvalidBody,
                error: format!("gateway answered {status} with a body that is not JSON"),
            },
        },
        408 | 429 => Outcome::Retryable {
            class: if status == 429 {
                Class::RateLimited
            } else {
                Class::Timeout
            },
            error: format!("gateway answered {status}: {gateway_message}"),
            response: json,
            retry_after: None,
        },
        500..=599 => Outcome::Retryable {
            class: Class::ServerError,
            error: format!("gateway answered {status}: {gateway_message}"),
            response: json,
            retry_after: None,
        },
        401 | 403 => Outcome::Permanent {
            class: Class::Unauthorized,
            error: format!("gateway refused the API key ({status}): {gateway_message}"),
            response: json,
        },
        _ => Outcome::Permanent {
            class: Class::ClientError,
            error: format!("gateway rejected the message ({status}): {gateway_message}"),
            response: json,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_needs_2xx_and_success_true() {
        assert!(matches!(
            classify_response(200, br#"{"success":true}"#),
            Outcome::Sent { .. }
        ));
        assert!(matches!(
            classify_response(200, br#"{"success":false,"message":"device offline"}"#),
            Outcome::Retryable {
                class: Class::SuccessFalse,
                ..
            }
        ));
        assert!(matches!(
            classify_response(200, b"<html>ok</html>"),
            Outcome::Ambiguous {
                class: Class::InvalidBody,
                ..
            }
        ));
    }

    #[test]
    fn status_codes_map_to_the_spec_table() {
        for (status, retry) in [
            (408, true),
            (429, true),
            (500, true),
            (503, true),
            (400, false),
            (401, false),
            (404, false),
            (422, false),
        ] {
            let outcome = classify_response(status, br#"{"success":false,"message":"x"}"#);
            assert_eq!(
                matches!(outcome, Outcome::Retryable { .. }),
                retry,
                "{status}"
            );
            assert_eq!(
                matches!(outcome, Outcome::Permanent { .. }),
                !retry,
                "{status}"
            );
        }
        assert_eq!(classify_response(401, b"").class(), Class::Unauthorized);
        assert_eq!(classify_response(429, b"").class(), Class::RateLimited);
    }

    #[test]
    fn nul_characters_in_an_answer_are_dropped_before_they_are_stored() {
        let outcome = classify_response(
            500,
            b"{\"success\":false,\"message\":\"bad\\u0000news\",\"k\\u0000\":[\"\\u0000\"]}",
        );
        let Outcome::Retryable {
            error, response, ..
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(error, "gateway answered 500: badnews");
        assert_eq!(
            response,
            Some(serde_json::json!({"success": false, "message": "badnews", "k": [""]}))
        );
        let Outcome::Retryable { error, .. } = classify_response(502, b"oops\0") else {
            panic!()
        };
        assert!(!error.contains('\0'), "{error:?}");
    }

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
    fn request_body_has_media_only_with_a_file() {
        let text = serde_json::to_value(StarSenderBody::new("62812", "hi", None)).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"messageType":"text","to":"62812","body":"hi"})
        );
        let media =
            serde_json::to_value(StarSenderBody::new("62812", "hi", Some("https://x/y.pdf")))
                .unwrap();
        assert_eq!(media["messageType"], "media");
        assert_eq!(media["file"], "https://x/y.pdf");
    }
}
