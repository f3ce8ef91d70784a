//! `/health`, `/health/ready` and `/metrics`: no token needed.

use std::time::Duration;

use axum::{extract::State, response::IntoResponse};
use serde_json::json;

use crate::{
    error::AppError,
    http::envelope::{Envelope, ErrorEnvelope, Reply},
    state::AppState,
};

/// `data` of `GET /health` (`{"status": "ok"}`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Alive {
    #[schema(example = "ok")]
    status: String,
}

/// `data` of `GET /health/ready` (`{"status": "ready", "database": "ok"}`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Ready {
    #[schema(example = "ready")]
    status: String,
    #[schema(example = "ok")]
    database: String,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "health",
    responses((status = 200, description = "Alive", body = Envelope<Alive>)))]
pub async fn health() -> Reply<serde_json::Value> {
    Reply::ok(json!({"status": "ok"}), "alive")
}

/// Readiness: 200 when the database answers and is migrated, else 503.
#[utoipa::path(get, path = "/health/ready", operation_id = "ready", tag = "health",
    responses((status = 200, description = "Ready", body = Envelope<Ready>),
        (status = 503, description = "The database is unreachable or not migrated", body = ErrorEnvelope)))]
pub async fn ready(State(state): State<AppState>) -> Result<Reply<serde_json::Value>, AppError> {
    let check =
        tokio::time::timeout(Duration::from_secs(3), crate::db::is_ready(&state.pool)).await;
    if matches!(check, Ok(true)) {
        Ok(Reply::ok(
            json!({"status": "ready", "database": "ok"}),
            "ready",
        ))
    } else {
        Err(AppError::Unavailable(
            "database unreachable or not migrated".into(),
        ))
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
