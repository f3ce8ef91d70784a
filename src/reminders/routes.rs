//! `/customers/send-maintenance-reminder`, `/scheduler/maintenance-reminder/*`,
//! `/health/scheduler` and `/reminders` (README "Maintenance reminders").

use std::time::Duration;

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{business_date, calendar::DaysBefore, fanout, schedule};
use crate::{
    error::{AppError, AppResult, FieldError},
    http::{
        auth::{Caller, OpsCaller},
        envelope::{Envelope, Reply},
        extract::{DATE_MESSAGE, QueryPairs, parse_date},
        responses::{BadRequest, Forbidden, Invalid, Unauthorized, Unavailable},
    },
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/customers/send-maintenance-reminder", post(send_now))
        .route("/scheduler/maintenance-reminder/run-now", post(run_now))
        .route("/scheduler/maintenance-reminder/start", post(start))
        .route("/scheduler/maintenance-reminder/stop", post(stop))
        .route("/scheduler/maintenance-reminder/status", get(status))
        .route("/reminders", get(list))
}

/// `/health/scheduler` is public like the other health checks.
pub fn health_router() -> Router<AppState> {
    Router::new().route("/health/scheduler", get(health))
}

fn wait_param(q: &QueryPairs) -> AppResult<Option<Duration>> {
    let mut errors = Vec::new();
    let max = schedule::MAX_WAIT.as_secs() as i64;
    let wait = q.int_opt("wait_seconds", 0..=max, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    Ok(wait.map(|n| Duration::from_secs(n as u64)))
}

async fn fan_out(state: &AppState, q: &QueryPairs) -> AppResult<Reply<fanout::Summary>> {
    let wait = wait_param(q)?;
    let date = business_date(state.config.app_timezone, Utc::now());
    let mut summary = schedule::run_manual(&state.pool, &state.config, date)
        .await
        .map_err(AppError::from_anyhow)?;
    if let Some(wait) = wait {
        fanout::wait_for_outcomes(&state.pool, &mut summary, wait).await?;
    }
    let message = format!(
        "{} reminder(s) queued, {} already queued, {} skipped",
        summary.reminder_queued, summary.already_queued, summary.skipped
    );
    Ok(Reply::ok(summary, message))
}

/// Runs today's fan-out now (idempotent per vehicle and date); `wait_seconds` (≤ 120) waits for
/// the sends and reports `sent` / `failed` per vehicle.
#[utoipa::path(post, path = "/customers/send-maintenance-reminder", operation_id = "send_maintenance_reminders", tag = "reminders",
    params(("wait_seconds" = Option<i64>, Query, minimum = 0, maximum = 120, description = "wait up to this many seconds for the sends and report `sent` / `failed`")),
    responses((status = 200, description = "What the pass queued, found queued or skipped", body = Envelope<fanout::Summary>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn send_now(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<fanout::Summary>> {
    fan_out(&state, &q).await
}

/// The same as `/customers/send-maintenance-reminder`.
#[utoipa::path(post, path = "/scheduler/maintenance-reminder/run-now", operation_id = "run_reminders_now", tag = "reminders",
    params(("wait_seconds" = Option<i64>, Query, minimum = 0, maximum = 120, description = "wait up to this many seconds for the sends and report `sent` / `failed`")),
    responses((status = 200, description = "What the pass queued, found queued or skipped", body = Envelope<fanout::Summary>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn run_now(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<fanout::Summary>> {
    fan_out(&state, &q).await
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SchedulerChanged)]
pub struct Changed {
    message: String,
    #[serde(flatten)]
    status: schedule::Status,
}

/// Enables the daily fan-out, optionally at a new `hour` (0–23) / `minute` (0–59) in
/// `APP_TIMEZONE` and with a new calendar (`days_before`). Persisted: every process follows
/// within seconds. Role `ops`.
#[utoipa::path(post, path = "/scheduler/maintenance-reminder/start", operation_id = "start_scheduler", tag = "reminders",
    params(("hour" = Option<i64>, Query, minimum = 0, maximum = 23), ("minute" = Option<i64>, Query, minimum = 0, maximum = 59),
        ("days_before" = Option<String>, Query, pattern = r"^\s*[0-9]{1,3}\s*(,\s*[0-9]{1,3}\s*){0,30}$",
         description = "days before the due date on which reminders go out, e.g. `3,1` (each 0–366)")),
    responses((status = 200, description = "Enabled; the new status", body = Envelope<Changed>),
        BadRequest, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    q: QueryPairs,
) -> AppResult<Reply<Changed>> {
    let mut errors = Vec::new();
    let hour = q.int_opt("hour", 0..=23, &mut errors);
    let minute = q.int_opt("minute", 0..=59, &mut errors);
    let days_before = q.get("days_before").and_then(|raw| {
        raw.parse::<DaysBefore>()
            .map_err(|e| errors.push(FieldError::new("days_before", e)))
            .ok()
    });
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let current = schedule::load(&state.pool, &state.config).await?;
    let hour = hour.map_or(current.hour, |h| h as i32);
    let minute = minute.map_or(current.minute, |m| m as i32);
    schedule::set(
        &state.pool,
        &state.config,
        true,
        Some((hour, minute)),
        days_before.as_ref(),
    )
    .await?;
    tracing::warn!(by = caller.sub, hour, minute, "reminder scheduler started");
    let message =
        format!("Scheduler dimulai. Job akan berjalan setiap hari jam {hour:02}:{minute:02}");
    let status = schedule::status(&state.pool, &state.config).await?;
    Ok(Reply::ok(
        Changed {
            message: message.clone(),
            status,
        },
        message,
    ))
}

/// Disables the daily fan-out (persisted). `run-now` still works. Role `ops`.
#[utoipa::path(post, path = "/scheduler/maintenance-reminder/stop", operation_id = "stop_scheduler", tag = "reminders",
    responses((status = 200, description = "Disabled; the new status", body = Envelope<Changed>),
        Unauthorized, Forbidden, Unavailable),
    security(("bearer" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
) -> AppResult<Reply<Changed>> {
    schedule::set(&state.pool, &state.config, false, None, None).await?;
    tracing::warn!(by = caller.sub, "reminder scheduler stopped");
    let message = "Scheduler dihentikan".to_owned();
    let status = schedule::status(&state.pool, &state.config).await?;
    Ok(Reply::ok(
        Changed {
            message: message.clone(),
            status,
        },
        message,
    ))
}

/// `{running, jobs: [{id, name, next_run_time, trigger}], last_run}`.
#[utoipa::path(get, path = "/scheduler/maintenance-reminder/status", operation_id = "scheduler_status", tag = "reminders",
    responses((status = 200, description = "The schedule and its last run", body = Envelope<schedule::Status>),
        Unauthorized, Unavailable),
    security(("bearer" = [])))]
pub async fn status(
    State(state): State<AppState>,
    _: Caller,
) -> AppResult<Reply<schedule::Status>> {
    let status = schedule::status(&state.pool, &state.config).await?;
    Ok(Reply::ok(status, "Scheduler status"))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SchedulerHealth {
    /// `healthy` or `unhealthy`
    status: &'static str,
    scheduler_running: bool,
    jobs: Vec<schedule::JobInfo>,
}

/// No auth. `healthy` when the schedule is enabled and its last tick has a fan-out that did not
/// fail; always `200` (the body says which).
#[utoipa::path(get, path = "/health/scheduler", operation_id = "scheduler_health", tag = "health",
    responses((status = 200, description = "Healthy or not (the body says which)", body = Envelope<SchedulerHealth>),
        Unavailable))]
pub async fn health(State(state): State<AppState>) -> AppResult<Reply<SchedulerHealth>> {
    let s = schedule::load(&state.pool, &state.config).await?;
    let healthy = schedule::healthy(&state.pool, &state.config, &s).await?;
    let status = if healthy { "healthy" } else { "unhealthy" };
    Ok(Reply::ok(
        SchedulerHealth {
            status,
            scheduler_running: s.enabled,
            jobs: schedule::jobs(&s, state.config.app_timezone, Utc::now()),
        },
        format!("scheduler {status}"),
    ))
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReminderRow {
    id: Uuid,
    vehicle_id: Uuid,
    customer_id: Uuid,
    reminder_date: NaiveDate,
    next_visit_date: NaiveDate,
    #[schema(value_type = ReminderStatus)]
    status: String,
    reason: Option<String>,
    sent_at: Option<DateTime<Utc>>,
    message_id: Uuid,
    #[schema(value_type = Option<crate::messages::Status>)]
    message_status: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReminderPage {
    items: Vec<ReminderRow>,
    next_cursor: Option<Uuid>,
}

pub(crate) const REMINDER_STATUSES: [&str; 5] =
    ["queued", "sent", "failed", "cancelled", "expired"];

/// A reminder's status (the values of [`REMINDER_STATUSES`]), for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ReminderStatus {
    Queued,
    Sent,
    Failed,
    Cancelled,
    /// Not sent by the end of its business day (README "Delivery policy": deadlines).
    Expired,
}

/// The reminder log, newest first: filters `date` (YYYY-MM-DD), `status`, `vehicle_id`;
/// `limit` (≤ 500) and `cursor`.
#[utoipa::path(get, path = "/reminders", operation_id = "list_reminders", tag = "reminders",
    params(("date" = Option<String>, Query, format = Date, description = "the reminder date"),
        ("status" = Option<ReminderStatus>, Query),
        ("vehicle_id" = Option<String>, Query, format = Uuid),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 50"),
        ("cursor" = Option<String>, Query, format = Uuid, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "A page of the reminder log", body = Envelope<ReminderPage>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<ReminderPage>> {
    let mut errors = Vec::new();
    let (limit, cursor) = q.page(&mut errors);
    let date = q.get("date").and_then(|raw| {
        parse_date(raw).or_else(|| {
            errors.push(FieldError::new("date", DATE_MESSAGE));
            None
        })
    });
    let status = q.get("status").and_then(|raw| {
        if REMINDER_STATUSES.contains(&raw) {
            Some(raw.to_owned())
        } else {
            errors.push(FieldError::new(
                "status",
                format!("must be one of {}", REMINDER_STATUSES.join(", ")),
            ));
            None
        }
    });
    let vehicle = q.get("vehicle_id").and_then(|raw| {
        Uuid::parse_str(raw)
            .map_err(|_| errors.push(FieldError::new("vehicle_id", "must be a UUID")))
            .ok()
    });
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let items: Vec<ReminderRow> = sqlx::query_as(
        "SELECT r.id, r.vehicle_id, r.customer_id, r.reminder_date, r.next_visit_date, r.status,
                r.reason, r.sent_at, r.message_id, m.status AS message_status, r.created_at, r.updated_at
         FROM reminders r LEFT JOIN messages m ON m.id = r.message_id
         WHERE ($1::date IS NULL OR r.reminder_date = $1)
           AND ($2::text IS NULL OR r.status = $2)
           AND ($3::uuid IS NULL OR r.vehicle_id = $3)
           AND ($4::uuid IS NULL OR r.id < $4)
         ORDER BY r.id DESC LIMIT $5",
    )
    .bind(date)
    .bind(status)
    .bind(vehicle)
    .bind(cursor)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = if items.len() as i64 == limit {
        items.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Reply::ok(
        ReminderPage { items, next_cursor },
        "Reminder log",
    ))
}
