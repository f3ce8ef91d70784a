//! Starting a process in one of its roles (SPEC §1): database, HTTP, workers, shutdown.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, Secret},
    db::{self, embedded::EmbeddedPostgres},
    gateway::{StarSender, sandbox},
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
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.trim().is_empty() {
            return Ok(Secret::new(existing.trim()));
        }
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, &secret)?;
    Ok(Secret::new(secret))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut file, contents.as_bytes())?;
    Ok(())
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
    let pool_size = (config.worker_concurrency as u32 + 16).max(20);
    let pool = db::connect(url, pool_size).await?;
    db::migrate(&pool).await?;

    let listener = TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("cannot listen on BIND_ADDR {}", config.bind_addr))?;
    let local = listener.local_addr()?;
    let state = AppState::new(pool.clone(), config.clone(), secret.expose().as_bytes());

    if config.sandbox() {
        tracing::warn!(
            "SANDBOX MODE: STARSENDER_API_KEY is not set, messages go to the built-in sandbox gateway at \
             http://{local}{} and are NOT delivered to WhatsApp. See GET /sandbox/starsender/messages.",
            sandbox::SEND_PATH
        );
    }
    if config.jwt_secret.is_none() && role != ProcessRole::Worker {
        let token = state
            .jwt
            .issue("dev", Role::Ops, Duration::from_secs(30 * 86_400))?;
        println!(
            "\nDevelopment token (role ops, 30 days), secret kept in {}/dev-jwt-secret:\n\n  export TOKEN={token}\n",
            config.data_dir.display()
        );
    }

    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));

    let surface = if role == ProcessRole::Worker {
        Surface::Internal
    } else {
        Surface::Full
    };
    let app = http::router(state, surface);
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
        .await
    });
    tracing::info!(%local, ?role, "listening");

    let workers = if role == ProcessRole::Api {
        None
    } else {
        let sandbox_url = format!("http://{}{}", loopback(local), sandbox::SEND_PATH);
        let gateway = StarSender::from_config(
            &config,
            Some(sandbox_url),
            Secret::new(sandbox::SANDBOX_KEY),
        )?;
        tracing::info!(
            gateway = gateway.url(),
            concurrency = config.worker_concurrency,
            "send workers starting"
        );
        let ctx = crate::worker::send_context(pool.clone(), &config, gateway);
        Some(tokio::spawn(crate::worker::run(
            pool.clone(),
            config.clone(),
            ctx,
            shutdown.clone(),
        )))
    };

    if let Some(workers) = workers {
        workers.await??;
    }
    server.await??;
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The address to reach our own listener at (0.0.0.0 is not a destination).
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight work");
    token.cancel();
}
