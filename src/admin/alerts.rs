//! `POST /alerts/alertmanager` (SPEC §14 "Alerts reach someone"): Alertmanager's webhook
//! (payload version 4) becomes one message per admin phone from template `admin_alert`. A
//! notification with the same group, status and set of alerts within `ADMIN_ALERT_REPEAT_SECS`
//! of the last one sent sends nothing (Alertmanager repeats a group every `repeat_interval`, and
//! several Alertmanagers may send the same one) — decided in the transaction that stores the
//! messages, so two processes taking the same notification at once send it once.

use std::collections::BTreeMap;

use axum::{Router, extract::State, routing::post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ADMIN_ALERT;
use crate::{
    config::Config,
    error::{AppError, AppResult},
    http::{
        auth::OpsCaller,
        envelope::{Envelope, Reply},
        extract::JsonObject,
        responses::{
            BadRequest, BodyTimeout, Forbidden, Invalid, TooLarge, Unauthorized, Unavailable,
        },
    },
    state::AppState,
};

pub const PATH: &str = "/alerts/alertmanager";

/// At most this many alert names in a message (then "+N").
const MAX_NAMES: usize = 5;
/// How `{since}` is written (in `APP_TIMEZONE`).
pub const SINCE_FORMAT: &str = "%d-%m-%Y %H:%M %Z";
/// A summary longer than this is cut.
const MAX_SUMMARY_CHARS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, post(alertmanager))
}

/// Alertmanager's webhook body, version 4 (fields not listed are ignored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `"4"`.
    pub version: String,
    pub group_key: String,
    /// `firing` or `resolved`.
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Alerts Alertmanager left out of a long group.
    #[serde(default)]
    pub truncated_alerts: u64,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AlertmanagerAlert)]
pub struct Alert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub fingerprint: String,
}

/// What became of a notification.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Notified {
    /// Messages queued (one per admin phone; none for a repeat or without `ADMIN_PHONES`).
    pub queued: usize,
    /// The same group, status and alerts were sent less than `ADMIN_ALERT_REPEAT_SECS` ago.
    pub duplicate: bool,
    pub message_ids: Vec<Uuid>,
}

/// Takes a notification from Alertmanager (its `webhook_configs` with an `ops` bearer token in
/// `http_config`). `200` once the admin messages are queued — also for a repeat (nothing sent)
/// and without `ADMIN_PHONES` (nothing to send), so that Alertmanager does not retry them.
#[utoipa::path(post, path = "/alerts/alertmanager", operation_id = "alertmanager_webhook", tag = "alerts",
    request_body = Notification,
    responses((status = 200, description = "Queued (or a repeat: nothing sent)", body = Envelope<Notified>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn alertmanager(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Notified>> {
    let n: Notification = serde_json::from_value(Value::Object(body)).map_err(|e| {
        AppError::validation("body", format!("not an Alertmanager webhook payload: {e}"))
    })?;
    check(&n)?;
    let notified = notify(&state, &n).await?;
    tracing::info!(
        group_key = n.group_key,
        status = n.status,
        alerts = n.alerts.len(),
        queued = notified.queued,
        duplicate = notified.duplicate,
        by = caller.sub,
        "alert notification"
    );
    let result = if notified.duplicate {
        "repeat"
    } else if state.config.admin.phones.is_empty() {
        "no_phones"
    } else {
        "queued"
    };
    metrics::counter!(super::NOTIFICATIONS, "source" => "alert", "result" => result).increment(1);
    let message = if notified.duplicate {
        "Already sent: a repeat within ADMIN_ALERT_REPEAT_SECS".to_owned()
    } else if state.config.admin.phones.is_empty() {
        "No ADMIN_PHONES: nothing sent".to_owned()
    } else {
        format!("{} admin message(s) queued", notified.queued)
    };
    Ok(Reply::ok(notified, message))
}

fn check(n: &Notification) -> AppResult<()> {
    let mut errors = Vec::new();
    if n.version != "4" {
        errors.push(crate::error::FieldError::new(
            "version",
            "must be \"4\" (Alertmanager's webhook payload version)",
        ));
    }
    if !matches!(n.status.as_str(), "firing" | "resolved") {
        errors.push(crate::error::FieldError::new(
            "status",
            "must be firing or resolved",
        ));
    }
    if n.group_key.trim().is_empty() {
        errors.push(crate::error::FieldError::new(
            "groupKey",
            "must not be empty",
        ));
    }
    if n.alerts.is_empty() {
        errors.push(crate::error::FieldError::new(
            "alerts",
            "must hold at least one alert",
        ));
    }
    if [n.group_key.as_str(), n.status.as_str()]
        .into_iter()
        .chain(n.alerts.iter().map(|a| a.fingerprint.as_str()))
        .any(|s| s.contains('\0'))
    {
        errors.push(crate::error::FieldError::new(
            "body",
            crate::http::extract::NUL_MESSAGE,
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::Validation(errors))
    }
}

/// The notification's identity: its group, status and the set of its alerts.
pub fn dedup_key(n: &Notification) -> (String, Vec<String>) {
    let mut fingerprints: Vec<String> = n.alerts.iter().map(|a| a.fingerprint.clone()).collect();
    fingerprints.sort();
    fingerprints.dedup();
    let mut hash = Sha256::new();
    for part in [n.group_key.as_str(), n.status.as_str()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    for f in &fingerprints {
        hash.update(f.as_bytes());
        hash.update([0]);
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (hex, fingerprints)
}

async fn notify(state: &AppState, n: &Notification) -> AppResult<Notified> {
    let config = &state.config;
    let mut notified = Notified {
        queued: 0,
        duplicate: false,
        message_ids: Vec::new(),
    };
    if config.admin.phones.is_empty() {
        return Ok(notified);
    }
    let (key, fingerprints) = dedup_key(n);
    let mut tx = state.pool.begin().await?;
    let repeat =
        chrono::Duration::from_std(config.admin.alert_repeat).unwrap_or(chrono::Duration::hours(4));
    // The first of its kind, or the first since the repeat interval: now() is this
    // transaction's start, so a concurrent taker of the same notification sees `false`.
    let fresh: bool = sqlx::query_scalar(
        "INSERT INTO admin_alert_notifications
             (dedup_key, group_key, status, fingerprints, notified_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (dedup_key) DO UPDATE SET
             received = admin_alert_notifications.received + 1,
             notified_at = CASE WHEN admin_alert_notifications.notified_at <= now() - $5
                 THEN now() ELSE admin_alert_notifications.notified_at END
         RETURNING notified_at = now()",
    )
    .bind(&key)
    .bind(&n.group_key)
    .bind(&n.status)
    .bind(&fingerprints)
    .bind(repeat)
    .fetch_one(&mut *tx)
    .await?;
    if !fresh {
        tx.commit().await?;
        notified.duplicate = true;
        return Ok(notified);
    }
    notified.message_ids = super::queue(&mut tx, config, ADMIN_ALERT, &values(n, config)).await?;
    tx.commit().await?;
    notified.queued = notified.message_ids.len();
    Ok(notified)
}

/// The placeholder values of a notification.
pub fn values(n: &Notification, config: &Config) -> Vec<(&'static str, String)> {
    let mut names: Vec<&str> = Vec::new();
    for a in &n.alerts {
        if let Some(name) = a.labels.get("alertname")
            && !names.contains(&name.as_str())
        {
            names.push(name);
        }
    }
    let mut alert_names = names
        .iter()
        .take(MAX_NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMES {
        alert_names.push_str(&format!(" +{}", names.len() - MAX_NAMES));
    }
    let summary = match n
        .common_annotations
        .get("summary")
        .or_else(|| n.common_annotations.get("description"))
    {
        Some(s) => s.clone(),
        None => {
            let mut seen: Vec<&str> = Vec::new();
            for a in &n.alerts {
                if let Some(s) = a.annotations.get("summary")
                    && !seen.contains(&s.as_str())
                {
                    seen.push(s);
                }
            }
            seen.into_iter().take(3).collect::<Vec<_>>().join("; ")
        }
    };
    let summary: String = summary.chars().take(MAX_SUMMARY_CHARS).collect();
    let since = n
        .alerts
        .iter()
        .map(|a| a.starts_at)
        .min()
        .unwrap_or_else(Utc::now)
        .with_timezone(&config.app_timezone)
        .format(SINCE_FORMAT)
        .to_string();
    let count = n.alerts.len() as u64 + n.truncated_alerts;
    vec![
        ("workshop_name", config.workshop_name.clone()),
        ("status", n.status.to_uppercase()),
        ("alert_names", alert_names),
        ("summary", summary),
        ("since", since),
        ("count", count.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(status: &str, fingerprints: &[&str]) -> Notification {
        Notification {
            version: "4".into(),
            group_key: "{}:{alertname=\"BengkelQueueBacklog\"}".into(),
            status: status.into(),
            receiver: "bengkel".into(),
            common_annotations: BTreeMap::new(),
            truncated_alerts: 0,
            alerts: fingerprints
                .iter()
                .map(|f| Alert {
                    status: status.into(),
                    labels: [("alertname".to_owned(), format!("Alert{f}"))].into(),
                    annotations: [("summary".to_owned(), "queue is late".to_owned())].into(),
                    starts_at: Utc::now(),
                    fingerprint: (*f).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_key_is_the_group_the_status_and_the_set_of_alerts() {
        let (a, fps) = dedup_key(&notification("firing", &["b", "a"]));
        assert_eq!(fps, ["a", "b"]);
        assert_eq!(a, dedup_key(&notification("firing", &["a", "b", "a"])).0);
        assert_ne!(a, dedup_key(&notification("resolved", &["a", "b"])).0);
        assert_ne!(a, dedup_key(&notification("firing", &["a"])).0);
    }
}
