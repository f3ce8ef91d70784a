//! `/suppressions`: the opt-out list (README "Opt-out"). Any valid token may read the list, add
//! a number or widen its scope (`reminders` → `all`); narrowing it (`all` → `reminders`) or
//! removing a number needs role `ops`, so that one caller cannot undo another's opt-out. Every
//! change keeps who made it and when (`updated_by`, `updated_at`, and `…/changes`).

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{delete, get},
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{MAX_REASON_CHARS, Scope, Suppression, repo};
use crate::{
    error::{AppError, AppResult, FieldError},
    http::{
        auth::{Caller, OpsCaller, Role},
        envelope::{Envelope, Reply},
        extract::{Fields, JsonObject, Path, QueryPairs},
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Forbidden, Invalid, NotFound, TooLarge,
            Unauthorized, Unavailable,
        },
    },
    messages::phone::PhoneNumber,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/suppressions", get(list).post(add))
        .route("/suppressions/{phone}", delete(remove))
        .route("/suppressions/{phone}/changes", get(changes))
}

/// `403` of `POST /suppressions`: a client narrowing an opt-out.
pub struct NarrowingForbidden;

impl utoipa::IntoResponses for NarrowingForbidden {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        crate::http::responses::error_response(
            403,
            "The number is opted out of everything (`all`) and only role `ops` may narrow that to `reminders`",
            &[],
        )
    }
}

/// The body of `POST /suppressions` as the OpenAPI document shows it; [`validate`] checks it.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"phone": "0812 3456 789", "scope": "reminders", "reason": "asked by phone on 2026-12-01"}))]
#[allow(dead_code)]
pub struct SuppressionRequest {
    /// The number, any spelling `POST /whatsapp/send` accepts; stored normalized (`62…`).
    #[schema(
        pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$",
        example = "0812 3456 789"
    )]
    phone: String,
    /// `reminders`: no maintenance or manual-customer messages; `all`: no messages at all.
    scope: Scope,
    /// Why (kept for the workshop), up to 500 characters once trimmed.
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// An entry after `POST`: what it cancelled.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SuppressionAdded {
    #[serde(flatten)]
    entry: Suppression,
    /// How many unsent messages to this number this call cancelled.
    cancelled: u64,
}

struct Valid {
    phone: PhoneNumber,
    scope: Scope,
    reason: Option<String>,
}

fn validate(body: &Map<String, Value>) -> Result<Valid, Vec<FieldError>> {
    let mut f = Fields::new(body);
    let phone = f.required_str("phone");
    let scope = f.required_str("scope");
    let reason = f.optional_str("reason");
    let mut errors = f.errors;
    let phone = phone.and_then(|p| {
        PhoneNumber::parse(p)
            .map_err(|e| errors.push(FieldError::new("phone", e.to_string())))
            .ok()
    });
    let scope = scope.and_then(|s| {
        let scope = Scope::parse(s);
        if scope.is_none() {
            errors.push(FieldError::new("scope", "must be reminders or all"));
        }
        scope
    });
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    if let Some(n) = reason.map(|r| r.chars().count())
        && n > MAX_REASON_CHARS
    {
        errors.push(FieldError::new(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters (got {n})"),
        ));
    }
    match (phone, scope) {
        (Some(phone), Some(scope)) if errors.is_empty() => Ok(Valid {
            phone,
            scope,
            reason: reason.map(str::to_owned),
        }),
        _ => Err(errors),
    }
}

/// Opt a number out. Its messages not yet sent whose kind the scope blocks are cancelled at
/// once (`last_error` = `recipient opted out`) and a send to it being made right now finishes
/// before this answers, so nothing in scope reaches the gateway afterwards. Later sends to it
/// are accepted and stored `cancelled`; the reminder passes skip it (`opted out`). Any valid
/// token may add a number or widen its scope; narrowing `all` to `reminders` needs role `ops`
/// (`403`, nothing changes).
#[utoipa::path(post, path = "/suppressions", operation_id = "add_suppression", tag = "suppressions",
    request_body = SuppressionRequest,
    responses((status = 201, description = "The number was added", body = Envelope<SuppressionAdded>),
        (status = 200, description = "The number was already on the list: its scope and reason are replaced", body = Envelope<SuppressionAdded>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, NarrowingForbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<SuppressionAdded>> {
    let valid = validate(&body).map_err(AppError::Validation)?;
    let phone = valid.phone.as_str();
    let outcome = repo::add(
        &state.pool,
        phone,
        valid.scope,
        valid.reason.as_deref(),
        &caller.sub,
        caller.role == Role::Ops,
    )
    .await?;
    let added = match outcome {
        repo::AddOutcome::Added(added) => added,
        repo::AddOutcome::NarrowingRefused => {
            return Err(AppError::Forbidden(format!(
                "{phone} is opted out of all messages; narrowing that to reminders needs role `ops`"
            )));
        }
    };
    tracing::info!(
        by = caller.sub,
        phone,
        scope = valid.scope.as_str(),
        created = added.created,
        "opt-out added or changed"
    );
    // A run that claimed a message to this number before the commit is calling the gateway:
    // it finishes first (its gateway call is bounded by STARSENDER_TIMEOUT_SECS).
    let within = state.config.starsender_timeout + std::time::Duration::from_secs(5);
    if !repo::wait_in_flight(&state.pool, phone, valid.scope, within).await? {
        tracing::warn!(
            phone,
            waited_secs = within.as_secs(),
            "a message to the opted-out number is still being sent"
        );
    }
    let cancelled = added.cancelled_total();
    let (status, message) = if added.created {
        (StatusCode::CREATED, "Number opted out")
    } else {
        (StatusCode::OK, "Opt-out updated")
    };
    Ok(Reply(
        status,
        SuppressionAdded {
            entry: added.entry,
            cancelled,
        },
        format!("{message}; {cancelled} unsent message(s) cancelled"),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SuppressionPage {
    items: Vec<Suppression>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<String>,
}

/// The opt-out list, newest first; filter `phone` (any spelling); `limit` ≤ 500; `cursor`. Any
/// valid token.
#[utoipa::path(get, path = "/suppressions", operation_id = "list_suppressions", tag = "suppressions",
    params(("phone" = Option<String>, Query, description = "a phone number, any spelling",
            pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "A page of the list", body = Envelope<SuppressionPage>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<SuppressionPage>> {
    let mut errors = Vec::new();
    let phone = q.get("phone").and_then(|s| match PhoneNumber::parse(s) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(FieldError::new("phone", e.to_string()));
            None
        }
    });
    let limit = q.limit(&mut errors);
    let cursor = q.get("cursor").and_then(|raw| {
        let c = repo::Cursor::decode(raw);
        if c.is_none() {
            errors.push(FieldError::new(
                "cursor",
                "is not a cursor returned by this endpoint",
            ));
        }
        c
    });
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let items = repo::list(
        &state.pool,
        phone.as_ref().map(PhoneNumber::as_str),
        cursor.as_ref(),
        limit,
    )
    .await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last())
        .flatten()
        .map(|s| {
            repo::Cursor {
                created_at: s.created_at,
                phone: s.phone.clone(),
            }
            .encode()
        });
    let n = items.len();
    Ok(Reply::ok(
        SuppressionPage { items, next_cursor },
        format!("{n} opted-out number(s)"),
    ))
}

/// Take a number off the list: sends to it go out again (messages cancelled while it was on
/// the list stay cancelled). Role `ops`; the removal is recorded (`…/changes`).
#[utoipa::path(delete, path = "/suppressions/{phone}", operation_id = "remove_suppression", tag = "suppressions",
    params(("phone" = String, Path, description = "the number, any spelling (`0812-3456-789`)",
        pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$")),
    responses((status = 200, description = "Removed: the entry as it was", body = Envelope<Suppression>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Suppression>> {
    // A number that does not parse is on no list.
    let not_found = || AppError::NotFound(format!("{raw} is not on the opt-out list"));
    let phone = PhoneNumber::parse(&raw).map_err(|_| not_found())?;
    let removed = repo::remove(&state.pool, phone.as_str(), &caller.sub)
        .await?
        .ok_or_else(not_found)?;
    tracing::warn!(by = caller.sub, phone = phone.as_str(), "opt-out removed");
    Ok(Reply::ok(removed, "Number removed from the opt-out list"))
}

/// Every change of a number's entry, oldest first: added, changed (scope or reason replaced),
/// removed — each with the `sub` of the token that made it and when. Any valid token.
#[utoipa::path(get, path = "/suppressions/{phone}/changes", operation_id = "suppression_changes", tag = "suppressions",
    params(("phone" = String, Path, description = "the number, any spelling (`0812-3456-789`)",
        pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$")),
    responses((status = 200, description = "The changes, oldest first", body = Envelope<Vec<repo::Change>>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn changes(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Vec<repo::Change>>> {
    let not_found = || AppError::NotFound(format!("{raw} was never on the opt-out list"));
    let phone = PhoneNumber::parse(&raw).map_err(|_| not_found())?;
    let changes = repo::changes(&state.pool, phone.as_str()).await?;
    if changes.is_empty() {
        return Err(not_found());
    }
    let n = changes.len();
    Ok(Reply::ok(changes, format!("{n} change(s)")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(body: Value) -> Vec<String> {
        match validate(body.as_object().unwrap()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn every_invalid_field_is_named() {
        assert!(fields(json!({"phone": "0812 3456 789", "scope": "all"})).is_empty());
        assert_eq!(fields(json!({})), ["phone", "scope"]);
        assert_eq!(
            fields(json!({"phone": "12", "scope": "everything", "reason": "x".repeat(501)})),
            ["phone", "scope", "reason"]
        );
        assert_eq!(
            fields(json!({"phone": 812, "scope": "all", "reason": 5})),
            ["phone", "reason"]
        );
        assert!(
            fields(json!({"phone": "+62 812-3456-789", "scope": "reminders", "reason": "é".repeat(500)}))
                .is_empty()
        );
    }
}
