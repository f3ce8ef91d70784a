//! The expiry sweep (README "Delivery policy": deadlines): every [`EVERY`], in every process that
//! runs workers, unsent messages whose deadline has passed become `expired` wherever they wait —
//! due later, snoozed by the policy, waiting for a retry, in a paused queue — so a message is
//! expired within 15 s of its deadline and never sent late. A message a worker is about to send
//! is refused by its claim instead.
//!
//! Passes of several processes do not collide: each takes up to [`BATCH`] messages with
//! `SKIP LOCKED` per transaction (`messages::withdraw::expire_due`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::messages::withdraw;

pub const EVERY: Duration = Duration::from_secs(5);
/// Messages per transaction.
pub const BATCH: i64 = 1000;

/// How far back the first pass of a process looks: deadlines missed while no process ran (a
/// message whose deadline is older is refused by its claim when its job runs).
pub const FIRST_LOOK_BACK: Duration = Duration::from_secs(86_400);
/// Later passes look back to the previous pass, less this.
pub const OVERLAP: Duration = Duration::from_secs(60);

/// Expires every message whose deadline passed after `since`, a batch per transaction; returns
/// how many.
pub async fn sweep(pool: &PgPool, since: DateTime<Utc>) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let batch = withdraw::expire_due(&mut tx, since, BATCH).await?;
        tx.commit().await?;
        for (_, kind) in &batch.expired {
            metrics::counter!("bengkel_messages_expired_total", "kind" => kind.as_str())
                .increment(1);
            metrics::counter!("bengkel_sends_total", "outcome" => "expired").increment(1);
        }
        total += batch.expired.len() as u64;
        // A batch that was not full was the last; one that expired nothing (every row busy)
        // is left for the next tick.
        if (batch.examined as i64) < BATCH || batch.expired.is_empty() {
            break;
        }
    }
    if total > 0 {
        tracing::info!(
            expired = total,
            "messages expired: not sent by their deadline"
        );
    }
    Ok(total)
}

/// Sweeps every [`EVERY`] until `shutdown`.
pub async fn run(pool: PgPool, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let back = |d: Duration| chrono::Duration::from_std(d).unwrap_or_default();
    let mut since = Utc::now() - back(FIRST_LOOK_BACK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let started = Utc::now();
                match sweep(&pool, since).await {
                    Ok(_) => since = started - back(OVERLAP),
                    Err(e) => tracing::warn!("expiry sweep failed: {e}"),
                }
            }
        }
    }
}
