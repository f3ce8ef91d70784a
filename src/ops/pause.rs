//! Which queues are paused, as this process sees it: refreshed from `queue_pauses` every
//! [`REFRESH`]. New fetches of a paused queue stop at once (`apalis.get_jobs` checks the table);
//! this view is for send jobs fetched just before a pause, which hand themselves back.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use sqlx::PgPool;
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

/// Hands a fetched send job back to its paused queue: `Pending`, unlocked, attempts untouched.
/// apalis' acknowledgement that follows only updates rows this worker still holds, so it
/// changes nothing: the pause costs no attempt and holds no slot.
pub async fn hand_back(pool: &PgPool, message_id: uuid::Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE apalis.jobs j SET status = 'Pending', lock_by = NULL, lock_at = NULL
         FROM messages m
         WHERE m.id = $1 AND j.id = m.job_id AND j.status IN ('Queued', 'Running')",
    )
    .bind(message_id)
    .execute(pool)
    .await?;
    Ok(())
}
