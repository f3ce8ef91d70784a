//! `bengkel-whatsapp bench`: the send pipeline measured against a real PostgreSQL and a local
//! zero-latency fake gateway, in a scratch database that is dropped afterwards.
//!
//! 1. HTTP enqueue rate: an `api` process, N concurrent clients posting `/whatsapp/send`.
//! 2. Drain rate: M queued sends inserted set-wise, then workers with the throttle off (and the
//!    rest of the delivery policy on, at its defaults).
//! 3. Idle enqueue-to-gateway latency: a `serve` process, one send at a time.
//! 4. (`webhooks`) The drain rate without and with one webhook subscription, and the delivery
//!    rate to a local receiver.
//! 5. (`cloud`) The drain rate through StarSender against the Cloud API, alternating.
//! 6. (`fairness`) Campaigns yield: a campaign backlog at a limited rate, then reminders.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{Json, Router, routing::post};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

mod ceiling;
mod cloud;
mod fairness;
mod fanout;
mod gateway;
mod profile;
mod sends;
mod webhooks;

use self::{fanout::fanout, gateway::FakeGateway, sends::*};
use crate::{
    app::{self, Database, ProcessRole},
    config::{Config, Secret},
    http::auth::{JwtKeys, Role},
    messages::{Kind, phone::PhoneNumber, request::NewMessage, store},
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
    /// `SEND_RATE_PER_SECOND` for the cluster-wide throttle benchmark.
    #[arg(long, default_value_t = 20)]
    pub throttle_rate: u32,
    /// `SEND_BURST` for the cluster-wide throttle benchmark.
    #[arg(long, default_value_t = 1)]
    pub throttle_burst: u32,
    /// How long the throttle benchmark sends (it queues rate × seconds sends).
    #[arg(long, default_value_t = 60)]
    pub throttle_seconds: u64,
    /// `worker` processes (this binary) sharing the rate in the throttle benchmark.
    #[arg(long, default_value_t = 3)]
    pub throttle_processes: usize,
    /// Vehicle counts for the fan-out benchmark (each loaded with `demo-data`'s spread, about
    /// 5 % due in the reminder window).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub vehicles: Vec<i64>,
    /// Messages for the batch enqueue benchmark (1,000 per call, 8 callers).
    #[arg(long, default_value_t = 50_000)]
    pub batch_messages: usize,
    /// Sends per run of the webhook benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub webhook_sends: usize,
    /// Rounds of the webhook benchmark (each: a run without a subscription, then one with).
    #[arg(long, default_value_t = 2)]
    pub webhook_rounds: usize,
    /// Sends per run of the Cloud API benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub cloud_sends: usize,
    /// Rounds of the Cloud API benchmark (each: a StarSender run, then a Cloud API run).
    #[arg(long, default_value_t = 3)]
    pub cloud_rounds: usize,
    /// Campaign messages queued for the fairness benchmark (drained at `--fairness-rate`).
    #[arg(long, default_value_t = 20_000)]
    pub fairness_campaign: usize,
    /// Reminders that arrive during the fairness benchmark's campaign.
    #[arg(long, default_value_t = 100)]
    pub fairness_reminders: usize,
    /// `SEND_RATE_PER_SECOND` of the fairness benchmark.
    #[arg(long, default_value_t = 20)]
    pub fairness_rate: u32,
    /// `WORKER_CONCURRENCY` of the fairness benchmark.
    #[arg(long, default_value_t = 8)]
    pub fairness_concurrency: usize,
    /// Seconds the campaign runs alone before the reminders arrive (at most half its drain).
    #[arg(long, default_value_t = 60)]
    pub fairness_before_secs: u64,
    /// Which parts to run: any of ceiling, enqueue, batch, drain, latency, throttle, fanout,
    /// webhooks, cloud, fairness.
    /// `ceiling` (PostgreSQL's own insert rates) runs first, and the enqueue figures are then
    /// also printed as a ratio to it.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ceiling,enqueue,batch,drain,latency,throttle,fanout"
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
    let mut ceiling = None;
    if args.only.iter().any(|p| p == "ceiling") {
        let scratch = Scratch::create(admin_url).await?;
        let measured = ceiling::measure(&scratch.url).await;
        scratch.drop_now().await?;
        ceiling = Some(measured?);
    }
    for part in args.only.iter().filter(|p| *p != "ceiling") {
        if part == "webhooks" {
            webhooks::webhooks(config, admin_url, &gateway, args).await?;
            continue;
        }
        if part == "cloud" {
            cloud::cloud(config, admin_url, &gateway, args).await?;
            continue;
        }
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
        // The pool of the role the part runs, at its default (or `DB_MAX_CONNECTIONS`) budget.
        let role = match part.as_str() {
            "enqueue" | "batch" => ProcessRole::Api,
            "drain" | "throttle" | "fairness" => ProcessRole::Worker,
            _ => ProcessRole::Serve,
        };
        let budget = app::budget(&shape, role)?;
        let pool = crate::db::connect(&scratch.url, budget.main).await?;
        crate::db::migrate(&pool).await?;
        let result = match part.as_str() {
            "enqueue" => enqueue_rate(config, &pool, &gateway, args, ceiling).await,
            "batch" => batch_rate(config, &pool, &gateway, args, ceiling).await,
            "drain" => drain_rate(config, &pool, &gateway, args, ceiling).await,
            "latency" => idle_latency(config, &pool, &gateway, args).await,
            "throttle" => throttle_accuracy(&scratch.url, &pool, &gateway, args).await,
            "fairness" => fairness::fairness(config, &pool, &gateway, args).await,
            other => Err(anyhow::anyhow!(
                "unknown benchmark `{other}` (ceiling, enqueue, batch, drain, latency, throttle, fanout, webhooks, cloud, fairness)"
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
    // The delivery policy as the bench command was started with (its defaults otherwise).
    for (k, v) in [
        ("SEND_WINDOW", base.send_window.to_string()),
        (
            "RECIPIENT_MIN_INTERVAL_SECS",
            base.recipient_min_interval_secs.to_string(),
        ),
        (
            "CIRCUIT_FAILURE_THRESHOLD",
            base.circuit_failure_threshold.to_string(),
        ),
    ] {
        vars.insert(k.to_owned(), v);
    }
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

/// Queues `n` ad-hoc sends set-wise, in transactions of 5,000, bodies `"{prefix} {i}"`, each
/// to its own number (as a real backlog is: the per-recipient spacing checks and records every
/// one of them).
async fn queue_sends(pool: &PgPool, n: usize, prefix: &str) -> anyhow::Result<()> {
    queue_messages(pool, Kind::Adhoc, 0, n, prefix).await
}

/// [`queue_sends`] for messages of `kind`, to the numbers from the `offset`-th on.
async fn queue_messages(
    pool: &PgPool,
    kind: Kind,
    offset: usize,
    n: usize,
    prefix: &str,
) -> anyhow::Result<()> {
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let mut batch: Vec<NewMessage> = Vec::with_capacity(chunk.len());
        for i in chunk {
            let to = PhoneNumber::parse(&bench_number(offset + *i))?;
            batch.push(NewMessage::internal(
                kind,
                to,
                format!("{prefix} {i}"),
                None,
            ));
        }
        let mut tx = pool.begin().await?;
        let items: Vec<store::Item<'_>> =
            batch.iter().map(|m| store::Item::new(m, "bench")).collect();
        store::store(&mut tx, &items, None, 8).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The `i`-th of ten million distinct numbers.
fn bench_number(i: usize) -> String {
    format!("0812{:07}", i % 10_000_000)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
