//! The database: connecting, migrating (ours and apalis'), and the embedded default cluster.

pub mod batch;
pub mod embedded;

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

/// Our own migrations, in `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connections for one process: one per worker slot, plus room for the API, the listeners and
/// apalis' own bookkeeping.
pub fn pool_size(config: &crate::config::Config) -> u32 {
    (config.worker_concurrency as u32 + 16).max(20)
}

/// The `application_name` of this process' connections: which process holds what shows in
/// `pg_stat_activity`, and the embedded cluster can tell its users apart.
pub fn application_name() -> String {
    format!("bengkel-whatsapp/{}", std::process::id())
}

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a PostgreSQL URL: {e}"))?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name(&application_name()))
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))?;
    Ok(pool)
}

/// A pool on the same database whose commits do not wait for the WAL flush
/// (`synchronous_commit = off`). A commit still survives a crash of *this* process — the server
/// has it — and is lost only if the database server itself crashes within ~200 ms.
///
/// Used where the message row, committed durably, stays the source of truth: the `sending`
/// mark (lost, the message is simply `queued` again, as it was) and apalis' own bookkeeping
/// (a lost fetch returns the job to the queue; a lost acknowledgement leaves the job to be
/// rescued as an orphan, and its re-run finds the message already `sent`, `failed` or
/// `retrying` with its backoff). Halves the fsyncs per send.
pub fn relaxed(pool: &PgPool, max_connections: u32) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options([("synchronous_commit", "off")]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options)
}

/// Applies apalis' schema first (our tables reference its jobs), then ours. Idempotent.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .map_err(|e| anyhow::anyhow!("apalis migrations failed: {e}"))?;
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
    // Re-applied every time, after apalis' own migrations, so that it wins over theirs; under a
    // lock, because processes starting together would otherwise collide replacing the function
    // ("tuple concurrently updated").
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bengkel-whatsapp:get_jobs'))")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(include_str!("../queue/get_jobs.sql"))
        .execute(&mut *tx)
        .await
        .map_err(|e| anyhow::anyhow!("installing the job fetch function failed: {e}"))?;
    tx.commit().await?;
    Ok(())
}

/// True when the database answers and every migration of ours is applied (`/health/ready`).
pub async fn is_ready(pool: &PgPool) -> bool {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Result<Option<i64>, _> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await;
    matches!(applied, Ok(Some(v)) if v >= latest)
}
