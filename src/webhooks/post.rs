//! One HTTP attempt of a delivery: the body as posted, its Standard Webhooks headers, and what
//! the receiver answered (`deliver::record` decides what follows).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{
    AttemptClass,
    deliver::{Claimed, DeliveryContext},
    net, sign,
};

/// The most of a receiver's answer kept with an attempt.
const EXCERPT_BYTES: usize = 512;

/// What one HTTP attempt gave.
#[derive(Debug)]
pub struct Attempted {
    pub at: DateTime<Utc>,
    pub class: AttemptClass,
    pub http_status: Option<u16>,
    pub duration: Duration,
    pub excerpt: Option<String>,
    pub retry_after: Option<Duration>,
}

/// The body of an event as posted: `{"type", "timestamp", "data"}`, minified. The same bytes
/// for every attempt and replay of the event (its data is stored; keys come out sorted).
pub fn body(event_type: &str, at: DateTime<Utc>, data: &Value) -> Vec<u8> {
    let body = json!({
        "type": event_type,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": data,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Posts the event once.
pub(super) async fn attempt(ctx: &DeliveryContext, claimed: &Claimed) -> Attempted {
    let at = Utc::now();
    let started = Instant::now();
    let done = |class, http_status, excerpt: Option<String>, retry_after| Attempted {
        at,
        class,
        http_status,
        duration: started.elapsed(),
        excerpt,
        retry_after,
    };
    let url = match reqwest::Url::parse(&claimed.url) {
        Ok(url) => url,
        Err(e) => {
            return done(
                AttemptClass::Connect,
                None,
                Some(format!("bad URL: {e}")),
                None,
            );
        }
    };
    if !ctx.settings.allow_private
        && let Some(ip) = net::literal_ip(&url).filter(|ip| net::is_private(*ip))
    {
        let why = format!("{ip} is a private or loopback address: not sent");
        return done(AttemptClass::Blocked, None, Some(why), None);
    }
    let body = body(&claimed.event_type, claimed.event_at, &claimed.data);
    let timestamp = at.timestamp();
    let mut secrets = vec![claimed.secret.as_str()];
    secrets.extend(claimed.previous_secret.as_deref());
    let signature = sign::header(&secrets, &claimed.event_id, timestamp, &body);
    let sent = ctx
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &claimed.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            // A date in the past reads as no wait: the schedule's delay stands.
            let retry_after = crate::gateway::outcome::retry_after_of(&response);
            let excerpt = excerpt(response).await;
            done(
                AttemptClass::of_status(status),
                Some(status),
                excerpt,
                retry_after,
            )
        }
        Err(e) => {
            let class = if net::is_blocked(&e) {
                AttemptClass::Blocked
            } else if e.is_timeout() {
                AttemptClass::Timeout
            } else {
                AttemptClass::Connect
            };
            done(class, None, Some(error_chain(&e)), None)
        }
    }
}

/// The first [`EXCERPT_BYTES`] of an answer's body (the rest is not read).
async fn excerpt(mut response: reqwest::Response) -> Option<String> {
    let mut kept = Vec::new();
    while kept.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(EXCERPT_BYTES);
    let text = String::from_utf8_lossy(&kept).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(EXCERPT_BYTES).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_minified_and_stable() {
        let at = DateTime::parse_from_rfc3339("2026-12-06T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let data = json!({"to": "6281", "message_id": "m", "attempts": 1});
        let bytes = body("message.sent", at, &data);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"data":{"attempts":1,"message_id":"m","to":"6281"},"timestamp":"2026-12-06T10:00:00.500000Z","type":"message.sent"}"#
        );
        assert_eq!(bytes, body("message.sent", at, &data));
    }
}
