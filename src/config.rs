//! Configuration from the environment (and `.env`), parsed once at start-up.
//!
//! Every variable of README "Configuration" lives here with its default. A bad value stops start-up with an error
//! that names the variable; secrets are wrapped so that `Debug` never prints them.

use std::{collections::HashMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use chrono_tz::Tz;

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Option<Secret>,
    pub data_dir: PathBuf,
    pub bind_addr: SocketAddr,
    pub jwt_secret: Option<Secret>,
    pub starsender_api_url: String,
    pub starsender_api_key: Option<Secret>,
    pub starsender_timeout: Duration,
    /// `SEND_RATE_PER_SECOND`: `0` (no throttle) or from [`crate::policy::sender::RATE_FLOOR`]
    /// to [`crate::policy::settings::MAX_RATE`]; initial setting.
    pub send_rate_per_second: f64,
    pub send_burst: u32,
    pub send_max_attempts: u32,
    pub send_backoff_base: Duration,
    pub send_backoff_max: Duration,
    pub send_retry_ambiguous: bool,
    pub worker_concurrency: usize,
    pub app_timezone: Tz,
    pub reminder_scheduler_hour: u32,
    pub reminder_scheduler_minute: u32,
    /// `REMINDER_DAYS_BEFORE` (or `REMINDER_DAYS_THRESHOLD`'s `0..threshold`): the initial
    /// calendar; the scheduler API changes it.
    pub reminder_days_before: crate::reminders::calendar::DaysBefore,
    /// `SERVICE_INTERVAL_MONTHS`: a vehicle with no next visit is due this long after its last.
    pub service_interval_months: u32,
    /// `REMINDER_INCLUDE_MANUAL`: the daily run also reminds manual customers.
    pub reminder_include_manual: bool,
    /// `WORKSHOP_NAME`: the `workshop_name` placeholder.
    pub workshop_name: String,
    pub service_phone: String,
    pub public_send_endpoints: bool,
    pub public_send_rate_per_minute: u32,
    pub job_retention_days: u32,
    pub log_format: LogFormat,
    /// `DB_MAX_CONNECTIONS`; unset = the role's default (`app::default_max_connections`).
    pub db_max_connections: Option<u32>,
    pub http: HttpLimits,
    /// `SEND_WINDOW`: initial setting of the delivery policy (then the database's).
    pub send_window: crate::policy::window::SendWindow,
    /// `RECIPIENT_MIN_INTERVAL_SECS`: initial setting.
    pub recipient_min_interval_secs: u32,
    /// `CIRCUIT_FAILURE_THRESHOLD`: initial setting.
    pub circuit_failure_threshold: u32,
    /// `WEBHOOK_*`: outbound webhooks (SPEC §12).
    pub webhooks: crate::webhooks::Settings,
    /// `GATEWAY`, `CLOUD_API_*`, `AMBIGUOUS_RECEIPT_WAIT_SECS` (SPEC §13).
    pub gateway: crate::gateway::Settings,
    /// `INBOUND_STARSENDER_TOKEN`, `OPTOUT_KEYWORDS`, `OPTIN_KEYWORDS` (SPEC §13).
    pub inbound: crate::inbound::Settings,
    /// `ADMIN_PHONES`, `ADMIN_ALERT_REPEAT_SECS` (SPEC §14).
    pub admin: crate::admin::Settings,
}

/// How long a client may take and how many connections it may hold (see `http::server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive within this, counted from their first byte (or from the
    /// connection's accept).
    pub header_timeout: Duration,
    /// A request's body must arrive within this, counted from the end of its headers.
    pub body_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

/// The shortest `JWT_SECRET` accepted in live mode (HS256: a key as long as the hash).
pub const MIN_LIVE_JWT_SECRET_BYTES: usize = 32;

impl Config {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is normal; a malformed one is reported by the variables it fails to set.
        let _ = dotenvy::dotenv();
        Self::from_map(&std::env::vars().collect())
    }

    /// Parses a set of variables; unset or empty means "use the default".
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let send_backoff_base = Duration::from_secs(env.parse("SEND_BACKOFF_BASE_SECS", 10u64)?);
        let send_backoff_max = Duration::from_secs(env.parse("SEND_BACKOFF_MAX_SECS", 3600u64)?);
        if send_backoff_max < send_backoff_base {
            return Err(env.invalid(
                "SEND_BACKOFF_MAX_SECS",
                "must not be smaller than SEND_BACKOFF_BASE_SECS",
            ));
        }
        let config = Self {
            database_url: env.get("DATABASE_URL").map(Secret::new),
            data_dir: PathBuf::from(env.get("DATA_DIR").unwrap_or("./data")),
            bind_addr: env.parse("BIND_ADDR", SocketAddr::from(([0, 0, 0, 0], 8000)))?,
            jwt_secret: env.get("JWT_SECRET").map(Secret::new),
            starsender_api_url: env.url(
                "STARSENDER_API_URL",
                "https://api.starsender.online/api/send",
            )?,
            starsender_api_key: env.get("STARSENDER_API_KEY").map(Secret::new),
            starsender_timeout: Duration::from_secs(env.positive("STARSENDER_TIMEOUT_SECS", 30)?),
            send_rate_per_second: env.rate("SEND_RATE_PER_SECOND", 1.0)?,
            send_burst: env.positive("SEND_BURST", 1)? as u32,
            send_max_attempts: env.positive("SEND_MAX_ATTEMPTS", 8)? as u32,
            send_backoff_base,
            send_backoff_max,
            send_retry_ambiguous: env.boolean("SEND_RETRY_AMBIGUOUS", true)?,
            worker_concurrency: env.positive("WORKER_CONCURRENCY", 4)? as usize,
            app_timezone: env.parse("APP_TIMEZONE", chrono_tz::Asia::Jakarta)?,
            reminder_scheduler_hour: env.bounded("REMINDER_SCHEDULER_HOUR", 7, 0..=23)?,
            reminder_scheduler_minute: env.bounded("REMINDER_SCHEDULER_MINUTE", 0, 0..=59)?,
            reminder_days_before: match env.get("REMINDER_DAYS_BEFORE") {
                Some(_) => env.parse(
                    "REMINDER_DAYS_BEFORE",
                    crate::reminders::calendar::DaysBefore::standard(),
                )?,
                None => crate::reminders::calendar::DaysBefore::within(env.bounded(
                    "REMINDER_DAYS_THRESHOLD",
                    3,
                    1..=366,
                )?),
            },
            service_interval_months: env.bounded("SERVICE_INTERVAL_MONTHS", 4, 1..=120)?,
            reminder_include_manual: env.boolean("REMINDER_INCLUDE_MANUAL", true)?,
            workshop_name: env.get("WORKSHOP_NAME").unwrap_or("Bengkel").to_owned(),
            service_phone: env.get("SERVICE_PHONE").unwrap_or("08551000727").to_owned(),
            public_send_endpoints: env.boolean("PUBLIC_SEND_ENDPOINTS", false)?,
            public_send_rate_per_minute: env.positive("PUBLIC_SEND_RATE_PER_MINUTE", 10)? as u32,
            job_retention_days: env.parse("JOB_RETENTION_DAYS", 14u32)?,
            log_format: match env.get("LOG_FORMAT").unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(env.invalid("LOG_FORMAT", "expected `text` or `json`")),
            },
            db_max_connections: match env.get("DB_MAX_CONNECTIONS") {
                None => None,
                Some(_) => Some(env.positive("DB_MAX_CONNECTIONS", 1)? as u32),
            },
            http: HttpLimits {
                header_timeout: Duration::from_secs(env.positive("HTTP_HEADER_TIMEOUT_SECS", 10)?),
                body_timeout: Duration::from_secs(env.positive("HTTP_BODY_TIMEOUT_SECS", 30)?),
                idle_timeout: Duration::from_secs(env.positive("HTTP_IDLE_TIMEOUT_SECS", 75)?),
                max_connections: env.positive("HTTP_MAX_CONNECTIONS", 1024)? as usize,
            },
            send_window: env.parse("SEND_WINDOW", crate::policy::window::SendWindow::DEFAULT)?,
            recipient_min_interval_secs: env.bounded(
                "RECIPIENT_MIN_INTERVAL_SECS",
                6,
                0..=86_400,
            )?,
            circuit_failure_threshold: env.bounded("CIRCUIT_FAILURE_THRESHOLD", 20, 1..=100_000)?,
            webhooks: crate::webhooks::Settings {
                timeout: Duration::from_secs(
                    env.bounded("WEBHOOK_TIMEOUT_SECS", 15, 1..=300)?.into(),
                ),
                schedule: env.parse(
                    "WEBHOOK_RETRY_SCHEDULE",
                    crate::webhooks::retry::Schedule::default(),
                )?,
                disable_after: match env.get("WEBHOOK_DISABLE_AFTER") {
                    None => crate::webhooks::Settings::default().disable_after,
                    Some(raw) => crate::webhooks::retry::parse_duration(raw)
                        .map_err(|e| env.invalid("WEBHOOK_DISABLE_AFTER", e))?,
                },
                allow_private: env.boolean("WEBHOOK_ALLOW_PRIVATE", false)?,
            },
            gateway: crate::gateway::settings::parse(&env)?,
            inbound: crate::inbound::Settings::parse(
                env.get("INBOUND_STARSENDER_TOKEN"),
                env.get("OPTOUT_KEYWORDS"),
                env.get("OPTIN_KEYWORDS"),
            )
            .map_err(|(var, value, reason)| ConfigError { var, value, reason })?,
            admin: crate::admin::parse(&env)?,
        };
        if let (false, Some(secret)) = (config.sandbox(), &config.jwt_secret)
            && secret.expose().len() < MIN_LIVE_JWT_SECRET_BYTES
        {
            return Err(ConfigError {
                var: "JWT_SECRET",
                // The value is a secret: only its length is shown.
                value: format!("<{} bytes, hidden>", secret.expose().len()),
                reason: format!(
                    "must be at least {MIN_LIVE_JWT_SECRET_BYTES} bytes in live mode (a gateway key is set)"
                ),
            });
        }
        Ok(config)
    }

    /// True when the configured gateway has no key: sends go to its built-in sandbox.
    pub fn sandbox(&self) -> bool {
        match self.gateway.kind {
            crate::gateway::GatewayKind::StarSender => self.starsender_api_key.is_none(),
            crate::gateway::GatewayKind::CloudApi => self.gateway.cloud.access_token.is_none(),
        }
    }

    /// The exponential backoff schedule from the configuration.
    pub fn backoff(&self) -> crate::queue::backoff::Backoff {
        crate::queue::backoff::Backoff::new(self.send_backoff_base, self.send_backoff_max)
    }
}

pub(crate) struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    pub(crate) fn get(&self, var: &str) -> Option<&str> {
        self.0.get(var).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    pub(crate) fn invalid(&self, var: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            var,
            value: self.get(var).unwrap_or_default().to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn parse<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e: T::Err| self.invalid(var, e.to_string())),
        }
    }

    pub(crate) fn positive(&self, var: &'static str, default: u64) -> Result<u64, ConfigError> {
        let value = self.parse(var, default)?;
        if value == 0 {
            return Err(self.invalid(var, "must be greater than zero"));
        }
        Ok(value)
    }

    pub(crate) fn bounded(
        &self,
        var: &'static str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let value = self.parse(var, default)?;
        if !range.contains(&value) {
            return Err(self.invalid(
                var,
                format!("must be between {} and {}", range.start(), range.end()),
            ));
        }
        Ok(value)
    }

    /// A rate in calls per second: `0` (no limit) or a finite number in the policy's range
    /// (`PUT /ops/policy` accepts the same).
    pub(crate) fn rate(&self, var: &'static str, default: f64) -> Result<f64, ConfigError> {
        let value: f64 = self.parse(var, default)?;
        if crate::policy::settings::valid_rate(value) {
            Ok(value)
        } else {
            Err(self.invalid(var, crate::policy::settings::RATE_RULE))
        }
    }

    pub(crate) fn boolean(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(_) => Err(self.invalid(var, "expected true or false")),
        }
    }

    pub(crate) fn url(&self, var: &'static str, default: &str) -> Result<String, ConfigError> {
        let raw = self.get(var).unwrap_or(default);
        match reqwest::Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(raw.to_owned()),
            Ok(_) => Err(self.invalid(var, "must be an http(s) URL")),
            Err(e) => Err(self.invalid(var, e.to_string())),
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
