//! PostgreSQL's own ceiling on the same server, measured in the same run, so that every figure
//! can be read as a ratio (README "Benchmarks"): single-row `INSERT`s from 32 connections, and
//! 1,000-row `INSERT`s from one. With `pgbench` on the `PATH` it measures (one-line scripts);
//! without it, this process does the same with its own connections.

use std::time::{Duration, Instant};

use sqlx::PgPool;

/// Rows per second PostgreSQL commits here.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    /// One row per statement and commit, 32 connections.
    pub single: f64,
    /// 1,000 rows per statement and commit, one connection.
    pub multi: f64,
}

const BODY: &str = "Kendaraan Anda sudah selesai diservis";

impl Ceiling {
    /// `value` as a share of `of`, for printing.
    pub fn ratio(value: f64, of: f64) -> String {
        format!("{:.2}×", value / of)
    }
}

const CLIENTS: usize = 32;
const FOR: Duration = Duration::from_secs(10);

pub async fn measure(url: &str) -> anyhow::Result<Ceiling> {
    let pool = crate::db::connect(url, CLIENTS as u32).await?;
    sqlx::raw_sql(
        "CREATE TABLE ceiling (id bigserial PRIMARY KEY, body text NOT NULL,
                               created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    let measured = match pgbench(url).await {
        Ok(Some(c)) => Some(("pgbench", c)),
        Ok(None) => None,
        Err(e) => {
            println!("\nceiling  pgbench failed ({e:#}); measuring with this process' connections");
            None
        }
    };
    let (by, ceiling) = match measured {
        Some(m) => m,
        None => {
            let single = single_rows(&pool).await?;
            let multi = multi_rows(&pool).await?;
            ("this process", Ceiling { single, multi })
        }
    };
    pool.close().await;
    println!(
        "\nceiling  PostgreSQL itself ({by}): single-row INSERT, {CLIENTS} connections: {:.0} rows/s; \
         1,000-row INSERT, 1 connection: {:.0} rows/s",
        ceiling.single, ceiling.multi
    );
    Ok(ceiling)
}

/// Both rates by `pgbench` (`None` when it is not installed).
async fn pgbench(url: &str) -> anyhow::Result<Option<Ceiling>> {
    if which("pgbench").is_none() {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("bengkel-ceiling-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let single_sql = dir.join("single.sql");
    let multi_sql = dir.join("multi.sql");
    std::fs::write(
        &single_sql,
        format!("INSERT INTO ceiling (body) VALUES ('{BODY}');\n"),
    )?;
    // 1,000 rows sent by the client, as a batch is (not made up by the server).
    let rows = vec![format!("('{BODY}')"); 1_000].join(",");
    std::fs::write(
        &multi_sql,
        format!("INSERT INTO ceiling (body) VALUES {rows};\n"),
    )?;
    let single = pgbench_tps(url, &single_sql, CLIENTS).await;
    let multi = pgbench_tps(url, &multi_sql, 1).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Some(Ceiling {
        single: single?,
        multi: multi? * 1_000.0,
    }))
}

/// Transactions per second of one `pgbench` run of `script` (`-n -T`, as many threads as
/// cores).
async fn pgbench_tps(url: &str, script: &std::path::Path, clients: usize) -> anyhow::Result<f64> {
    let threads = super::num_cpus().min(clients).to_string();
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-c", &clients.to_string(), "-j", &threads])
        .args(["-T", &FOR.as_secs().to_string(), "-f"])
        .arg(script)
        .arg(url)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench exited with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    parse_tps(&stdout).ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {stdout}"))
}

/// `tps = 7931.123 (without initial connection time)` → 7931.123.
fn parse_tps(out: &str) -> Option<f64> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("tps = "))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

async fn single_rows(pool: &PgPool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < FOR {
                sqlx::query("INSERT INTO ceiling (body) VALUES ($1)")
                    .bind(BODY)
                    .execute(&pool)
                    .await?;
                n += 1;
            }
            Ok::<u64, sqlx::Error>(n)
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await??;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

async fn multi_rows(pool: &PgPool) -> anyhow::Result<f64> {
    let bodies: Vec<&str> = vec![BODY; 1_000];
    let started = Instant::now();
    let mut rows = 0u64;
    while started.elapsed() < FOR {
        sqlx::query("INSERT INTO ceiling (body) SELECT * FROM unnest($1::text[])")
            .bind(&bodies)
            .execute(pool)
            .await?;
        rows += 1_000;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_rate_pgbench_prints() {
        let out = "number of failed transactions: 0 (0.000%)\n\
                   latency average = 4.010 ms\n\
                   initial connection time = 35.520 ms\n\
                   tps = 7931.120434 (without initial connection time)\n";
        assert_eq!(super::parse_tps(out), Some(7931.120434));
        assert_eq!(super::parse_tps("pgbench: error"), None);
    }
}
