//! `/campaigns` (SPEC §15), role `ops`: make one (a draft), list them, read one with its steps and
//! results, and start, pause, resume or cancel it (`409` where its status does not allow it).

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use serde::Serialize;
use uuid::Uuid;

use super::{
    Status,
    repo::{self, Campaign, Refused, StepRow},
    request::validate,
    results::{self, VariantResult},
};
use crate::{
    error::{AppError, AppResult},
    http::{
        auth::OpsCaller,
        envelope::{Envelope, ErrorEnvelope, Reply},
        extract::{JsonObject, Path},
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Forbidden, Invalid, NotFound, TooLarge,
            Unauthorized, Unavailable,
        },
    },
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/campaigns", get(list).post(create))
        .route("/campaigns/{id}", get(detail))
        .route("/campaigns/{id}/start", post(start))
        .route("/campaigns/{id}/pause", post(pause))
        .route("/campaigns/{id}/resume", post(resume))
        .route("/campaigns/{id}/cancel", post(cancel))
}

/// A campaign with its steps and its results per step and variant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CampaignDetail {
    #[serde(flatten)]
    pub campaign: Campaign,
    pub steps: Vec<StepRow>,
    pub results: Vec<VariantResult>,
}

fn not_found(raw: &str) -> AppError {
    AppError::NotFound(format!("campaign {raw} not found"))
}

fn campaign_id(raw: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

/// Make a campaign (a draft: nothing is sent until it is started).
#[utoipa::path(post, path = "/campaigns", operation_id = "create_campaign", tag = "campaigns",
    request_body(content = Object, description = "{name, segment_id | segment: {source, filters}, steps: [{variants: [{template_key, weight} | {holdout: true, weight}], delay_days?, only_if?}], start_at?, expires_after? (seconds), send_window? (HH:MM-HH:MM), reminder_type?}"),
    responses((status = 201, description = "Made (draft)", body = Envelope<Campaign>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Campaign>> {
    let new = validate(&body).map_err(AppError::Validation)?;
    let campaign =
        match repo::create(&state.pool, state.config.gateway.kind, &new, &caller.sub).await {
            Ok(c) => c,
            Err(Refused::Invalid(errors)) => return Err(AppError::Validation(errors)),
            Err(Refused::Db(e)) => return Err(e.into()),
        };
    tracing::info!(by = caller.sub, id = %campaign.id, "campaign made");
    Ok(Reply(
        StatusCode::CREATED,
        campaign,
        "Campaign made (draft)".into(),
    ))
}

/// The campaigns, newest first (at most 500).
#[utoipa::path(get, path = "/campaigns", operation_id = "list_campaigns", tag = "campaigns",
    responses((status = 200, description = "The campaigns", body = Envelope<Vec<Campaign>>),
        Unauthorized, Forbidden, Unavailable),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _: OpsCaller) -> AppResult<Reply<Vec<Campaign>>> {
    let items = repo::list(&state.pool).await?;
    let n = items.len();
    Ok(Reply::ok(items, format!("{n} campaign(s)")))
}

/// One campaign: its steps and its results per step and variant.
#[utoipa::path(get, path = "/campaigns/{id}", operation_id = "get_campaign", tag = "campaigns",
    params(("id" = String, Path, format = Uuid, description = "the campaign's id")),
    responses((status = 200, description = "The campaign", body = Envelope<CampaignDetail>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    _: OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<CampaignDetail>> {
    let id = campaign_id(&raw)?;
    let campaign = repo::get(&state.pool, id)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    let steps = repo::steps(&state.pool, id).await?;
    let results = results::of(&state.pool, id).await?;
    Ok(Reply::ok(
        CampaignDetail {
            campaign,
            steps,
            results,
        },
        "Campaign found",
    ))
}

/// The answer of an action: the campaign as it is now.
async fn after(
    state: &AppState,
    id: Uuid,
    raw: &str,
    moved: bool,
    action: &str,
) -> AppResult<Reply<Campaign>> {
    let campaign = repo::get(&state.pool, id)
        .await?
        .ok_or_else(|| not_found(raw))?;
    if !moved {
        return Err(AppError::Conflict(format!(
            "a {} campaign cannot {action}",
            campaign.status
        )));
    }
    let message = format!("Campaign {}", campaign.status);
    Ok(Reply::ok(campaign, message))
}

/// Start a draft: now, or at its `start_at` (`scheduled` until then).
#[utoipa::path(post, path = "/campaigns/{id}/start", operation_id = "start_campaign", tag = "campaigns",
    params(("id" = String, Path, format = Uuid, description = "the campaign's id")),
    responses((status = 200, description = "Started (running or scheduled)", body = Envelope<Campaign>),
        (status = 409, description = "The campaign's status does not allow it", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Campaign>> {
    let id = campaign_id(&raw)?;
    let moved: Option<Status> = repo::start(&state.pool, id).await?;
    tracing::info!(by = caller.sub, %id, ?moved, "campaign start");
    after(&state, id, &raw, moved.is_some(), "start").await
}

/// Pause a scheduled or running campaign: no step starts and its unsent messages wait.
#[utoipa::path(post, path = "/campaigns/{id}/pause", operation_id = "pause_campaign", tag = "campaigns",
    params(("id" = String, Path, format = Uuid, description = "the campaign's id")),
    responses((status = 200, description = "Paused", body = Envelope<Campaign>),
        (status = 409, description = "The campaign's status does not allow it", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Campaign>> {
    let id = campaign_id(&raw)?;
    let parked = repo::pause(&state.pool, id).await?;
    tracing::info!(by = caller.sub, %id, ?parked, "campaign pause");
    after(&state, id, &raw, parked.is_some(), "pause").await
}

/// Resume a paused campaign: its waiting messages are due again.
#[utoipa::path(post, path = "/campaigns/{id}/resume", operation_id = "resume_campaign", tag = "campaigns",
    params(("id" = String, Path, format = Uuid, description = "the campaign's id")),
    responses((status = 200, description = "Resumed", body = Envelope<Campaign>),
        (status = 409, description = "The campaign's status does not allow it", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Campaign>> {
    let id = campaign_id(&raw)?;
    let woken = repo::resume(&state.pool, id, state.config.app_timezone).await?;
    tracing::info!(by = caller.sub, %id, ?woken, "campaign resume");
    after(&state, id, &raw, woken.is_some(), "resume").await
}

/// Cancel a campaign that has not ended: its steps not started and its unsent messages are
/// cancelled (a message being sent right now goes).
#[utoipa::path(post, path = "/campaigns/{id}/cancel", operation_id = "cancel_campaign", tag = "campaigns",
    params(("id" = String, Path, format = Uuid, description = "the campaign's id")),
    responses((status = 200, description = "Cancelled", body = Envelope<Campaign>),
        (status = 409, description = "The campaign's status does not allow it", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Campaign>> {
    let id = campaign_id(&raw)?;
    let cancelled = repo::cancel(&state.pool, id).await?;
    tracing::info!(by = caller.sub, %id, ?cancelled, "campaign cancel");
    after(&state, id, &raw, cancelled.is_some(), "be cancelled").await
}
