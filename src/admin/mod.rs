//! The workshop's own people (SPEC §14): `ADMIN_PHONES` get WhatsApp messages of kind `admin`
//! through the same queue and delivery policy as everything else — except the send window and
//! the opt-out list — for Alertmanager's notifications ([`alerts`]).

pub mod alerts;
pub mod summary;

use std::{borrow::Cow, time::Duration};

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    config::{Config, ConfigError, Env},
    messages::{
        Kind, Status,
        phone::PhoneNumber,
        request::NewMessage,
        store::{self, Item, Stored},
    },
    templates::{self, Language},
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

/// The template of the daily summary (built in, editable like the others).
pub const ADMIN_DAILY_SUMMARY: &str = "admin_daily_summary";

/// What [`ADMIN_DAILY_SUMMARY`] may use.
pub const SUMMARY_PLACEHOLDERS: [&str; 13] = [
    "workshop_name",
    "date",
    "eligible",
    "queued",
    "sent",
    "failed",
    "skipped",
    "skipped_reasons",
    "expired",
    "opted_out",
    "delivered",
    "read",
    "undelivered",
];

/// The placeholders of an admin template (`None` for any other key).
pub fn placeholders_for(key: &str) -> Option<Vec<&'static str>> {
    match key {
        ADMIN_ALERT => Some(ALERT_PLACEHOLDERS.to_vec()),
        ADMIN_DAILY_SUMMARY => Some(SUMMARY_PLACEHOLDERS.to_vec()),
        _ => None,
    }
}

/// Example values of an admin template's own placeholders, for a preview (none for another
/// key).
pub fn preview_values_for(key: &str, config: &crate::config::Config) -> Vec<(String, String)> {
    match key {
        ADMIN_ALERT => preview_values(config),
        ADMIN_DAILY_SUMMARY => {
            let today = crate::reminders::business_date(config.app_timezone, chrono::Utc::now());
            let counts = crate::console::today::Counts {
                eligible: Some(42),
                skipped: Some(3),
                skipped_by_reason: Some(
                    [
                        ("opted out".to_owned(), 2),
                        ("no usable number".to_owned(), 1),
                    ]
                    .into(),
                ),
                total: 39,
                queued: 1,
                sent: 36,
                failed: 1,
                expired: 1,
                delivered: 30,
                read: 21,
                undelivered: 1,
                with_receipts: 31,
                ..Default::default()
            };
            summary::values(today, &counts, config)
                .into_iter()
                .filter(|(k, _)| *k != "workshop_name")
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Example values of [`ADMIN_ALERT`]'s own placeholders, for a preview.
fn preview_values(config: &crate::config::Config) -> Vec<(String, String)> {
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
    /// `ADMIN_DAILY_SUMMARY` (default true; nothing is sent without phones).
    pub daily_summary: bool,
    /// `ADMIN_LANGUAGE` (`id` or `en`): the body of the admin templates used.
    pub language: Language,
    /// `ADMIN_SUMMARY_CHECK_SECS`: how often a process with workers asks whether the day's
    /// summary is due (default 10 s).
    pub summary_check: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            phones: Vec::new(),
            alert_repeat: Duration::from_secs(4 * 3600),
            daily_summary: true,
            language: Language::Id,
            summary_check: Duration::from_secs(10),
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
    let defaults = Settings::default();
    let language = match env.get("ADMIN_LANGUAGE").map(str::trim) {
        None | Some("") => defaults.language,
        Some(raw) => Language::parse(raw).ok_or_else(|| {
            env.invalid("ADMIN_LANGUAGE", format!("{raw:?}: {}", Language::MESSAGE))
        })?,
    };
    Ok(Settings {
        phones,
        alert_repeat: Duration::from_secs(repeat),
        daily_summary: env.boolean("ADMIN_DAILY_SUMMARY", defaults.daily_summary)?,
        language,
        summary_check: Duration::from_secs(u64::from(env.bounded(
            "ADMIN_SUMMARY_CHECK_SECS",
            10,
            1..=3600,
        )?)),
    })
}

/// One message of kind `admin` per admin phone from the current version of template `key` with
/// `values`, in the caller's transaction; the ids of those queued. Nothing when the template is
/// missing or renders empty or too long (logged: an edit must not take alerts down silently).
pub async fn queue(
    tx: &mut PgConnection,
    config: &Config,
    key: &str,
    values: &[(&'static str, String)],
) -> sqlx::Result<Vec<Uuid>> {
    let Some(template) = templates::repo::current(&mut *tx, key).await? else {
        tracing::warn!(key, "admin template missing: not sent");
        return Ok(Vec::new());
    };
    let language = config.admin.language;
    let body = templates::render_with(template.bodies.for_language(language), |name| {
        values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| Cow::Borrowed(v.as_str()))
    });
    let body = body.trim();
    if body.is_empty() || templates::check_text(body).is_err() {
        tracing::warn!(
            key,
            version = template.version,
            "admin template renders empty or too long: not sent"
        );
        return Ok(Vec::new());
    }
    let pairs: Vec<(&str, Cow<'_, str>)> = values
        .iter()
        .map(|(k, v)| (*k, Cow::Borrowed(v.as_str())))
        .collect();
    let origin = templates::Origin {
        key: template.key.clone(),
        version: template.version,
        language,
        values: templates::ValuesJson::from_pairs(&pairs),
    };
    let messages: Vec<NewMessage> = config
        .admin
        .phones
        .iter()
        .map(|phone| {
            NewMessage::internal(Kind::Admin, phone.clone(), body.to_owned(), None)
                .with_template(origin.clone())
        })
        .collect();
    let items: Vec<Item<'_>> = messages.iter().map(|m| Item::new(m, BY)).collect();
    let stored = store::store(tx, &items, None, config.send_max_attempts).await?;
    Ok(stored
        .into_iter()
        .filter_map(|s| match s {
            Stored::Created(m) if m.status == Status::Queued => Some(m.id),
            _ => None,
        })
        .collect())
}
