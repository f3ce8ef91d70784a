//! The body of `POST /campaigns`, checked field by field (every invalid field is named in a
//! `422`: `steps[1].variants[0].weight`). What needs the database — the segment exists, the
//! templates exist — is checked by [`super::repo::create`].

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{OnlyIf, Step, Variant};
use crate::{
    error::FieldError,
    http::fields::Fields,
    policy::window::SendWindow,
    segments::{Filters, Source, request as segment_request},
};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_STEPS: usize = 10;
pub const MAX_VARIANTS: usize = 10;
pub const MAX_WEIGHT: u32 = 100;
pub const MAX_DELAY_DAYS: u32 = 365;
/// `expires_after`, in seconds: a minute to 30 days.
pub const EXPIRES_AFTER: std::ops::RangeInclusive<i64> = 60..=30 * 86_400;

/// Where a campaign's recipients come from.
#[derive(Debug, Clone)]
pub enum Audience {
    Saved(Uuid),
    Given(Source, Filters),
}

#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    pub audience: Audience,
    pub reminder_type: bool,
    pub steps: Vec<Step>,
    pub start_at: Option<DateTime<Utc>>,
    pub expires_after_secs: Option<i64>,
    /// Its own send window, on top of the delivery policy's.
    pub send_window: Option<SendWindow>,
}

pub fn validate(body: &Map<String, Value>) -> Result<NewCampaign, Vec<FieldError>> {
    let mut f = Fields::new(body);
    let name = f.text("name", MAX_NAME_CHARS, true);
    let reminder_type = f.optional_bool("reminder_type").unwrap_or(false);
    let start_at = f.optional_time("start_at");
    let expires_after_secs = f.optional_i64("expires_after").and_then(|secs| {
        if EXPIRES_AFTER.contains(&secs) {
            Some(secs)
        } else {
            f.errors.push(FieldError::new(
                "expires_after",
                format!(
                    "must be {} to {} seconds",
                    EXPIRES_AFTER.start(),
                    EXPIRES_AFTER.end()
                ),
            ));
            None
        }
    });
    let send_window = f
        .optional_str("send_window")
        .and_then(|raw| match raw.parse() {
            Ok(w) => Some(w),
            Err(e) => {
                f.errors
                    .push(FieldError::new("send_window", format!("{e}")));
                None
            }
        });
    let saved = f.optional_str("segment_id").map(str::to_owned);
    let mut errors = std::mem::take(&mut f.errors);
    let audience = audience(body, saved, &mut errors);
    let steps = steps(body, &mut errors);
    match (name, audience) {
        (Some(name), Some(audience)) if errors.is_empty() => Ok(NewCampaign {
            name,
            audience,
            reminder_type,
            steps,
            start_at,
            expires_after_secs,
            send_window,
        }),
        _ => Err(errors),
    }
}

fn audience(
    body: &Map<String, Value>,
    saved: Option<String>,
    errors: &mut Vec<FieldError>,
) -> Option<Audience> {
    match (saved, body.get("segment")) {
        (Some(_), Some(v)) if !v.is_null() => {
            errors.push(FieldError::new(
                "segment_id",
                "give a segment_id or a segment, not both",
            ));
            None
        }
        (Some(raw), _) => match Uuid::parse_str(&raw) {
            Ok(id) => Some(Audience::Saved(id)),
            Err(_) => {
                errors.push(FieldError::new("segment_id", "must be a UUID"));
                None
            }
        },
        (None, Some(Value::Object(map))) => match segment_request::validate(map, false) {
            Ok(v) => Some(Audience::Given(v.source, v.filters)),
            Err(more) => {
                errors.extend(more.into_iter().map(|mut e| {
                    e.field = format!("segment.{}", e.field);
                    e
                }));
                None
            }
        },
        (None, None | Some(Value::Null)) => {
            errors.push(FieldError::new(
                "segment_id",
                "is required (or a segment: {source, filters})",
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(FieldError::new("segment", "must be an object"));
            None
        }
    }
}

fn steps(body: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Vec<Step> {
    let items = match body.get("steps") {
        Some(Value::Array(items)) if (1..=MAX_STEPS).contains(&items.len()) => items,
        _ => {
            errors.push(FieldError::new(
                "steps",
                format!("is required: 1 to {MAX_STEPS} steps"),
            ));
            return Vec::new();
        }
    };
    let mut steps = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("steps[{i}]");
        let Value::Object(map) = item else {
            errors.push(FieldError::new(at, "must be an object"));
            continue;
        };
        let mut f = Fields::new(map);
        let delay_days = match f.optional_i64("delay_days") {
            None => 0,
            Some(d) if i == 0 && d != 0 => {
                f.errors.push(FieldError::new(
                    "delay_days",
                    "must be 0 for the first step: it starts with the campaign",
                ));
                0
            }
            Some(d) if (0..=i64::from(MAX_DELAY_DAYS)).contains(&d) => d as u32,
            Some(_) => {
                f.errors.push(FieldError::new(
                    "delay_days",
                    format!("must be 0 to {MAX_DELAY_DAYS}"),
                ));
                0
            }
        };
        let only_if = f.optional_str("only_if").and_then(|raw| {
            if i == 0 {
                f.errors.push(FieldError::new(
                    "only_if",
                    "is for a later step: the first has no previous one",
                ));
                return None;
            }
            let only_if = OnlyIf::parse(raw);
            if only_if.is_none() {
                f.errors.push(FieldError::new(
                    "only_if",
                    format!("must be one of: {}", OnlyIf::NAMES),
                ));
            }
            only_if
        });
        let variants = variants(&mut f, map);
        errors.extend(f.errors.into_iter().map(|mut e| {
            e.field = format!("{at}.{}", e.field);
            e
        }));
        steps.push(Step {
            variants,
            delay_days,
            only_if,
        });
    }
    steps
}

fn variants(f: &mut Fields, map: &Map<String, Value>) -> Vec<Variant> {
    let items = match map.get("variants") {
        Some(Value::Array(items)) if (1..=MAX_VARIANTS).contains(&items.len()) => items,
        _ => {
            f.errors.push(FieldError::new(
                "variants",
                format!("is required: 1 to {MAX_VARIANTS} variants"),
            ));
            return Vec::new();
        }
    };
    let mut variants = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("variants[{i}]");
        let Value::Object(map) = item else {
            f.errors.push(FieldError::new(at, "must be an object"));
            continue;
        };
        let mut v = Fields::new(map);
        let holdout = v.optional_bool("holdout").unwrap_or(false);
        let template_key = v.optional_str("template_key").map(|k| k.trim().to_owned());
        match (&template_key, holdout) {
            (Some(_), true) => v.errors.push(FieldError::new(
                "template_key",
                "a holdout sends nothing: no template_key",
            )),
            (None, false) => v.errors.push(FieldError::new(
                "template_key",
                "is required (or holdout: true)",
            )),
            (Some(k), false) if k.is_empty() => v
                .errors
                .push(FieldError::new("template_key", "must not be empty")),
            _ => {}
        }
        let weight = match v.optional_i64("weight") {
            Some(w) if (1..=i64::from(MAX_WEIGHT)).contains(&w) => w as u32,
            Some(_) | None => {
                v.errors.push(FieldError::new(
                    "weight",
                    format!("is required: 1 to {MAX_WEIGHT}"),
                ));
                0
            }
        };
        f.errors.extend(v.errors.into_iter().map(|mut e| {
            e.field = format!("{at}.{}", e.field);
            e
        }));
        variants.push(Variant {
            template_key,
            weight,
            holdout,
        });
    }
    if !variants.is_empty() && variants.iter().all(|v| v.holdout) {
        f.errors.push(FieldError::new(
            "variants",
            "at least one variant must send a template",
        ));
    }
    variants
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(body: Value) -> Vec<String> {
        match validate(body.as_object().unwrap()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn a_campaign_with_two_steps_is_read() {
        let c = validate(
            json!({"name": "Januari", "segment": {"source": "vehicles", "filters": {"model": "avanza"}},
                   "steps": [{"variants": [{"template_key": "promo_a", "weight": 50},
                                           {"template_key": "promo_b", "weight": 40},
                                           {"holdout": true, "weight": 10}]},
                             {"variants": [{"template_key": "follow", "weight": 1}],
                              "delay_days": 3, "only_if": "no_reply"}],
                   "start_at": "2027-01-02T09:00:00+07:00", "expires_after": 86400})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.steps.len(), 2);
        assert!(c.steps[0].variants[2].holdout);
        assert_eq!(c.steps[1].only_if, Some(OnlyIf::NoReply));
        assert_eq!(c.steps[1].delay_days, 3);
        assert!(matches!(c.audience, Audience::Given(Source::Vehicles, _)));
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(
            fields(json!({"segment_id": "x", "send_window": "7-21", "steps": [
                {"variants": [{"template_key": "a", "weight": 0}, {"holdout": true, "template_key": "b", "weight": 5}],
                 "delay_days": 2, "only_if": "no_reply"},
                {"variants": [{"holdout": true, "weight": 5}], "only_if": "bored"}]})),
            [
                "name",
                "send_window",
                "segment_id",
                "steps[0].delay_days",
                "steps[0].only_if",
                "steps[0].variants[0].weight",
                "steps[0].variants[1].template_key",
                "steps[1].only_if",
                "steps[1].variants"
            ]
        );
        assert_eq!(
            fields(json!({"name": "x", "segment": {"filters": {"model": 5}}, "steps": []})),
            ["segment.filters.model", "steps"]
        );
    }
}
