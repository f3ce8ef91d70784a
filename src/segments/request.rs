//! The bodies of `POST /segments` and `POST /segments/preview`, checked field by field (every
//! invalid field is named in a `422`; a filter's field as `filters.<name>`).

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Filters, Source};
use crate::{
    error::FieldError,
    http::{
        extract::parse_date,
        fields::{Fields, RFC3339, rfc3339},
    },
    templates::Language,
};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_MODEL_CHARS: usize = 100;
/// The most ids one list may name.
pub const MAX_IDS: usize = 10_000;

const FILTERS: [&str; 9] = [
    "model",
    "due_from",
    "due_to",
    "last_visit_before",
    "last_visit_after",
    "language",
    "has_inbound_since",
    "customer_ids",
    "manual_ids",
];

/// A segment as a body gives it (`name` only for `POST /segments`).
#[derive(Debug, Clone)]
pub struct Valid {
    pub name: Option<String>,
    pub source: Source,
    pub filters: Filters,
}

/// `{name?, source?, filters?}`; `name_required` for a segment to save.
pub fn validate(body: &Map<String, Value>, name_required: bool) -> Result<Valid, Vec<FieldError>> {
    let mut f = Fields::new(body);
    let name = f.text("name", MAX_NAME_CHARS, name_required);
    let source = match f.optional_str("source") {
        None => Source::default(),
        Some(raw) => Source::parse(raw).unwrap_or_else(|| {
            f.errors.push(FieldError::new(
                "source",
                "must be one of: vehicles, manual, both",
            ));
            Source::default()
        }),
    };
    let mut errors = std::mem::take(&mut f.errors);
    let filters = match body.get("filters") {
        None | Some(Value::Null) => Filters::default(),
        Some(Value::Object(map)) => filters(map, &mut errors),
        Some(_) => {
            errors.push(FieldError::new("filters", "must be an object"));
            Filters::default()
        }
    };
    if errors.is_empty() {
        Ok(Valid {
            name,
            source,
            filters,
        })
    } else {
        Err(errors)
    }
}

fn filters(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Filters {
    let mut f = Fields::new(map);
    let mut unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !FILTERS.contains(k))
        .collect();
    unknown.sort_unstable();
    for key in unknown {
        f.errors.push(FieldError::new(
            key,
            format!("unknown filter; known: {}", FILTERS.join(", ")),
        ));
    }
    let model = f.text("model", MAX_MODEL_CHARS, false);
    let date = |f: &mut Fields, name: &str| {
        let raw = f.optional_str(name)?;
        let date = parse_date(raw);
        if date.is_none() {
            f.errors
                .push(FieldError::new(name, "must be a date (YYYY-MM-DD)"));
        }
        date
    };
    let due_from = date(&mut f, "due_from");
    let due_to = date(&mut f, "due_to");
    let last_visit_before = date(&mut f, "last_visit_before");
    let last_visit_after = date(&mut f, "last_visit_after");
    if let (Some(from), Some(to)) = (due_from, due_to)
        && from > to
    {
        f.errors
            .push(FieldError::new("due_to", "must not be before due_from"));
    }
    let language = f.optional_str("language").and_then(|raw| {
        let language = Language::parse(raw);
        if language.is_none() {
            f.errors
                .push(FieldError::new("language", Language::MESSAGE));
        }
        language
    });
    let has_inbound_since = f.optional_str("has_inbound_since").and_then(|raw| {
        let at = rfc3339(raw);
        if at.is_none() {
            f.errors.push(FieldError::new("has_inbound_since", RFC3339));
        }
        at
    });
    let customer_ids = ids(&mut f, "customer_ids");
    let manual_ids = ids(&mut f, "manual_ids");
    errors.extend(f.errors.into_iter().map(|mut e| {
        e.field = format!("filters.{}", e.field);
        e
    }));
    Filters {
        model,
        due_from,
        due_to,
        last_visit_before,
        last_visit_after,
        language,
        has_inbound_since,
        customer_ids,
        manual_ids,
    }
}

fn ids(f: &mut Fields, name: &str) -> Option<Vec<Uuid>> {
    let items = f.optional_array(name)?;
    if items.len() > MAX_IDS {
        f.errors.push(FieldError::new(
            name,
            format!("at most {MAX_IDS} ids (got {})", items.len()),
        ));
        return None;
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str().and_then(|s| Uuid::parse_str(s).ok()) {
            Some(id) if !ids.contains(&id) => ids.push(id),
            Some(_) => {}
            None => {
                f.errors
                    .push(FieldError::new(format!("{name}[{i}]"), "must be a UUID"));
                return None;
            }
        }
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(body: Value) -> Vec<String> {
        match validate(body.as_object().unwrap(), true) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn a_segment_with_every_filter_is_read() {
        let v = validate(
            json!({"name": " Avanza Januari ", "source": "vehicles", "filters": {
                "model": "avanza", "due_from": "2027-01-01", "due_to": "2027-01-31",
                "last_visit_before": "2026-10-01", "last_visit_after": "2025-01-01",
                "language": "en", "has_inbound_since": "2026-12-01T00:00:00+07:00",
                "customer_ids": ["0192f0e4-0000-7000-8000-000000000001"]}})
            .as_object()
            .unwrap(),
            true,
        )
        .unwrap();
        assert_eq!(v.name.as_deref(), Some("Avanza Januari"));
        assert_eq!(v.source, Source::Vehicles);
        assert_eq!(v.filters.model.as_deref(), Some("avanza"));
        assert_eq!(v.filters.language, Some(Language::En));
        assert_eq!(v.filters.customer_ids.as_ref().map(Vec::len), Some(1));
        assert!(v.filters.manual_ids.is_none());
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(
            fields(json!({"source": "cars", "filters": {
                "modle": "x", "due_from": "2027-02-01", "due_to": "2027-01-01",
                "language": "jv", "has_inbound_since": "yesterday",
                "manual_ids": ["nope"]}})),
            [
                "name",
                "source",
                "filters.modle",
                "filters.due_to",
                "filters.language",
                "filters.has_inbound_since",
                "filters.manual_ids[0]"
            ]
        );
        assert_eq!(fields(json!({"name": "x", "filters": []})), ["filters"]);
        assert_eq!(fields(json!({"name": ""})), ["name"]);
    }
}
