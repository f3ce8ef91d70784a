//! The sandbox gateway (README "Commands"): a StarSender-compatible endpoint served by the process itself,
//! used when no `STARSENDER_API_KEY` is set, so that the whole path — queue, throttle, HTTP
//! client, bookkeeping — runs for real. What it receives is kept in `sandbox_messages`, so every
//! process on the database sees what every other one sent.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    error::AppResult,
    http::{
        docs::{BadRequest, Invalid, Unavailable},
        envelope::{Envelope, Reply},
        extract::QueryPairs,
    },
    state::AppState,
};

pub const SEND_PATH: &str = "/sandbox/starsender/send";
/// The sandbox accepts this key (any non-empty key, really; this is the one we send).
pub const SANDBOX_KEY: &str = "sandbox";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(SEND_PATH, post(receive))
        .route("/sandbox/starsender/messages", get(list))
}

/// Answers like StarSender: `{"success": true, "data": {...}, "message": "..."}`.
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let fail = |status: StatusCode, message: &str| {
        (status, Json(json!({"success": false, "message": message})))
    };
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    if !authorized {
        return fail(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: missing device API key",
        );
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "body must be a JSON object");
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
        ),
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

/// What the sandbox received, newest first; `?to=` filters by number, `?limit=` (≤ 500).
#[utoipa::path(get, path = "/sandbox/starsender/messages", operation_id = "list_sandbox_messages", tag = "sandbox",
    params(("to" = Option<String>, Query, description = "only this (normalized) number, e.g. `628123456789`"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 100")),
    responses((status = 200, description = "Messages the sandbox gateway received", body = Envelope<Vec<SandboxMessage>>),
        BadRequest, Invalid, Unavailable))]
pub async fn list(
    State(state): State<AppState>,
    q: QueryPairs,
) -> AppResult<Reply<Vec<SandboxMessage>>> {
    let limit = match q.get("limit") {
        None => 100,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| {
                crate::error::AppError::validation("limit", "must be an integer between 1 and 500")
            })?,
    };
    let rows: Vec<SandboxMessage> = sqlx::query_as(
        "SELECT id, received_at, message_type, to_phone AS to, body, file_url AS file FROM sandbox_messages
         WHERE ($1::text IS NULL OR to_phone = $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(q.get("to"))
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let n = rows.len();
    Ok(Reply::ok(
        rows,
        format!("{n} message(s) received by the sandbox gateway"),
    ))
}
