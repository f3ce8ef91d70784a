//! Where a part's cost goes, per unit of work: the database's commits, rows written and WAL
//! bytes (`pg_stat_database`, `pg_current_wal_lsn()`), the statements it ran (when
//! `pg_stat_statements` is loaded), and the CPU time of this process (service, fake gateway and
//! the benchmark's own loop) against PostgreSQL's server processes (read from `/proc`, so only
//! when the server runs on this machine).

use sqlx::PgPool;

#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    commits: i64,
    inserted: i64,
    updated: i64,
    deleted: i64,
    wal_bytes: f64,
    statements: Option<i64>,
    own_cpu: Option<f64>,
    server_cpu: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct DbCounters {
    commits: i64,
    inserted: i64,
    updated: i64,
    deleted: i64,
    wal_bytes: f64,
}

impl Snapshot {
    /// Makes the statement counts readable in this database when the server loads
    /// `pg_stat_statements` (nothing happens otherwise).
    pub async fn prepare(pool: &PgPool) {
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(pool)
            .await;
    }

    pub async fn take(pool: &PgPool) -> anyhow::Result<Self> {
        // The statistics a backend has not reported yet would be missed.
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(pool)
            .await
            .ok();
        let c: DbCounters = sqlx::query_as(
            "SELECT xact_commit AS commits, tup_inserted AS inserted, tup_updated AS updated,
                    tup_deleted AS deleted,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 AS wal_bytes
             FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(pool)
        .await?;
        let statements = sqlx::query_scalar::<_, Option<i64>>(
            "SELECT sum(calls)::int8 FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(pool)
        .await
        .ok()
        .flatten();
        Ok(Self {
            commits: c.commits,
            inserted: c.inserted,
            updated: c.updated,
            deleted: c.deleted,
            wal_bytes: c.wal_bytes,
            statements,
            own_cpu: cpu_seconds("self", false),
            server_cpu: server_cpu_seconds(),
        })
    }

    /// One line: what happened between `self` and `later`, per one of `units` (`what`).
    pub fn per(&self, later: &Self, units: usize, what: &str) -> String {
        let n = units.max(1) as f64;
        let per = |a: i64, b: i64| (b - a) as f64 / n;
        let mut line = format!(
            "per {what}: {:.2} commits, {:.2} rows inserted, {:.2} updated, {:.2} deleted, {:.0} WAL bytes",
            per(self.commits, later.commits),
            per(self.inserted, later.inserted),
            per(self.updated, later.updated),
            per(self.deleted, later.deleted),
            (later.wal_bytes - self.wal_bytes) / n,
        );
        if let (Some(a), Some(b)) = (self.statements, later.statements) {
            line.push_str(&format!(", {:.2} statements", per(a, b)));
        }
        if let (Some(a), Some(b)) = (self.own_cpu, later.own_cpu) {
            line.push_str(&format!("; CPU: this process {:.0} µs", (b - a) / n * 1e6));
        }
        if let (Some(a), Some(b)) = (self.server_cpu, later.server_cpu) {
            line.push_str(&format!(", PostgreSQL {:.0} µs", (b - a) / n * 1e6));
        }
        line
    }
}

/// User + system CPU seconds of a process (`/proc/<pid>/stat`), with those of its children
/// that have ended when `children`.
fn cpu_seconds(pid: &str, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime: fields 14 to 17 of the line, 12 to 15 after the state.
    let own = fields.get(11)? + fields.get(12)?;
    let ended = if children {
        fields.get(13)? + fields.get(14)?
    } else {
        0.0
    };
    Some((own + ended) / clock_ticks())
}

/// Every `postgres` process on this machine, their children's finished time included.
fn server_cpu_seconds() -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres");
        // A backend that ended is counted in the postmaster's children.
        if is_postgres && let Some(s) = cpu_seconds(pid, true) {
            total += s;
            found = true;
        }
    }
    found.then_some(total)
}

fn clock_ticks() -> f64 {
    // USER_HZ: 100 on every Linux this runs on (sysconf(_SC_CLK_TCK)).
    100.0
}
