//! The database: connecting, migrating (ours and apalis'), and the embedded default cluster.

pub mod embedded;
pub mod group_commit;

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

/// Our own migrations, in `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How one process spends its `DB_MAX_CONNECTIONS` (README: "Connection budget").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The durable pool: HTTP handlers, outcomes, the scheduler, the samplers.
    pub main: u32,
    /// The relaxed pool (`relaxed`): apalis' fetches and heartbeats, the `sending` marks.
    pub relaxed: u32,
}

/// Connections a process with workers keeps outside its pools: the job listener
/// (`queue::wakeup`) and the liveness beat (`queue::rescue`).
pub const DEDICATED: u32 = 2;

impl Budget {
    /// Splits `total` connections. A process with workers needs at least 6: its two dedicated
    /// connections and two in each pool.
    pub fn new(total: u32, workers: bool) -> Result<Self, String> {
        if !workers {
            return if total >= 2 {
                Ok(Self {
                    main: total,
                    relaxed: 0,
                })
            } else {
                Err("must be at least 2".into())
            };
        }
        if total < DEDICATED + 4 {
            return Err(format!(
                "must be at least {} for a process with workers",
                DEDICATED + 4
            ));
        }
        let relaxed = (total - DEDICATED) / 2;
        Ok(Self {
            main: total - DEDICATED - relaxed,
            relaxed,
        })
    }
}

/// True when an error means "the database is not reachable right now" (down, restarting, our
/// connection terminated, the pool empty) rather than "this statement is wrong": worth waiting
/// for.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-57P05: admin shutdown, crash shutdown, cannot
            // connect now, database dropped, idle session timeout; 53300: too many connections;
            // 55000 is what a database with ALLOW_CONNECTIONS false answers a new connection.
            code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || code == "55000"
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
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
    let max_connections = max_connections.max(1);
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

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn a_budget_splits_what_is_left_after_the_dedicated_connections() {
        assert_eq!(
            Budget::new(10, true),
            Ok(Budget {
                main: 4,
                relaxed: 4
            })
        );
        assert_eq!(
            Budget::new(16, true),
            Ok(Budget {
                main: 7,
                relaxed: 7
            })
        );
        assert_eq!(
            Budget::new(10, false),
            Ok(Budget {
                main: 10,
                relaxed: 0
            })
        );
        assert!(Budget::new(5, true).is_err());
        assert!(Budget::new(1, false).is_err());
    }
}
