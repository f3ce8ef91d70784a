//! How a message goes out on the Cloud API (SPEC §13 "Templates"): outside WhatsApp's 24-hour
//! customer-service window only an approved template may be sent. Reminders (`maintenance`,
//! `manual`) always go as their template's mapped Meta template; another message rendered from a
//! mapped template goes as that template when the number has not written in the last 24 hours,
//! and as text otherwise. [`call`] makes the gateway call by that plan; [`status_by`] waits for
//! the status of an attempt that may have sent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::{Kind, claim::Sendable, context::SendContext};
use crate::{
    gateway::{Class, Gateway, Outcome, SendRequest, TemplateCall, cloud_api::codes},
    templates::{Language, cloud_api::Mapping},
};

/// WhatsApp's customer-service window.
pub const SERVICE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Whether a number that last wrote at `last_inbound` is within [`SERVICE_WINDOW`] at `now`.
pub fn window_open(last_inbound: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_inbound.is_some_and(|at| {
        chrono::Duration::from_std(SERVICE_WINDOW).is_ok_and(|window| now - at < window)
    })
}

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The text (or file) as it is.
    Text,
    /// Template `key`'s mapping, filled.
    Template { key: String, call: TemplateCall },
    /// Nothing can be sent: why (the message fails without a call).
    Refuse(String),
}

#[derive(sqlx::FromRow)]
struct Row {
    kind: Kind,
    template_key: Option<String>,
    template_language: Option<String>,
    template_values: Option<Json<Value>>,
    last_inbound_at: Option<DateTime<Utc>>,
    mapping: Option<Json<Mapping>>,
}

/// The plan for message `id` (a message that is gone is sent as text: the claim had it).
pub async fn plan(pool: &PgPool, id: Uuid) -> sqlx::Result<Plan> {
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT msg.kind, msg.template_key, msg.template_language, msg.template_values,
                (SELECT c.last_inbound_at FROM whatsapp_contacts c WHERE c.phone = msg.to_phone)
                    AS last_inbound_at,
                (SELECT ",
        crate::cloud_mapping_json!(),
        " FROM cloud_api_templates m WHERE m.key = msg.template_key) AS mapping
         FROM messages msg WHERE msg.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(Plan::Text, |r| decide(r, Utc::now())))
}

fn decide(row: Row, now: DateTime<Utc>) -> Plan {
    let window_open = window_open(row.last_inbound_at, now);
    let reminder = row.kind.is_reminder();
    let key = row.template_key.unwrap_or_default();
    match row.mapping {
        Some(Json(mapping)) if reminder || !window_open => {
            let language = row
                .template_language
                .as_deref()
                .and_then(Language::parse)
                .unwrap_or_default();
            let values = row.template_values.map(|Json(v)| v).unwrap_or_default();
            match mapping.call(language, &values) {
                Ok(call) => Plan::Template { key, call },
                Err(why) => Plan::Refuse(format!("cloud_api template `{key}`: {why}")),
            }
        }
        None if reminder => Plan::Refuse(if key.is_empty() {
            "no cloud_api template".to_owned()
        } else {
            format!("no cloud_api template: `{key}` is not mapped (PUT /templates/{key}/cloud-api)")
        }),
        _ => Plan::Text,
    }
}

/// The gateway call. On the Cloud API, a reminder (and a templated message outside the 24-hour
/// window) goes as its mapped Meta template ([`plan`]); a template error flags the mapping.
pub async fn call(ctx: &SendContext, id: Uuid, message: &Sendable) -> Outcome {
    let plain = !message.templated && !message.kind.is_reminder();
    let plan = match &ctx.gateway {
        // Neither a reminder nor a template: text, with no need to look (see `decide`).
        Gateway::CloudApi(_) if plain => Plan::Text,
        Gateway::CloudApi(_) => match plan(&ctx.pool, id).await {
            Ok(plan) => plan,
            // Nothing went out: worth another attempt.
            Err(e) => {
                return Outcome::Retryable {
                    class: Class::Connect,
                    error: format!("reading the message's template: {e}"),
                    response: None,
                    retry_after: None,
                };
            }
        },
        Gateway::StarSender(_) => Plan::Text,
    };
    let (key, template) = match plan {
        Plan::Text => (None, None),
        Plan::Template { key, call } => (Some(key), Some(call)),
        Plan::Refuse(error) => {
            return Outcome::Permanent {
                class: Class::ClientError,
                error,
                response: None,
            };
        }
    };
    let request = SendRequest {
        message_id: id,
        to: &message.to_phone,
        body: &message.body,
        file_url: message.file_url.as_deref(),
        template: template.as_ref(),
    };
    let outcome = ctx.gateway.send(&request).await;
    if let (Some(key), Some(code)) = (key, outcome.error_code())
        && codes::TEMPLATE_CODES.contains(&code)
    {
        let error = outcome.error().unwrap_or_default();
        if let Err(e) = crate::templates::cloud_api::flag(&ctx.pool, &key, code, error).await {
            tracing::warn!(key, "flagging the Cloud API template failed: {e}");
        }
    }
    outcome
}

/// How often a run waiting for a status of its ambiguous attempt looks.
const STATUS_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The wamid of a status webhook of message `id` (by its callback data or wamid), waiting for
/// one until `deadline`; `None` when none came by then (counted either way in
/// `bengkel_ambiguous_sends_total`).
pub async fn status_by(
    pool: &PgPool,
    id: Uuid,
    deadline: DateTime<Utc>,
) -> sqlx::Result<Option<String>> {
    loop {
        if let Some(wamid) = crate::gateway::cloud_api::statuses::sent_as(pool, id).await? {
            tracing::info!(message_id = %id, wamid, "an ambiguous attempt reached WhatsApp (its status came): sent, not called again");
            metrics::counter!("bengkel_ambiguous_sends_total", "resolution" => "receipt")
                .increment(1);
            return Ok(Some(wamid));
        }
        let left = (deadline - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            tracing::warn!(message_id = %id, "no status of the ambiguous attempt within AMBIGUOUS_RECEIPT_WAIT_SECS: calling again");
            metrics::counter!("bengkel_ambiguous_sends_total", "resolution" => "resent")
                .increment(1);
            return Ok(None);
        }
        tokio::time::sleep(left.min(STATUS_POLL)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        Mapping {
            name: "service_reminder".into(),
            languages: [("id".into(), "id".into()), ("en".into(), "en_US".into())].into(),
            params: vec!["nama".into(), "no_pol".into()],
            flagged: None,
            updated_at: Utc::now(),
            updated_by: "ops".into(),
        }
    }

    fn row(kind: Kind, mapped: bool, last_inbound: Option<i64>) -> Row {
        Row {
            kind,
            template_key: Some("maintenance_reminder".into()),
            template_language: Some("en".into()),
            template_values: Some(Json(serde_json::json!({"nama": "Budi", "no_pol": "B 1 X"}))),
            last_inbound_at: last_inbound.map(|h| Utc::now() - chrono::Duration::hours(h)),
            mapping: mapped.then(|| Json(mapping())),
        }
    }

    #[test]
    fn reminders_always_go_as_templates_others_only_outside_the_window() {
        let now = Utc::now();
        let Plan::Template { call, .. } = decide(row(Kind::Maintenance, true, Some(1)), now) else {
            panic!()
        };
        assert_eq!(call.language, "en_US");
        assert_eq!(call.params, ["Budi", "B 1 X"]);
        assert_eq!(decide(row(Kind::Adhoc, true, Some(1)), now), Plan::Text);
        assert!(matches!(
            decide(row(Kind::Adhoc, true, Some(30)), now),
            Plan::Template { .. }
        ));
        assert!(matches!(
            decide(row(Kind::Adhoc, true, None), now),
            Plan::Template { .. }
        ));
        assert!(matches!(
            decide(row(Kind::Manual, false, Some(1)), now),
            Plan::Refuse(why) if why.contains("no cloud_api template")
        ));
        assert_eq!(decide(row(Kind::Adhoc, false, None), now), Plan::Text);
    }
}
