//! The liveness beat and orphan rescue of a process with workers (docs/guarantees.md): every
//! [`BEAT`], on a connection of its own (a saturated pool cannot starve it), one
//! `queue::rescue::Process::beat` — this process' row, the jobs its retired workers still hold,
//! and dead processes' jobs once this process may judge them. On shutdown it releases what
//! this process still holds and marks itself gone (`Process::leave`).

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::queue::rescue::{DEAD_AFTER, Process};

/// How often a process beats and looks for orphans.
pub const BEAT: Duration = Duration::from_secs(1);

/// Beats and rescues every [`BEAT`] until `shutdown`, then leaves.
pub fn spawn(
    process: &Process,
    pool: PgPool,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let process = process.clone();
    tokio::spawn(async move {
        let mut conn: Option<PgConnection> = None;
        // Since when this process' own beats have succeeded without a break: right after a
        // database outage every process looks dead, and one that has just reconnected must give
        // the others the time to beat again before it takes their jobs.
        let mut healthy_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if conn.is_none() {
                conn = PgConnection::connect_with(pool.connect_options().as_ref())
                    .await
                    .map_err(|e| tracing::debug!("queue heartbeat cannot connect: {e}"))
                    .ok();
            }
            let Some(c) = conn.as_mut() else {
                healthy_since = None;
                continue;
            };
            let trusted = healthy_since.is_some_and(|t| t.elapsed() >= DEAD_AFTER);
            match process.beat(c, trusted).await {
                Ok(()) => {
                    healthy_since.get_or_insert_with(Instant::now);
                }
                Err(e) => {
                    tracing::debug!("queue heartbeat failed: {e}");
                    healthy_since = None;
                    conn = None;
                }
            }
        }
        if let Err(e) = process.leave(&pool).await {
            tracing::warn!("could not release this process' jobs on shutdown: {e}");
        }
    })
}
