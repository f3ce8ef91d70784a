//! `/ops/*` (README "Operations"), role `ops`; and `/ops/ui`, the operator's page (no auth for the page
//! itself; every call it makes carries the token the operator pastes).

use axum::{
    Router,
    extract::State,
    response::Html,
    routing::{get, post},
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{BulkRequeue, Changed, Job, JobFilter, JobState, QUEUES, QueueSummary};
use crate::{
    error::{AppError, AppResult, FieldError},
    http::{
        auth::OpsCaller,
        envelope::{Envelope, ErrorEnvelope, Reply},
        extract::{Fields, JsonObject, OptionalJsonObject, Path, QueryPairs},
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Forbidden, Invalid, NotFound, TooLarge,
            Unauthorized, Unavailable,
        },
    },
    messages::{Message, read},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ops/ui", get(ui))
        .route("/ops/queues", get(queues))
        .route("/ops/queues/{queue}/pause", post(pause))
        .route("/ops/queues/{queue}/resume", post(resume))
        .route("/ops/jobs", get(jobs))
        .route("/ops/jobs/requeue", post(requeue_many))
        .route("/ops/jobs/{id}", get(job))
        .route("/ops/jobs/{id}/requeue", post(requeue))
        .route("/ops/jobs/{id}/cancel", post(cancel))
        .route("/ops/purge", post(purge))
}

/// The operator's page (embedded in the binary; nothing is fetched from the internet).
#[utoipa::path(get, path = "/ops/ui", operation_id = "ops_ui", tag = "ops",
    responses((status = 200, description = "The page (its calls carry the pasted token)", content_type = "text/html", body = String)))]
pub async fn ui() -> Html<&'static str> {
    Html(include_str!("../../assets/ops.html"))
}

fn job_id(raw: &str) -> AppResult<&str> {
    ulid::Ulid::from_string(raw)
        .map(|_| raw)
        .map_err(|_| AppError::NotFound(format!("job {raw} not found")))
}

fn known_queue(raw: &str) -> AppResult<&'static str> {
    QUEUES.iter().find(|q| **q == raw).copied().ok_or_else(|| {
        AppError::NotFound(format!(
            "queue {raw} not found (queues: {})",
            QUEUES.join(", ")
        ))
    })
}

/// Per queue: job counts by status, the oldest due pending job's age, whether it is paused.
#[utoipa::path(get, path = "/ops/queues", operation_id = "list_queues", tag = "ops",
    responses((status = 200, description = "Every queue", body = Envelope<Vec<QueueSummary>>),
        Unauthorized, Forbidden, Unavailable),
    security(("bearer" = [])))]
pub async fn queues(
    State(state): State<AppState>,
    _: OpsCaller,
) -> AppResult<Reply<Vec<QueueSummary>>> {
    Ok(Reply::ok(super::queues(&state.pool).await?, "Queues"))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Paused {
    queue: &'static str,
    paused: bool,
}

/// Stops every process from taking jobs of the queue (within a second); nothing is lost and no
/// attempt is spent. Persisted until resumed.
#[utoipa::path(post, path = "/ops/queues/{queue}/pause", operation_id = "pause_queue", tag = "ops",
    params(("queue" = super::QueueName, Path)),
    responses((status = 200, description = "Paused", body = Envelope<Paused>),
        (status = 404, description = "No such queue", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, Unavailable),
    security(("bearer" = [])))]
pub async fn pause(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(queue): Path<String>,
) -> AppResult<Reply<Paused>> {
    let queue = known_queue(&queue)?;
    crate::queue::pause::set_paused(&state.pool, queue, true, &caller.sub).await?;
    tracing::warn!(queue, by = caller.sub, "queue paused");
    Ok(Reply::ok(
        Paused {
            queue,
            paused: true,
        },
        format!("Queue {queue} paused"),
    ))
}

/// Lets every process take jobs of the queue again (jobs that came due meanwhile run now).
#[utoipa::path(post, path = "/ops/queues/{queue}/resume", operation_id = "resume_queue", tag = "ops",
    params(("queue" = super::QueueName, Path)),
    responses((status = 200, description = "Resumed", body = Envelope<Paused>),
        (status = 404, description = "No such queue", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, Unavailable),
    security(("bearer" = [])))]
pub async fn resume(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(queue): Path<String>,
) -> AppResult<Reply<Paused>> {
    let queue = known_queue(&queue)?;
    crate::queue::pause::set_paused(&state.pool, queue, false, &caller.sub).await?;
    tracing::warn!(queue, by = caller.sub, "queue resumed");
    Ok(Reply::ok(
        Paused {
            queue,
            paused: false,
        },
        format!("Queue {queue} resumed"),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobPage {
    items: Vec<Job>,
    next_cursor: Option<String>,
}

/// Jobs, newest first: filters `queue`, `status` (pending, running, done, failed, cancelled),
/// `message_id`; `limit` (≤ 500, default 50) and `cursor`.
#[utoipa::path(get, path = "/ops/jobs", operation_id = "list_jobs", tag = "ops",
    params(("queue" = Option<super::QueueName>, Query), ("status" = Option<JobState>, Query),
        ("message_id" = Option<String>, Query, format = Uuid),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 50"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$", description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "A page of jobs", body = Envelope<JobPage>,
        links(
            ("get_job" = (operation_id = "get_job", parameters(("id" = "$response.body#/data/items/0/id")))),
            ("requeue_job" = (operation_id = "requeue_job", parameters(("id" = "$response.body#/data/items/0/id")))),
            ("cancel_job" = (operation_id = "cancel_job", parameters(("id" = "$response.body#/data/items/0/id")))))),
        BadRequest, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn jobs(
    State(state): State<AppState>,
    _: OpsCaller,
    q: QueryPairs,
) -> AppResult<Reply<JobPage>> {
    let mut errors = Vec::new();
    let queue = q.get("queue").and_then(|raw| match known_queue(raw) {
        Ok(q) => Some(q.to_owned()),
        Err(_) => {
            errors.push(FieldError::new(
                "queue",
                format!("must be one of {}", QUEUES.join(", ")),
            ));
            None
        }
    });
    let status = q.parsed(
        "status",
        JobState::parse,
        || format!("must be one of {}", JobState::names()),
        &mut errors,
    );
    let message_id = q.get("message_id").and_then(|raw| {
        Uuid::parse_str(raw)
            .map_err(|_| errors.push(FieldError::new("message_id", "must be a message id (UUID)")))
            .ok()
    });
    let limit = q.limit(&mut errors);
    let before = q
        .get("cursor")
        .and_then(|raw| match ulid::Ulid::from_string(raw) {
            Ok(_) => Some(raw.to_owned()),
            Err(_) => {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor returned by this endpoint",
                ));
                None
            }
        });
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let filter = JobFilter {
        queue,
        status,
        message_id,
        before,
        limit,
    };
    let items = super::jobs(&state.pool, &filter).await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|j| j.id.clone()))
        .flatten();
    Ok(Reply::ok(JobPage { items, next_cursor }, "Jobs"))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    job: Job,
    /// The job's payload as stored (JSON; text when it is not JSON).
    #[schema(value_type = Value)]
    payload: Value,
    message: Option<Message>,
}

/// One job: payload, attempts, `run_at`, last error, lock holder, timestamps, and its message.
#[utoipa::path(get, path = "/ops/jobs/{id}", operation_id = "get_job", tag = "ops",
    params(("id" = String, Path, pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$", description = "the job id (a ULID)")),
    responses((status = 200, description = "The job, its payload and its message", body = Envelope<JobDetail>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn job(
    State(state): State<AppState>,
    _: OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<JobDetail>> {
    let id = job_id(&raw)?;
    let mut conn = state.pool.acquire().await?;
    let job = super::job(&mut conn, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("job {id} not found")))?;
    let message = match job.message_id {
        Some(m) => read::find(&mut conn, m, None).await?,
        None => None,
    };
    drop(conn);
    let payload = super::payload(&state.pool, id)
        .await?
        .unwrap_or(Value::Null);
    Ok(Reply::ok(
        JobDetail {
            job,
            payload,
            message,
        },
        "Job",
    ))
}

fn changed(result: Changed, id: &str, done: &str) -> AppResult<Reply<Job>> {
    match result {
        Changed::Done(job) => Ok(Reply::ok(*job, format!("Job {id} {done}"))),
        Changed::NotFound => Err(AppError::NotFound(format!("job {id} not found"))),
        Changed::Conflict(why) => Err(AppError::Conflict(why)),
    }
}

/// A `failed` or `cancelled` job runs again now with fresh attempts; its message goes back to
/// `queued`. Any other status → 409; so is a message that failed with Cloud API error `131048`
/// or `131049` less than 24 hours ago (not retried within 24 h).
#[utoipa::path(post, path = "/ops/jobs/{id}/requeue", operation_id = "requeue_job", tag = "ops",
    params(("id" = String, Path, pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$", description = "the job id (a ULID)")),
    responses((status = 200, description = "Requeued", body = Envelope<Job>),
        (status = 409, description = "The job is neither `failed` nor `cancelled`, or its message failed with Cloud API error 131048/131049 less than 24 h ago", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn requeue(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Job>> {
    let id = job_id(&raw)?;
    let result = super::requeue(&state.pool, id).await?;
    tracing::info!(job = id, by = caller.sub, "job requeue requested");
    changed(result, id, "requeued")
}

/// A `pending` job is cancelled with its message; a running or finished one → 409.
#[utoipa::path(post, path = "/ops/jobs/{id}/cancel", operation_id = "cancel_job", tag = "ops",
    params(("id" = String, Path, pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$", description = "the job id (a ULID)")),
    responses((status = 200, description = "Cancelled, with its message", body = Envelope<Job>),
        (status = 409, description = "The job is not `pending`", body = ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Job>> {
    let id = job_id(&raw)?;
    let result = super::cancel(&state.pool, id).await?;
    tracing::info!(job = id, by = caller.sub, "job cancel requested");
    changed(result, id, "cancelled")
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Requeued {
    requeued: i64,
}

/// Bulk requeue: `{queue?, status: "failed", failed_after?, failed_before?, limit? (≤ 10000,
/// default 1000)}` → `{requeued: n}` (oldest first; `cancelled` may be requeued the same way).
/// A message that failed with Cloud API error `131048`/`131049` less than 24 hours ago is left.
#[utoipa::path(post, path = "/ops/jobs/requeue", operation_id = "requeue_jobs", tag = "ops",
    request_body(content = Option<super::BulkRequeueRequest>, description = "optional: an empty body requeues up to 1000 failed jobs"),
    responses((status = 200, description = "How many jobs were requeued", body = Envelope<Requeued>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn requeue_many(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    OptionalJsonObject(body): OptionalJsonObject,
) -> AppResult<Reply<Requeued>> {
    let mut f = Fields::new(&body);
    let queue = f.optional_str("queue").map(str::to_owned);
    let status = f
        .optional_str("status")
        .map_or(Some(JobState::Failed), JobState::parse);
    let failed_after = f.optional_time("failed_after");
    let failed_before = f.optional_time("failed_before");
    let limit = f.optional_i64("limit");
    let mut errors = f.errors;
    if let Some(q) = &queue
        && known_queue(q).is_err()
    {
        errors.push(FieldError::new(
            "queue",
            format!("must be one of {}", QUEUES.join(", ")),
        ));
    }
    let status = match status {
        Some(s @ (JobState::Failed | JobState::Cancelled)) => s,
        _ => {
            errors.push(FieldError::new("status", "must be failed or cancelled"));
            JobState::Failed
        }
    };
    let limit = match limit {
        None => 1000,
        Some(n) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                "must be an integer between 1 and 10000",
            ));
            1000
        }
    };
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let bulk = BulkRequeue {
        queue,
        status,
        failed_after,
        failed_before,
        limit,
    };
    let requeued = super::requeue_many(&state.pool, &bulk).await?;
    tracing::info!(requeued, by = caller.sub, "bulk requeue");
    Ok(Reply::ok(
        Requeued { requeued },
        format!("{requeued} job(s) requeued"),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Purged {
    purged: u64,
}

/// Deletes `done` and `cancelled` jobs that finished more than `older_than_days` days ago
/// (messages and reminders are kept) → `{purged: n}`.
#[utoipa::path(post, path = "/ops/purge", operation_id = "purge_jobs", tag = "ops",
    request_body = super::PurgeRequest,
    responses((status = 200, description = "How many jobs were deleted", body = Envelope<Purged>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn purge(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Purged>> {
    let mut f = Fields::new(&body);
    let days = f.optional_i64("older_than_days");
    let mut errors = f.errors;
    let days = match days {
        Some(d) if (0..=36_500).contains(&d) => d as i32,
        Some(_) => {
            errors.push(FieldError::new(
                "older_than_days",
                "must be an integer between 0 and 36500",
            ));
            0
        }
        None => {
            if errors.is_empty() {
                errors.push(FieldError::new("older_than_days", "is required"));
            }
            0
        }
    };
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let mut conn = state.pool.acquire().await?;
    let purged = super::purge(&mut conn, days).await?;
    tracing::info!(purged, days, by = caller.sub, "purge");
    Ok(Reply::ok(
        Purged { purged },
        format!("{purged} finished job(s) deleted"),
    ))
}
