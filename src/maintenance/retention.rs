//! Retention (README "Operations"): finished jobs older than `JOB_RETENTION_DAYS` are deleted hourly by one
//! process at a time. Every `serve`/`worker` process checks every minute; the one that gets a
//! transaction-scoped advisory lock and finds the last run an hour old does it, and records it.
//! Finished webhook deliveries older than that go with their attempts and events. Messages,
//! reminders and reports are kept.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::queue;

pub const CHECK_EVERY: Duration = Duration::from_secs(60);
const TASK: &str = "retention";

/// Runs the clean-up if no process did in the last hour; returns how many jobs it deleted, or
/// `None` when it was not this process' turn.
pub async fn run_once(pool: &PgPool, retention_days: u32) -> sqlx::Result<Option<u64>> {
    let mut tx = pool.begin().await?;
    let ours: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('bengkel-whatsapp:retention'))",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !ours {
        return Ok(None);
    }
    let due: bool = sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM maintenance_runs
                            WHERE task = $1 AND last_run_at > now() - interval '1 hour')",
    )
    .bind(TASK)
    .fetch_one(&mut *tx)
    .await?;
    if !due {
        // Ended here, not when the pool next uses this connection: until then the lock would
        // stay held and every process' next check would skip its turn.
        tx.rollback().await?;
        return Ok(None);
    }
    let days = i32::try_from(retention_days).unwrap_or(i32::MAX);
    let deleted = queue::purge(&mut tx, days).await?;
    let deliveries = crate::webhooks::repo::purge(&mut tx, days).await?;
    sqlx::query(
        "INSERT INTO maintenance_runs (task, last_run_at, last_result) VALUES ($1, now(), $2)
         ON CONFLICT (task) DO UPDATE SET last_run_at = now(), last_result = excluded.last_result",
    )
    .bind(TASK)
    .bind(serde_json::json!({
        "deleted": deleted,
        "webhook_deliveries_deleted": deliveries,
        "retention_days": retention_days,
    }))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if deleted > 0 {
        tracing::info!(deleted, retention_days, "retention: finished jobs deleted");
    }
    Ok(Some(deleted))
}

/// Checks every [`CHECK_EVERY`] until `shutdown`.
pub async fn run(pool: PgPool, retention_days: u32, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = run_once(&pool, retention_days).await {
                    tracing::warn!("retention failed: {e}");
                }
            }
        }
    }
}
