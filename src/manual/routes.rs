//! `/manual-whatsapp` (README "Manual WhatsApp customers"; seed MANUAL_WHATSAPP_DOCUMENTATION.md field names inside our
//! envelope).

use std::collections::HashSet;

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, patch, post},
};
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Input, Record, input, repo, sends};
use crate::{
    error::{AppError, AppResult, FieldError},
    http::{
        auth::Caller,
        envelope::{Envelope, ErrorEnvelope, Reply},
        extract::{BulkJson, JsonObject, Path, QueryPairs},
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Invalid, NotFound, TooLarge, Unauthorized,
            Unavailable,
        },
    },
    reminders::business_date,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/manual-whatsapp", post(create).get(list))
        .route("/manual-whatsapp/", post(create).get(list))
        .route("/manual-whatsapp/bulk-import", post(bulk_import))
        .route(
            "/manual-whatsapp/send-reminders",
            post(sends::send_reminders),
        )
        .route(
            "/manual-whatsapp/send-custom-message",
            post(sends::send_custom_message),
        )
        .route("/manual-whatsapp/stats/summary", get(stats))
        .route("/manual-whatsapp/by-nopol/{nopol}", get(by_nopol))
        .route(
            "/manual-whatsapp/{record_id}",
            get(detail).put(update).delete(remove),
        )
        .route(
            "/manual-whatsapp/{record_id}/toggle-active",
            patch(toggle_active),
        )
        .route(
            "/manual-whatsapp/{record_id}/send-reminder",
            post(sends::send_reminder),
        )
}

pub(super) fn record_id(raw: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound(format!("record {raw} not found")))
}

fn nopol_taken(e: sqlx::Error) -> AppError {
    match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("manual_whatsapp_nopol") => {
            AppError::Conflict("a record with this nopol already exists".into())
        }
        _ => e.into(),
    }
}

pub(super) async fn find(state: &AppState, id: Uuid) -> AppResult<Record> {
    repo::find(&state.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("record {id} not found")))
}

/// Create a record; `no_hp` is normalized; a `nopol` that exists → 409.
#[utoipa::path(post, path = "/manual-whatsapp/", operation_id = "create_manual_record", tag = "manual-whatsapp",
    request_body = super::NewRecord,
    responses((status = 201, description = "Created", body = Envelope<Record>),
        (status = 409, description = "A record with this `nopol` exists", body = ErrorEnvelope),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _: Caller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Record>> {
    let item = input(&body, true).map_err(AppError::Validation)?;
    let mut conn = state.pool.acquire().await?;
    let id = repo::insert(&mut conn, std::slice::from_ref(&item)).await?[0]
        .ok_or_else(|| AppError::Conflict("a record with this nopol already exists".into()))?;
    drop(conn);
    let record = find(&state, id).await?;
    Ok(Reply(StatusCode::CREATED, record, "Record created".into()))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecordList {
    total: i64,
    active: i64,
    inactive: i64,
    data: Vec<Record>,
}

/// Every record (`active_only=true`: active ones), with totals; `limit` (≤ 1000, default 1000)
/// and `offset`.
#[utoipa::path(get, path = "/manual-whatsapp/", operation_id = "list_manual_records", tag = "manual-whatsapp",
    params(("active_only" = Option<bool>, Query, description = "`true`/`1` or `false`/`0` (default)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "default 1000"),
        ("offset" = Option<i64>, Query, minimum = 0, maximum = 1000000000, description = "default 0")),
    responses((status = 200, description = "The records with totals", body = Envelope<RecordList>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<RecordList>> {
    let mut errors = Vec::new();
    let active_only = q.flag("active_only", false, &mut errors);
    let limit = q.int("limit", 1000, 1..=1000, &mut errors);
    let offset = q.int("offset", 0, 0..=1_000_000_000, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let (total, active) = repo::counts(&state.pool).await?;
    let data = repo::list(&state.pool, active_only, limit, offset).await?;
    Ok(Reply::ok(
        RecordList {
            total,
            active,
            inactive: total - active,
            data,
        },
        "Manual WhatsApp records",
    ))
}

/// One record by id.
#[utoipa::path(get, path = "/manual-whatsapp/{record_id}", operation_id = "get_manual_record", tag = "manual-whatsapp",
    params(("record_id" = String, Path, format = Uuid, description = "the record id")),
    responses((status = 200, description = "The record", body = Envelope<Record>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Record>> {
    let record = find(&state, record_id(&raw)?).await?;
    Ok(Reply::ok(record, "Record"))
}

/// One record by number plate (case-insensitive).
#[utoipa::path(get, path = "/manual-whatsapp/by-nopol/{nopol}", operation_id = "get_manual_record_by_nopol", tag = "manual-whatsapp",
    params(("nopol" = String, Path, description = "the number plate (case-insensitive)")),
    responses((status = 200, description = "The record", body = Envelope<Record>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn by_nopol(
    State(state): State<AppState>,
    _: Caller,
    Path(nopol): Path<String>,
) -> AppResult<Reply<Record>> {
    let found = repo::find_by_nopol(&state.pool, nopol.trim()).await?;
    let record =
        found.ok_or_else(|| AppError::NotFound(format!("no record with nopol {nopol}")))?;
    Ok(Reply::ok(record, "Record"))
}

/// Changes the fields given (all optional; `null` clears the optional ones).
#[utoipa::path(put, path = "/manual-whatsapp/{record_id}", operation_id = "update_manual_record", tag = "manual-whatsapp",
    params(("record_id" = String, Path, format = Uuid, description = "the record id")),
    request_body = super::RecordChanges,
    responses((status = 200, description = "The changed record", body = Envelope<Record>),
        (status = 409, description = "Another record has this `nopol`", body = ErrorEnvelope),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, NotFound, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Record>> {
    let id = record_id(&raw)?;
    let p = input(&body, false).map_err(AppError::Validation)?;
    if !repo::update(&state.pool, id, &p)
        .await
        .map_err(nopol_taken)?
    {
        return Err(AppError::NotFound(format!("record {id} not found")));
    }
    Ok(Reply::ok(find(&state, id).await?, "Record updated"))
}

/// Flips `is_active` between 1 and 0.
#[utoipa::path(patch, path = "/manual-whatsapp/{record_id}/toggle-active", operation_id = "toggle_manual_record", tag = "manual-whatsapp",
    params(("record_id" = String, Path, format = Uuid, description = "the record id")),
    responses((status = 200, description = "The changed record", body = Envelope<Record>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn toggle_active(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Record>> {
    let id = record_id(&raw)?;
    if !repo::toggle_active(&state.pool, id).await? {
        return Err(AppError::NotFound(format!("record {id} not found")));
    }
    Ok(Reply::ok(find(&state, id).await?, "Status aktif diubah"))
}

/// Deletes a record (its reminder log goes with it; its messages are kept). The seed answered
/// `204`; here the envelope says what was deleted.
#[utoipa::path(delete, path = "/manual-whatsapp/{record_id}", operation_id = "delete_manual_record", tag = "manual-whatsapp",
    params(("record_id" = String, Path, format = Uuid, description = "the record id")),
    responses((status = 200, description = "Deleted", body = Envelope<RecordDeleted>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
) -> AppResult<Reply<RecordDeleted>> {
    let id = record_id(&raw)?;
    if !repo::delete(&state.pool, id).await? {
        return Err(AppError::NotFound(format!("record {id} not found")));
    }
    Ok(Reply::ok(
        RecordDeleted { id, deleted: true },
        "Record deleted",
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecordDeleted {
    id: Uuid,
    deleted: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ManualImportFailure)]
pub struct ImportFailure {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    nopol: Option<String>,
    /// The first problem, as text.
    reason: String,
    errors: Vec<FieldError>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ManualImportResult)]
pub struct ImportResult {
    total: usize,
    imported: usize,
    failed: usize,
    failures: Vec<ImportFailure>,
}

const MAX_IMPORT: usize = 10_000;

/// A JSON array of records or `{"customers": [...]}`: valid items are imported, each invalid
/// one (bad field, nopol that exists or repeats) is reported with its index and reason.
#[utoipa::path(post, path = "/manual-whatsapp/bulk-import", operation_id = "import_manual_records", tag = "manual-whatsapp",
    request_body = super::RecordImport,
    responses((status = 200, description = "What was imported and what was not (per item)", body = Envelope<ImportResult>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn bulk_import(
    State(state): State<AppState>,
    _: Caller,
    BulkJson(body): BulkJson,
) -> AppResult<Reply<ImportResult>> {
    let items = match &body {
        Value::Array(items) => items,
        Value::Object(map) => match map.get("customers") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(AppError::validation(
                    "customers",
                    "must be an array of records",
                ));
            }
        },
        _ => {
            return Err(AppError::BadRequest(
                "expected a JSON array of records or {\"customers\": [...]}".into(),
            ));
        }
    };
    if items.len() > MAX_IMPORT {
        return Err(AppError::validation(
            "customers",
            format!("at most {MAX_IMPORT} per request"),
        ));
    }
    let mut valid: Vec<(usize, Input)> = Vec::new();
    let mut failures = Vec::new();
    let mut seen = HashSet::new();
    let fail = |index, nopol: Option<String>, errors: Vec<FieldError>| ImportFailure {
        index,
        nopol,
        reason: errors
            .first()
            .map(|e| format!("{}: {}", e.field, e.message))
            .unwrap_or_default(),
        errors,
    };
    for (index, item) in items.iter().enumerate() {
        let Value::Object(map) = item else {
            failures.push(fail(
                index,
                None,
                vec![FieldError::new("record", "must be an object")],
            ));
            continue;
        };
        let nopol = map.get("nopol").and_then(Value::as_str).map(str::to_owned);
        match input(map, true) {
            Err(errors) => failures.push(fail(index, nopol, errors)),
            Ok(i) => {
                let key = i.nopol.as_deref().unwrap_or_default().to_uppercase();
                if seen.insert(key) {
                    valid.push((index, i));
                } else {
                    failures.push(fail(
                        index,
                        nopol,
                        vec![FieldError::new("nopol", "appears earlier in this import")],
                    ));
                }
            }
        }
    }
    let inputs: Vec<Input> = valid.iter().map(|(_, i)| i.clone()).collect();
    let mut tx = state.pool.begin().await?;
    let ids = repo::insert(&mut tx, &inputs).await?;
    tx.commit().await?;
    let mut imported = 0;
    for ((index, i), id) in valid.into_iter().zip(ids) {
        match id {
            Some(_) => imported += 1,
            None => failures.push(fail(
                index,
                i.nopol,
                vec![FieldError::new(
                    "nopol",
                    "a record with this nopol already exists",
                )],
            )),
        }
    }
    failures.sort_by_key(|f| f.index);
    let failed = failures.len();
    Ok(Reply::ok(
        ImportResult {
            total: items.len(),
            imported,
            failed,
            failures,
        },
        format!("Import selesai. {imported} berhasil, {failed} gagal"),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Stats {
    total_customers: i64,
    active_customers: i64,
    inactive_customers: i64,
    /// Delivered manual reminders (sum of `reminder_sent_count`).
    reminders_sent_total: i64,
    /// Active records due within `REMINDER_DAYS_THRESHOLD` days (from today).
    customers_with_upcoming_service: i64,
}

/// Totals over the manual records.
#[utoipa::path(get, path = "/manual-whatsapp/stats/summary", operation_id = "manual_stats", tag = "manual-whatsapp",
    responses((status = 200, description = "Totals", body = Envelope<Stats>), Unauthorized, Unavailable),
    security(("bearer" = [])))]
pub async fn stats(State(state): State<AppState>, _: Caller) -> AppResult<Reply<Stats>> {
    let today = business_date(state.config.app_timezone, Utc::now());
    // Due within the calendar's reach (its largest day before the due date).
    let reach = state
        .config
        .reminder_days_before
        .days()
        .first()
        .copied()
        .unwrap_or(0);
    let end = today + chrono::Days::new(u64::from(reach) + 1);
    let (total, active, sent, upcoming) = repo::stats(&state.pool, today, end).await?;
    Ok(Reply::ok(
        Stats {
            total_customers: total,
            active_customers: active,
            inactive_customers: total - active,
            reminders_sent_total: sent,
            customers_with_upcoming_service: upcoming,
        },
        "Manual WhatsApp statistics",
    ))
}
