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

/// One run: `n` queued sends drained by a worker; with a subscription, also every delivery.
/// Returns (sends/s, deliveries/s).
async fn run_once(
    base: &Config,
    admin_url: &str,
    gateway: &FakeGateway,
    receiver: &CountingReceiver,
    args: &BenchArgs,
    subscribed: bool,
) -> anyhow::Result<(f64, Option<f64>)> {
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
        let started = Instant::now();
        let (running, _) = start(config, ProcessRole::Worker, &pool).await?;
        while gateway.calls() < n {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "the drain did not finish in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            let sent: i64 =
                sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'sent'")
                    .fetch_one(&pool)
                    .await?;
            if sent as usize >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drained = started.elapsed();
        let delivered = if subscribed {
            while receiver.count.load(Ordering::Relaxed) - delivered_before < n {
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(900),
                    "the deliveries did not finish in 15 minutes"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Some(n as f64 / started.elapsed().as_secs_f64())
        } else {
            None
        };
        running.stop().await?;
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
        "\nwebhooks {} sends per run, {} slots; runs alternate: no subscription, one subscription to message.sent",
        args.webhook_sends, args.concurrency
    );
    let (mut none, mut one, mut deliveries) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.webhook_rounds {
        for subscribed in [false, true] {
            let (rate, delivered) =
                run_once(base, admin_url, gateway, &receiver, args, subscribed).await?;
            println!(
                "webhooks round {round} {}: {rate:.0} sends/s{}",
                if subscribed {
                    "1 subscription "
                } else {
                    "no subscription"
                },
                delivered.map_or(String::new(), |d| format!(
                    ", all {} deliveries done at {d:.0} deliveries/s (from the drain's start)",
                    args.webhook_sends
                ))
            );
            if subscribed {
                one.push(rate);
                deliveries.extend(delivered);
            } else {
                none.push(rate);
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (a, b) = (mean(&none), mean(&one));
    println!(
        "webhooks mean: {a:.0} sends/s without, {b:.0} with one subscription → the outbox costs {:.1} % of drain throughput; deliveries {:.0}/s",
        (1.0 - b / a) * 100.0,
        mean(&deliveries)
    );
    Ok(())
}
