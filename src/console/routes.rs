//! `/console/*` (README "Console"), role `ops`: what the ops page's Console section reads.

use axum::{Router, extract::State, routing::get};
use chrono::Utc;

use super::{
    lookup::{self, Lookup, Query},
    today::{self, Today},
};
use crate::{
    error::{AppError, AppResult},
    http::{
        auth::OpsCaller,
        envelope::{Envelope, Reply},
        extract::QueryPairs,
        responses::{BadRequest, Forbidden, Invalid, Unauthorized, Unavailable},
    },
    messages::Status,
    reminders::business_date,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/today", get(today))
        .route("/console/lookup", get(lookup))
}

const STATUSES: &str = "queued, sending, sent, retrying, failed, cancelled, expired";

/// Today's reminder run (business date in `APP_TIMEZONE`): counts over all its reminders, and
/// the reminders — vehicles and manual records — with their messages, newest first, at most
/// 1,000 (`truncated`). `status` keeps the reminders whose message has that status.
#[utoipa::path(get, path = "/console/today", operation_id = "console_today", tag = "console",
    params(("status" = Option<Status>, Query, description = "a message status")),
    responses((status = 200, description = "Today's reminders", body = Envelope<Today>),
        BadRequest, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn today(
    State(state): State<AppState>,
    _: OpsCaller,
    q: QueryPairs,
) -> AppResult<Reply<Today>> {
    let status = match q.get("status") {
        None => None,
        Some(raw) => Some(Status::parse(raw).ok_or_else(|| {
            AppError::validation("status", format!("must be one of: {STATUSES}"))
        })?),
    };
    let date = business_date(state.config.app_timezone, Utc::now());
    // One snapshot, so that the counts and the list agree.
    let mut tx = super::snapshot(&state.pool).await?;
    let counts = today::counts(&mut tx, date).await?;
    let (items, truncated) = today::reminders(&mut tx, date, status).await?;
    tx.commit().await?;
    let message = format!("{} reminder(s) on {date}", counts.total);
    Ok(Reply::ok(
        Today {
            date,
            counts,
            items,
            truncated,
        },
        message,
    ))
}

/// Finds by `q`: a phone number (any spelling `POST /whatsapp/send` accepts) matches that
/// number; anything else matches customer and manual names and number plates
/// (case-insensitive, anywhere in them). The answer: the customers with their vehicles and due
/// dates, the manual records, and for each number involved its opt-out state and conversation
/// (messages to and from it, newest first).
#[utoipa::path(get, path = "/console/lookup", operation_id = "console_lookup", tag = "console",
    params(("q" = String, Query, min_length = 1, max_length = 100,
        description = "a phone number, or a piece of a name or number plate")),
    responses((status = 200, description = "What matched", body = Envelope<Lookup>),
        BadRequest, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn lookup(
    State(state): State<AppState>,
    _: OpsCaller,
    q: QueryPairs,
) -> AppResult<Reply<Lookup>> {
    let query = Query::parse(q.get("q").unwrap_or_default())
        .map_err(|problem| AppError::validation("q", problem))?;
    let mut tx = super::snapshot(&state.pool).await?;
    let found = lookup::lookup(&mut tx, &query, state.config.service_interval_months).await?;
    tx.commit().await?;
    let message = format!(
        "{} customer(s), {} manual record(s), {} number(s)",
        found.customers.len(),
        found.manual.len(),
        found.phones.len()
    );
    Ok(Reply::ok(found, message))
}
