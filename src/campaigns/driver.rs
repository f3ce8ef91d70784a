//! What moves campaigns along, in every process with workers every [`EVERY`]: a scheduled
//! campaign whose `start_at` came runs; a paused one's messages stay parked; a running step whose batch has no open message left is
//! done, and the next step becomes due `delay_days` after (or the campaign is finished); a due
//! step of a running campaign starts ([`super::step::start`]: one process wins each).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;

pub const EVERY: Duration = Duration::from_secs(2);
/// Steps started per tick.
const STARTS: i64 = 10;

pub async fn run(pool: PgPool, config: Arc<Config>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = once(&pool, &config).await {
            tracing::warn!("campaign driver: {e}");
        }
    }
}

/// One pass of the driver.
pub async fn once(pool: &PgPool, config: &Config) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE campaigns SET status = 'running' WHERE status = 'scheduled' AND start_at <= now()",
    )
    .execute(pool)
    .await?;
    // A paused campaign's message that a worker held when it was paused, and snoozed after
    // (the window, the spacing), is parked like the rest.
    sqlx::query(
        "UPDATE apalis.jobs SET run_at = 'infinity'
         WHERE id IN (SELECT m.job_id FROM messages m JOIN campaigns c ON c.id = m.campaign_id
                      WHERE c.status = 'paused' AND m.status IN ('queued', 'retrying'))
           AND run_at <> 'infinity'
           AND (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))",
    )
    .execute(pool)
    .await?;
    own_windows(pool, config).await?;
    let finished: Vec<(Uuid, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT s.campaign_id, s.step, coalesce(b.finished_at, now())
         FROM campaign_steps s JOIN batch_progress b ON b.batch_id = s.batch_id
         WHERE s.status = 'running' AND b.open = 0",
    )
    .fetch_all(pool)
    .await?;
    for (campaign, step, at) in finished {
        let mut tx = pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE campaign_steps SET status = 'done', finished_at = $3
             WHERE campaign_id = $1 AND step = $2 AND status = 'running'",
        )
        .bind(campaign)
        .bind(step)
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 1 {
            next(&mut tx, campaign, step, at).await?;
        }
        tx.commit().await?;
    }
    let due: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT s.campaign_id, s.step FROM campaign_steps s JOIN campaigns c ON c.id = s.campaign_id
         WHERE c.status = 'running' AND s.status = 'pending' AND s.due_at <= now()
         ORDER BY s.due_at LIMIT $1",
    )
    .bind(STARTS)
    .fetch_all(pool)
    .await?;
    for (campaign, step) in due {
        if let Some(started) = super::step::start(pool, config, campaign, step).await? {
            tracing::info!(%campaign, step, recipients = started.recipients,
                messages = started.messages, "campaign step started");
        }
    }
    Ok(())
}

/// Step `step` of `campaign` had its last message become final (or none to send) at `at`: it is
/// done, on the caller's transaction.
pub async fn step_done(conn: &mut PgConnection, campaign: Uuid, step: i32) -> sqlx::Result<()> {
    let at: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE campaign_steps SET status = 'done', finished_at = now()
         WHERE campaign_id = $1 AND step = $2 RETURNING finished_at",
    )
    .bind(campaign)
    .bind(step)
    .fetch_one(&mut *conn)
    .await?;
    next(conn, campaign, step, at).await
}

/// The step after `step` becomes due `delay_days` after `at`; without one, the campaign is
/// finished.
async fn next(
    conn: &mut PgConnection,
    campaign: Uuid,
    step: i32,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    let next = sqlx::query(
        "UPDATE campaign_steps SET due_at = $3 + make_interval(days => delay_days)
         WHERE campaign_id = $1 AND step = $2 + 1 AND status = 'pending'",
    )
    .bind(campaign)
    .bind(step)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if next == 0 {
        sqlx::query(
            "UPDATE campaigns SET status = 'finished', finished_at = now()
             WHERE id = $1 AND status IN ('running', 'paused')
               AND NOT EXISTS (SELECT 1 FROM campaign_steps
                               WHERE campaign_id = $1 AND status IN ('pending', 'running'))",
        )
        .bind(campaign)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Running campaigns with their own send window: outside it their unsent messages are parked
/// (again each pass: a step that started, a retry that came due); when it opens, they are due.
async fn own_windows(pool: &PgPool, config: &Config) -> sqlx::Result<()> {
    let windowed: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT id, send_window, window_parked FROM campaigns
         WHERE status = 'running' AND send_window IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    for (id, window, parked) in windowed {
        let closed = super::outside_window(Some(&window), config.app_timezone, now);
        if !closed && !parked {
            continue;
        }
        let mut tx = pool.begin().await?;
        let jobs = super::repo::unsent_jobs(&mut tx, id).await?;
        if closed {
            crate::queue::park(&mut tx, &jobs).await?;
        } else {
            crate::queue::unpark(&mut tx, &jobs).await?;
        }
        sqlx::query("UPDATE campaigns SET window_parked = $2 WHERE id = $1")
            .bind(id)
            .bind(closed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}
