//! PostgreSQL's own ceiling on the same server, measured in the same run, so that every figure
//! can be read as a ratio (README "Benchmarks"): single-row `INSERT`s from 32 connections, and
//! 1,000-row `INSERT`s from one — what `pgbench` would do with a one-line script, done here so
//! that no other tool is needed.

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
    let single = single_rows(&pool).await?;
    let multi = multi_rows(&pool).await?;
    pool.close().await;
    println!(
        "\nceiling  PostgreSQL itself: single-row INSERT, {CLIENTS} connections: {single:.0} rows/s; \
         1,000-row INSERT, 1 connection: {multi:.0} rows/s"
    );
    Ok(Ceiling { single, multi })
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
                    .bind("Kendaraan Anda sudah selesai diservis")
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
    let bodies: Vec<&str> = vec!["Kendaraan Anda sudah selesai diservis"; 1_000];
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
