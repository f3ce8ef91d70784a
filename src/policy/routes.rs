//! `/ops/sender`, `/ops/policy`, `/ops/held` (README "Delivery policy"), role `ops`.

use axum::{Router, extract::State, routing::get};
use serde::Serialize;
use uuid::Uuid;

use super::{
    sender::{self, SenderState},
    settings::{self, Change, Settings},
};
use crate::{
    error::{AppError, AppResult},
    http::{
        auth::OpsCaller,
        envelope::{Envelope, Reply},
        extract::{JsonObject, QueryPairs},
        responses::{
            BadRequest, BodyTimeout, Forbidden, Invalid, TooLarge, Unauthorized, Unavailable,
        },
    },
    messages::read::{self, HeldMessage},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ops/sender", get(sender_state))
        .route("/ops/policy", get(policy).put(change_policy))
        .route("/ops/held", get(held))
}

fn missing() -> AppError {
    AppError::Unavailable("the delivery policy is not set up yet (migrations pending)".into())
}

/// The sender: configured and effective rate, the gateway's `Retry-After` hold, the circuit.
#[utoipa::path(get, path = "/ops/sender", operation_id = "get_sender", tag = "ops",
    responses((status = 200, description = "The sender's state, shared by every process", body = Envelope<SenderState>),
        Unauthorized, Forbidden, Unavailable),
    security(("bearer" = [])))]
pub async fn sender_state(
    State(state): State<AppState>,
    _: OpsCaller,
) -> AppResult<Reply<SenderState>> {
    let s = sender::state(&state.pool).await?.ok_or_else(missing)?;
    Ok(Reply::ok(s, "Sender"))
}

/// The delivery policy's settings, as every process follows them.
#[utoipa::path(get, path = "/ops/policy", operation_id = "get_policy", tag = "ops",
    responses((status = 200, description = "The settings", body = Envelope<Settings>),
        Unauthorized, Forbidden, Unavailable),
    security(("bearer" = [])))]
pub async fn policy(State(state): State<AppState>, _: OpsCaller) -> AppResult<Reply<Settings>> {
    let s = settings::load(&state.pool).await?.ok_or_else(missing)?;
    Ok(Reply::ok(s, "Delivery policy"))
}

/// The body of `PUT /ops/policy`: any subset of the settings.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PolicyChange {
    /// `HH:MM-HH:MM` in the business time zone (`24:00` may end it; it may cross midnight);
    /// `00:00-24:00` = no quiet hours.
    #[schema(example = "07:00-21:00")]
    send_window: Option<String>,
    #[schema(minimum = 0, maximum = 86400)]
    recipient_min_interval_secs: Option<u32>,
    /// Gateway calls per second for the whole cluster: 0 = no limit, else from 0.05 (the floor:
    /// anything between 0 and 0.05 is a `422`) to 10000.
    #[schema(minimum = 0, maximum = 10000)]
    rate_per_second: Option<f64>,
    #[schema(minimum = 1, maximum = 10000)]
    burst: Option<u32>,
    #[schema(minimum = 1, maximum = 100000)]
    circuit_failure_threshold: Option<u32>,
}

/// Changes any subset of the settings (`422` for an invalid field, and then nothing changes).
/// Every process follows within 2 s; messages held by the window or the spacing are looked at
/// again at once.
#[utoipa::path(put, path = "/ops/policy", operation_id = "change_policy", tag = "ops",
    request_body = PolicyChange,
    responses((status = 200, description = "The new settings", body = Envelope<Settings>),
        BadRequest, Unauthorized, Forbidden, Invalid, TooLarge, BodyTimeout, Unavailable),
    security(("bearer" = [])))]
pub async fn change_policy(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Settings>> {
    let change =
        Change::from_json(&serde_json::Value::Object(body)).map_err(AppError::Validation)?;
    let s = settings::update(&state.pool, &change, &caller.sub)
        .await?
        .ok_or_else(missing)?;
    tracing::warn!(by = caller.sub, ?change, "delivery policy changed");
    // Once every process follows the change, what the window or the spacing held is looked at
    // again.
    let pool = state.pool.clone();
    tokio::spawn(async move {
        tokio::time::sleep(super::FOLLOWED_WITHIN).await;
        match super::wake_held(&pool).await {
            Ok(n) => tracing::info!(
                woken = n,
                "held messages looked at again after a policy change"
            ),
            Err(e) => tracing::warn!("waking held messages after a policy change failed: {e}"),
        }
    });
    Ok(Reply::ok(s, "Delivery policy changed"))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HeldPage {
    items: Vec<HeldMessage>,
    next_cursor: Option<Uuid>,
}

/// Unsent messages the delivery policy holds back, newest first, with why and until when.
#[utoipa::path(get, path = "/ops/held", operation_id = "list_held", tag = "ops",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 500),
        ("cursor" = Option<String>, Query, format = Uuid, description = "the `next_cursor` of the previous page")),
    responses((status = 200, description = "Held messages", body = Envelope<HeldPage>),
        BadRequest, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn held(
    State(state): State<AppState>,
    _: OpsCaller,
    q: QueryPairs,
) -> AppResult<Reply<HeldPage>> {
    let mut errors = Vec::new();
    let (limit, before) = q.page(&mut errors);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let items = read::held(&state.pool, before, limit).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|m| m.id))
        .flatten();
    Ok(Reply::ok(HeldPage { items, next_cursor }, "Held messages"))
}
