//! Which queues are paused, as this process sees it: refreshed from `queue_pauses` every
//! [`REFRESH`]. New fetches of a paused queue stop at once (`apalis.get_jobs` checks the table);
//! this view is for send jobs fetched just before a pause, which snooze themselves (no attempt
//! spent, no slot held).

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

pub const REFRESH: Duration = Duration::from_millis(250);

#[derive(Clone, Default)]
pub struct Pauses(Arc<RwLock<HashSet<String>>>);

impl Pauses {
    pub fn is_paused(&self, queue: &str) -> bool {
        self.0.read().map(|p| p.contains(queue)).unwrap_or(false)
    }

    pub async fn refresh(&self, pool: &PgPool) -> sqlx::Result<()> {
        let queues: Vec<String> = sqlx::query_scalar("SELECT queue FROM queue_pauses")
            .fetch_all(pool)
            .await?;
        if let Ok(mut p) = self.0.write() {
            *p = queues.into_iter().collect();
        }
        Ok(())
    }

    /// Keeps the view fresh until `shutdown`.
    pub fn spawn_refresher(&self, pool: PgPool, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = this.refresh(&pool).await {
                            tracing::debug!("paused queues refresh failed: {e}");
                        }
                    }
                }
            }
        });
    }
}

/// Pauses (`by` = who) or resumes a queue; persisted, followed by every process within
/// [`REFRESH`] (and at once by `apalis.get_jobs`).
pub async fn set_paused(pool: &PgPool, queue: &str, paused: bool, by: &str) -> sqlx::Result<()> {
    if paused {
        let mut conn = pool.acquire().await?;
        pause_in(&mut conn, queue, by, None).await?;
    } else {
        sqlx::query("DELETE FROM queue_pauses WHERE queue = $1")
            .bind(queue)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Pauses a queue on the caller's connection, saying who (`by`: an operator's `sub`, or
/// `circuit`) and why. A queue already paused keeps its first pause.
pub async fn pause_in(
    conn: &mut PgConnection,
    queue: &str,
    by: &str,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO queue_pauses (queue, paused_by, reason) VALUES ($1, $2, $3)
         ON CONFLICT (queue) DO NOTHING",
    )
    .bind(queue)
    .bind(by)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Holds a queue until `until` for `reason` (a hold that ends by itself: `apalis.get_jobs`
/// fetches nothing of the queue before then). An existing hold is only ever extended.
pub async fn hold(
    conn: &mut PgConnection,
    queue: &str,
    reason: &str,
    until: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO queue_holds (queue, reason, until) VALUES ($1, $2, $3)
         ON CONFLICT (queue, reason) DO UPDATE SET until = excluded.until
         WHERE queue_holds.until < excluded.until OR queue_holds.until < now()",
    )
    .bind(queue)
    .bind(reason)
    .bind(until)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends a hold before its time (the circuit closed).
pub async fn release_hold(conn: &mut PgConnection, queue: &str, reason: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM queue_holds WHERE queue = $1 AND reason = $2")
        .bind(queue)
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(())
}
