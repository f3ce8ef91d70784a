//! `/inbound/*` (README "Inbound messages and opt-out keywords"): StarSender's webhook, which no
//! token guards — the secret is in its path — and the list of inbound messages (role `ops`).

use axum::{
    Router,
    extract::{Request, State},
    http::header,
    routing::{get, post},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{
    Gateway, InboundResult, MAX_BODY_BYTES, count, starsender,
    store::{self, InboundMessage, ListFilter},
};
use crate::{
    error::{AppError, AppResult, FieldError},
    http::{
        auth::OpsCaller,
        envelope::{Envelope, Reply},
        extract::{QueryPairs, bytes_within},
        responses::{
            BadRequest, BodyTimeout, Forbidden, Invalid, Unauthorized, Unavailable, error_response,
        },
    },
    messages::phone::PhoneNumber,
    state::AppState,
};

/// The path of StarSender's webhook, before the token.
const STARSENDER_PREFIX: &str = "/inbound/starsender/";

pub fn router() -> Router<AppState> {
    Router::new()
        // Any other method answers as an unknown route does: nothing tells a prober the
        // route exists.
        .route(
            "/inbound/starsender/{token}",
            post(starsender).fallback(unknown_route),
        )
        .route("/inbound/messages", get(list))
}

async fn unknown_route() -> AppError {
    not_found()
}

/// What the router's fallback answers for an unknown route.
fn not_found() -> AppError {
    AppError::NotFound("no such endpoint".into())
}

/// Whether `given` is the token, in time that does not depend on where they differ (both are
/// hashed first, so their lengths do not show either).
pub(super) fn same_token(given: &str, token: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    bool::from(a.ct_eq(&b))
}

/// `404` of the webhook: a wrong token, or none configured.
pub struct UnknownToken;

impl utoipa::IntoResponses for UnknownToken {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        error_response(
            404,
            "Not the token (`INBOUND_STARSENDER_TOKEN`), or none is configured: the same answer as an unknown route",
            &[],
        )
    }
}

/// `413` of the webhook.
pub struct InboundTooLarge;

impl utoipa::IntoResponses for InboundTooLarge {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        error_response(413, "The body is larger than 1 MiB", &[])
    }
}

/// A message as StarSender posts it (JSON, or the same fields as a form); every other field is
/// kept in the stored request as it came.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"from": "628123456789", "message": "STOP", "timestamp": 1796526000}))]
#[allow(dead_code)]
pub struct StarSenderInbound {
    /// The customer's number, any spelling `POST /whatsapp/send` accepts (also as a JSON number);
    /// `…@s.whatsapp.net` and `…@c.us` are taken as their number.
    #[schema(
        value_type = String,
        pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*(?:@(?:s\.whatsapp\.net|c\.us)\s*)?$",
        example = "628123456789"
    )]
    from: String,
    /// The text the customer wrote.
    #[schema(value_type = String)]
    message: String,
    /// When it was written: unix seconds (or milliseconds), or RFC 3339. A value that is no
    /// time is ignored.
    #[schema(value_type = Option<String>)]
    timestamp: Option<String>,
}

/// What the webhook answers: the stored request's id.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InboundReceived {
    /// The stored request (`inbound_payloads`); its job processes it within moments.
    pub payload_id: Uuid,
}

/// StarSender's device webhook. The path's last segment must be `INBOUND_STARSENDER_TOKEN`
/// (anything else, or no token configured: `404`, as an unknown route). The body (≤ 1 MiB) is
/// checked — a JSON object or a form, with `from` and `message` — then stored as it came with
/// its processing job in one transaction; the answer does not wait for the processing. No JWT.
#[utoipa::path(post, path = "/inbound/starsender/{token}", operation_id = "starsender_inbound", tag = "inbound",
    params(("token" = String, Path, description = "`INBOUND_STARSENDER_TOKEN`")),
    request_body(content(
        (StarSenderInbound = "application/json"),
        (StarSenderInbound = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "Stored; processed by a job", body = Envelope<InboundReceived>),
        BadRequest, UnknownToken, InboundTooLarge, BodyTimeout, Invalid, Unavailable))]
pub async fn starsender(
    State(state): State<AppState>,
    req: Request,
) -> AppResult<Reply<InboundReceived>> {
    let given = req
        .uri()
        .path()
        .strip_prefix(STARSENDER_PREFIX)
        .and_then(|raw| percent_encoding::percent_decode_str(raw).decode_utf8().ok());
    let known = match (&state.config.inbound.starsender_token, &given) {
        (Some(token), Some(given)) => same_token(given, token.expose()),
        _ => false,
    };
    if !known {
        count(Gateway::StarSender, InboundResult::BadToken);
        return Err(not_found());
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = bytes_within(req, MAX_BODY_BYTES).await?;
    if let Err(malformed) = starsender::parse(content_type.as_deref(), &body) {
        count(Gateway::StarSender, InboundResult::Malformed);
        return Err(malformed.into());
    }
    let mut tx = state.pool.begin().await?;
    let payload_id =
        store::store_payload(&mut tx, Gateway::StarSender, content_type.as_deref(), &body).await?;
    tx.commit().await?;
    Ok(Reply::ok(InboundReceived { payload_id }, "Received"))
}

/// The default and largest `limit` of the list.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

#[derive(Serialize, utoipa::ToSchema)]
pub struct InboundPage {
    items: Vec<InboundMessage>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<Uuid>,
}

/// Messages customers sent, newest first; filters `from` (any spelling) and `since` (received at
/// or after); `limit` ≤ 500 (default 100); `cursor`. Role `ops`.
#[utoipa::path(get, path = "/inbound/messages", operation_id = "list_inbound_messages", tag = "inbound",
    params(("from" = Option<String>, Query, description = "the sender, any spelling",
            pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$"),
        ("since" = Option<String>, Query, format = DateTime, description = "received at or after (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 100"),
        ("cursor" = Option<String>, Query, format = Uuid, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "A page of inbound messages", body = Envelope<InboundPage>),
        BadRequest, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: OpsCaller,
    q: QueryPairs,
) -> AppResult<Reply<InboundPage>> {
    let mut errors = Vec::new();
    let from = q.get("from").and_then(|s| match PhoneNumber::parse(s) {
        Ok(p) => Some(p.as_str().to_owned()),
        Err(e) => {
            errors.push(FieldError::new("from", e.to_string()));
            None
        }
    });
    let since = q.time("since", &mut errors);
    let limit = q.int("limit", DEFAULT_LIMIT, 1..=MAX_LIMIT, &mut errors);
    let before = q.parsed(
        "cursor",
        |raw| Uuid::parse_str(raw).ok(),
        || "is not a cursor returned by this endpoint".into(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let items = store::list(
        &state.pool,
        &ListFilter {
            from,
            since,
            before,
            limit,
        },
    )
    .await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|m| m.id))
        .flatten();
    let n = items.len();
    Ok(Reply::ok(
        InboundPage { items, next_cursor },
        format!("{n} inbound message(s)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::same_token;

    #[test]
    fn only_the_token_itself_is_the_token() {
        let token = "0123456789abcdef0123456789abcdef";
        assert!(same_token(token, token));
        assert!(!same_token(&token[..31], token));
        assert!(!same_token(&format!("{token}0"), token));
        assert!(!same_token("", token));
        assert!(!same_token(&token.to_uppercase(), token));
    }
}
