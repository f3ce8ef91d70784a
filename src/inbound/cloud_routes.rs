//! Meta's app webhook for the Cloud API (SPEC §13 "Inbound"): `GET /inbound/cloud-api` answers
//! the subscription check, `POST /inbound/cloud-api` takes status and message notifications. No
//! JWT: the signature (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body with the app secret)
//! is the authentication. A right one is stored as it came with its processing job and answered
//! at once; the processing (statuses → receipts, messages → inbound) is the job's.

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::{
    Gateway, InboundResult, MAX_BODY_BYTES, count,
    routes::{InboundReceived, InboundTooLarge, same_token},
    store,
};
use crate::{
    error::{AppError, AppResult},
    gateway::cloud_api::payload::{SIGNATURE_HEADER, verify},
    http::{
        envelope::{Envelope, Reply},
        extract::{QueryPairs, bytes_within},
        responses::{
            BadRequest, BodyTimeout, Forbidden, Invalid, NotFound, Unauthorized, Unavailable,
        },
    },
    state::AppState,
};

pub const PATH: &str = "/inbound/cloud-api";

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(verify_subscription).post(notification))
}

/// Meta's subscription check: `hub.mode=subscribe` and `hub.verify_token` =
/// `CLOUD_API_VERIFY_TOKEN` → `200` with `hub.challenge` as the body; anything else `403`.
#[utoipa::path(get, path = "/inbound/cloud-api", operation_id = "cloud_api_verify", tag = "inbound",
    params(("hub.mode" = Option<String>, Query, description = "`subscribe`"),
        ("hub.verify_token" = Option<String>, Query, description = "`CLOUD_API_VERIFY_TOKEN`"),
        ("hub.challenge" = Option<String>, Query, description = "echoed")),
    responses((status = 200, description = "The challenge, as plain text", body = String, content_type = "text/plain"),
        BadRequest, Forbidden, Invalid))]
pub async fn verify_subscription(State(state): State<AppState>, q: QueryPairs) -> Response {
    let token = state.config.gateway.cloud.verify_token.as_ref();
    let subscribe = q.get("hub.mode") == Some("subscribe");
    let given = q.get("hub.verify_token");
    match (token, given, q.get("hub.challenge")) {
        (Some(token), Some(given), Some(challenge))
            if subscribe && same_token(given, token.expose()) =>
        {
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                challenge.to_owned(),
            )
                .into_response()
        }
        _ => AppError::Forbidden("not a subscription check with the verify token".into())
            .into_response(),
    }
}

/// A notification from Meta (statuses and messages). The signature is checked over the raw
/// bytes (≤ 1 MiB) in constant time: wrong or missing → `401`, nothing stored. Right → stored
/// with its job and `200` at once. `404` when no app secret is configured.
#[utoipa::path(post, path = "/inbound/cloud-api", operation_id = "cloud_api_notification", tag = "inbound",
    params(("X-Hub-Signature-256" = String, Header, description = "`sha256=` + hex HMAC-SHA256 of the raw body with the app secret")),
    request_body(content = Object, content_type = "application/json",
        description = "Meta's webhook envelope: {object, entry: [{id, changes: [{field, value: {metadata, statuses?, messages?}}]}]}"),
    responses((status = 200, description = "Stored; processed by a job", body = Envelope<InboundReceived>),
        Unauthorized, NotFound, InboundTooLarge, BodyTimeout, Unavailable))]
pub async fn notification(
    State(state): State<AppState>,
    req: Request,
) -> AppResult<Reply<InboundReceived>> {
    let Some(secret) = state.cloud_app_secret.clone() else {
        return Err(AppError::NotFound("no such endpoint".into()));
    };
    let signature = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = bytes_within(req, MAX_BODY_BYTES).await?;
    if !verify(secret.expose().as_bytes(), &body, signature.as_deref()) {
        count(Gateway::CloudApi, InboundResult::BadSignature);
        return Err(AppError::Unauthorized(format!(
            "{SIGNATURE_HEADER} is missing or does not match the body"
        )));
    }
    let mut tx = state.pool.begin().await?;
    let payload_id =
        store::store_payload(&mut tx, Gateway::CloudApi, content_type.as_deref(), &body).await?;
    tx.commit().await?;
    Ok(Reply::ok(InboundReceived { payload_id }, "Received"))
}
