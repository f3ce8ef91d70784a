//! The gateway's configuration (SPEC §13 table): which gateway sends, and the Cloud API's
//! number, token, app secret, verify token, version, base URL and timeout.

use std::time::Duration;

use crate::config::{ConfigError, Env, Secret};

/// A gateway: `GATEWAY`, the `gateway` label of the metrics, and where an inbound payload came
/// from (stored as its name).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, sqlx::Type, utoipa::ToSchema,
)]
#[sqlx(type_name = "text")]
#[schema(as = Gateway)]
pub enum GatewayKind {
    /// StarSender (its per-device webhook is `POST /inbound/starsender/{token}`).
    #[sqlx(rename = "starsender")]
    #[serde(rename = "starsender")]
    StarSender,
    /// Meta's WhatsApp Cloud API.
    #[sqlx(rename = "cloud_api")]
    #[serde(rename = "cloud_api")]
    CloudApi,
}

impl GatewayKind {
    pub const ALL: [GatewayKind; 2] = [GatewayKind::StarSender, GatewayKind::CloudApi];

    /// The `gateway` label and the `GATEWAY` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayKind::StarSender => "starsender",
            GatewayKind::CloudApi => "cloud_api",
        }
    }
}

impl std::str::FromStr for GatewayKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GatewayKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| "expected `starsender` or `cloud_api`".to_owned())
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub kind: GatewayKind,
    pub cloud: CloudSettings,
    /// `AMBIGUOUS_RECEIPT_WAIT_SECS`: how long a send cut off mid-call waits for a status of
    /// it before it is sent again (Cloud API).
    pub ambiguous_receipt_wait: Duration,
}

/// `CLOUD_API_*`. With no access token, the Cloud API gateway is the built-in sandbox.
#[derive(Debug, Clone)]
pub struct CloudSettings {
    pub phone_number_id: Option<String>,
    pub access_token: Option<Secret>,
    pub app_secret: Option<Secret>,
    pub verify_token: Option<Secret>,
    pub version: String,
    pub base_url: String,
    pub timeout: Duration,
}

/// The variables of the Cloud API that must all be set when it sends for real.
const LIVE_REQUIRED: [&str; 4] = [
    "CLOUD_API_PHONE_NUMBER_ID",
    "CLOUD_API_ACCESS_TOKEN",
    "CLOUD_API_APP_SECRET",
    "CLOUD_API_VERIFY_TOKEN",
];

pub(crate) fn parse(env: &Env<'_>) -> Result<Settings, ConfigError> {
    let kind: GatewayKind = env.parse("GATEWAY", GatewayKind::StarSender)?;
    let version = env.get("CLOUD_API_VERSION").unwrap_or("v25.0").to_owned();
    if !version.starts_with('v') || version[1..].parse::<f32>().is_err() {
        return Err(env.invalid(
            "CLOUD_API_VERSION",
            "expected a Graph API version like v25.0",
        ));
    }
    let cloud = CloudSettings {
        phone_number_id: env.get("CLOUD_API_PHONE_NUMBER_ID").map(str::to_owned),
        access_token: env.get("CLOUD_API_ACCESS_TOKEN").map(Secret::new),
        app_secret: env.get("CLOUD_API_APP_SECRET").map(Secret::new),
        verify_token: env.get("CLOUD_API_VERIFY_TOKEN").map(Secret::new),
        version,
        base_url: env.url("CLOUD_API_BASE_URL", "https://graph.facebook.com")?,
        timeout: Duration::from_secs(env.bounded("CLOUD_API_TIMEOUT_SECS", 30, 1..=300)?.into()),
    };
    if kind == GatewayKind::CloudApi
        && cloud.access_token.is_some()
        && let Some(missing) = LIVE_REQUIRED.into_iter().find(|var| env.get(var).is_none())
    {
        return Err(ConfigError {
            var: missing,
            value: String::new(),
            reason:
                "must be set when GATEWAY=cloud_api sends for real (CLOUD_API_ACCESS_TOKEN is set)"
                    .into(),
        });
    }
    Ok(Settings {
        kind,
        cloud,
        ambiguous_receipt_wait: Duration::from_secs(
            env.bounded("AMBIGUOUS_RECEIPT_WAIT_SECS", 60, 0..=3600)?
                .into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&vars)
    }

    #[test]
    fn starsender_is_the_default_and_cloud_api_defaults_match_the_spec() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.gateway.kind, GatewayKind::StarSender);
        assert_eq!(c.gateway.cloud.version, "v25.0");
        assert_eq!(c.gateway.cloud.base_url, "https://graph.facebook.com");
        assert_eq!(c.gateway.cloud.timeout, Duration::from_secs(30));
        assert_eq!(c.gateway.ambiguous_receipt_wait, Duration::from_secs(60));
        assert!(parse(&[("GATEWAY", "fonnte")]).is_err());
    }

    #[test]
    fn a_live_cloud_api_needs_all_four_and_names_the_missing_one() {
        let err = parse(&[
            ("GATEWAY", "cloud_api"),
            ("CLOUD_API_ACCESS_TOKEN", "EAAG"),
            ("CLOUD_API_PHONE_NUMBER_ID", "1065"),
            ("CLOUD_API_APP_SECRET", "s"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "CLOUD_API_VERIFY_TOKEN");
        // No access token: the sandbox, nothing else needed.
        let sandbox = parse(&[("GATEWAY", "cloud_api")]).unwrap();
        assert!(sandbox.sandbox());
        let live = parse(&[
            ("GATEWAY", "cloud_api"),
            ("CLOUD_API_ACCESS_TOKEN", "EAAG"),
            ("CLOUD_API_PHONE_NUMBER_ID", "1065"),
            ("CLOUD_API_APP_SECRET", "s"),
            ("CLOUD_API_VERIFY_TOKEN", "v"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ])
        .unwrap();
        assert!(!live.sandbox());
        assert!(parse(&[("CLOUD_API_VERSION", "25")]).is_err());
    }
}
