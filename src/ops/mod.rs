//! Operations (README "Operations"): what operators see and change about jobs and queues. Every
//! change to a send job changes its message (and reminder) in the same transaction. [`routes`]
//! is the HTTP surface (role `ops`); the hourly clean-up is `maintenance::retention`. The job
//! rows themselves are changed by the queue's verbs (`queue::requeue`, `cancel_waiting`,
//! `purge`), the messages by `messages::withdraw`.

pub mod routes;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{messages, queue};

/// A job's ops status (the `job_states` view).
pub use crate::queue::JobState;
/// The queues this service runs.
pub use crate::queue::QUEUES;

/// A job id (a ULID, Crockford base32 in either case) as `ulid::Ulid::from_string` reads it, for
/// the OpenAPI document (the annotations repeat it; a test checks them).
pub const JOB_ID_PATTERN: &str = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$";

/// A queue name (the values of [`QUEUES`]), for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub enum QueueName {
    #[serde(rename = "whatsapp-send")]
    WhatsappSend,
    #[serde(rename = "reminder-fanout")]
    ReminderFanout,
    #[serde(rename = "webhooks")]
    Webhooks,
    #[serde(rename = "inbound")]
    Inbound,
}

/// `POST /ops/jobs/requeue` (all optional; the body may be empty), for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"queue": "whatsapp-send", "status": "failed"}))]
#[allow(dead_code)]
pub struct BulkRequeueRequest {
    /// Only this queue (default: every queue).
    queue: Option<QueueName>,
    /// `failed` (default) or `cancelled`.
    #[schema(pattern = "^(failed|cancelled)$")]
    status: Option<String>,
    /// Only jobs that finished at or after this time.
    #[schema(format = DateTime)]
    failed_after: Option<String>,
    /// Only jobs that finished before this time.
    #[schema(format = DateTime)]
    failed_before: Option<String>,
    /// At most this many, oldest first (default 1000).
    #[schema(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
}

/// `POST /ops/purge`, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"older_than_days": 14}))]
#[allow(dead_code)]
pub struct PurgeRequest {
    /// Delete `done` and `cancelled` jobs that finished more than this many days ago.
    #[schema(minimum = 0, maximum = 36500)]
    older_than_days: i64,
}

#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct Counts {
    pub pending: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueSummary {
    pub queue: String,
    pub counts: Counts,
    /// Age of the oldest pending job that is due (a job scheduled for later is not late).
    pub oldest_pending_age_seconds: f64,
    pub paused: bool,
    /// Who paused it: an operator's token `sub`, or `circuit` (the gateway refused the device).
    pub paused_by: Option<String>,
    /// Why, when the pause says (`gateway unauthorized`).
    pub paused_reason: Option<String>,
}

pub async fn queues(pool: &PgPool) -> sqlx::Result<Vec<QueueSummary>> {
    let rows: Vec<(String, JobState, i64, Option<f64>)> = sqlx::query_as(
        "SELECT queue, state, count(*),
                extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'pending' AND run_at <= now()))::float8
         FROM job_states GROUP BY queue, state",
    )
    .fetch_all(pool)
    .await?;
    let paused: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT queue, paused_by, reason FROM queue_pauses")
            .fetch_all(pool)
            .await?;
    let mut names: Vec<String> = QUEUES.iter().map(|q| (*q).to_owned()).collect();
    names.extend(rows.iter().map(|r| r.0.clone()));
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|queue| {
            let mut counts = Counts::default();
            let mut oldest = 0.0_f64;
            for (_, state, n, age) in rows.iter().filter(|r| r.0 == queue) {
                match state {
                    JobState::Pending => counts.pending = *n,
                    JobState::Running => counts.running = *n,
                    JobState::Done => counts.done = *n,
                    JobState::Failed => counts.failed = *n,
                    JobState::Cancelled => counts.cancelled = *n,
                }
                oldest = oldest.max(age.unwrap_or(0.0));
            }
            let pause = paused.iter().find(|p| p.0 == queue);
            QueueSummary {
                paused: pause.is_some(),
                paused_by: pause.and_then(|p| p.1.clone()),
                paused_reason: pause.and_then(|p| p.2.clone()),
                queue,
                counts,
                oldest_pending_age_seconds: oldest,
            }
        })
        .collect())
}

/// A job as the ops API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Job {
    pub id: String,
    pub queue: String,
    pub status: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// The worker holding it.
    pub lock_by: Option<String>,
    pub lock_at: Option<DateTime<Utc>>,
    pub done_at: Option<DateTime<Utc>>,
    pub message_id: Option<Uuid>,
    #[schema(value_type = Option<crate::messages::Status>)]
    pub message_status: Option<String>,
}

/// `SELECT` of [`Job`] rows (`s` = job_states, `m` = its message).
macro_rules! job_select {
    () => {
        "SELECT s.id, s.queue, s.state AS status, s.attempts, s.max_attempts, s.run_at,
                coalesce(m.last_error, CASE WHEN jsonb_typeof(s.last_result -> 'Err') = 'string'
                                            THEN s.last_result ->> 'Err' END) AS last_error,
                s.lock_by, s.lock_at, s.done_at, m.id AS message_id, m.status AS message_status
         FROM job_states s LEFT JOIN messages m ON m.job_id = s.id "
    };
}

pub struct JobFilter {
    pub queue: Option<String>,
    pub status: Option<JobState>,
    pub message_id: Option<Uuid>,
    pub before: Option<String>,
    pub limit: i64,
}

/// Newest first (ULID ids are time-ordered; the cursor is an id).
pub async fn jobs(pool: &PgPool, f: &JobFilter) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(concat!(
        job_select!(),
        "WHERE ($1::text IS NULL OR s.queue = $1)
           AND ($2::text IS NULL OR s.state = $2)
           AND ($3::uuid IS NULL OR m.id = $3)
           AND ($4::text IS NULL OR s.id < $4)
         ORDER BY s.id DESC LIMIT $5"
    ))
    .bind(&f.queue)
    .bind(f.status.map(JobState::as_str))
    .bind(f.message_id)
    .bind(&f.before)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

pub async fn job(conn: &mut PgConnection, id: &str) -> sqlx::Result<Option<Job>> {
    sqlx::query_as(concat!(job_select!(), "WHERE s.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A job's payload as JSON (a payload that is not JSON is shown as text).
pub async fn payload(pool: &PgPool, id: &str) -> sqlx::Result<Option<Value>> {
    let raw: Option<Vec<u8>> = sqlx::query_scalar("SELECT job FROM apalis.jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(raw.map(|bytes| {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    }))
}

pub enum Changed {
    Done(Box<Job>),
    NotFound,
    /// The job's current status does not allow it.
    Conflict(String),
}

/// Locks a job and reads its ops status.
async fn lock_state(conn: &mut PgConnection, id: &str) -> sqlx::Result<Option<JobState>> {
    sqlx::query_scalar("SELECT state FROM job_states WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Requeues one `failed` or `cancelled` job (and its message) in one transaction.
pub async fn requeue(pool: &PgPool, id: &str) -> sqlx::Result<Changed> {
    let mut tx = pool.begin().await?;
    let Some(state) = lock_state(&mut tx, id).await? else {
        return Ok(Changed::NotFound);
    };
    if !matches!(state, JobState::Failed | JobState::Cancelled) {
        return Ok(Changed::Conflict(format!(
            "job {id} is {}; only failed or cancelled jobs can be requeued",
            state.as_str()
        )));
    }
    if let Some(why) = cooling_down(&mut tx, id).await? {
        return Ok(Changed::Conflict(why));
    }
    let jobs = queue::requeue(&mut tx, queue::Requeue::One(id)).await?;
    messages::withdraw::requeued(&mut tx, &jobs).await?;
    let job = job(&mut tx, id).await?;
    tx.commit().await?;
    Ok(job.map_or(Changed::NotFound, |j| Changed::Done(Box::new(j))))
}

/// Why job `id`'s message may not be requeued yet: it failed with a Cloud API code that is not
/// retried within 24 hours (SPEC §13).
async fn cooling_down(conn: &mut PgConnection, id: &str) -> sqlx::Result<Option<String>> {
    let row: Option<(Option<String>, DateTime<Utc>)> = sqlx::query_as(concat!(
        "SELECT m.gateway_response #>> '{error,code}', m.failed_at + interval '24 hours'
         FROM messages m WHERE m.job_id = $1 AND ",
        crate::cloud_cooling_down!()
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(code, until)| {
        format!(
            "job {id}'s message failed with Cloud API error {}: WhatsApp limits this number, \
             so it is not retried before {}",
            code.unwrap_or_default(),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }))
}

pub struct BulkRequeue {
    pub queue: Option<String>,
    pub status: JobState,
    pub failed_after: Option<DateTime<Utc>>,
    pub failed_before: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// Requeues up to `limit` jobs of `status` (oldest first) and their messages in one
/// transaction.
pub async fn requeue_many(pool: &PgPool, b: &BulkRequeue) -> sqlx::Result<i64> {
    let mut tx = pool.begin().await?;
    let jobs = queue::requeue(
        &mut tx,
        queue::Requeue::Many {
            state: b.status,
            queue: b.queue.as_deref(),
            finished_after: b.failed_after,
            finished_before: b.failed_before,
            limit: b.limit,
        },
    )
    .await?;
    messages::withdraw::requeued(&mut tx, &jobs).await?;
    tx.commit().await?;
    Ok(jobs.len() as i64)
}

/// Cancels a `pending` job and its message (and reminder) in one transaction.
pub async fn cancel(pool: &PgPool, id: &str) -> sqlx::Result<Changed> {
    let mut tx = pool.begin().await?;
    let Some(state) = lock_state(&mut tx, id).await? else {
        return Ok(Changed::NotFound);
    };
    if state != JobState::Pending {
        return Ok(Changed::Conflict(format!(
            "job {id} is {}; only pending jobs can be cancelled",
            state.as_str()
        )));
    }
    queue::cancel_waiting(&mut tx, id).await?;
    messages::withdraw::cancelled_job(&mut tx, id).await?;
    let job = job(&mut tx, id).await?;
    tx.commit().await?;
    Ok(job.map_or(Changed::NotFound, |j| Changed::Done(Box::new(j))))
}

/// Deletes `done` and `cancelled` jobs that finished more than `older_than_days` days ago;
/// messages, reminders and reports are kept.
pub async fn purge(conn: &mut PgConnection, older_than_days: i32) -> sqlx::Result<u64> {
    queue::purge(conn, older_than_days).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_job_id_pattern_is_what_the_api_reads() {
        let pattern = regex::Regex::new(JOB_ID_PATTERN).unwrap();
        let id = ulid::Ulid::from_parts(1_796_000_000_000, 42).to_string();
        for raw in [
            id.clone(),
            id.to_lowercase(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            "01ARZ3NDEKTSV4RRFFQ69G5FA".into(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAVX".into(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAI".into(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAL".into(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAO".into(),
            "01ARZ3NDEKTSV4RRFFQ69G5FAU".into(),
            "ZZZZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            "01ARZ3NDEKTSV4RRFFQ69G5FA-".into(),
            String::new(),
        ] {
            assert_eq!(
                pattern.is_match(&raw),
                ulid::Ulid::from_string(&raw).is_ok(),
                "{raw:?}"
            );
        }
    }
}
