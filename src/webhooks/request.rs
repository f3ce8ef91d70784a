//! The bodies of `POST /webhooks` and `PATCH /webhooks/{id}`, checked field by field (every
//! invalid field is named in a `422`).

use serde_json::{Map, Value};

use super::{EventType, MAX_DESCRIPTION_CHARS, net, repo::Patch};
use crate::{error::FieldError, http::extract::Fields};

fn url_field(f: &mut Fields, allow_private: bool, required: bool) -> Option<String> {
    let raw = if required {
        f.required_str("url")
    } else {
        f.optional_str("url")
    }?;
    match net::check_url(raw, allow_private) {
        Some(problem) => {
            f.errors.push(FieldError::new("url", problem));
            None
        }
        None => Some(raw.to_owned()),
    }
}

fn events_field(f: &mut Fields, required: bool) -> Option<Vec<EventType>> {
    let Some(items) = f.optional_array("events") else {
        if required && !f.errors.iter().any(|e| e.field == "events") {
            f.errors.push(FieldError::new("events", "is required"));
        }
        return None;
    };
    if items.is_empty() {
        f.errors.push(FieldError::new(
            "events",
            "must name at least one event type",
        ));
        return None;
    }
    let mut events = Vec::new();
    let mut unknown = Vec::new();
    for item in items {
        match item.as_str().and_then(EventType::parse) {
            Some(t) if !events.contains(&t) => events.push(t),
            Some(_) => {}
            None => unknown.push(
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned),
            ),
        }
    }
    if !unknown.is_empty() {
        f.errors.push(FieldError::new(
            "events",
            format!(
                "unknown event type(s): {}; known: {}",
                unknown.join(", "),
                EventType::names()
            ),
        ));
        return None;
    }
    Some(events)
}

fn description_field(f: &mut Fields) -> Option<String> {
    let raw = f.optional_str("description")?;
    let trimmed = raw.trim();
    let n = trimmed.chars().count();
    if n > MAX_DESCRIPTION_CHARS {
        f.errors.push(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters (got {n})"),
        ));
        return None;
    }
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

pub(super) struct NewValid {
    pub url: String,
    pub events: Vec<EventType>,
    pub description: Option<String>,
}

pub(super) fn validate_new(
    body: &Map<String, Value>,
    allow_private: bool,
) -> Result<NewValid, Vec<FieldError>> {
    let mut f = Fields::new(body);
    let url = url_field(&mut f, allow_private, true);
    let events = events_field(&mut f, true);
    let description = description_field(&mut f);
    match (url, events) {
        (Some(url), Some(events)) if f.errors.is_empty() => Ok(NewValid {
            url,
            events,
            description,
        }),
        _ => Err(f.errors),
    }
}

pub(super) fn validate_patch(
    body: &Map<String, Value>,
    allow_private: bool,
) -> Result<Patch, Vec<FieldError>> {
    let mut f = Fields::new(body);
    let patch = Patch {
        url: url_field(&mut f, allow_private, false),
        events: events_field(&mut f, false),
        description: f.has("description").then(|| description_field(&mut f)),
        enabled: f.optional_bool("enabled"),
    };
    if f.errors.is_empty() {
        Ok(patch)
    } else {
        Err(f.errors)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(body: Value, allow_private: bool) -> Vec<String> {
        match validate_new(body.as_object().unwrap(), allow_private) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect(),
        }
    }

    #[test]
    fn a_new_subscription_is_checked_field_by_field() {
        assert!(
            problems(
                json!({"url": "https://example.com/h", "events": ["message.sent"]}),
                false
            )
            .is_empty()
        );
        let p = problems(json!({}), false);
        assert_eq!(p.len(), 2, "{p:?}");
        let p = problems(json!({"url": "http://example.com", "events": []}), false);
        assert!(p[0].starts_with("url: must be https"), "{p:?}");
        assert!(p[1].starts_with("events: must name at least one"), "{p:?}");
        let p = problems(
            json!({"url": "https://example.com", "events": ["message.sent", "message.bogus"]}),
            false,
        );
        assert!(p[0].contains("message.bogus"), "{p:?}");
        let p = problems(
            json!({"url": "https://10.0.0.1/x", "events": ["message.sent"]}),
            false,
        );
        assert!(p[0].contains("private"), "{p:?}");
        assert!(
            problems(
                json!({"url": "http://127.0.0.1:9/x", "events": ["message.sent"]}),
                true
            )
            .is_empty()
        );
        let p = problems(
            json!({"url": "https://example.com", "events": "message.sent"}),
            false,
        );
        assert_eq!(p, ["events: must be an array"]);
    }

    #[test]
    fn a_patch_may_clear_the_description() {
        let patch =
            validate_patch(json!({"description": null}).as_object().unwrap(), false).unwrap();
        assert_eq!(patch.description, Some(None));
        let patch = validate_patch(json!({"enabled": true}).as_object().unwrap(), false).unwrap();
        assert_eq!(patch.description, None);
        assert_eq!(patch.enabled, Some(true));
    }
}
