//! The send pipeline: enqueue rate, drain rate, idle latency, throttle accuracy.

use super::*;

pub(super) async fn enqueue_rate(
    base: &Config,
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
    ceiling: Option<super::ceiling::Ceiling>,
) -> anyhow::Result<()> {
    let config = bench_config(base, gateway, &[])?;
    let (running, url) = start(config, ProcessRole::Api, pool).await?;
    let token = bench_token()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    // Warm the connection pools before measuring.
    for _ in 0..args.clients.min(50) {
        client.get(format!("{url}/health")).send().await?;
    }
    super::profile::Snapshot::prepare(pool).await;
    let before = super::profile::Snapshot::take(pool).await?;
    let started = Instant::now();
    let send = move || {
        client
            .post(format!("{url}/whatsapp/send"))
            .bearer_auth(&token)
            .json(&json!({"to": "0812 3456 789", "body": "Kendaraan Anda sudah selesai diservis", "delay": 86_400}))
    };
    let (latencies, errors) = drive(args.clients, args.requests, send).await?;
    let elapsed = started.elapsed();
    let after = settled_snapshot(pool).await?;
    running.stop().await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(pool)
        .await?;
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "\nenqueue  {} POST /whatsapp/send, {} clients: {:.0} req/s{}; latency p50 {}, p99 {}, max {}; {} errors; {} jobs stored",
        latencies.len(),
        args.clients,
        rate,
        ceiling.map_or(String::new(), |c| format!(
            " ({} the single-row INSERT ceiling)",
            super::ceiling::Ceiling::ratio(rate, c.single)
        )),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
        errors,
        stored,
    );
    println!(
        "enqueue  {}",
        before.per(&after, latencies.len(), "request")
    );
    Ok(())
}

/// A snapshot once idle backends have reported their statistics: a backend that went idle
/// less than a second after its last report waits for PostgreSQL's idle interval (10 s).
async fn settled_snapshot(pool: &PgPool) -> anyhow::Result<super::profile::Snapshot> {
    tokio::time::sleep(Duration::from_millis(11_000)).await;
    super::profile::Snapshot::take(pool).await
}

/// Batch enqueue: `BATCH_CALLERS` callers posting 1,000-message `POST /whatsapp/send-batch`
/// calls until `args.batch_messages` are stored.
pub(super) async fn batch_rate(
    base: &Config,
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
    ceiling: Option<super::ceiling::Ceiling>,
) -> anyhow::Result<()> {
    const BATCH_CALLERS: usize = 8;
    const PER_CALL: usize = 1_000;
    let config = bench_config(base, gateway, &[])?;
    let (running, url) = start(config, ProcessRole::Api, pool).await?;
    let token = bench_token()?;
    let client = reqwest::Client::new();
    let body = json!({"messages": (0..PER_CALL)
        .map(|i| json!({"to": bench_number(i), "body": "Kendaraan Anda sudah selesai diservis", "delay": 86_400, "client_ref": i.to_string()}))
        .collect::<Vec<_>>()});
    let body = Arc::new(serde_json::to_vec(&body)?);
    let calls = args.batch_messages.div_ceil(PER_CALL);
    super::profile::Snapshot::prepare(pool).await;
    let before = super::profile::Snapshot::take(pool).await?;
    let started = Instant::now();
    let send = move || {
        client
            .post(format!("{url}/whatsapp/send-batch"))
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .body(body.as_ref().clone())
    };
    let (latencies, errors) = drive(BATCH_CALLERS, calls, send).await?;
    let elapsed = started.elapsed();
    let after = settled_snapshot(pool).await?;
    running.stop().await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(pool)
        .await?;
    let rate = stored as f64 / elapsed.as_secs_f64();
    println!(
        "
batch    {} POST /whatsapp/send-batch of {PER_CALL}, {BATCH_CALLERS} callers: {rate:.0} messages/s{}; call p50 {}, p99 {}; {} errors; {} jobs stored",
        latencies.len(),
        ceiling.map_or(String::new(), |c| format!(
            " ({} the 1,000-row INSERT ceiling)",
            super::ceiling::Ceiling::ratio(rate, c.multi)
        )),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        errors,
        stored,
    );
    println!(
        "batch    {}",
        before.per(&after, stored as usize, "message")
    );
    Ok(())
}

/// `callers` concurrent tasks sending what `request` builds until `total` were sent: the
/// latencies of the `202`s (sorted) and how many were not.
async fn drive<F>(
    callers: usize,
    total: usize,
    request: F,
) -> anyhow::Result<(Vec<Duration>, usize)>
where
    F: Fn() -> reqwest::RequestBuilder + Clone + Send + 'static,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (request, next) = (request.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                match request().send().await {
                    Ok(r) if r.status() == 202 => latencies.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    Ok((latencies, errors))
}

pub(super) async fn drain_rate(
    base: &Config,
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
    ceiling: Option<super::ceiling::Ceiling>,
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
    super::profile::Snapshot::prepare(pool).await;
    let before = super::profile::Snapshot::take(pool).await?;
    let started = Instant::now();
    let (running, _) = start(config, ProcessRole::Worker, pool).await?;
    let total = args.drain as i64;
    let elapsed = wait_drained(pool, gateway, args.drain, started).await?;
    let after = settled_snapshot(pool).await?;
    running.stop().await?;
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "drain    {} sends, throttle off, {} slots: {:.2} s → {:.0} sends/s{}; gateway calls {} (duplicates: {})",
        total,
        args.concurrency,
        elapsed.as_secs_f64(),
        rate,
        ceiling.map_or(String::new(), |c| format!(
            " ({} the single-row INSERT ceiling)",
            super::ceiling::Ceiling::ratio(rate, c.single)
        )),
        gateway.calls(),
        gateway.calls() as i64 - total,
    );
    println!("drain    {}", before.per(&after, args.drain, "send"));
    Ok(())
}

pub(super) async fn idle_latency(
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
            .json(&json!({"to": bench_number(i), "body": body}))
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

/// The cluster-wide rate: `throttle_processes` real `worker` processes of this binary share
/// `SEND_RATE_PER_SECOND`/`SEND_BURST` for `throttle_seconds`; the fake gateway clocks every
/// call.
pub(super) async fn throttle_accuracy(
    url: &str,
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let rate = args.throttle_rate.max(1);
    let total = (u64::from(rate) * args.throttle_seconds) as usize;
    queue_sends(pool, total, "throttle").await?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..args.throttle_processes.max(1) {
        children.push(
            std::process::Command::new(&exe)
                .arg("worker")
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("DATABASE_URL", url)
                .env("JWT_SECRET", SECRET)
                .env("STARSENDER_API_KEY", "bench")
                .env("STARSENDER_API_URL", &gateway.url)
                .env("SEND_RATE_PER_SECOND", rate.to_string())
                .env("SEND_BURST", args.throttle_burst.to_string())
                .env("WORKER_CONCURRENCY", "4")
                .env("SEND_WINDOW", "00:00-24:00")
                .env("RECIPIENT_MIN_INTERVAL_SECS", "0")
                .env("BIND_ADDR", "127.0.0.1:0")
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.throttle_seconds * 2 + 60);
    let result = loop {
        let arrivals = gateway.arrivals_with_prefix("throttle");
        if arrivals.len() >= total {
            break Ok(arrivals);
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "throttle run did not finish ({}/{total} calls)",
                arrivals.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for child in &mut children {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    let mut arrivals = result?;
    arrivals.sort();
    let n = arrivals.len();
    let burst = args.throttle_burst as usize;
    let span = arrivals[n - 1].duration_since(arrivals[0]);
    // After the first burst, one call per 1/rate.
    let achieved = n.saturating_sub(burst) as f64 / span.as_secs_f64();
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
        "\nthrottle {n} sends by {} worker processes sharing SEND_RATE_PER_SECOND={rate} (burst {burst}, 4 slots each) \
         over {:.1} s: achieved {achieved:.2}/s ({:+.2}%), most calls in any 1 s window {most} (limit {})",
        args.throttle_processes,
        span.as_secs_f64(),
        (achieved / f64::from(rate) - 1.0) * 100.0,
        burst + rate as usize,
    );
    Ok(())
}

/// Waits until the fake gateway took `n` calls and `n` messages are `sent` (watching the
/// gateway first, so as not to load the database); returns the time since `started`.
pub(super) async fn wait_drained(
    pool: &PgPool,
    gateway: &FakeGateway,
    n: usize,
    started: Instant,
) -> anyhow::Result<Duration> {
    while gateway.calls() < n {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the drain did not finish in 10 minutes ({}/{n} calls)",
            gateway.calls()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'sent'")
            .fetch_one(pool)
            .await?;
        if sent as usize >= n {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
