//! Calls with the ops role (SPEC §8).

use reqwest::Method;
use serde_json::Value;

use super::{TestApp, ops_token};

/// A request to `path` with an ops token.
pub fn ops_request(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(ops_token())
}

/// An ops call with an optional JSON body: status and envelope.
pub async fn ops_call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = ops_request(app, method, path);
    if let Some(b) = body {
        req = req.json(&b);
    }
    app.call(req).await
}

/// An ops call that must answer `200`: its `data`.
pub async fn ops_ok(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, body) = ops_call(app, method, path, body).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["data"].clone()
}

pub async fn ops_get(app: &TestApp, path: &str) -> Value {
    ops_ok(app, Method::GET, path, None).await
}

pub async fn ops_post(app: &TestApp, path: &str, body: Option<Value>) -> (u16, Value) {
    ops_call(app, Method::POST, path, body).await
}

/// Pauses the send queue (every process stops taking its jobs within 2 s).
pub async fn pause_sends(app: &TestApp) {
    ops_ok(app, Method::POST, "/ops/queues/whatsapp-send/pause", None).await;
}

pub async fn resume_sends(app: &TestApp) {
    ops_ok(app, Method::POST, "/ops/queues/whatsapp-send/resume", None).await;
}
