//! The sandbox gateway (README "Commands"): a StarSender-compatible endpoint served by the process itself,
//! used when no `STARSENDER_API_KEY` is set, so that the whole path — queue, throttle, HTTP
//! client, bookkeeping — runs for real. What it receives is kept in `sandbox_messages`, so every
//! process on the database sees what every other one sent.
//!
//! The process listens on `0.0.0.0` by default, so neither end is open: the send endpoint takes
//! only the key this process generated at start-up and gave its own gateway client (each process
//! sends to its own sandbox), and the listing — every body and phone number — needs a token.

use axum::{
    Json, Router,
    extract::{FromRequest, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    config::Secret,
    error::AppResult,
    http::{
        auth::Caller,
        envelope::{Envelope, Reply},
        extract::{JsonObject, QueryPairs},
        responses::{BadRequest, Invalid, Unauthorized, Unavailable},
    },
    state::AppState,
};

pub const SEND_PATH: &str = "/sandbox/starsender/send";

/// A fresh random key for this process's sandbox (256 bits).
pub fn new_key() -> Secret {
    Secret::new(format!(
        "sandbox-{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// Compares in time that does not depend on where the inputs differ.
pub(crate) fn same_key(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(SEND_PATH, post(receive))
        .route("/sandbox/starsender/messages", get(list))
}

/// Answers like StarSender: `{"success": true, "data": {...}, "message": "..."}`. Only this
/// process's key is accepted; the body is read after the key is checked.
async fn receive(State(state): State<AppState>, req: Request) -> Response {
    let fail = |status: StatusCode, message: &str| {
        (
            status,
            Json(json!({"success": false, "data": {}, "message": message})),
        )
            .into_response()
    };
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| same_key(v.as_bytes(), state.sandbox_key.expose().as_bytes()));
    if !authorized {
        return fail(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: missing or wrong device API key",
        );
    }
    let req = match JsonObject::from_request(req, &state).await {
        Ok(JsonObject(req)) => req,
        Err(e) => return e.into_response(),
    };
    let text = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_owned);
    let (Some(message_type), Some(to), Some(body)) =
        (text("messageType"), text("to"), text("body"))
    else {
        return fail(
            StatusCode::BAD_REQUEST,
            "messageType, to and body are required",
        );
    };
    let file = text("file");
    if !matches!(message_type.as_str(), "text" | "media")
        || (message_type == "media") != file.is_some()
    {
        return fail(
            StatusCode::BAD_REQUEST,
            "messageType must be text, or media with a file",
        );
    }
    let stored: Result<i64, _> = sqlx::query_scalar(
        "INSERT INTO sandbox_messages (message_type, to_phone, body, file_url) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&message_type)
    .bind(&to)
    .bind(&body)
    .bind(&file)
    .fetch_one(&state.pool)
    .await;
    match stored {
        Ok(id) => (
            StatusCode::OK,
            Json(
                json!({"success": true, "data": {"messageId": format!("sandbox-{id}")}, "message": "Message sent (sandbox)"}),
            ),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!("sandbox could not store a message: {e}");
            fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox storage unavailable",
            )
        }
    }
}

#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SandboxMessage {
    id: i64,
    received_at: DateTime<Utc>,
    #[serde(rename = "messageType")]
    message_type: String,
    to: String,
    body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
}

/// What the sandbox received, newest first; `?to=` filters by number, `?limit=` (≤ 500). Any
/// token (the bodies and numbers are the workshop's customers').
#[utoipa::path(get, path = "/sandbox/starsender/messages", operation_id = "list_sandbox_messages", tag = "sandbox",
    params(("to" = Option<String>, Query, description = "only this (normalized) number, e.g. `628123456789`"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 100")),
    responses((status = 200, description = "Messages the sandbox gateway received", body = Envelope<Vec<SandboxMessage>>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<Vec<SandboxMessage>>> {
    let limit = q.limit_or(100)?;
    let rows: Vec<SandboxMessage> = sqlx::query_as(
        "SELECT id, received_at, message_type, to_phone AS to, body, file_url AS file FROM sandbox_messages
         WHERE NOT starts_with(message_type, $3) AND ($1::text IS NULL OR to_phone = $1)
         ORDER BY id DESC LIMIT $2",
    )
    .bind(q.get("to"))
    .bind(limit)
    // The Cloud API sandbox's rows are listed by it.
    .bind(super::cloud_api::sandbox::MESSAGE_TYPE_PREFIX)
    .fetch_all(&state.pool)
    .await?;
    let n = rows.len();
    Ok(Reply::ok(
        rows,
        format!("{n} message(s) received by the sandbox gateway"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_key_matches_and_keys_differ_per_process() {
        let key = new_key();
        assert!(same_key(key.expose().as_bytes(), key.expose().as_bytes()));
        assert!(!same_key(b"sandbox", key.expose().as_bytes()));
        assert!(!same_key(b"", key.expose().as_bytes()));
        assert_ne!(new_key(), key);
    }
}
