//! How a run ends: its [`Verdict`], written by [`settle`] onto exactly the run it belongs to.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::{CANCELLED_RESULT, EXPIRED_RESULT, status};

/// One run of a job: which job, which worker fetched it, and the job's `attempts` when it was
/// fetched. A verdict is applied only while the row is still held by exactly this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub job_id: String,
    pub worker: String,
    pub fetched_attempts: i32,
}

impl Run {
    /// The run apalis hands a handler: its task id, attempt (1-based) and worker.
    pub fn of(
        task_id: &apalis::prelude::TaskId,
        attempt: &apalis::prelude::Attempt,
        worker: &apalis::prelude::WorkerContext,
    ) -> Self {
        Self {
            job_id: task_id.to_string(),
            worker: worker.name().to_owned(),
            fetched_attempts: i32::try_from(attempt.current())
                .unwrap_or(i32::MAX)
                .saturating_sub(1),
        }
    }

    /// The attempt number this run is (1-based), as apalis counts it.
    pub fn attempt(&self) -> i32 {
        self.fetched_attempts.saturating_add(1)
    }
}

/// How a run ends. Built by the job (for sends: `messages::decide`), applied by [`settle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Finished; `attempts` is the attempt that finished it.
    Complete { attempts: i32 },
    /// Back to the queue at `at` for another attempt; `attempts` were spent.
    RetryAt {
        at: DateTime<Utc>,
        attempts: i32,
        error: String,
    },
    /// Finished without success; no further runs.
    Fail { attempts: i32, reason: String },
    /// Back to the queue until `until`, **no attempt spent**, no slot held: a paused queue, and
    /// every hold of the delivery policy.
    Snooze {
        until: DateTime<Utc>,
        reason: String,
    },
    /// Its message was cancelled while the job was held.
    Cancelled { attempts: i32 },
    /// Its message passed its deadline unsent (README "Delivery policy": deadlines); shown as
    /// `cancelled` like a cancel.
    Expired { attempts: i32 },
}

/// Snoozes a run: see [`Verdict::Snooze`].
pub fn snooze(until: DateTime<Utc>, reason: impl Into<String>) -> Verdict {
    Verdict::Snooze {
        until,
        reason: reason.into(),
    }
}

/// Retries a run at `at`: see [`Verdict::RetryAt`].
pub fn retry_at(at: DateTime<Utc>, attempts: i32, error: impl Into<String>) -> Verdict {
    Verdict::RetryAt {
        at,
        attempts,
        error: error.into(),
    }
}

impl Verdict {
    /// (status, attempts, run_at, last_result) of the job row; `None` attempts = unchanged.
    fn row(&self) -> (&'static str, Option<i32>, Option<DateTime<Utc>>, Value) {
        match self {
            Verdict::Complete { attempts } => {
                (status::DONE, Some(*attempts), None, json!({"Ok": null}))
            }
            Verdict::RetryAt {
                at,
                attempts,
                error,
            } => (
                status::FAILED,
                Some(*attempts),
                Some(*at),
                json!({"Err": error}),
            ),
            Verdict::Fail { attempts, reason } => (
                status::KILLED,
                Some(*attempts),
                None,
                json!({"Err": reason}),
            ),
            Verdict::Snooze { until, reason } => (
                status::PENDING,
                None,
                Some(*until),
                json!({"Snoozed": reason}),
            ),
            Verdict::Cancelled { attempts } => (
                status::KILLED,
                Some(*attempts),
                None,
                serde_json::from_str(CANCELLED_RESULT).unwrap_or(Value::Null),
            ),
            Verdict::Expired { attempts } => (
                status::KILLED,
                Some(*attempts),
                None,
                serde_json::from_str(EXPIRED_RESULT).unwrap_or(Value::Null),
            ),
        }
    }
}

/// Applies verdicts to their runs in one statement on the caller's transaction. A run whose row
/// is no longer held by it (rescued as an orphan and taken by another run) is left alone.
/// Returns how many rows changed.
pub async fn settle(conn: &mut PgConnection, verdicts: &[(Run, Verdict)]) -> sqlx::Result<u64> {
    if verdicts.is_empty() {
        return Ok(0);
    }
    let n = verdicts.len();
    let (mut ids, mut workers, mut fetched) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut statuses, mut attempts, mut run_ats, mut results) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (run, verdict) in verdicts {
        let (status, att, run_at, result) = verdict.row();
        ids.push(run.job_id.as_str());
        workers.push(run.worker.as_str());
        fetched.push(run.fetched_attempts);
        statuses.push(status);
        attempts.push(att);
        run_ats.push(run_at);
        results.push(result);
    }
    let done = sqlx::query(
        "UPDATE apalis.jobs j SET
            status = i.status,
            attempts = coalesce(i.attempts, j.attempts),
            run_at = coalesce(i.run_at, j.run_at),
            lock_by = NULL,
            lock_at = NULL,
            done_at = CASE WHEN i.status = 'Pending' THEN NULL ELSE now() END,
            last_result = i.result
         FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::int[], $6::timestamptz[], $7::jsonb[])
              AS i(id, worker, fetched, status, attempts, run_at, result)
         WHERE j.id = i.id AND j.lock_by = i.worker AND j.attempts = i.fetched
           AND j.status IN ('Queued', 'Running')",
    )
    .bind(&ids)
    .bind(&workers)
    .bind(&fetched)
    .bind(&statuses)
    .bind(&attempts)
    .bind(&run_ats)
    .bind(&results)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
