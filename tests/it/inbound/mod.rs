//! Inbound messages (SPEC §13, README "Inbound messages and opt-out keywords"): StarSender's
//! webhook over real HTTP (`webhook`), the processing job and `accept` called directly
//! (`processing`), the keywords and the confirmation reply (`keywords`).

mod keywords;
mod processing;
mod webhook;

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, metric, ops_token, wait_until};

/// `INBOUND_STARSENDER_TOKEN` of the tests' apps (32 characters).
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub const WITHIN: Duration = Duration::from_secs(10);

/// An app with StarSender's webhook on, whose webhook subscriptions may name a local receiver
/// (none listens: the tests read the events the outbox wrote), and `env` besides.
pub async fn app_with(mut env: Vec<(&'static str, String)>) -> TestApp {
    env.push(("INBOUND_STARSENDER_TOKEN", TOKEN.into()));
    env.push(("WEBHOOK_ALLOW_PRIVATE", "true".into()));
    TestApp::spawn_with(Options {
        env,
        ..Options::default()
    })
    .await
}

pub async fn app() -> TestApp {
    app_with(Vec::new()).await
}

/// `POST /inbound/starsender/{token}`, no JWT.
pub fn hook(app: &TestApp, token: &str) -> reqwest::RequestBuilder {
    app.http
        .post(format!("{}/inbound/starsender/{token}", app.base))
}

/// Posts a JSON message from `from` with `text` and waits until its payload is processed.
/// Returns the payload id.
pub async fn inbound(app: &TestApp, from: &str, text: &str) -> String {
    let (status, body) = app
        .call(hook(app, TOKEN).json(&json!({"from": from, "message": text})))
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["payload_id"].as_str().unwrap().to_owned();
    processed(app, &id).await;
    id
}

/// Waits until payload `id` is processed; returns its `result`.
pub async fn processed(app: &TestApp, id: &str) -> String {
    wait_until(WITHIN, async || {
        let row: Option<(Option<chrono::DateTime<chrono::Utc>>, Option<String>)> =
            sqlx::query_as("SELECT processed_at, result FROM inbound_payloads WHERE id = $1::uuid")
                .bind(id)
                .fetch_optional(&app.db.pool)
                .await
                .unwrap();
        match row {
            Some((Some(_), Some(result))) => Ok(result),
            other => Err(format!("payload {id} not processed: {other:?}")),
        }
    })
    .await
}

/// `GET /inbound/messages{query}` with an ops token: the page's `data`.
pub async fn list(app: &TestApp, query: &str) -> Value {
    let (status, body) = app
        .call(
            app.http
                .get(format!("{}/inbound/messages{query}", app.base))
                .bearer_auth(ops_token()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// The opt-out list's entry of `phone`, if any.
pub async fn suppression(app: &TestApp, phone: &str) -> Option<Value> {
    let (status, body) = app
        .call(app.get(&format!("/suppressions?phone={phone}")))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["items"].as_array().unwrap().first().cloned()
}

/// Subscribes to the opt-out and inbound events, so that the outbox writes them.
pub async fn subscribe(app: &TestApp) {
    let (status, body) = crate::helpers::ops_post(
        app,
        "/webhooks",
        Some(json!({
            "url": "http://127.0.0.1:9/x",
            "events": ["optout.created", "optout.removed", "message.received", "message.cancelled"],
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// The `data` of the events of `kind` the outbox wrote, oldest first.
pub async fn events(app: &TestApp, kind: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT data FROM webhook_events WHERE type = $1 ORDER BY seq")
        .bind(kind)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

/// One series of `GET /metrics` (0 when absent).
pub async fn series(app: &TestApp, name: &str) -> f64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric(&text, name).unwrap_or(0.0)
}
