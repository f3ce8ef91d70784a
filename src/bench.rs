//! `bengkel-whatsapp bench`: the send pipeline measured against a real PostgreSQL and a local
//! zero-latency fake gateway, in a scratch database that is dropped afterwards.
//!
//! 1. HTTP enqueue rate: an `api` process, N concurrent clients posting `/whatsapp/send`.
//! 2. Drain rate: M queued sends inserted set-wise, then workers with the throttle off.
//! 3. Idle enqueue-to-gateway latency: a `serve` process, one send at a time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{Json, Router, routing::post};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

use crate::{
    app::{self, Database, ProcessRole},
    config::{Config, Secret},
    http::auth::{JwtKeys, Role},
    messages::{Kind, phone::PhoneNumber, repo, request::NewMessage},
};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Requests for the enqueue benchmark.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Concurrent HTTP clients for the enqueue benchmark.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Queued sends for the drain benchmark.
    #[arg(long, default_value_t = 50_000)]
    pub drain: usize,
    /// Worker slots for the drain benchmark (`WORKER_CONCURRENCY`).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Sends measured for the idle latency benchmark.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// `SEND_RATE_PER_SECOND` for the throttle accuracy benchmark.
    #[arg(long, default_value_t = 20)]
    pub throttle_rate: u32,
    /// Sends for the throttle accuracy benchmark.
    #[arg(long, default_value_t = 200)]
    pub throttle_sends: usize,
    /// Vehicle counts for the fan-out benchmark (each loaded with `demo-data`'s spread, about
    /// 5 % due in the reminder window).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub vehicles: Vec<i64>,
    /// Which parts to run: any of enqueue, drain, latency, throttle, fanout.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "enqueue,drain,latency,throttle,fanout"
    )]
    pub only: Vec<String>,
}

const SECRET: &str = "bench-secret-bench-secret-bench-secret";

pub async fn run(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    let database = Database::open(&config).await?;
    let result = bench(&config, &database.url, &args).await;
    database.close();
    result
}

/// A scratch database on the same server, dropped when the benchmark ends.
struct Scratch {
    admin_url: String,
    name: String,
    url: String,
}

impl Scratch {
    async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("bengkel_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b)
            .context("DATABASE_URL must end in /<database>")?;
        let (base, query) = match admin_url.split_once('?') {
            Some((_, q)) => (base.to_owned(), format!("?{q}")),
            None => (base.to_owned(), String::new()),
        };
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{name}{query}"),
            name,
        })
    }

    async fn drop_now(self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

async fn bench(config: &Config, admin_url: &str, args: &BenchArgs) -> anyhow::Result<()> {
    println!(
        "bengkel-whatsapp bench — {} cores, PostgreSQL at {}",
        num_cpus(),
        redact(admin_url)
    );
    let gateway = FakeGateway::start().await?;
    for part in &args.only {
        if part == "fanout" {
            for &n in &args.vehicles {
                fanout(config, admin_url, &gateway, n).await?;
            }
            continue;
        }
        let scratch = Scratch::create(admin_url).await?;
        // Sized as a process of the benchmark's shape would size it.
        let shape = bench_config(
            config,
            &gateway,
            &[("WORKER_CONCURRENCY", args.concurrency.to_string())],
        )?;
        let pool = crate::db::connect(&scratch.url, crate::db::pool_size(&shape)).await?;
        crate::db::migrate(&pool).await?;
        let result = match part.as_str() {
            "enqueue" => enqueue_rate(config, &pool, &gateway, args).await,
            "drain" => drain_rate(config, &pool, &gateway, args).await,
            "latency" => idle_latency(config, &pool, &gateway, args).await,
            "throttle" => throttle_accuracy(config, &pool, &gateway, args).await,
            other => Err(anyhow::anyhow!(
                "unknown benchmark `{other}` (enqueue, drain, latency, throttle, fanout)"
            )),
        };
        pool.close().await;
        scratch.drop_now().await?;
        result?;
    }
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

fn bench_config(
    base: &Config,
    gateway: &FakeGateway,
    env: &[(&str, String)],
) -> anyhow::Result<Arc<Config>> {
    let mut vars: HashMap<String, String> = [
        ("JWT_SECRET", SECRET.to_owned()),
        ("STARSENDER_API_KEY", "bench".to_owned()),
        ("STARSENDER_API_URL", gateway.url.clone()),
        ("SEND_RATE_PER_SECOND", "0".to_owned()),
        (
            "LOG_FORMAT",
            if base.log_format == crate::config::LogFormat::Json {
                "json"
            } else {
                "text"
            }
            .to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in env {
        vars.insert((*k).to_owned(), v.clone());
    }
    Ok(Arc::new(Config::from_map(&vars)?))
}

async fn start(
    config: Arc<Config>,
    role: ProcessRole,
    pool: &PgPool,
) -> anyhow::Result<(app::Running, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = app::start(config, role, pool.clone(), listener, &Secret::new(SECRET)).await?;
    let base = format!("http://{}", running.local_addr);
    Ok((running, base))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn bench_token() -> anyhow::Result<String> {
    JwtKeys::new(SECRET.as_bytes()).issue("bench", Role::Client, Duration::from_secs(3600))
}

/// Queues `n` sends set-wise, in transactions of 5,000, bodies `"{prefix} {i}"`.
async fn queue_sends(pool: &PgPool, n: usize, prefix: &str) -> anyhow::Result<()> {
    let to = PhoneNumber::parse("0812 3456 789")?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let batch: Vec<NewMessage> = chunk
            .iter()
            .map(|i| NewMessage::internal(Kind::Adhoc, to.clone(), format!("{prefix} {i}"), None))
            .collect();
        let mut tx = pool.begin().await?;
        repo::store_batch(&mut tx, &batch, "bench", 8).await?;
        tx.commit().await?;
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn enqueue_rate(
    base: &Config,
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let config = bench_config(base, gateway, &[])?;
    let (running, url) = start(config, ProcessRole::Api, pool).await?;
    let token = bench_token()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Warm the connection pools before measuring.
    for _ in 0..args.clients.min(50) {
        client.get(format!("{url}/health")).send().await?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (client, url, token, next) = (client.clone(), url.clone(), token.clone(), next.clone());
        let total = args.requests;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                let res = client
                    .post(format!("{url}/whatsapp/send"))
                    .bearer_auth(&token)
                    .json(&json!({"to": "0812 3456 789", "body": "Kendaraan Anda sudah selesai diservis", "delay": 86_400}))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 202 => latencies.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(args.requests);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    running.stop().await?;
    latencies.sort();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(pool)
        .await?;
    println!(
        "\nenqueue  {} POST /whatsapp/send, {} clients: {:.0} req/s; latency p50 {}, p99 {}, max {}; {} errors; {} jobs stored",
        latencies.len(),
        args.clients,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
        errors,
        stored,
    );
    Ok(())
}

async fn drain_rate(
    base: &Config,
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let fill = Instant::now();
    queue_sends(pool, args.drain, "drain").await?;
    println!(
        "\ndrain    {} sends queued set-wise in {:.2} s",
        args.drain,
        fill.elapsed().as_secs_f64()
    );
    sqlx::query("VACUUM ANALYZE apalis.jobs")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE messages").execute(pool).await?;
    gateway.reset();

    let config = bench_config(
        base,
        gateway,
        &[("WORKER_CONCURRENCY", args.concurrency.to_string())],
    )?;
    let started = Instant::now();
    let (running, _) = start(config, ProcessRole::Worker, pool).await?;
    let total = args.drain as i64;
    // Watch the fake gateway (not the database, so as not to load it), then check the table.
    while (gateway.calls() as i64) < total {
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!(
                "drain did not finish in 10 minutes ({}/{total} calls)",
                gateway.calls()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'sent'")
            .fetch_one(pool)
            .await?;
        if sent >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    running.stop().await?;
    println!(
        "drain    {} sends, throttle off, {} slots: {:.2} s → {:.0} sends/s; gateway calls {} (duplicates: {})",
        total,
        args.concurrency,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        gateway.calls(),
        gateway.calls() as i64 - total,
    );
    Ok(())
}

async fn idle_latency(
    base: &Config,
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let config = bench_config(base, gateway, &[])?;
    let (running, url) = start(config, ProcessRole::Serve, pool).await?;
    let token = bench_token()?;
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for i in 0..args.latency_samples {
        let body = format!("latency {i}");
        let t = Instant::now();
        let res = client
            .post(format!("{url}/whatsapp/send"))
            .bearer_auth(&token)
            .json(&json!({"to": "0812 3456 789", "body": body}))
            .send()
            .await?;
        anyhow::ensure!(res.status() == 202, "enqueue failed: {}", res.status());
        let arrived = loop {
            if let Some(at) = gateway.arrival(&body) {
                break at;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(10),
                "message {i} never reached the gateway"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(arrived.duration_since(t));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await?;
    latencies.sort();
    println!(
        "\nlatency  {} sends one at a time on an idle `serve`: enqueue→gateway p50 {}, p99 {}, max {}",
        latencies.len(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    Ok(())
}

async fn throttle_accuracy(
    base: &Config,
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    queue_sends(pool, args.throttle_sends, "throttle").await?;
    let config = bench_config(
        base,
        gateway,
        &[
            ("SEND_RATE_PER_SECOND", args.throttle_rate.to_string()),
            ("SEND_BURST", "1".to_owned()),
            ("WORKER_CONCURRENCY", "16".to_owned()),
        ],
    )?;
    let (running, _) = start(config, ProcessRole::Worker, pool).await?;
    let deadline = Instant::now()
        + Duration::from_secs(args.throttle_sends as u64 / args.throttle_rate.max(1) as u64 + 60);
    let mut arrivals = loop {
        let arrivals = gateway.arrivals_with_prefix("throttle");
        if arrivals.len() >= args.throttle_sends {
            break arrivals;
        }
        anyhow::ensure!(Instant::now() < deadline, "throttle run did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.stop().await?;
    arrivals.sort();
    let n = arrivals.len();
    let span = arrivals[n - 1].duration_since(arrivals[0]);
    let achieved = (n - 1) as f64 / span.as_secs_f64();
    // The most calls seen in any one-second window at the gateway.
    let mut most = 0;
    let mut start = 0;
    for end in 0..n {
        while arrivals[end].duration_since(arrivals[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    println!(
        "\nthrottle {n} sends at SEND_RATE_PER_SECOND={} (burst 1, 16 slots): achieved {achieved:.2}/s ({:+.2}%), \
         most calls in any 1 s window {most}",
        args.throttle_rate,
        (achieved / args.throttle_rate as f64 - 1.0) * 100.0,
    );
    Ok(())
}

/// A StarSender stand-in that answers at once and notes when each body arrived.
struct FakeGateway {
    url: String,
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeGateway {
    async fn start() -> anyhow::Result<Self> {
        let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let calls: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (a, c) = (arrivals.clone(), calls.clone());
        let app = Router::new().route(
            "/api/send",
            post(move |Json(body): Json<Value>| {
                let (a, c) = (a.clone(), c.clone());
                async move {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(text) = body.get("body").and_then(Value::as_str)
                        && (text.starts_with("latency") || text.starts_with("throttle"))
                        && let Ok(mut map) = a.lock()
                    {
                        map.insert(text.to_owned(), Instant::now());
                    }
                    Json(json!({"success": true, "data": {"messageId": "bench"}, "message": "ok"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/api/send", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url,
            arrivals,
            calls,
        })
    }

    fn arrival(&self, body: &str) -> Option<Instant> {
        self.arrivals.lock().ok()?.get(body).copied()
    }

    fn arrivals_with_prefix(&self, prefix: &str) -> Vec<Instant> {
        self.arrivals
            .lock()
            .map(|map| {
                map.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(_, at)| *at)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn reset(&self) {
        self.calls.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// This process' resident memory in KiB (Linux `/proc/self/status`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `pass` while sampling this process' RSS every 10 ms; returns (elapsed, summary, peak
/// RSS growth in KiB over the RSS before the pass).
async fn measured<F, T>(pass: F) -> anyhow::Result<(Duration, T, u64)>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let before = rss_kib();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.is_cancelled() {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let started = Instant::now();
    let result = pass.await;
    let elapsed = started.elapsed();
    done.cancel();
    sampler.await.ok();
    let peak = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(rss_kib());
    Ok((elapsed, result?, peak.saturating_sub(before)))
}

/// The daily fan-out over `vehicles` vehicles: the first pass (every eligible reminder row,
/// message and send job inserted) and a second pass that finds them all queued.
async fn fanout(
    config: &Config,
    admin_url: &str,
    gateway: &FakeGateway,
    vehicles: i64,
) -> anyhow::Result<()> {
    let scratch = Scratch::create(admin_url).await?;
    let shape = bench_config(config, gateway, &[])?;
    let pool = crate::db::connect(&scratch.url, 8).await?;
    let result = async {
        crate::db::migrate(&pool).await?;
        let today = crate::reminders::business_date(shape.app_timezone, chrono::Utc::now());
        let loaded = Instant::now();
        crate::customers::demo::load(&pool, vehicles, today).await?;
        sqlx::query("ANALYZE").execute(&pool).await?;
        println!(
            "fanout: {vehicles} vehicles loaded in {:.1} s (demo-data)",
            loaded.elapsed().as_secs_f64()
        );
        for label in ["first pass ", "second pass"] {
            let (elapsed, s, grew) =
                measured(crate::reminders::schedule::run_manual(&pool, &shape, today)).await?;
            println!(
                "fanout {label}: {:.2} s; eligible {}, queued {}, already queued {}, skipped {}; \
                 peak RSS growth {:.1} MiB",
                elapsed.as_secs_f64(),
                s.eligible,
                s.reminder_queued,
                s.already_queued,
                s.skipped,
                grew as f64 / 1024.0
            );
        }
        let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1")
            .bind(crate::queue::SEND_QUEUE)
            .fetch_one(&pool)
            .await?;
        println!("fanout: {jobs} send jobs in the queue (one per reminder)");
        anyhow::Ok(())
    }
    .await;
    pool.close().await;
    scratch.drop_now().await?;
    result
}
