//! The HTTP surface: routers per role, the envelope, auth, request ids, tracing and metrics.

pub mod auth;
pub mod docs;
pub mod envelope;
pub mod extract;
pub mod fields;
pub mod headers;
pub mod health;
pub mod json;
pub mod responses;
pub mod server;

use std::time::Instant;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    timeout::RequestBodyDeadlineLayer,
    trace::TraceLayer,
};

use crate::{error::AppError, state::AppState};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which business routes a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `serve` and `api`: everything.
    Full,
    /// `worker`: health, metrics and (in sandbox mode) the sandbox gateway only.
    Internal,
}

pub fn router(state: AppState, surface: Surface) -> Router {
    let body_timeout = state.config.http.body_timeout;
    let mut app = Router::new()
        .route("/health", get(health::health))
        .route("/health/ready", get(health::ready))
        .merge(crate::reminders::routes::health_router())
        .route("/metrics", get(health::metrics_text));
    if state.config.sandbox() {
        // Both listings are documented: mounted in either gateway's sandbox mode.
        app = app
            .merge(crate::gateway::sandbox::router())
            .merge(crate::gateway::cloud_api::sandbox::list_router());
        if let Some(cloud) = state.cloud_sandbox.clone() {
            match crate::gateway::cloud_api::sandbox::router(cloud) {
                Ok(sandbox) => app = app.merge(sandbox),
                Err(e) => tracing::error!("the Cloud API sandbox cannot start: {e}"),
            }
        }
    }
    if surface == Surface::Full {
        app = app
            .merge(crate::messages::routes::router())
            .merge(crate::customers::routes::router())
            .merge(crate::reminders::routes::router())
            .merge(crate::reminders::report::router())
            .merge(crate::manual::routes::router())
            .merge(crate::ops::routes::router())
            .merge(crate::console::routes::router())
            .merge(crate::policy::routes::router())
            .merge(crate::suppressions::routes::router())
            .merge(crate::templates::routes::router())
            .merge(crate::templates::cloud_api::router())
            .merge(crate::webhooks::routes::router())
            .merge(crate::inbound::routes::router())
            .merge(crate::inbound::cloud_routes::router())
            .merge(crate::admin::alerts::router())
            .merge(crate::segments::routes::router())
            .merge(crate::campaigns::routes::router())
            .merge(docs::router());
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(middleware::from_fn(headers::single_valued))
        .layer(middleware::map_response(envelope::envelope_errors))
        .layer(middleware::map_response(headers::security_headers))
        .layer(middleware::from_fn(record_metrics))
        .layer(CatchPanicLayer::custom(|_| AppError::Internal(anyhow::anyhow!("handler panicked")).into_response()))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or_default()
                .to_owned();
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        // The body reader turns a missed deadline into 408 (`extract`).
        .layer(RequestBodyDeadlineLayer::new(body_timeout))
        .with_state(state)
}

async fn not_found() -> AppError {
    AppError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> Response {
    let body =
        json!({"success": false, "data": {}, "message": "method not allowed on this endpoint"});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// The `method` label: the methods we serve by name, anything a client invents as `other`, so
/// that no request can add a series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `bengkel_http_requests_total` / `_duration_seconds`, labelled by the route template (one
/// `unmatched` for everything else), a [`method_label`] and the status: every label set is
/// bounded by what the code serves, whatever clients send.
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("bengkel_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("bengkel_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
