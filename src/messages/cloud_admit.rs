//! What the Cloud API refuses, refused at enqueue (SPEC §13): a caption over 1,024 characters,
//! and an ad-hoc send to a number that has not written in the last 24 hours unless it is a
//! template mapped to an approved Meta template. Only when `GATEWAY=cloud_api`.
//!
//! The window is judged at enqueue; a scheduled text whose window has closed by its send time
//! is still sent as text and Meta answers `131047` (`failed`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{cloud_send::window_open, request::NewMessage};
use crate::{error::FieldError, gateway::cloud_api::client::MAX_CAPTION};

/// The field a message's text came in (`body` in JSON, `message` in a query string).
#[derive(Debug, Clone, Copy)]
pub struct TextField(pub &'static str);

/// For each of `messages`, in order, why the Cloud API would refuse it (empty: it may go).
/// One query, however many messages there are.
pub async fn check(
    pool: &PgPool,
    messages: &[&NewMessage],
    field: TextField,
) -> sqlx::Result<Vec<Vec<FieldError>>> {
    let phones: Vec<&str> = messages.iter().map(|m| m.to.as_str()).collect();
    let keys: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.template.as_ref().map(|t| t.key.as_str()))
        .collect();
    let rows: Vec<(String, Option<DateTime<Utc>>, bool)> = sqlx::query_as(
        "SELECT p.phone, c.last_inbound_at, false FROM unnest($1::text[]) AS p(phone)
           JOIN whatsapp_contacts c ON c.phone = p.phone
         UNION ALL
         SELECT m.key, NULL, true FROM cloud_api_templates m WHERE m.key = ANY($2)",
    )
    .bind(&phones)
    .bind(&keys)
    .fetch_all(pool)
    .await?;
    let mut inbound = HashMap::new();
    let mut mapped = std::collections::HashSet::new();
    for (name, at, is_mapping) in rows {
        if is_mapping {
            mapped.insert(name);
        } else if let Some(at) = at {
            inbound.insert(name, at);
        }
    }
    let now = Utc::now();
    Ok(messages
        .iter()
        .map(|m| {
            let open = window_open(inbound.get(m.to.as_str()).copied(), now);
            let mapped = m.template.as_ref().is_some_and(|t| mapped.contains(&t.key));
            refusals(m, open, mapped, field)
        })
        .collect())
}

fn refusals(m: &NewMessage, window_open: bool, mapped: bool, field: TextField) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if m.kind.is_reminder() {
        // Reminders always go as templates; an unmapped one is skipped by the reminder pass.
        return errors;
    }
    let caption = m.body.chars().count();
    if m.file.is_some() && caption > MAX_CAPTION {
        errors.push(FieldError::new(
            field.0,
            format!(
                "the Cloud API allows a caption of at most {MAX_CAPTION} characters (got {caption})"
            ),
        ));
    }
    if !window_open && !mapped {
        let (field, message) = match &m.template {
            Some(t) => (
                crate::templates::send::FIELD,
                format!(
                    "{} has not written in the last 24 hours, and template `{}` is not mapped to \
                     an approved Meta template (PUT /templates/{}/cloud-api)",
                    m.to.as_str(),
                    t.key,
                    t.key
                ),
            ),
            None => (
                field.0,
                format!(
                    "{} has not written in the last 24 hours: outside WhatsApp's customer-service \
                     window the Cloud API sends only approved templates; send `template: {{key, \
                     values?}}` of a template mapped with PUT /templates/{{key}}/cloud-api",
                    m.to.as_str()
                ),
            ),
        };
        errors.push(FieldError::new(field, message));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Kind, phone::PhoneNumber};

    fn message(kind: Kind, body: &str, file: bool, template: bool) -> NewMessage {
        let mut m = NewMessage::internal(
            kind,
            PhoneNumber::parse("081234567890").expect("a valid number"),
            body.to_owned(),
            None,
        );
        m.file = file.then(|| "https://example.com/a.pdf".to_owned());
        if template {
            m.template = Some(crate::templates::Origin {
                key: "promo".into(),
                version: 1,
                language: Default::default(),
                values: crate::templates::ValuesJson::from_pairs(&[]),
            });
        }
        m
    }

    const F: TextField = TextField("body");

    #[test]
    fn text_outside_the_window_needs_a_mapped_template() {
        let text = message(Kind::Adhoc, "hi", false, false);
        assert!(refusals(&text, true, false, F).is_empty());
        let refused = refusals(&text, false, false, F);
        assert_eq!(refused.len(), 1);
        assert!(refused[0].message.contains("24 hours"), "{refused:?}");
        let templated = message(Kind::Adhoc, "hi", false, true);
        assert!(refusals(&templated, false, true, F).is_empty());
        let unmapped = refusals(&templated, false, false, F);
        assert_eq!(unmapped[0].field, crate::templates::send::FIELD);
        assert!(unmapped[0].message.contains("not mapped"));
    }

    #[test]
    fn captions_over_1024_characters_are_refused_reminders_are_left_to_the_pass() {
        let long = "é".repeat(MAX_CAPTION + 1);
        let refused = refusals(&message(Kind::Adhoc, &long, true, false), true, false, F);
        assert!(refused[0].message.contains("1025"), "{refused:?}");
        let fits = "é".repeat(MAX_CAPTION);
        assert!(refusals(&message(Kind::Adhoc, &fits, true, false), true, false, F).is_empty());
        assert!(refusals(&message(Kind::Adhoc, &long, false, false), true, false, F).is_empty());
        assert!(
            refusals(
                &message(Kind::Maintenance, "x", false, false),
                false,
                false,
                F
            )
            .is_empty()
        );
    }
}
