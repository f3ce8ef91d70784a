//! The reminder fan-out over a million vehicles: time and memory of a pass.

use super::*;

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
pub(super) async fn fanout(
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
