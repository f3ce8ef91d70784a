//! The apalis queues on PostgreSQL and the SQL we write around them.
//!
//! Jobs live in `apalis.jobs` and are run by apalis workers. We insert them ourselves (inside the
//! caller's transaction, with full timestamp precision, `now()` for immediate jobs so that
//! apalis' NOTIFY trigger fires) and keep payloads to a tiny stable JSON so that a payload can
//! never poison a worker.

pub mod backoff;
pub mod sampler;

use std::{
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy, PollWith};
use apalis_postgres::{PostgresStorage, Pubsub};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Ad-hoc and reminder sends: one job per message.
pub const SEND_QUEUE: &str = "whatsapp-send";

/// How often an idle worker looks for due jobs that no NOTIFY announced (scheduled, retries).
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The payload of a send job: only the message id; the message lives in `messages`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendJob {
    pub message_id: Uuid,
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
    pub fn send(message_id: Uuid, run_at: Option<DateTime<Utc>>, max_attempts: u32) -> Self {
        // Serializing a struct of one UUID cannot fail.
        let payload = serde_json::to_vec(&SendJob { message_id }).unwrap_or_default();
        Self {
            id: ulid::Ulid::generate().to_string(),
            payload,
            run_at,
            max_attempts: max_attempts as i32,
        }
    }
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

/// Cancels a job that is waiting (due later, or waiting for a retry); one a worker holds is
/// left alone. Returns whether it was cancelled.
pub async fn cancel_waiting(conn: &mut PgConnection, job_id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Killed', done_at = now(), lock_by = NULL,
                last_result = '{\"Err\": \"cancelled\"}'::jsonb
         WHERE id = $1 AND (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))",
    )
    .bind(job_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub type Storage<Args> = PollWith<PostgresStorage<Args>, Wakeup>;

/// When an idle worker looks for jobs: on apalis' NOTIFY for a new due job, and every
/// [`POLL_INTERVAL`] for jobs that come due later (scheduled sends, retries).
///
/// apalis' own `Strategy` combinator stops at the first ready strategy and does not re-arm an
/// interval that fired, so an idle worker could sleep until its next heartbeat; this one polls
/// both sources every time, until each has registered its waker, and reconnects a listener
/// that ended.
pub struct Wakeup {
    pool: PgPool,
    queue: String,
    listener: Option<Pubsub>,
    interval: tokio::time::Interval,
}

impl Wakeup {
    pub fn new(pool: &PgPool, queue: &str, period: Duration) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            pool: pool.clone(),
            queue: queue.to_owned(),
            listener: Some(Pubsub::new(pool.clone(), queue.to_owned())),
            interval,
        }
    }
}

impl PollStrategy for Wakeup {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut ready = false;
        if let Some(listener) = &mut self.listener {
            loop {
                match listener.poll_next_unpin(cx) {
                    Poll::Ready(Some(_)) => ready = true,
                    Poll::Ready(None) => {
                        self.listener = None;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        while self.interval.poll_tick(cx).is_ready() {
            ready = true;
            if self.listener.is_none() {
                // Polled (and so connected) on the next wake-up, at the latest one tick away.
                self.listener = Some(Pubsub::new(self.pool.clone(), self.queue.clone()));
            }
        }
        if ready {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// A storage for `queue` that wakes on apalis' NOTIFY for new due jobs and polls every
/// [`POLL_INTERVAL`] for jobs that come due later (scheduled sends, retries).
pub fn storage<Args>(pool: &PgPool, queue: &str, batch_size: usize) -> Storage<Args> {
    let config = apalis_postgres::Config::default()
        .queue(queue)
        .batch_size(batch_size.max(1))
        // A dead process' jobs go back to the queue after 60 s; a live one beats every 10 s,
        // also while all its slots are busy, so a slow gateway call is never taken twice.
        .heartbeat_interval(Duration::from_secs(10))
        .missed_heartbeats(6)
        // A fetched job is already ours (`Queued`, `lock_by` = this worker): the extra
        // `Running` update per batch buys nothing.
        .lock_tasks(false);
    let storage = PostgresStorage::<Args>::new(pool).with_config(config);
    PollWith::new(storage, Wakeup::new(pool, queue, POLL_INTERVAL))
}

/// A worker name unique to this process and incarnation (apalis refuses duplicates).
pub fn worker_name(queue: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let nonce = Uuid::new_v4().simple().to_string();
    format!("{queue}@{host}:{}:{}", std::process::id(), &nonce[..8])
}
