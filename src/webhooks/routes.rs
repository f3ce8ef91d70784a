//! `/webhooks`: subscriptions, their deliveries, test events and replays (README "Webhooks",
//! SPEC §12). Role `ops` for every route.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    DeliveryStatus, EventType, MAX_REPLAY, MAX_SUBSCRIPTIONS, Subscription,
    repo::{self, Delivery, DeliveryFilter, Replay},
    request::{validate_new, validate_patch},
};
use crate::{
    error::{AppError, AppResult, FieldError},
    http::{
        auth::OpsCaller,
        envelope::{Envelope, ErrorEnvelope, Reply},
        extract::{Fields, JsonObject, Path, QueryPairs},
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Forbidden, Invalid, NotFound, TooLarge,
            Unauthorized, Unavailable,
        },
    },
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(detail).patch(update).delete(remove))
        .route("/webhooks/{id}/rotate-secret", post(rotate))
        .route("/webhooks/{id}/test", post(test))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/webhooks/{id}/replay", post(replay_range))
        .route("/webhooks/deliveries/{id}/replay", post(replay_one))
}

/// The body of `POST /webhooks` as the OpenAPI document shows it; [`validate_new`] checks it.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"url": "https://dms.example.com/hooks/whatsapp", "events": ["message.sent", "message.failed"], "description": "work-order app"}))]
#[allow(dead_code)]
pub struct NewSubscription {
    /// An absolute `https` URL (plain `http` and private addresses only with
    /// `WEBHOOK_ALLOW_PRIVATE=true`), no user name or password, at most 2,048 characters.
    #[schema(max_length = 2048)]
    url: String,
    /// The event types to receive, at least one.
    #[schema(min_items = 1)]
    events: Vec<EventType>,
    #[schema(max_length = 500)]
    description: Option<String>,
}

/// The body of `PATCH /webhooks/{id}`: any of the fields.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"enabled": true}))]
#[allow(dead_code)]
pub struct SubscriptionPatch {
    #[schema(max_length = 2048)]
    url: Option<String>,
    #[schema(min_items = 1)]
    events: Option<Vec<EventType>>,
    /// `null` clears it.
    #[schema(max_length = 500)]
    description: Option<String>,
    /// `true` enables it again and clears its failure state (nothing missed is resent);
    /// `false` disables it and cancels its pending deliveries.
    enabled: Option<bool>,
}

/// A subscription with its secret: only in the answers of create and rotate.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SubscriptionWithSecret {
    #[serde(flatten)]
    subscription: Subscription,
    /// `whsec_` + base64 of 32 random bytes: the Standard Webhooks signing secret. Shown only
    /// here; keep it.
    secret: String,
}

/// The answer of a rotation.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    id: Uuid,
    /// The new secret (shown only here).
    secret: String,
    /// Until then the old secret signs too (a second signature in `webhook-signature`).
    previous_secret_valid_until: DateTime<Utc>,
}

fn subscription_id(raw: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

fn not_found(raw: &str) -> AppError {
    AppError::NotFound(format!("webhook subscription {raw} not found"))
}

/// Subscribe a receiver to events. The answer carries its signing secret, shown only here and
/// on rotation. At most 50 subscriptions (`422`).
#[utoipa::path(post, path = "/webhooks", operation_id = "create_webhook", tag = "webhooks",
    request_body = NewSubscription,
    responses((status = 201, description = "Subscribed: with its secret", body = Envelope<SubscriptionWithSecret>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<SubscriptionWithSecret>> {
    let valid =
        validate_new(&body, state.config.webhooks.allow_private).map_err(AppError::Validation)?;
    let created = repo::create(
        &state.pool,
        &valid.url,
        &valid.events,
        valid.description.as_deref(),
        &caller.sub,
    )
    .await?
    .ok_or_else(|| {
        AppError::validation(
            "url",
            format!("there are {MAX_SUBSCRIPTIONS} subscriptions already (the most there may be); delete one first"),
        )
    })?;
    tracing::info!(by = caller.sub, id = %created.subscription.id, "webhook subscription created");
    Ok(Reply(
        StatusCode::CREATED,
        SubscriptionWithSecret {
            subscription: created.subscription,
            secret: created.secret,
        },
        "Subscribed; keep the secret, it is not shown again".into(),
    ))
}

/// Every subscription, oldest first (never their secrets).
#[utoipa::path(get, path = "/webhooks", operation_id = "list_webhooks", tag = "webhooks",
    responses((status = 200, description = "The subscriptions", body = Envelope<Vec<Subscription>>),
        Unauthorized, Forbidden, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: OpsCaller,
) -> AppResult<Reply<Vec<Subscription>>> {
    let items = repo::list(&state.pool).await?;
    let n = items.len();
    Ok(Reply::ok(items, format!("{n} subscription(s)")))
}

/// One subscription (never its secret).
#[utoipa::path(get, path = "/webhooks/{id}", operation_id = "get_webhook", tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "the subscription's id")),
    responses((status = 200, description = "The subscription", body = Envelope<Subscription>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    _: OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Subscription>> {
    let id = subscription_id(&raw)?;
    let found = repo::get(&state.pool, id)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    Ok(Reply::ok(found, "Subscription found"))
}

/// Change any of `url`, `events`, `description`, `enabled`. `enabled: true` clears the failure
/// state and resends nothing; `enabled: false` cancels the pending deliveries.
#[utoipa::path(patch, path = "/webhooks/{id}", operation_id = "update_webhook", tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "the subscription's id")),
    request_body = SubscriptionPatch,
    responses((status = 200, description = "Changed", body = Envelope<Subscription>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Forbidden, NotFound, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Subscription>> {
    let id = subscription_id(&raw)?;
    let patch =
        validate_patch(&body, state.config.webhooks.allow_private).map_err(AppError::Validation)?;
    let updated = repo::update(&state.pool, id, &patch)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    tracing::info!(by = caller.sub, %id, "webhook subscription changed");
    Ok(Reply::ok(updated, "Subscription changed"))
}

/// Delete a subscription: its pending deliveries become `cancelled`.
#[utoipa::path(delete, path = "/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "the subscription's id")),
    responses((status = 200, description = "Deleted: the subscription as it was", body = Envelope<Subscription>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Subscription>> {
    let id = subscription_id(&raw)?;
    let deleted = repo::delete(&state.pool, id)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    tracing::warn!(by = caller.sub, %id, "webhook subscription deleted");
    Ok(Reply::ok(deleted, "Subscription deleted"))
}

/// A new signing secret. For 24 hours the old one signs too: every request then carries two
/// signatures, so a receiver can switch secrets without missing one.
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", operation_id = "rotate_webhook_secret", tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "the subscription's id")),
    responses((status = 200, description = "Rotated: the new secret", body = Envelope<RotatedSecret>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<RotatedSecret>> {
    let id = subscription_id(&raw)?;
    let secret = repo::rotate(&state.pool, id)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    tracing::warn!(by = caller.sub, %id, "webhook secret rotated");
    Ok(Reply::ok(
        RotatedSecret {
            id,
            secret,
            previous_secret_valid_until: Utc::now() + super::ROTATION_OVERLAP,
        },
        "Secret rotated; the old one signs too for 24 hours",
    ))
}

/// Send a `webhook.test` event to this subscription only.
#[utoipa::path(post, path = "/webhooks/{id}/test", operation_id = "test_webhook", tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "the subscription's id")),
    responses((status = 202, description = "A test event is queued", body = Envelope<Value>),
        (status = 409, description = "The subscription is disabled", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    _: OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Value>> {
    let id = subscription_id(&raw)?;
    let found = repo::get(&state.pool, id)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    if !found.enabled {
        return Err(AppError::Conflict(format!(
            "webhook subscription {id} is disabled; enable it first"
        )));
    }
    if !repo::test(&state.pool, id).await? {
        return Err(not_found(&raw));
    }
    Ok(Reply::accepted(
        Value::Object(Map::new()),
        "Test event queued",
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    items: Vec<Delivery>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<String>,
}

/// A subscription's deliveries, newest first, each with its attempts; filters `status`, `type`,
/// `since`; `limit` ≤ 500; `cursor`.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "the subscription's id"),
        ("status" = Option<DeliveryStatus>, Query, description = "only deliveries in this state"),
        ("type" = Option<EventType>, Query, description = "only events of this type"),
        ("since" = Option<DateTime<Utc>>, Query, description = "only deliveries made at or after this time (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "A page of deliveries", body = Envelope<DeliveryPage>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    _: OpsCaller,
    Path(raw): Path<String>,
    q: QueryPairs,
) -> AppResult<Reply<DeliveryPage>> {
    let id = subscription_id(&raw)?;
    let mut errors = Vec::new();
    let status = q.parsed("status", DeliveryStatus::parse, status_rule, &mut errors);
    let event_type = q.parsed(
        "type",
        EventType::parse,
        || format!("unknown event type; known: {}", EventType::names()),
        &mut errors,
    );
    let since = q.time("since", &mut errors);
    let limit = q.limit(&mut errors);
    let before_seq = q.parsed(
        "cursor",
        |c| c.parse::<i64>().ok().filter(|seq| *seq > 0),
        || "is not a cursor returned by this endpoint".into(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    if repo::get(&state.pool, id).await?.is_none() {
        return Err(not_found(&raw));
    }
    let filter = DeliveryFilter {
        status,
        event_type,
        since,
        before_seq,
        limit,
    };
    let items = repo::deliveries(&state.pool, id, &filter).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|d| d.seq.to_string()))
        .flatten();
    let n = items.len();
    Ok(Reply::ok(
        DeliveryPage { items, next_cursor },
        format!("{n} delivery(ies)"),
    ))
}

fn status_rule() -> String {
    "must be pending, succeeded, failed or cancelled".into()
}

/// The answer of a replay.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Deliveries queued again.
    replayed: u64,
}

fn replayed(outcome: Replay, what: &str) -> AppResult<Reply<Replayed>> {
    match outcome {
        Replay::Queued(n) => Ok(Reply::accepted(
            Replayed { replayed: n },
            format!("{n} delivery(ies) queued again"),
        )),
        Replay::NotFound => Err(AppError::NotFound(format!("{what} not found"))),
        Replay::Disabled => Err(AppError::Conflict(format!(
            "the subscription of {what} is disabled; enable it first"
        ))),
        Replay::InFlight => Err(AppError::Conflict(format!(
            "{what} is being sent right now"
        ))),
    }
}

/// Send one delivery again now: the same `webhook-id` and body, a fresh timestamp and
/// signature. `409` when its subscription is disabled or it is being sent right now.
#[utoipa::path(post, path = "/webhooks/deliveries/{id}/replay", operation_id = "replay_webhook_delivery", tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "the delivery's id")),
    responses((status = 202, description = "Queued again", body = Envelope<Replayed>),
        (status = 409, description = "The subscription is disabled, or the delivery is being sent right now", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn replay_one(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Replayed>> {
    let what = format!("webhook delivery {raw}");
    let id = Uuid::parse_str(&raw).map_err(|_| AppError::NotFound(format!("{what} not found")))?;
    let outcome = repo::replay_one(&state.pool, id).await?;
    tracing::info!(by = caller.sub, delivery = %id, ?outcome, "webhook delivery replay");
    replayed(outcome, &what)
}

/// The body of `POST /webhooks/{id}/replay`.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"since": "2026-12-01T00:00:00Z", "status": "failed"}))]
#[allow(dead_code)]
pub struct ReplayRange {
    /// Deliveries made at or after this time.
    since: DateTime<Utc>,
    /// … and before this one (default: now).
    until: Option<DateTime<Utc>>,
    /// Only deliveries in this state.
    status: Option<DeliveryStatus>,
}

/// Send again every delivery of the subscription made in `[since, until)` (optionally only
/// those in `status`), oldest first, at most 10,000; those being sent right now are skipped.
#[utoipa::path(post, path = "/webhooks/{id}/replay", operation_id = "replay_webhook_deliveries", tag = "webhooks",
    params(("id" = String, Path, format = Uuid, description = "the subscription's id")),
    request_body = ReplayRange,
    responses((status = 202, description = "Queued again", body = Envelope<Replayed>),
        (status = 409, description = "The subscription is disabled", body = ErrorEnvelope),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Forbidden, NotFound, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn replay_range(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Replayed>> {
    let id = subscription_id(&raw)?;
    let mut f = Fields::new(&body);
    let since = f.optional_time("since");
    if since.is_none() && !f.errors.iter().any(|e| e.field == "since") {
        f.errors.push(FieldError::new("since", "is required"));
    }
    let until = f.optional_time("until");
    let status = f.optional_str("status");
    let mut errors = f.errors;
    let status = status.and_then(|s| {
        let parsed = DeliveryStatus::parse(s);
        if parsed.is_none() {
            errors.push(FieldError::new("status", status_rule()));
        }
        parsed
    });
    if let (Some(s), Some(u)) = (since, until)
        && u <= s
    {
        errors.push(FieldError::new("until", "must be after since"));
    }
    let Some(since) = since.filter(|_| errors.is_empty()) else {
        return Err(AppError::Validation(errors));
    };
    let outcome = repo::replay_range(&state.pool, id, since, until, status).await?;
    tracing::info!(by = caller.sub, %id, ?outcome, max = MAX_REPLAY, "webhook replay");
    replayed(outcome, &format!("webhook subscription {raw}"))
}
