//! What sending through the Cloud API costs against StarSender (SPEC §13): the drain rate of the
//! same queued sends through each gateway's zero-latency stand-in, alternating, each run in its
//! own scratch database. On the Cloud API each send also reads how it goes out (the template
//! mapping, the number's last inbound message) and keeps the wamid the answer names.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    StarSender,
    CloudApi,
}

/// One run: `n` queued sends drained by a worker through `via`. Returns sends/s.
async fn run_once(
    base: &Config,
    admin_url: &str,
    gateway: &FakeGateway,
    args: &BenchArgs,
    via: Via,
) -> anyhow::Result<f64> {
    let scratch = Scratch::create(admin_url).await?;
    let mut env = vec![("WORKER_CONCURRENCY", args.concurrency.to_string())];
    if via == Via::CloudApi {
        env.extend([
            ("GATEWAY", "cloud_api".to_owned()),
            ("CLOUD_API_ACCESS_TOKEN", "bench".to_owned()),
            ("CLOUD_API_PHONE_NUMBER_ID", "bench".to_owned()),
            ("CLOUD_API_APP_SECRET", "bench".to_owned()),
            ("CLOUD_API_VERIFY_TOKEN", "bench".to_owned()),
            ("CLOUD_API_BASE_URL", gateway.graph_url.clone()),
        ]);
    }
    let config = bench_config(base, gateway, &env)?;
    let budget = app::budget(&config, ProcessRole::Worker)?;
    let pool = crate::db::connect(&scratch.url, budget.main).await?;
    crate::db::migrate(&pool).await?;
    let result = async {
        let n = args.cloud_sends;
        queue_sends(&pool, n, "cloud").await?;
        sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
        gateway.reset();
        let started = Instant::now();
        let (running, _) = start(config, ProcessRole::Worker, &pool).await?;
        let drained = wait_drained(&pool, gateway, n, started).await?;
        running.stop().await?;
        let wamids: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE gateway_message_id LIKE 'wamid.BENCH%'",
        )
        .fetch_one(&pool)
        .await?;
        let expected = if via == Via::CloudApi { n as i64 } else { 0 };
        anyhow::ensure!(
            wamids == expected,
            "{wamids} wamids kept, {expected} expected"
        );
        Ok(n as f64 / drained.as_secs_f64())
    }
    .await;
    pool.close().await;
    scratch.drop_now().await?;
    result
}

pub(super) async fn cloud(
    base: &Config,
    admin_url: &str,
    gateway: &FakeGateway,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    println!(
        "\ncloud    {} sends per run, {} slots, throttle off; runs in turn: StarSender, Cloud API \
         (both zero-latency stand-ins in this process)",
        args.cloud_sends, args.concurrency
    );
    let (mut star, mut cloud) = (Vec::new(), Vec::new());
    for round in 0..args.cloud_rounds {
        for via in [Via::StarSender, Via::CloudApi] {
            let rate = run_once(base, admin_url, gateway, args, via).await?;
            println!("cloud    round {round} {via:?}: {rate:.0} sends/s");
            match via {
                Via::StarSender => star.push(rate),
                Via::CloudApi => cloud.push(rate),
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "cloud    mean: StarSender {:.0} sends/s, Cloud API {:.0} sends/s (ratio {:.2})",
        mean(&star),
        mean(&cloud),
        mean(&cloud) / mean(&star)
    );
    Ok(())
}
