//! What the outbox costs (SPEC §12): the drain rate with no webhook subscription against one
//! subscription to `message.sent` (a local receiver answering 200 at once), alternating, each run
//! in its own scratch database — and how fast the deliveries themselves go.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::webhooks::{EventType, repo};

/// A receiver that answers 200 at once and counts requests.
struct CountingReceiver {
    url: String,
    count: Arc<AtomicUsize>,
}

impl CountingReceiver {
    async fn start() -> anyhow::Result<Self> {
        let count: Arc<AtomicUsize> = Arc::default();
        let c = count.clone();
        let app = Router::new().fallback(move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, count })
    }
}

/// How a run treats webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No subscription: the outbox finds nobody and writes nothing.
    None,
    /// One subscription, its deliveries held (queue `webhooks` paused) until the drain is done:
    /// what writing the events costs the sends; then the deliveries alone.
    Held,
    /// One subscription, deliveries running beside the drain (on this machine they share
    /// PostgreSQL's two cores with it).
    Beside,
}

/// One run: `n` queued sends drained by a worker; with a subscription, also every delivery.
/// Returns (sends/s, deliveries/s).
async fn run_once(
    base: &Config,
    admin_url: &str,
    gateway: &FakeGateway,
    receiver: &CountingReceiver,
    args: &BenchArgs,
    mode: Mode,
) -> anyhow::Result<(f64, Option<f64>)> {
    let subscribed = mode != Mode::None;
    let scratch = Scratch::create(admin_url).await?;
    let config = bench_config(
        base,
        gateway,
        &[
            ("WORKER_CONCURRENCY", args.concurrency.to_string()),
            ("WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
        ],
    )?;
    let budget = app::budget(&config, ProcessRole::Worker)?;
    let pool = crate::db::connect(&scratch.url, budget.main).await?;
    crate::db::migrate(&pool).await?;
    let result = async {
        if subscribed {
            repo::create(
                &pool,
                &receiver.url,
                &[EventType::MessageSent],
                None,
                "bench",
            )
            .await?;
        }
        let n = args.webhook_sends;
        queue_sends(&pool, n, "webhooks").await?;
        sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
        gateway.reset();
        let delivered_before = receiver.count.load(Ordering::Relaxed);
        super::profile::Snapshot::prepare(&pool).await;
        let before = super::profile::Snapshot::take(&pool).await?;
        let started = Instant::now();
        let (running, _) = start(config, ProcessRole::Worker, &pool).await?;
        let drained = wait_drained(&pool, gateway, n, started).await?;
        let deliveries_started = if mode == Mode::Held {
            crate::queue::pause::set_paused(&pool, crate::queue::WEBHOOK_QUEUE, false, "bench")
                .await?;
            Instant::now()
        } else {
            started
        };
        let delivered = if subscribed {
            while receiver.count.load(Ordering::Relaxed) - delivered_before < n {
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(900),
                    "the deliveries did not finish in 15 minutes"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(n as f64 / deliveries_started.elapsed().as_secs_f64())
        } else {
            None
        };
        let after = super::profile::Snapshot::take(&pool).await?;
        if std::env::var_os("BENCH_TOP_STATEMENTS").is_some() {
            let top: Vec<(i64, f64, String)> = sqlx::query_as(
                "SELECT calls, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 150)
                 FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 ORDER BY total_exec_time DESC LIMIT 15",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            for (calls, ms, q) in top {
                println!("  {calls:>8} calls {ms:>9.0} ms  {q}");
            }
        }
        running.stop().await?;
        println!(
            "webhooks   drained in {:.1} s, everything in {:.1} s; {}",
            drained.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            before.per(&after, n, "send")
        );
        Ok((n as f64 / drained.as_secs_f64(), delivered))
    }
    .await;
    pool.close().await;
    scratch.drop_now().await?;
    result
}

pub(super) async fn webhooks(
    base: &Config,
    admin_url: &str,
    gateway: &FakeGateway,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let receiver = CountingReceiver::start().await?;
    println!(
        "\nwebhooks {} sends per run, {} slots; runs in turn: no subscription; one subscription to \
         message.sent, its deliveries held until the drain is done (then timed alone); one, its \
         deliveries running beside the drain",
        args.webhook_sends, args.concurrency
    );
    let mut rates: HashMap<&str, Vec<f64>> = HashMap::new();
    for round in 0..args.webhook_rounds {
        for mode in [Mode::None, Mode::Held, Mode::Beside] {
            let (rate, delivered) =
                run_once(base, admin_url, gateway, &receiver, args, mode).await?;
            let (key, deliveries) = match mode {
                Mode::None => ("none", "-"),
                Mode::Held => ("held", "deliveries alone"),
                Mode::Beside => ("beside", "deliveries beside"),
            };
            println!(
                "webhooks round {round} {mode:?}: {rate:.0} sends/s{}",
                delivered.map_or(String::new(), |d| format!(
                    "; {} deliveries at {d:.0}/s ({})",
                    args.webhook_sends,
                    if mode == Mode::Held {
                        "alone, after the drain"
                    } else {
                        "from the drain's start"
                    }
                ))
            );
            rates.entry(key).or_default().push(rate);
            if let Some(d) = delivered {
                rates.entry(deliveries).or_default().push(d);
            }
        }
    }
    let mean = |k: &str| {
        let v = rates.get(k).cloned().unwrap_or_default();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let none = mean("none");
    println!(
        "webhooks mean: {none:.0} sends/s with no subscription; with one: {:.0} sends/s while its \
         deliveries wait (the outbox's writes cost {:.1} %), {:.0} sends/s with its deliveries \
         running beside ({:.1} %); deliveries {:.0}/s alone, {:.0}/s beside the drain",
        mean("held"),
        (1.0 - mean("held") / none) * 100.0,
        mean("beside"),
        (1.0 - mean("beside") / none) * 100.0,
        mean("deliveries alone"),
        mean("deliveries beside"),
    );
    Ok(())
}
