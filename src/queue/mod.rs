//! The job queue: the only code that writes `apalis.jobs` (and installs `apalis.get_jobs`).
//!
//! apalis runs the workers: it fetches (our `get_jobs.sql`), dispatches and heartbeats. It does
//! **not** acknowledge: storages are built with `persist_results(false)`, so apalis never writes
//! a run's result. Every run ends with exactly one [`Verdict`] that our code writes with
//! [`settle`], in the same transaction as whatever the run changed (the message and what follows
//! it). A verdict only applies to the run it belongs to ([`Run`]: job, worker, attempts at fetch),
//! so a run that was handed back — snoozed — can never finish a later run of the same job. See
//! `docs/architecture.md` ("The queue") and `docs/guarantees.md`.

pub mod backoff;
mod class;
mod guarded;
pub mod pause;
pub mod rescue;
mod verdict;
pub mod wakeup;

pub use self::{
    class::Class,
    guarded::{run_guarded, settle_alone},
    verdict::{Run, Verdict, retry_at, settle, snooze},
};

use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::PollWith;
use apalis_postgres::PostgresStorage;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// Ad-hoc and reminder sends: one job per message.
pub const SEND_QUEUE: &str = "whatsapp-send";
/// The daily reminder fan-out: one job per tick.
pub const FANOUT_QUEUE: &str = "reminder-fanout";
/// Outbound webhook deliveries (SPEC §12): one job per delivery.
pub const WEBHOOK_QUEUE: &str = crate::webhooks::QUEUE;
/// Inbound webhook payloads (SPEC §13): one job per received request.
pub const INBOUND_QUEUE: &str = crate::inbound::QUEUE;
/// Every queue the ops API and the metrics know.
pub const QUEUES: [&str; 4] = [SEND_QUEUE, FANOUT_QUEUE, WEBHOOK_QUEUE, INBOUND_QUEUE];

/// How often an idle worker looks for due jobs that no NOTIFY announced (scheduled, retries).
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A job's status as operators see it (the `job_states` view over apalis' statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[schema(as = JobStatus)]
pub enum JobState {
    /// Waiting: due now or later (scheduled, snoozed, or to be retried).
    Pending,
    /// Held by a worker.
    Running,
    Done,
    /// No attempt left: exhausted, permanent, or aborted.
    Failed,
    /// Withdrawn: cancelled, or its message passed its deadline unsent.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// `pending, running, …`, for an error message.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// apalis' job statuses, as stored in `apalis.jobs.status`. The ops statuses built over them are
/// the `job_states` view (migrations/20261125000002_job_states.sql).
pub mod status {
    /// Waiting: due now or later (also: snoozed).
    pub const PENDING: &str = "Pending";
    /// Fetched by a worker (`lock_by`).
    pub const QUEUED: &str = "Queued";
    /// Started (apalis' `lock_tasks`, which we do not use; counted as held all the same).
    pub const RUNNING: &str = "Running";
    /// Finished.
    pub const DONE: &str = "Done";
    /// Waiting for a retry at `run_at` while `attempts < max_attempts`, else failed.
    pub const FAILED: &str = "Failed";
    /// Finished without success: failed for good, or cancelled (`last_result` says which).
    pub const KILLED: &str = "Killed";
}

/// SQL: a job that waits to run — due later, snoozed, or failed with attempts left (its retry
/// is due at `run_at`) — over the columns of `apalis.jobs` (optionally qualified).
macro_rules! waiting {
    () => {
        waiting!("")
    };
    ($t:literal) => {
        concat!(
            "(",
            $t,
            "status = 'Pending' OR (",
            $t,
            "status = 'Failed' AND ",
            $t,
            "attempts < ",
            $t,
            "max_attempts))"
        )
    };
}

/// `last_result` of a cancelled job (the `job_states` view looks for exactly this).
const CANCELLED_RESULT: &str = r#"{"Err": "cancelled"}"#;
/// `last_result` of a job whose message passed its deadline unsent: withdrawn, not failed, so
/// the `job_states` view shows it as `cancelled` too
/// (migrations/20261201000003_expired_jobs.sql).
pub const EXPIRED_RESULT: &str = r#"{"Err": "expired"}"#;

/// The payload of a send job: the message id (the message lives in `messages`) and what the
/// delivery policy may decide before touching the database: whether the send window applies and
/// the message's deadline. Jobs enqueued before these existed read as `false`/`None`; the claim
/// checks the message itself all the same.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendJob {
    pub message_id: Uuid,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub window: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// A campaign message ([`Class::Bulk`]): its run yields the rate to single sends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bulk: bool,
}

/// A job to insert: its id (a ULID, as apalis requires), payload, when it is due (`None` = now,
/// the transaction's `now()`, so that apalis' NOTIFY trigger announces it) and its attempts.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub payload: Vec<u8>,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
}

impl NewJob {
    pub fn send(job: SendJob, run_at: Option<DateTime<Utc>>, max_attempts: u32) -> Self {
        // Serializing a UUID, a bool and a timestamp cannot fail.
        let payload = serde_json::to_vec(&job).unwrap_or_default();
        Self {
            id: new_job_id(),
            payload,
            run_at,
            max_attempts: max_attempts as i32,
        }
    }
}

/// A job id as apalis needs it (any other string inserts but breaks every later fetch).
pub fn new_job_id() -> String {
    ulid::Ulid::generate().to_string()
}

/// The common table expression that inserts a message's send job in the same statement as the
/// message (`messages::store`: one round trip per accepted request). `$from` is the CTE
/// with the inserted message rows (`job_id`, `max_attempts`, `run_at`); `$queue` and `$payload`
/// are the statement's placeholders for the queue name and the payload; `$priority`, when
/// given, an SQL expression of the job's priority (else 0).
#[macro_export]
macro_rules! enqueue_cte {
    ($from:literal, $queue:literal, $payload:literal) => {
        $crate::enqueue_cte!($from, $queue, $payload, "0")
    };
    ($from:literal, $queue:literal, $payload:literal, $priority:expr) => {
        concat!(
            "job AS (INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority) SELECT ",
            $from,
            ".job_id, ",
            $queue,
            ", ",
            $payload,
            ", 'Pending', 0, ",
            $from,
            ".max_attempts, ",
            $from,
            ".run_at, ",
            $priority,
            " FROM ",
            $from,
            ")"
        )
    };
}

/// Inserts jobs in one statement on the caller's connection (usually its transaction).
pub async fn enqueue(conn: &mut PgConnection, queue: &str, jobs: Vec<NewJob>) -> sqlx::Result<u64> {
    let n = jobs.len();
    let mut ids = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut run_ats = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    for job in jobs {
        ids.push(job.id);
        payloads.push(job.payload);
        run_ats.push(job.run_at);
        max_attempts.push(job.max_attempts);
    }
    let done = sqlx::query(
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, priority)
         SELECT j.id, $2, j.job, 'Pending', 0, j.max_attempts, coalesce(j.run_at, now()), 0
         FROM unnest($1::text[], $3::bytea[], $4::int[], $5::timestamptz[])
              AS j(id, job, max_attempts, run_at)",
    )
    .bind(&ids)
    .bind(queue)
    .bind(&payloads)
    .bind(&max_attempts)
    .bind(&run_ats)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Cancels a job that is waiting (due later, snoozed, or waiting for a retry); one a worker holds
/// is left alone (its run finds the message cancelled and settles as [`Verdict::Cancelled`]).
/// Returns whether it was cancelled.
pub async fn cancel_waiting(conn: &mut PgConnection, job_id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(concat!(
        "UPDATE apalis.jobs SET status = 'Killed', done_at = now(), lock_by = NULL, lock_at = NULL,
                last_result = $2::jsonb
         WHERE id = $1 AND ",
        waiting!()
    ))
    .bind(job_id)
    .bind(CANCELLED_RESULT)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Makes waiting jobs due now (their `run_at` was a snooze's), without touching their attempts.
/// Jobs a worker holds are left alone, and so are parked ones ([`park`]: only [`unpark`] wakes
/// them).
pub async fn wake(conn: &mut PgConnection, job_ids: &[String]) -> sqlx::Result<u64> {
    if job_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE apalis.jobs SET run_at = now()
         WHERE id = ANY($1) AND status = 'Pending' AND run_at > now() AND run_at <> 'infinity'",
    )
    .bind(job_ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Parks waiting jobs — due later, or failed and waiting for a retry — until [`unpark`] (a paused
/// campaign's): never due meanwhile. Jobs a worker holds are left alone. Returns how many.
pub async fn park(conn: &mut PgConnection, job_ids: &[String]) -> sqlx::Result<u64> {
    if job_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE apalis.jobs SET run_at = 'infinity'
         WHERE id = ANY($1) AND (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))",
    )
    .bind(job_ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Parked jobs ([`park`]) are due now. Returns how many.
pub async fn unpark(conn: &mut PgConnection, job_ids: &[String]) -> sqlx::Result<u64> {
    if job_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE apalis.jobs SET run_at = now() WHERE id = ANY($1) AND run_at = 'infinity'",
    )
    .bind(job_ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// [`cancel_waiting`] for many jobs in one statement (rows locked in id order). Returns how many
/// were cancelled.
pub async fn cancel_waiting_many(conn: &mut PgConnection, job_ids: &[String]) -> sqlx::Result<u64> {
    if job_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(concat!(
        "WITH picked AS (
            SELECT id FROM apalis.jobs
            WHERE id = ANY($1) AND ",
        waiting!(),
        "
            ORDER BY id FOR UPDATE
         )
         UPDATE apalis.jobs SET status = 'Killed', done_at = now(), lock_by = NULL, lock_at = NULL,
                last_result = $2::jsonb
         FROM picked WHERE apalis.jobs.id = picked.id",
    ))
    .bind(job_ids)
    .bind(CANCELLED_RESULT)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Kills the waiting jobs among `job_ids` whose message passed its deadline (README "Delivery
/// policy": deadlines): `Killed`, `last_result` [`EXPIRED_RESULT`]. A job a worker holds is left
/// alone: its claim finds the message expired. Never waits for a row lock: a job locked by
/// another transaction at this moment (a fetch, a settle, an operator) is skipped. Returns the
/// jobs that were looked at (killed, held by a worker, or finished); the skipped ones are not
/// among them, so that the caller leaves their messages for its next pass.
pub async fn expire_waiting(
    conn: &mut PgConnection,
    job_ids: &[String],
) -> sqlx::Result<Vec<String>> {
    if job_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(concat!(
        "WITH locked AS (
            SELECT id, status, attempts, max_attempts FROM apalis.jobs
            WHERE id = ANY($1)
            FOR UPDATE SKIP LOCKED
         ), killed AS (
            UPDATE apalis.jobs j SET status = 'Killed', done_at = now(), lock_by = NULL,
                   lock_at = NULL, last_result = $2::jsonb
            FROM locked l
            WHERE j.id = l.id AND ",
        waiting!("l."),
        "
         )
         SELECT id FROM locked",
    ))
    .bind(job_ids)
    .bind(EXPIRED_RESULT)
    .fetch_all(conn)
    .await
}

/// Which finished jobs to run again.
pub enum Requeue<'a> {
    /// One job, whatever its (finished) state; the caller checked it.
    One(&'a str),
    /// Up to `limit` jobs in ops state `state` (`failed`/`cancelled`), oldest first.
    Many {
        state: JobState,
        queue: Option<&'a str>,
        finished_after: Option<DateTime<Utc>>,
        finished_before: Option<DateTime<Utc>>,
        limit: i64,
    },
}

/// Makes finished jobs due now with fresh attempts, unlocked. Returns their ids.
pub async fn requeue(conn: &mut PgConnection, which: Requeue<'_>) -> sqlx::Result<Vec<String>> {
    let (one, state, queue, after, before, limit) = match which {
        Requeue::One(id) => (Some(id), None, None, None, None, 1),
        Requeue::Many {
            state,
            queue,
            finished_after,
            finished_before,
            limit,
        } => (
            None,
            Some(state.as_str()),
            queue,
            finished_after,
            finished_before,
            limit,
        ),
    };
    sqlx::query_scalar(concat!(
        "WITH picked AS (
            SELECT id FROM job_states
            WHERE ($1::text IS NULL OR id = $1)
              AND ($2::text IS NULL OR state = $2)
              AND ($3::text IS NULL OR queue = $3)
              AND ($4::timestamptz IS NULL OR done_at >= $4)
              AND ($5::timestamptz IS NULL OR done_at < $5)
              AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.job_id = job_states.id AND ",
        crate::cloud_cooling_down!(),
        ")
            ORDER BY id LIMIT $6
            FOR UPDATE SKIP LOCKED
         )
         UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), lock_by = NULL,
                lock_at = NULL, done_at = NULL, last_result = NULL
         FROM picked WHERE apalis.jobs.id = picked.id
         RETURNING apalis.jobs.id"
    ))
    .bind(one)
    .bind(state)
    .bind(queue)
    .bind(after)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Deletes `done` and `cancelled` jobs that finished more than `older_than_days` days ago.
pub async fn purge(conn: &mut PgConnection, older_than_days: i32) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM apalis.jobs WHERE id IN (
            SELECT id FROM job_states
            WHERE state IN ('done', 'cancelled')
              AND done_at < now() - make_interval(days => $1::int)
         )",
    )
    .bind(older_than_days)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

pub type Storage<Args> = PollWith<PostgresStorage<Args>, wakeup::Wakeup>;

/// What a process' apalis workers share: who the process is (names, liveness, in-flight runs),
/// its NOTIFY listener, and the pool apalis' bookkeeping runs on.
#[derive(Clone)]
pub struct Workers {
    pub process: rescue::Process,
    pub wakeups: wakeup::Wakeups,
    pub pool: sqlx::PgPool,
}

impl Workers {
    pub fn storage<Args>(&self, queue: &str, batch_size: usize) -> Storage<Args> {
        storage(&self.pool, queue, batch_size, &self.wakeups)
    }
}

/// A storage for `queue` that fetches at most `batch_size` jobs at a time (a process should not
/// sit on jobs another could run), wakes on the process' shared NOTIFY listener and polls every
/// [`POLL_INTERVAL`] for jobs that come due later (scheduled sends, retries, snoozes).
pub fn storage<Args>(
    pool: &sqlx::PgPool,
    queue: &str,
    batch_size: usize,
    wakeups: &wakeup::Wakeups,
) -> Storage<Args> {
    let config = apalis_postgres::Config::default()
        .queue(queue)
        .batch_size(batch_size.max(1))
        .heartbeat_interval(Duration::from_secs(5))
        // apalis' own orphan rescue works per worker name and resets attempts; ours
        // (`rescue.rs`) works per process, within 15 s, and never takes a live process' jobs.
        // apalis' is pushed out of the way (a day).
        .missed_heartbeats(17_280)
        // A fetched job is already ours (`Queued`, `lock_by` = this worker).
        .lock_tasks(false)
        // apalis never acknowledges: every run settles itself (see the module comment).
        .persist_results(false);
    let storage = PostgresStorage::<Args>::new(pool).with_config(config);
    PollWith::new(storage, wakeups.wakeup(queue, POLL_INTERVAL))
}
