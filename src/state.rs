//! What every handler can reach.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::{
    config::Config,
    http::auth::{JwtKeys, PublicLimiter},
};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub jwt: Arc<JwtKeys>,
    pub public_limiter: PublicLimiter,
    pub metrics: PrometheusHandle,
}

impl AppState {
    pub fn new(pool: PgPool, config: Arc<Config>, jwt_secret: &[u8]) -> Self {
        Self {
            pool,
            public_limiter: PublicLimiter::new(config.public_send_rate_per_minute),
            config,
            jwt: Arc::new(JwtKeys::new(jwt_secret)),
            metrics: crate::telemetry::metrics_handle(),
        }
    }
}
