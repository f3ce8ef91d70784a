//! Inbound messages (README "Inbound messages and opt-out keywords", SPEC §13): what customers
//! write to the workshop's WhatsApp number, and the keywords that opt them out and in again.
//!
//! Follow the names: [`routes`] takes a gateway's webhook request and, in one transaction, keeps
//! its exact bytes with [`store::store_payload`] (which also enqueues its job on queue
//! [`QUEUE`]); [`job`] processes the payload — [`starsender`] parses StarSender's shape,
//! [`cloud_api`] the Cloud API's — and hands each message to [`accept::accept`], which stores
//! it, moves the number's `last_inbound_at` and applies a [`keywords`] match through the opt-out
//! list's own code (`suppressions::repo`), all on the job's transaction.

pub mod accept;
pub mod cloud_api;
pub mod cloud_routes;
pub mod job;
pub mod keywords;
pub mod routes;
pub mod starsender;
pub mod store;

use crate::config::Secret;

pub use self::{
    accept::{Accepted, NewInbound, Rules, accept},
    keywords::{Keyword, Keywords},
    store::{last_inbound_at, store_payload},
};

/// The queue of payload jobs (one job per received request).
pub const QUEUE: &str = "inbound";
/// The shortest `INBOUND_STARSENDER_TOKEN` accepted: the URL's only secret.
pub const MIN_TOKEN_CHARS: usize = 32;
/// The largest webhook body read; a larger one is `413`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The template of the reply to an opt-out (no body is seeded: no reply until an operator saves one).
pub const OPTOUT_CONFIRMATION: &str = "optout_confirmation";
/// The `created_by` of the messages and the `changed_by` of the opt-out changes inbound processing makes.
pub const BY: &str = "inbound";

/// Where an inbound payload came from.
pub use crate::gateway::settings::GatewayKind as Gateway;

/// What became of an inbound request or message: the `result` label of
/// `bengkel_inbound_total{gateway, result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundResult {
    /// A message stored (and its keyword applied).
    Ok,
    /// A Cloud API request whose signature is wrong or missing.
    BadSignature,
    /// A StarSender request with a wrong token (or none configured).
    BadToken,
    /// A Cloud API message for a phone number id that is not ours, or without a phone number.
    UnknownNumber,
    /// A body that is not a JSON object or a form, or lacks what a message needs.
    Malformed,
    /// A message the gateway had sent before (same gateway message id).
    Duplicate,
}

impl InboundResult {
    pub const ALL: [InboundResult; 6] = [
        InboundResult::Ok,
        InboundResult::BadSignature,
        InboundResult::BadToken,
        InboundResult::UnknownNumber,
        InboundResult::Malformed,
        InboundResult::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InboundResult::Ok => "ok",
            InboundResult::BadSignature => "bad_signature",
            InboundResult::BadToken => "bad_token",
            InboundResult::UnknownNumber => "unknown_number",
            InboundResult::Malformed => "malformed",
            InboundResult::Duplicate => "duplicate",
        }
    }
}

/// Counts one request or message in `bengkel_inbound_total` (after its transaction committed).
pub fn count(gateway: Gateway, result: InboundResult) {
    metrics::counter!("bengkel_inbound_total", "gateway" => gateway.as_str(), "result" => result.as_str())
        .increment(1);
}

/// What `INBOUND_*`, `OPTOUT_KEYWORDS` and `OPTIN_KEYWORDS` configure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// `INBOUND_STARSENDER_TOKEN`: the secret path segment of StarSender's webhook; unset → the
    /// route answers `404` to everything.
    pub starsender_token: Option<Secret>,
    pub keywords: Keywords,
}

/// Why a setting is refused: the variable, the value as it may be shown, and why.
pub type SettingError = (&'static str, String, String);

impl Settings {
    /// Reads the variables (unset = `None`). A token shorter than [`MIN_TOKEN_CHARS`], or with a
    /// character that has no place in a URL path segment, is refused without being shown.
    pub fn parse(
        token: Option<&str>,
        optout: Option<&str>,
        optin: Option<&str>,
    ) -> Result<Self, SettingError> {
        if let Some(token) = token {
            let n = token.chars().count();
            let why = if n < MIN_TOKEN_CHARS {
                Some(format!(
                    "must be at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)"
                ))
            } else if !token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
            {
                Some("may contain only letters, digits, '-', '_', '.' and '~' (it is part of the URL)".into())
            } else {
                None
            };
            if let Some(why) = why {
                return Err((
                    "INBOUND_STARSENDER_TOKEN",
                    format!("<{n} characters, hidden>"),
                    why,
                ));
            }
        }
        let keywords = Keywords::parse(
            optout.unwrap_or(keywords::DEFAULT_OPTOUT),
            optin.unwrap_or(keywords::DEFAULT_OPTIN),
        )
        .map_err(|(var, why)| {
            let value = match var {
                "OPTOUT_KEYWORDS" => optout,
                _ => optin,
            };
            (var, value.unwrap_or_default().to_owned(), why)
        })?;
        Ok(Self {
            starsender_token: token.map(Secret::new),
            keywords,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_or_unsafe_token_is_refused_without_showing_it() {
        assert_eq!(Settings::parse(None, None, None), Ok(Settings::default()));
        let short = "a".repeat(MIN_TOKEN_CHARS - 1);
        let (var, shown, why) = Settings::parse(Some(&short), None, None).unwrap_err();
        assert_eq!(var, "INBOUND_STARSENDER_TOKEN");
        assert!(!shown.contains(&short), "{shown}");
        assert!(why.contains("32"), "{why}");
        let slashed = format!("{}/x", "a".repeat(MIN_TOKEN_CHARS));
        assert!(Settings::parse(Some(&slashed), None, None).is_err());
        let good = "0123456789abcdef0123456789ABCDEF-_.~";
        let s = Settings::parse(Some(good), None, None).unwrap();
        assert_eq!(s.starsender_token.unwrap().expose(), good);
    }

    #[test]
    fn a_bad_keyword_list_names_its_variable() {
        let (var, shown, _) = Settings::parse(None, Some("stop,,"), None).unwrap_err();
        assert_eq!((var, shown.as_str()), ("OPTOUT_KEYWORDS", "stop,,"));
        let (var, shown, _) = Settings::parse(None, None, Some("stop")).unwrap_err();
        assert_eq!((var, shown.as_str()), ("OPTIN_KEYWORDS", "stop"));
    }
}
