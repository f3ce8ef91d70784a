//! The Cloud API's error codes and what each does to a message (SPEC §13 "Outcomes"). The code
//! comes from an error answer's `error.code`, or from a `failed` status's `errors[].code`.

use serde_json::Value;

use crate::gateway::outcome::{Class, Outcome, answer_json, body_excerpt};

/// Why the send queue pauses after `190` / HTTP `401`.
pub const TOKEN_INVALID: &str = "access token invalid";
/// Why the send queue pauses after `368`.
pub const ACCOUNT_RESTRICTED: &str = "account restricted";

/// The codes `bengkel_cloud_api_errors_total{code}` names; any other is `other`.
pub const COUNTED: [i64; 12] = [
    130429, 80007, 4, 131056, 131048, 131049, 131026, 131047, 132000, 132001, 190, 368,
];

/// Template codes: the template mapping is flagged on the templates API.
pub const TEMPLATE_CODES: [i64; 2] = [132000, 132001];

/// Codes after which a failed message is not retried within 24 hours: WhatsApp holds the
/// number back for spam or engagement, and sending again at once makes it worse.
pub const NOT_RETRIED_WITHIN_24H: [i64; 2] = [131048, 131049];

/// SQL: message `m` failed less than 24 hours ago with a code of [`NOT_RETRIED_WITHIN_24H`]
/// (from the error answer stored as its `gateway_response`), so no requeue takes it yet.
#[macro_export]
macro_rules! cloud_cooling_down {
    () => {
        "(m.status = 'failed' AND m.failed_at > now() - interval '24 hours'
          AND m.gateway_response #>> '{error,code}' IN ('131048', '131049'))"
    };
}

/// The metric label of a code.
pub fn label(code: Option<i64>) -> String {
    match code {
        Some(code) if COUNTED.contains(&code) => code.to_string(),
        _ => "other".to_owned(),
    }
}

/// Counts one error answer or failed status.
pub fn count(code: Option<i64>) {
    metrics::counter!("bengkel_cloud_api_errors_total", "code" => label(code)).increment(1);
}

/// The Graph API's answer to a send: `2xx` with `messages[0].id` is sent; an error body's
/// `error.code` decides by the table; without one, the HTTP status decides as for StarSender
/// (SPEC §4).
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let json = answer_json(body);
    if (200..300).contains(&status) {
        return match json {
            Some(v)
                if v.pointer("/messages/0/id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| !id.is_empty()) =>
            {
                Outcome::Sent { response: v }
            }
            // Accepted, but we cannot tell what: it may have been sent.
            _ => Outcome::Ambiguous {
                class: Class::InvalidBody,
                error: format!("Cloud API answered {status} without a message id"),
            },
        };
    }
    let code = json
        .as_ref()
        .and_then(|v| v.pointer("/error/code"))
        .and_then(Value::as_i64);
    count(code);
    let said = json
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body_excerpt(body));
    let error = match code {
        Some(code) => format!("Cloud API error {code} ({status}): {said}"),
        None => format!("Cloud API answered {status}: {said}"),
    };
    let retryable = |class| Outcome::Retryable {
        class,
        error: error.clone(),
        response: json.clone(),
        retry_after: None,
    };
    let permanent = |class| Outcome::Permanent {
        class,
        error: error.clone(),
        response: json.clone(),
    };
    let paused = |class, reason| Outcome::Paused {
        class,
        error: error.clone(),
        response: json.clone(),
        reason,
    };
    match (code, status) {
        (Some(130429 | 80007 | 4), _) => retryable(Class::RateLimited),
        (Some(131056), _) => retryable(Class::PairLimited),
        (Some(131048 | 131049 | 131026 | 131047 | 132000 | 132001), _) => {
            permanent(Class::ClientError)
        }
        (Some(190), _) | (_, 401) => paused(Class::Unauthorized, TOKEN_INVALID),
        (Some(368), _) => paused(Class::Restricted, ACCOUNT_RESTRICTED),
        (_, 408) => retryable(Class::Timeout),
        (_, 429) => retryable(Class::RateLimited),
        (_, 500..=599) => retryable(Class::ServerError),
        _ => permanent(Class::ClientError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: u16, code: i64) -> Outcome {
        classify(
            status,
            serde_json::json!({"error": {"message": "m", "type": "OAuthException", "code": code, "fbtrace_id": "x"}})
                .to_string()
                .as_bytes(),
        )
    }

    #[test]
    fn the_requeue_hold_names_exactly_the_codes_not_retried_within_24h() {
        let sql = crate::cloud_cooling_down!();
        for code in NOT_RETRIED_WITHIN_24H {
            assert!(sql.contains(&format!("'{code}'")), "{code}");
        }
        assert_eq!(sql.matches("'1310").count(), NOT_RETRIED_WITHIN_24H.len());
    }

    #[test]
    fn a_wamid_is_sent_anything_else_in_a_2xx_is_ambiguous() {
        let sent = classify(
            200,
            br#"{"messaging_product":"whatsapp","contacts":[{"input":"62812","wa_id":"62812"}],"messages":[{"id":"wamid.A"}]}"#,
        );
        assert_eq!(sent.gateway_message_id(), Some("wamid.A"));
        assert!(matches!(classify(200, b"{}"), Outcome::Ambiguous { .. }));
        assert!(matches!(classify(200, b"ok"), Outcome::Ambiguous { .. }));
    }

    #[test]
    fn every_code_of_the_table_has_its_treatment() {
        for code in [130429, 80007, 4] {
            assert!(
                matches!(
                    error(400, code),
                    Outcome::Retryable {
                        class: Class::RateLimited,
                        ..
                    }
                ),
                "{code}"
            );
        }
        assert!(matches!(
            error(400, 131056),
            Outcome::Retryable {
                class: Class::PairLimited,
                ..
            }
        ));
        for code in [131048, 131049, 131026, 131047, 132000, 132001] {
            assert!(
                matches!(error(400, code), Outcome::Permanent { .. }),
                "{code}"
            );
        }
        assert!(matches!(
            error(401, 190),
            Outcome::Paused {
                reason: TOKEN_INVALID,
                ..
            }
        ));
        assert!(matches!(
            error(400, 190),
            Outcome::Paused {
                reason: TOKEN_INVALID,
                ..
            }
        ));
        assert!(matches!(
            error(403, 368),
            Outcome::Paused {
                reason: ACCOUNT_RESTRICTED,
                class: Class::Restricted,
                ..
            }
        ));
        assert_eq!(error(400, 131026).error_code(), Some(131026));
    }

    #[test]
    fn other_answers_follow_the_http_status() {
        assert!(matches!(
            error(500, 1),
            Outcome::Retryable {
                class: Class::ServerError,
                ..
            }
        ));
        assert!(matches!(classify(503, b"down"), Outcome::Retryable { .. }));
        assert!(matches!(classify(401, b""), Outcome::Paused { .. }));
        assert!(matches!(error(400, 100), Outcome::Permanent { .. }));
        assert!(matches!(
            classify(429, b""),
            Outcome::Retryable {
                class: Class::RateLimited,
                ..
            }
        ));
    }

    #[test]
    fn labels_name_the_table_s_codes_and_nothing_else() {
        assert_eq!(label(Some(131056)), "131056");
        assert_eq!(label(Some(100)), "other");
        assert_eq!(label(None), "other");
    }
}
