//! Jobs held by a worker that will never finish them go back to the queue: `rescue_orphans`.
//!
//! Liveness is per **process**, not per apalis worker: every process with workers has a row in
//! `queue_processes` and beats it every second on a connection of its own (a saturated pool
//! cannot starve it) — the periodic service is `maintenance::rescue`, its verbs are here
//! ([`Process::beat`], [`Process::leave`]). Its apalis workers are named
//! `{queue}@{process}.{slot}-{n}`, so a held job names its process. Two kinds of orphans:
//!
//! - jobs of a process that stopped beating [`DEAD_AFTER`] ago (`kill -9`, a lost machine) are
//!   rescued by any other live process — but only by one that has itself beaten without a break
//!   for [`DEAD_AFTER`]: right after a database outage *every* process looks dead, and a rescuer
//!   that has just reconnected must give the others the time to beat again (otherwise it would
//!   take sends that are still in flight and send them twice);
//! - jobs of this process held under a worker name it no longer runs (apalis' monitor restarted
//!   that worker after a database error and the jobs it had fetched but not started were dropped
//!   with it) and not in flight here: released by the process itself, within a beat.
//!
//! A rescued job keeps its attempts; if its run had reached the gateway, its message is
//! `sending` and the next run treats it as ambiguous (README "Sending"), counting that attempt then.
//! See `docs/guarantees.md`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A process that has not beaten for this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(10);

/// This process as the queue sees it: its id, the apalis worker names it runs now, and the jobs
/// it is running.
#[derive(Clone)]
pub struct Process {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    /// Current worker name per slot ("whatsapp-send/0", …).
    live: Mutex<HashMap<String, String>>,
    /// Job ids whose run has started here and not yet settled.
    in_flight: Mutex<HashSet<String>>,
    restarts: std::sync::atomic::AtomicU64,
}

/// Marks a job as running in this process until dropped.
pub struct InFlight {
    inner: Arc<Inner>,
    job_id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut set = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.remove(&self.job_id);
    }
}

impl Default for Process {
    fn default() -> Self {
        Self::new()
    }
}

impl Process {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                id: Uuid::new_v4().simple().to_string(),
                live: Mutex::default(),
                in_flight: Mutex::default(),
                restarts: Default::default(),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// A fresh apalis worker name for `slot` of `queue` (apalis refuses duplicates, also of a
    /// worker it is restarting); the slot's previous name is retired, and the jobs still held
    /// under it are released by the next beat unless they are in flight.
    pub fn worker_name(&self, queue: &str, slot: usize) -> String {
        let n = self
            .inner
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{queue}@{}.{slot}-{n}", self.inner.id);
        let mut live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        live.insert(format!("{queue}/{slot}"), name.clone());
        name
    }

    /// Registers a run of `job_id` as in flight here until the guard is dropped.
    pub fn enter(&self, job_id: &str) -> InFlight {
        let mut set = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.insert(job_id.to_owned());
        InFlight {
            inner: self.inner.clone(),
            job_id: job_id.to_owned(),
        }
    }

    /// Whether a run of `job_id` is in flight here (its job is not released by the beat).
    pub fn is_in_flight(&self, job_id: &str) -> bool {
        let set = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.contains(job_id)
    }

    fn snapshot(&self) -> (Vec<String>, Vec<String>) {
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        let in_flight = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (
            live.values().cloned().collect(),
            in_flight.iter().cloned().collect(),
        )
    }

    /// Writes this process' row; before any worker of it fetches a job.
    pub async fn register(&self, pool: &PgPool) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO queue_processes (id, host, pid) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET last_seen = now()",
        )
        .bind(self.id())
        .bind(hostname())
        .bind(std::process::id() as i32)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// One beat: our row, our retired workers' jobs, and (when `trusted`: this process' own
    /// beats have succeeded without a break for [`DEAD_AFTER`]) dead processes' jobs.
    pub async fn beat(&self, conn: &mut PgConnection, trusted: bool) -> sqlx::Result<()> {
        sqlx::query("UPDATE queue_processes SET last_seen = now() WHERE id = $1")
            .bind(self.id())
            .execute(&mut *conn)
            .await?;
        let (live, in_flight) = self.snapshot();
        let released = release_retired(conn, self.id(), &live, &in_flight).await?;
        let rescued = if trusted {
            rescue_orphans(conn, DEAD_AFTER).await?
        } else {
            0
        };
        if released + rescued > 0 {
            tracing::info!(released, rescued, "orphaned jobs back in the queue");
            metrics::counter!("bengkel_jobs_rescued_total").increment(released + rescued);
        }
        Ok(())
    }

    /// On shutdown, after the workers stopped: releases what this process still holds and marks
    /// itself gone (so that others need not wait for [`DEAD_AFTER`]). Nothing of ours is in
    /// flight any more (or it outlived the grace period and is left to the others' rescue).
    pub async fn leave(&self, pool: &PgPool) -> sqlx::Result<()> {
        let mut conn = pool.acquire().await?;
        let (_, in_flight) = self.snapshot();
        release_retired(&mut conn, self.id(), &[], &in_flight).await?;
        let still_held = !in_flight.is_empty();
        if still_held {
            sqlx::query("UPDATE queue_processes SET last_seen = '-infinity' WHERE id = $1")
                .bind(self.id())
                .execute(&mut *conn)
                .await?;
        } else {
            sqlx::query("DELETE FROM queue_processes WHERE id = $1")
                .bind(self.id())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

/// The process id inside a worker name (`{queue}@{process}.{slot}-{n}`), in SQL.
const PROCESS_OF_LOCK: &str = "split_part(split_part(j.lock_by, '@', 2), '.', 1)";

/// Releases the jobs held under this process' names that are not `live` and not `in_flight`.
async fn release_retired(
    conn: &mut PgConnection,
    process: &str,
    live: &[String],
    in_flight: &[String],
) -> sqlx::Result<u64> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE apalis.jobs j SET status = 'Pending', lock_by = NULL, lock_at = NULL
         WHERE j.status IN ('Queued', 'Running') AND {PROCESS_OF_LOCK} = $1
           AND j.lock_by <> ALL($2::text[]) AND j.id <> ALL($3::text[])"
    )))
    .bind(process)
    .bind(live)
    .bind(in_flight)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Hands the jobs of dead processes back to their queue (attempts kept) and forgets processes
/// that are dead and hold nothing. A job whose worker name names no known process (a process of
/// an older version) counts as orphaned once it has been held for `dead_after`.
pub async fn rescue_orphans(conn: &mut PgConnection, dead_after: Duration) -> sqlx::Result<u64> {
    let secs = dead_after.as_secs_f64();
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE apalis.jobs j SET status = 'Pending', lock_by = NULL, lock_at = NULL,
                last_result = '{{\"Err\": \"rescued: the process holding it stopped\"}}'::jsonb
         WHERE j.status IN ('Queued', 'Running') AND j.lock_by IS NOT NULL
           AND NOT EXISTS (
               SELECT 1 FROM queue_processes p
               WHERE p.id = {PROCESS_OF_LOCK} AND p.last_seen >= now() - make_interval(secs => $1))
           AND (EXISTS (SELECT 1 FROM queue_processes p WHERE p.id = {PROCESS_OF_LOCK})
                OR j.lock_at < now() - make_interval(secs => $1))"
    )))
    .bind(secs)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM queue_processes p
         WHERE p.last_seen < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM apalis.jobs j
                           WHERE j.status IN ('Queued', 'Running') AND {PROCESS_OF_LOCK} = p.id)"
    )))
    .bind(secs)
    .execute(&mut *conn)
    .await?;
    // apalis keeps a row per worker name it ever ran; names are per process incarnation.
    sqlx::query("DELETE FROM apalis.workers WHERE last_seen < now() - interval '1 day'")
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
