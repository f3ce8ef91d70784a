//! What every handler can reach.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::{
    config::{Config, Secret},
    http::auth::{JwtKeys, PublicLimiter, PublicSends},
};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub jwt: Arc<JwtKeys>,
    pub public_limiter: PublicLimiter,
    pub metrics: PrometheusHandle,
    /// The key this process's sandbox gateway accepts, random per process (sandbox mode only).
    pub sandbox_key: Secret,
    /// Single sends arriving together are stored in groups: one statement, one commit.
    pub enqueuer: crate::messages::enqueue::Enqueuer,
    /// What signs the Cloud API's webhooks (`X-Hub-Signature-256`): `CLOUD_API_APP_SECRET`, or
    /// in the Cloud API's sandbox mode a random one per process that its sandbox signs with.
    pub cloud_app_secret: Option<Secret>,
    /// The Cloud API sandbox this process serves (`GATEWAY=cloud_api` with no access token).
    pub cloud_sandbox: Option<Arc<crate::gateway::cloud_api::sandbox::CloudSandbox>>,
}

impl AppState {
    pub fn new(pool: PgPool, config: Arc<Config>, jwt_secret: &[u8], sandbox_key: Secret) -> Self {
        let enqueuer = crate::messages::enqueue::spawn(pool.clone(), config.send_max_attempts);
        let cloud_app_secret = config.gateway.cloud.app_secret.clone();
        Self {
            enqueuer,
            pool,
            public_limiter: PublicLimiter::new(config.public_send_rate_per_minute),
            config,
            jwt: Arc::new(JwtKeys::new(jwt_secret)),
            metrics: crate::telemetry::metrics_handle(),
            cloud_app_secret,
            cloud_sandbox: None,
            sandbox_key,
        }
    }
}

impl axum::extract::FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

impl axum::extract::FromRef<AppState> for PublicSends {
    fn from_ref(state: &AppState) -> Self {
        PublicSends {
            enabled: state.config.public_send_endpoints,
            limiter: state.public_limiter.clone(),
        }
    }
}
