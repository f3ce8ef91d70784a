//! The gateways a message can go out through (README "Gateways"): StarSender (the default) and
//! the WhatsApp Cloud API. Both take a [`SendRequest`] and come back with an [`Outcome`] of the
//! same classes, so the send job, the delivery policy and the bookkeeping do not know which one
//! sent. Each has a sandbox that the process serves itself when no credentials are set.

pub mod cloud_api;
pub mod outcome;
pub mod sandbox;
pub mod settings;
pub mod starsender;

use std::time::Instant;

use uuid::Uuid;

pub use self::{
    cloud_api::CloudApi,
    outcome::{Class, Outcome, parse_retry_after},
    settings::{GatewayKind, Settings},
    starsender::StarSender,
};

/// One message as a gateway sends it.
#[derive(Debug, Clone, Copy)]
pub struct SendRequest<'a> {
    /// Ours; the Cloud API echoes it on the message's status webhooks.
    pub message_id: Uuid,
    /// Digits with the country code (`62…`).
    pub to: &'a str,
    /// The text (a file's caption when there is a file).
    pub body: &'a str,
    pub file_url: Option<&'a str>,
    /// Send as this approved template rather than as text (Cloud API only; StarSender sends
    /// `body`, the rendered text).
    pub template: Option<&'a TemplateCall>,
}

/// A Meta-approved template call: its name, language code and body parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateCall {
    pub name: String,
    pub language: String,
    pub params: Vec<String>,
}

/// The configured gateway.
#[derive(Clone)]
pub enum Gateway {
    StarSender(StarSender),
    CloudApi(CloudApi),
}

/// Where a process' own Cloud API sandbox answers (`{version}/{phone_number_id}/messages` below).
pub const CLOUD_SANDBOX_BASE: &str = "/sandbox/cloud-api";
/// The sandbox's phone number id when none is configured.
pub const SANDBOX_PHONE_NUMBER_ID: &str = "sandbox";

impl Gateway {
    /// The configured gateway; with no key, its sandbox on this process' own listener
    /// (`local`: `http://127.0.0.1:port`), which takes `sandbox_key`.
    pub fn from_config(
        config: &crate::config::Config,
        local: &str,
        sandbox_key: crate::config::Secret,
    ) -> anyhow::Result<Self> {
        Ok(match config.gateway.kind {
            GatewayKind::StarSender => Gateway::StarSender(match &config.starsender_api_key {
                Some(key) => StarSender::new(
                    config.starsender_api_url.clone(),
                    key.clone(),
                    config.starsender_timeout,
                )?,
                None => StarSender::new(
                    format!("{local}{}", sandbox::SEND_PATH),
                    sandbox_key,
                    config.starsender_timeout,
                )?,
            }),
            GatewayKind::CloudApi => {
                let cloud = &config.gateway.cloud;
                let phone_number_id = cloud
                    .phone_number_id
                    .as_deref()
                    .unwrap_or(SANDBOX_PHONE_NUMBER_ID);
                let (base, token) = match &cloud.access_token {
                    Some(token) => (cloud.base_url.clone(), token.clone()),
                    None => (format!("{local}{CLOUD_SANDBOX_BASE}"), sandbox_key),
                };
                Gateway::CloudApi(CloudApi::new(
                    &base,
                    &cloud.version,
                    phone_number_id,
                    token,
                    cloud.timeout,
                )?)
            }
        })
    }

    pub fn kind(&self) -> GatewayKind {
        match self {
            Gateway::StarSender(_) => GatewayKind::StarSender,
            Gateway::CloudApi(_) => GatewayKind::CloudApi,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Gateway::StarSender(g) => g.url(),
            Gateway::CloudApi(g) => g.url(),
        }
    }

    /// One call; never panics, every failure becomes an [`Outcome`]. Counted in
    /// `bengkel_gateway_responses_total{gateway, class}` and timed.
    pub async fn send(&self, request: &SendRequest<'_>) -> Outcome {
        let started = Instant::now();
        let outcome = match self {
            Gateway::StarSender(g) => g.send(request).await,
            Gateway::CloudApi(g) => g.send(request).await,
        };
        let gateway = self.kind().as_str();
        metrics::histogram!("bengkel_gateway_request_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(
            "bengkel_gateway_responses_total",
            "gateway" => gateway,
            "class" => outcome.class().as_str()
        )
        .increment(1);
        outcome
    }
}
