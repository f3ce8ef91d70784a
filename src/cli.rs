//! The command line (README "Commands").

use clap::{Parser, Subcommand};

use crate::{
    app::{self, ProcessRole},
    config::Config,
    http::auth::{self, JwtKeys, Role},
};

#[derive(Debug, Parser)]
#[command(
    name = "bengkel-whatsapp",
    version,
    about = "Durable WhatsApp messaging for vehicle workshops"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API + send workers in one process (the default).
    Serve,
    /// HTTP API only: validates and enqueues, never calls the gateway.
    Api,
    /// Send workers only (plus /health, /metrics and, in sandbox mode, the sandbox gateway).
    Worker,
    /// Apply all migrations (apalis' and ours) and exit.
    Migrate,
    /// Print a JWT signed with JWT_SECRET (or the sandbox development secret).
    Token {
        #[arg(long)]
        sub: String,
        #[arg(long, default_value = "client", value_parser = parse_role)]
        role: Role,
        #[arg(long, default_value = "24h", value_parser = auth::parse_ttl)]
        ttl: std::time::Duration,
    },
    /// Load demo customers and vehicles with due dates spread over the next 60 days.
    DemoData {
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(i64).range(1..=50_000_000))]
        vehicles: i64,
    },
    /// Measure enqueue rate, drain rate and idle latency (see README "Benchmarks").
    Bench(crate::bench::BenchArgs),
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    crate::telemetry::init_logging(config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => app::run(config, ProcessRole::Serve).await,
        Command::Api => app::run(config, ProcessRole::Api).await,
        Command::Worker => app::run(config, ProcessRole::Worker).await,
        Command::Migrate => {
            let database = app::Database::open(&config).await?;
            let result = async {
                let pool = crate::db::connect(&database.url, 2).await?;
                crate::db::migrate(&pool).await?;
                pool.close().await;
                anyhow::Ok(())
            }
            .await;
            database.close();
            result?;
            println!("migrations applied");
            Ok(())
        }
        Command::Token { sub, role, ttl } => {
            if sub.trim().is_empty() {
                anyhow::bail!("--sub must not be empty");
            }
            let secret = app::jwt_secret(&config)?;
            println!(
                "{}",
                JwtKeys::new(secret.expose().as_bytes()).issue(&sub, role, ttl)?
            );
            Ok(())
        }
        Command::Bench(args) => crate::bench::run(config, args).await,
        Command::DemoData { vehicles } => {
            let database = app::Database::open(&config).await?;
            let result = async {
                let pool = crate::db::connect(&database.url, 2).await?;
                crate::db::migrate(&pool).await?;
                let today = chrono::Utc::now().with_timezone(&config.app_timezone).date_naive();
                let started = std::time::Instant::now();
                let (customers, vehicles) = crate::customers::demo::load(&pool, vehicles, today).await?;
                println!(
                    "loaded {customers} customers and {vehicles} vehicles in {:.1} s (due dates {today} + 0..{} days)",
                    started.elapsed().as_secs_f64(),
                    crate::customers::demo::SPREAD_DAYS
                );
                pool.close().await;
                anyhow::Ok(())
            }
            .await;
            database.close();
            result
        }
    }
}
