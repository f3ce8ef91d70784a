//! (`fairness`) Campaigns yield to reminders (README "Delivery policy": campaigns yield): a
//! backlog of campaign messages due at once drains at the configured rate; then reminders
//! arrive and go first. Measured at the fake gateway: how long the first reminder and all of
//! them took from their insert, and the campaign's rate before, while and after the reminders
//! waited, against `SEND_RATE_PER_SECOND`.

use super::*;

pub(super) async fn fairness(
    base: &Config,
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let rate = args.fairness_rate.max(1);
    let campaign = args.fairness_campaign.max(2);
    let reminders = args.fairness_reminders.max(1);
    let fill = Instant::now();
    queue_kind(pool, Kind::Campaign, campaign, 0).await?;
    sqlx::query("VACUUM ANALYZE apalis.jobs")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE messages").execute(pool).await?;
    println!(
        "\nfairness {campaign} campaign messages queued set-wise in {:.2} s; SEND_RATE_PER_SECOND={rate}, burst 1, {} slots",
        fill.elapsed().as_secs_f64(),
        args.fairness_concurrency,
    );
    let config = bench_config(
        base,
        gateway,
        &[
            ("SEND_RATE_PER_SECOND", rate.to_string()),
            ("SEND_BURST", "1".to_owned()),
            ("WORKER_CONCURRENCY", args.fairness_concurrency.to_string()),
            ("SEND_WINDOW", "00:00-24:00".to_owned()),
            ("RECIPIENT_MIN_INTERVAL_SECS", "0".to_owned()),
        ],
    )?;
    let (running, _) = start(config, ProcessRole::Worker, pool).await?;
    let result = measure(pool, gateway, args, rate, campaign, reminders).await;
    running.stop().await?;
    result
}

async fn measure(
    pool: &PgPool,
    gateway: &FakeGateway,
    args: &BenchArgs,
    rate: u32,
    campaign: usize,
    reminders: usize,
) -> anyhow::Result<()> {
    let rate_f = f64::from(rate);
    // Campaign alone for a while, then the reminders.
    let before = Duration::from_secs(args.fairness_before_secs);
    let drain = Duration::from_secs_f64(campaign as f64 / rate_f);
    wait_for(gateway, "campaign ", 1, Duration::from_secs(30)).await?;
    tokio::time::sleep(before.min(drain / 2)).await;
    let t0 = Instant::now();
    queue_kind(pool, Kind::Maintenance, reminders, campaign).await?;
    let stored = t0.elapsed();
    let limit = Duration::from_secs_f64(reminders as f64 / rate_f * 4.0 + 60.0);
    let mut reminded = wait_for(gateway, "reminder ", reminders, limit).await?;
    let limit = drain * 2 + Duration::from_secs(120);
    let mut campaigned = wait_for(gateway, "campaign ", campaign, limit).await?;
    reminded.sort();
    campaigned.sort();
    let (first, last) = (reminded[0], reminded[reminders - 1]);
    let per_s = |calls: &[Instant]| match calls {
        [a, .., b] => (calls.len() - 1) as f64 / b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    };
    let pct = |r: f64| (r / rate_f - 1.0) * 100.0;
    let alone: Vec<Instant> = campaigned.iter().copied().filter(|t| *t < t0).collect();
    let after: Vec<Instant> = campaigned.iter().copied().filter(|t| *t > last).collect();
    let during = campaigned
        .iter()
        .filter(|t| **t >= t0 && **t <= last)
        .count();
    let span = last.duration_since(t0).as_secs_f64();
    let mut all: Vec<Instant> = campaigned.iter().chain(&reminded).copied().collect();
    all.sort();
    println!(
        "fairness {reminders} reminders inserted {:.1} s into the drain (insert took {}): first reminder at the gateway after {}, all {reminders} after {}",
        alone
            .first()
            .map_or(0.0, |a| t0.duration_since(*a).as_secs_f64()),
        ms(stored),
        ms(first.duration_since(t0)),
        ms(last.duration_since(t0)),
    );
    println!(
        "fairness while reminders waited ({span:.2} s): {during} campaign calls ({:.1}/s), all calls {:.2}/s",
        during as f64 / span,
        (during + reminders) as f64 / span,
    );
    println!(
        "fairness campaign alone: {:.2}/s before ({} calls, {:+.2}%), {:.2}/s after ({} calls, {:+.2}%); whole run {:.2}/s ({} calls, {:+.2}%)",
        per_s(&alone),
        alone.len(),
        pct(per_s(&alone)),
        per_s(&after),
        after.len(),
        pct(per_s(&after)),
        per_s(&all),
        all.len(),
        pct(per_s(&all)),
    );
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE status <> 'sent' OR attempts <> 1")
            .fetch_one(pool)
            .await?;
    println!(
        "fairness messages not sent in exactly one attempt: {attempts}; gateway calls {} (duplicates: {})",
        gateway.calls(),
        gateway.calls() as i64 - (campaign + reminders) as i64,
    );
    Ok(())
}

/// Waits until the fake gateway saw `n` bodies starting with `prefix`; their arrivals.
async fn wait_for(
    gateway: &FakeGateway,
    prefix: &str,
    n: usize,
    within: Duration,
) -> anyhow::Result<Vec<Instant>> {
    let started = Instant::now();
    loop {
        let seen = gateway.arrivals_with_prefix(prefix);
        if seen.len() >= n {
            return Ok(seen);
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "{}/{n} `{prefix}…` calls after {within:?}",
            seen.len()
        );
        // Each look scans every recorded call: rarely while thousands are expected.
        let poll = if n > 1_000 { 200 } else { 20 };
        tokio::time::sleep(Duration::from_millis(poll)).await;
    }
}

/// Queues `n` messages of `kind` set-wise, each to its own number (from the `offset`-th), bodies
/// `"campaign {i}"` or `"reminder {i}"`.
async fn queue_kind(pool: &PgPool, kind: Kind, n: usize, offset: usize) -> anyhow::Result<()> {
    let prefix = if kind == Kind::Campaign {
        "campaign"
    } else {
        "reminder"
    };
    super::queue_messages(pool, kind, offset, n, prefix).await
}
