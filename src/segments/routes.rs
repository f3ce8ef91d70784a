//! `/segments` (SPEC §15), role `ops`: save, list, read and delete segments, and preview who a
//! segment reaches without storing anything.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use serde::Serialize;
use uuid::Uuid;

use super::{
    Filters, Recipient, Segment, Source,
    query::{self, PREVIEW, Spec},
    request::validate,
};
use crate::{
    error::{AppError, AppResult},
    http::{
        auth::OpsCaller,
        envelope::{Envelope, Reply},
        extract::{JsonObject, Path},
        fields::Fields,
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Forbidden, Invalid, NotFound, TooLarge,
            Unauthorized, Unavailable,
        },
    },
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/segments", get(list).post(create))
        .route("/segments/preview", post(preview))
        .route("/segments/{id}", get(detail).delete(remove))
}

/// The body of `POST /segments` as the OpenAPI document shows it.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"name": "Avanza due in January", "source": "vehicles", "filters": {"model": "avanza", "due_from": "2027-01-01", "due_to": "2027-01-31"}}))]
#[allow(dead_code)]
pub struct NewSegment {
    /// 1 to 100 characters; unique (case-insensitive).
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Default `both`.
    source: Option<Source>,
    filters: Option<Filters>,
}

/// The body of `POST /segments/preview`: a saved segment, or one given here.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"source": "both", "filters": {"due_from": "2027-01-01", "due_to": "2027-01-31"}}))]
#[schema(as = SegmentPreviewRequest)]
#[allow(dead_code)]
pub struct PreviewRequest {
    /// A saved segment (then `source` and `filters` must not be given).
    #[schema(format = Uuid)]
    segment_id: Option<String>,
    source: Option<Source>,
    filters: Option<Filters>,
    /// For a reminder-type campaign: numbers opted out of reminders are left out too.
    reminder_type: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = SegmentPreview)]
pub struct Preview {
    /// Recipients: one per number, opted-out numbers left out.
    pub count: i64,
    /// The first 20, earliest due first.
    pub recipients: Vec<Recipient>,
}

fn not_found(raw: &str) -> AppError {
    AppError::NotFound(format!("segment {raw} not found"))
}

fn segment_id(raw: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

const COLUMNS: &str = "id, name, source, filters, created_by, created_at";

async fn find(state: &AppState, id: Uuid) -> AppResult<Option<Segment>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segments WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?)
}

/// Save a segment.
#[utoipa::path(post, path = "/segments", operation_id = "create_segment", tag = "segments",
    request_body = NewSegment,
    responses((status = 201, description = "Saved", body = Envelope<Segment>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Segment>> {
    let valid = validate(&body, true).map_err(AppError::Validation)?;
    let name = valid.name.unwrap_or_default();
    let saved: Option<Segment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO segments (id, name, source, filters, created_by)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (lower(name)) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(&name)
    .bind(valid.source.as_str())
    .bind(sqlx::types::Json(&valid.filters))
    .bind(&caller.sub)
    .fetch_optional(&state.pool)
    .await?;
    let saved = saved.ok_or_else(|| {
        AppError::validation("name", format!("a segment named {name:?} exists already"))
    })?;
    tracing::info!(by = caller.sub, id = %saved.id, "segment saved");
    Ok(Reply(StatusCode::CREATED, saved, "Segment saved".into()))
}

/// Every segment, newest first.
#[utoipa::path(get, path = "/segments", operation_id = "list_segments", tag = "segments",
    responses((status = 200, description = "The segments", body = Envelope<Vec<Segment>>),
        Unauthorized, Forbidden, Unavailable),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _: OpsCaller) -> AppResult<Reply<Vec<Segment>>> {
    let items: Vec<Segment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segments ORDER BY created_at DESC, id DESC"
    )))
    .fetch_all(&state.pool)
    .await?;
    let n = items.len();
    Ok(Reply::ok(items, format!("{n} segment(s)")))
}

/// One segment.
#[utoipa::path(get, path = "/segments/{id}", operation_id = "get_segment", tag = "segments",
    params(("id" = String, Path, format = Uuid, description = "the segment's id")),
    responses((status = 200, description = "The segment", body = Envelope<Segment>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    _: OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Segment>> {
    let found = find(&state, segment_id(&raw)?)
        .await?
        .ok_or_else(|| not_found(&raw))?;
    Ok(Reply::ok(found, "Segment found"))
}

/// Delete a segment (campaigns already started keep their recipients).
#[utoipa::path(delete, path = "/segments/{id}", operation_id = "delete_segment", tag = "segments",
    params(("id" = String, Path, format = Uuid, description = "the segment's id")),
    responses((status = 200, description = "Deleted: the segment as it was", body = Envelope<Segment>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Segment>> {
    let id = segment_id(&raw)?;
    let deleted: Segment = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM segments WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| not_found(&raw))?;
    tracing::info!(by = caller.sub, %id, "segment deleted");
    Ok(Reply::ok(deleted, "Segment deleted"))
}

/// Who a segment reaches now: the count and the first 20 (earliest due first). Nothing is
/// stored.
#[utoipa::path(post, path = "/segments/preview", operation_id = "preview_segment", tag = "segments",
    request_body = PreviewRequest,
    responses((status = 200, description = "The recipients", body = Envelope<Preview>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Forbidden, NotFound, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn preview(
    State(state): State<AppState>,
    _: OpsCaller,
    JsonObject(mut body): JsonObject,
) -> AppResult<Reply<Preview>> {
    let mut f = Fields::new(&body);
    let reminder_type = f.optional_bool("reminder_type").unwrap_or(false);
    let saved = f.optional_str("segment_id").map(str::to_owned);
    let mut errors = f.errors;
    body.remove("reminder_type");
    let (source, filters) = match saved {
        Some(raw) => {
            if body.contains_key("source") || body.contains_key("filters") {
                errors.push(crate::error::FieldError::new(
                    "segment_id",
                    "give a segment_id or a source and filters, not both",
                ));
                return Err(AppError::Validation(errors));
            }
            if !errors.is_empty() {
                return Err(AppError::Validation(errors));
            }
            let segment = find(&state, segment_id(&raw)?)
                .await?
                .ok_or_else(|| not_found(&raw))?;
            let source = Source::parse(&segment.source).unwrap_or_default();
            (source, segment.filters.0)
        }
        None => {
            body.remove("segment_id");
            match validate(&body, false) {
                Ok(v) if errors.is_empty() => (v.source, v.filters),
                Ok(_) => return Err(AppError::Validation(errors)),
                Err(more) => {
                    errors.extend(more);
                    return Err(AppError::Validation(errors));
                }
            }
        }
    };
    let spec = Spec {
        source,
        filters: &filters,
        reminder_type,
        interval_months: state.config.service_interval_months,
    };
    let (count, recipients) = query::preview(&state.pool, &spec).await?;
    let shown = recipients.len().min(PREVIEW as usize);
    Ok(Reply::ok(
        Preview { count, recipients },
        format!("{count} recipient(s); the first {shown} listed"),
    ))
}
