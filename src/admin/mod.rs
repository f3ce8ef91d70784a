//! The workshop's own people (SPEC §14): `ADMIN_PHONES` get WhatsApp messages of kind `admin`
//! through the same queue and delivery policy as everything else — except the send window and
//! the opt-out list — for Alertmanager's notifications ([`alerts`]).

pub mod alerts;

use std::time::Duration;

use crate::{
    config::{ConfigError, Env},
    messages::phone::PhoneNumber,
};

/// The template of an alert notification (built in, editable like the others).
pub const ADMIN_ALERT: &str = "admin_alert";

/// What [`ADMIN_ALERT`] may use.
pub const ALERT_PLACEHOLDERS: [&str; 6] = [
    "workshop_name",
    "status",
    "alert_names",
    "summary",
    "since",
    "count",
];

/// Example values of [`ADMIN_ALERT`]'s own placeholders, for a preview.
pub fn preview_values(config: &crate::config::Config) -> Vec<(String, String)> {
    let since = chrono::Utc::now().with_timezone(&config.app_timezone);
    [
        ("status", "FIRING".to_owned()),
        ("alert_names", "BengkelQueueBacklog".to_owned()),
        (
            "summary",
            "whatsapp-send has jobs due for over 5 minutes".to_owned(),
        ),
        ("since", since.format(alerts::SINCE_FORMAT).to_string()),
        ("count", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `bengkel_admin_notifications_total{source, result}`: alert notifications (`source="alert"`;
/// `result` `queued`, `repeat`, `no_phones`) and daily summaries (`source="summary"`; `result`
/// `drained` or `window_close`: what made the day's summary go).
pub const NOTIFICATIONS: &str = "bengkel_admin_notifications_total";

/// The `created_by` of admin messages.
pub const BY: &str = "admin";

/// `ADMIN_*`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `ADMIN_PHONES`: normalized, without repeats; empty = off.
    pub phones: Vec<PhoneNumber>,
    /// `ADMIN_ALERT_REPEAT_SECS`: how long a notification with the same group, status and alerts
    /// is not sent again (Alertmanager's `repeat_interval` default, 4 h).
    pub alert_repeat: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            phones: Vec::new(),
            alert_repeat: Duration::from_secs(4 * 3600),
        }
    }
}

pub(crate) fn parse(env: &Env<'_>) -> Result<Settings, ConfigError> {
    let mut phones: Vec<PhoneNumber> = Vec::new();
    for raw in env.get("ADMIN_PHONES").unwrap_or_default().split(',') {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let phone = PhoneNumber::parse(raw)
            .map_err(|e| env.invalid("ADMIN_PHONES", format!("{raw:?}: {e}")))?;
        if !phones.contains(&phone) {
            phones.push(phone);
        }
    }
    let repeat = env.positive(
        "ADMIN_ALERT_REPEAT_SECS",
        Settings::default().alert_repeat.as_secs(),
    )?;
    Ok(Settings {
        phones,
        alert_repeat: Duration::from_secs(repeat),
    })
}
