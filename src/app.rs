//! Starting a process in one of its roles (README "Commands"): database, HTTP, workers, shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, Secret},
    db::{self, embedded::EmbeddedPostgres},
    gateway::{Gateway, sandbox},
    http::{self, Surface, auth::Role},
    state::AppState,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRole {
    Serve,
    Api,
    Worker,
}

/// The database this process uses: `DATABASE_URL`, or the embedded cluster it started.
pub struct Database {
    pub url: String,
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        match &config.database_url {
            Some(url) => Ok(Self {
                url: url.expose().to_owned(),
                embedded: None,
            }),
            None => {
                let dir = config.data_dir.clone();
                let pg =
                    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir)).await??;
                Ok(Self {
                    url: pg.url(),
                    embedded: Some(pg),
                })
            }
        }
    }

    pub fn close(self) {
        if let Some(pg) = self.embedded {
            pg.stop();
        }
    }
}

/// `JWT_SECRET`, or in sandbox mode a development secret kept in `DATA_DIR` so that printed
/// tokens survive restarts. In live mode a missing secret stops start-up.
pub fn jwt_secret(config: &Config) -> anyhow::Result<Secret> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.clone());
    }
    if !config.sandbox() {
        anyhow::bail!(
            "invalid configuration: JWT_SECRET must be set when STARSENDER_API_KEY is set (live mode)"
        );
    }
    let path = config.data_dir.join("dev-jwt-secret");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.trim().is_empty()
    {
        return Ok(Secret::new(existing.trim()));
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    db::embedded::write_private(&path, &secret)?;
    Ok(Secret::new(secret))
}

pub async fn run(config: Config, role: ProcessRole) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let secret = jwt_secret(&config)?;
    let database = Database::open(&config).await?;
    let result = run_on(config, role, &database.url, secret).await;
    database.close();
    result
}

async fn run_on(
    config: Arc<Config>,
    role: ProcessRole,
    url: &str,
    secret: Secret,
) -> anyhow::Result<()> {
    // Listening for SIGTERM/Ctrl-C from the start: a signal during start-up (after the health
    // check answers, while workers are still being set up) ends the process the graceful way
    // once it is up, instead of killing it with the embedded cluster left running.
    let requested = CancellationToken::new();
    tokio::spawn(signal_shutdown(requested.clone(), shutdown_signals()));
    let budget = budget(&config, role)?;
    let pool = db::connect(url, budget.main).await?;
    db::migrate(&pool).await?;
    let listener = TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("cannot listen on BIND_ADDR {}", config.bind_addr))?;
    let running = start(config.clone(), role, pool.clone(), listener, &secret).await?;
    if config.jwt_secret.is_none() && role != ProcessRole::Worker {
        let token = running
            .state
            .jwt
            .issue("dev", Role::Ops, Duration::from_secs(30 * 86_400))?;
        println!(
            "\nDevelopment token (role ops, 30 days), secret kept in {}/dev-jwt-secret:\n\n  export TOKEN={token}\n",
            config.data_dir.display()
        );
    }
    let shutdown = running.shutdown.clone();
    tokio::spawn(async move {
        requested.cancelled().await;
        shutdown.cancel();
    });
    let result = running.wait().await;
    pool.close().await;
    tracing::info!("stopped");
    result
}

/// `DB_MAX_CONNECTIONS` when it is not set: enough for the benchmarks, small enough that several
/// processes fit PostgreSQL's default 100 (README: "Connection budget").
pub fn default_max_connections(role: ProcessRole) -> u32 {
    match role {
        ProcessRole::Serve => 16,
        ProcessRole::Api | ProcessRole::Worker => 10,
    }
}

/// This process' connection budget.
pub fn budget(config: &Config, role: ProcessRole) -> anyhow::Result<db::Budget> {
    let total = config
        .db_max_connections
        .unwrap_or_else(|| default_max_connections(role));
    db::Budget::new(total, role != ProcessRole::Api).map_err(|reason| {
        anyhow::anyhow!("invalid configuration: DB_MAX_CONNECTIONS={total}: {reason}")
    })
}

/// A started process: its HTTP server and (unless `api`) its workers.
pub struct Running {
    pub local_addr: SocketAddr,
    pub state: AppState,
    pub shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Waits until shutdown is requested and everything has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        if let Some(workers) = self.workers {
            workers.await??;
        }
        self.server.await??;
        Ok(())
    }

    /// Requests a graceful shutdown and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Starts the HTTP server on `listener` and, unless the role is `api`, the send workers, on a
/// migrated database. Used by the binary and by the integration tests.
pub async fn start(
    config: Arc<Config>,
    role: ProcessRole,
    pool: PgPool,
    listener: TcpListener,
    secret: &Secret,
) -> anyhow::Result<Running> {
    let local = listener.local_addr()?;
    crate::reminders::schedule::ensure(&pool, &config).await?;
    crate::policy::settings::seed(&pool, &config).await?;
    let mut state = AppState::new(
        pool.clone(),
        config.clone(),
        secret.expose().as_bytes(),
        sandbox::new_key(),
    );
    if config.sandbox() && config.gateway.kind == crate::gateway::GatewayKind::CloudApi {
        let app_secret = state
            .cloud_app_secret
            .get_or_insert_with(sandbox::new_key)
            .clone();
        state.cloud_sandbox = Some(Arc::new(crate::gateway::cloud_api::sandbox::CloudSandbox {
            inbound_url: format!("http://{}/inbound/cloud-api", loopback(local)),
            app_secret,
            phone_number_id: config
                .gateway
                .cloud
                .phone_number_id
                .clone()
                .unwrap_or_else(|| crate::gateway::SANDBOX_PHONE_NUMBER_ID.to_owned()),
            key: state.sandbox_key.clone(),
            status_delay: crate::gateway::cloud_api::sandbox::DEFAULT_STATUS_DELAY,
        }));
        tracing::warn!(
            "SANDBOX MODE: GATEWAY=cloud_api without CLOUD_API_ACCESS_TOKEN: messages go to the built-in Cloud API sandbox at \
             http://{}{} (it posts signed sent/delivered/read statuses back) and are NOT delivered to WhatsApp. \
             See GET /sandbox/cloud-api/messages (with a token).",
            loopback(local),
            crate::gateway::CLOUD_SANDBOX_BASE
        );
    } else if config.sandbox() {
        tracing::warn!(
            "SANDBOX MODE: STARSENDER_API_KEY is not set, messages go to the built-in sandbox gateway at \
             http://{}{} and are NOT delivered to WhatsApp. See GET /sandbox/starsender/messages (with a token).",
            loopback(local),
            sandbox::SEND_PATH
        );
    }
    let shutdown = CancellationToken::new();
    let surface = if role == ProcessRole::Worker {
        Surface::Internal
    } else {
        Surface::Full
    };
    let app = http::router(state.clone(), surface);
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(http::server::serve(
        listener,
        app,
        config.http,
        http_shutdown,
    ));
    tracing::info!(%local, ?role, "listening");

    let prepared = match role {
        ProcessRole::Api => None,
        _ => Some(prepare_workers(&config, role, local, &state, &pool, &shutdown).await?),
    };
    let workers_stopped = CancellationToken::new();
    let beat = crate::maintenance::start(
        &pool,
        &config,
        &shutdown,
        prepared
            .as_ref()
            .map(|p| (&p.workers.process, workers_stopped.clone())),
    );
    let workers = prepared.map(|p| {
        let worker_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let result = crate::worker::run(
                config,
                p.ctx,
                p.scheduler,
                p.deliveries,
                p.inbound,
                p.workers,
                worker_shutdown,
            )
            .await;
            // The beat outlived the workers; now it releases what they left.
            workers_stopped.cancel();
            if let Some(beat) = beat {
                let _ = beat.await;
            }
            result
        })
    });
    Ok(Running {
        local_addr: local,
        state,
        shutdown,
        server,
        workers,
    })
}

/// The send workers and the scheduler of a process, ready to run.
struct Prepared {
    workers: crate::queue::Workers,
    ctx: Arc<crate::messages::context::SendContext>,
    scheduler: Arc<crate::reminders::schedule::SchedulerContext>,
    deliveries: Arc<crate::webhooks::deliver::DeliveryContext>,
    inbound: Arc<crate::inbound::job::InboundContext>,
}

/// Everything the workers need before they start: the gateway, the pauses and the policy read
/// once, and this process registered with the queue (before any of its workers fetches, so that
/// no job is held by an unknown process).
async fn prepare_workers(
    config: &Arc<Config>,
    role: ProcessRole,
    local: SocketAddr,
    state: &AppState,
    pool: &PgPool,
    shutdown: &CancellationToken,
) -> anyhow::Result<Prepared> {
    let local_base = format!("http://{}", loopback(local));
    let gateway = Gateway::from_config(config, &local_base, state.sandbox_key.clone())?;
    tracing::info!(
        gateway = gateway.kind().as_str(),
        url = gateway.url(),
        concurrency = config.worker_concurrency,
        "send workers starting"
    );
    let pauses = crate::queue::pause::Pauses::default();
    pauses.refresh(pool).await?;
    pauses.spawn_refresher(pool.clone(), shutdown.clone());
    let budget = budget(config, role)?;
    let workers = crate::queue::Workers {
        process: crate::queue::rescue::Process::new(),
        wakeups: crate::queue::wakeup::Wakeups::default(),
        pool: db::relaxed(pool, budget.relaxed),
    };
    workers.process.register(pool).await?;
    workers
        .wakeups
        .spawn_listener(pool.clone(), shutdown.clone());
    let policy = crate::policy::Policy::new(pool.clone(), config.app_timezone);
    // Read before the first claim: no send goes out under a policy not yet known.
    policy.refresh().await?;
    policy.spawn_refresher(shutdown.clone());
    let ctx = crate::messages::context::SendContext::new(
        pool.clone(),
        &workers,
        config,
        gateway,
        pauses,
        policy,
    );
    let scheduler = Arc::new(crate::reminders::schedule::SchedulerContext {
        pool: pool.clone(),
        config: config.clone(),
    });
    let deliveries = Arc::new(crate::webhooks::deliver::DeliveryContext::new(
        pool.clone(),
        config.webhooks.clone(),
        workers.process.clone(),
    )?);
    let inbound = Arc::new(crate::inbound::job::InboundContext {
        pool: pool.clone(),
        rules: crate::inbound::Rules::from_config(config),
        backoff: config.backoff(),
        process: workers.process.clone(),
    });
    Ok(Prepared {
        workers,
        ctx,
        scheduler,
        deliveries,
        inbound,
    })
}

/// The address to reach our own listener at (0.0.0.0 is not a destination).
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// The SIGTERM listener, installed at once (the default action, ending the process, is replaced
/// when this returns).
#[cfg(unix)]
fn shutdown_signals() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
}

async fn signal_shutdown(token: CancellationToken, term: Option<tokio::signal::unix::Signal>) {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match term {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight work");
    token.cancel();
}
