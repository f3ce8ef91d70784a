//! StarSender (README "Sending"): the request we send and how we read its answer.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{
    SendRequest,
    outcome::{Class, Outcome, answer_json, body_excerpt, exchange},
};
use crate::config::Secret;

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

/// Why the send queue pauses after a 401/403.
pub const UNAUTHORIZED_REASON: &str = "gateway unauthorized";

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

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One call; never panics, every failure becomes an [`Outcome`]. StarSender sends text and
    /// media only: a template message goes as its rendered text.
    pub async fn send(&self, request: &SendRequest<'_>) -> Outcome {
        let body = StarSenderBody::new(request.to, request.body, request.file_url);
        let request = self
            .http
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, self.api_key.expose())
            .json(&body);
        exchange(request, classify_response).await
    }
}

/// The table of README "Sending", from status and body.
pub fn classify_response(status: u16, body: &[u8]) -> Outcome {
    let json: Option<Value> = answer_json(body);
    let gateway_message = json
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body_excerpt(body));
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
        401 | 403 => Outcome::Paused {
            class: Class::Unauthorized,
            error: format!("gateway refused the API key ({status}): {gateway_message}"),
            response: json,
            reason: UNAUTHORIZED_REASON,
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
        for status in [401, 403] {
            assert!(matches!(
                classify_response(status, b""),
                Outcome::Paused {
                    class: Class::Unauthorized,
                    reason: UNAUTHORIZED_REASON,
                    ..
                }
            ));
        }
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
