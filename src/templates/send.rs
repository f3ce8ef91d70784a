//! A send given as a template (README "Templates": sending a template): `template: {key,
//! values?, language?}` instead of a text, on `POST /whatsapp/send`, each item of
//! `/whatsapp/send-batch` and `/manual-whatsapp/send-custom-message`. [`parse`] checks its shape
//! with the rest of the request; [`render`] renders it at enqueue — the current version of the
//! template, the placeholders the send can fill itself (the workshop's; the customer's or manual
//! record's the number belongs to, as their reminder would), `values` for the rest — into the
//! text the message stores and the [`Origin`] it records.
//!
//! **Who wins.** For a custom key, a value in `values` wins over one the send found itself; for
//! the built-in keys (`maintenance_reminder`, `manual_reminder`) the recipient's data wins and
//! `values` only fills what it lacks, so that a reminder text says what the records say. The
//! salutation goes with the name finally used (README "Salutation and language").

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, Utc};
use serde_json::{Map, Value};
use sqlx::PgPool;

use super::{
    Current, Language, MAINTENANCE, MANUAL, Origin, Values, ValuesJson, Workshop,
    recipient::{self, Prefer, Recipient},
};
use crate::{config::Config, error::FieldError, reminders::business_date};

/// The request's field.
pub const FIELD: &str = "template";
/// The longest value of a placeholder (a saved body's limit).
pub const MAX_VALUE_CHARS: usize = 4_000;

/// A saved template to send instead of a text, rendered when the send is accepted (README
/// "Templates": sending a template).
#[derive(utoipa::ToSchema)]
#[schema(as = TemplateSend, example = json!({"key": "promo_servis", "values": {"nama": "Budi", "no_pol": "B 1234 XYZ"}, "language": "id"}))]
#[allow(dead_code)]
pub struct TemplateSend {
    /// A template (`GET /templates`); an unknown key is a `422`.
    key: String,
    /// Values of the template's placeholders (strings; a number is taken as its text), for
    /// those the send cannot fill itself. For a custom key they win over the recipient's data;
    /// for a built-in key the data wins.
    values: Option<HashMap<String, String>>,
    /// `id` or `en`; default: the language of the customer or manual record the number belongs
    /// to, else `id`. A template without an `en` body renders its `id` one.
    language: Option<Language>,
}

/// A checked `template`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub key: String,
    /// As given (numbers as their text).
    pub values: Values,
    pub language: Option<Language>,
}

impl Request {
    /// What an `Idempotency-Key` replay compares: the key, the language asked for and the
    /// values, in a canonical order.
    pub fn fingerprint(&self) -> Value {
        let values: BTreeMap<&str, &str> = self
            .values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        serde_json::json!({
            "key": self.key,
            "language": self.language.map(Language::as_str),
            "values": values,
        })
    }
}

fn field(rest: &str) -> String {
    format!("{FIELD}.{rest}")
}

/// Checks the shape of `template` (the key itself is checked when it is rendered); every
/// problem at once, each on its field (`template.key`, `template.values.nama`, …).
pub fn parse(value: &Value) -> Result<Request, Vec<FieldError>> {
    let Value::Object(map) = value else {
        return Err(vec![FieldError::new(
            FIELD,
            "must be an object: {key, values?, language?}",
        )]);
    };
    let mut errors = Vec::new();
    let key = match map.get("key") {
        Some(Value::String(k)) if !k.trim().is_empty() => Some(k.trim().to_owned()),
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field("key"), "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(
                field("key"),
                "must be a template key (a string)",
            ));
            None
        }
    };
    let language = match map.get("language") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Language::parse(s).or_else(|| {
            errors.push(FieldError::new(field("language"), Language::MESSAGE));
            None
        }),
        Some(_) => {
            errors.push(FieldError::new(field("language"), Language::MESSAGE));
            None
        }
    };
    let values = match (map.get("values"), key.as_deref()) {
        (None | Some(Value::Null), _) => Values::new(),
        (Some(Value::Object(given)), key) => values(given, key, &mut errors),
        (Some(_), _) => {
            errors.push(FieldError::new(
                field("values"),
                "must be an object of placeholder values",
            ));
            Values::new()
        }
    };
    match key {
        Some(key) if errors.is_empty() => Ok(Request {
            key,
            values,
            language,
        }),
        _ => Err(errors),
    }
}

/// `values`: strings (a number as its text; `null` as absent) for placeholders a template may
/// have (those of `key` when it is known).
fn values(given: &Map<String, Value>, key: Option<&str>, errors: &mut Vec<FieldError>) -> Values {
    let allowed = super::placeholders_for(key.unwrap_or_default());
    let mut out = Values::new();
    for (name, v) in given {
        let at = field(&format!("values.{name}"));
        if !allowed.contains(&name.as_str()) {
            errors.push(FieldError::new(
                at,
                format!(
                    "is not a placeholder of {}; allowed: {}",
                    key.unwrap_or("a template"),
                    allowed.join(", ")
                ),
            ));
            continue;
        }
        match v {
            Value::Null => {}
            Value::String(s) if s.chars().count() <= MAX_VALUE_CHARS => {
                out.insert(name.clone(), s.clone());
            }
            Value::Number(n) => {
                out.insert(name.clone(), n.to_string());
            }
            _ => errors.push(FieldError::new(
                at,
                format!("must be a string of at most {MAX_VALUE_CHARS} characters, or a number"),
            )),
        }
    }
    out
}

/// A rendered template send: the text to store and what the message records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub origin: Origin,
}

/// What every render of a request shares: the workshop's values, today, the calendar's rule.
#[derive(Debug, Clone)]
pub struct Context {
    pub workshop: Workshop,
    /// The business date (`hari` counts from it).
    pub today: NaiveDate,
    pub interval_months: u32,
}

impl Context {
    pub fn new(config: &Config) -> Self {
        Self {
            workshop: crate::reminders::schedule::workshop(config),
            today: business_date(config.app_timezone, Utc::now()),
            interval_months: config.service_interval_months,
        }
    }
}

/// Renders `template` for a recipient (`None`: the number belongs to nothing) with `current`
/// (`None`: no such template). `Err`: every reason it cannot be sent, on its field.
pub fn render_one(
    current: Option<&Current>,
    recipient: Option<&Recipient>,
    template: &Request,
    cx: &Context,
) -> Result<Rendered, Vec<FieldError>> {
    let Some(current) = current else {
        return Err(vec![FieldError::new(
            field("key"),
            format!("no template {:?} (see GET /templates)", template.key),
        )]);
    };
    let asked = template
        .language
        .or(recipient.map(|r| r.language))
        .unwrap_or_default();
    // The dates are written in the language of the body that is used.
    let language = current.bodies.language_of(asked);
    let mut values = Values::from([
        (
            "service_phone".to_owned(),
            cx.workshop.service_phone.clone(),
        ),
        ("workshop_name".to_owned(), cx.workshop.name.clone()),
    ]);
    if let Some(r) = recipient {
        values.extend(r.values(language, cx.today, cx.interval_months));
    }
    let builtin = [MAINTENANCE, MANUAL].contains(&current.key.as_str());
    let named_by_data = values.contains_key("nama");
    for (name, value) in &template.values {
        if builtin && values.contains_key(name) {
            continue;
        }
        values.insert(name.clone(), value.clone());
    }
    // The salutation goes with the name (README "Salutation and language"), unless given —
    // and for a built-in key, the data's name keeps its own.
    let given = template.values.contains_key("salutation") && !(builtin && named_by_data);
    if !given {
        let stored = recipient.and_then(|r| r.salutation.as_deref());
        match values.get("nama").filter(|n| !n.is_empty()) {
            Some(name) => {
                let s = super::salutation(stored, name);
                values.insert("salutation".to_owned(), s);
            }
            None => {
                values.remove("salutation");
            }
        }
    }
    let body = current.bodies.for_language(language);
    // An empty salutation is a value (none is wanted); any other empty one fills nothing.
    let missing: Vec<FieldError> = super::used(body)
        .into_iter()
        .filter(|p| match values.get(p) {
            None => true,
            Some(v) => v.is_empty() && p != "salutation",
        })
        .map(|p| {
            FieldError::new(
                field(&format!("values.{p}")),
                format!(
                    "{} uses {{{p}}} and nothing fills it for this recipient: give it in `values`",
                    current.key
                ),
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    let text = super::render(body, &values).trim().to_owned();
    let refused = |why: String| {
        Err(vec![FieldError::new(
            FIELD,
            format!("{} version {} {why}", current.key, current.version),
        )])
    };
    if text.is_empty() {
        return refused("renders to an empty text".into());
    }
    if let Err(too_long) = super::check_text(&text) {
        return refused(too_long.to_string());
    }
    Ok(Rendered {
        text,
        origin: Origin {
            key: current.key.clone(),
            version: current.version,
            language,
            values: ValuesJson::from_values(&values),
        },
    })
}

/// Renders template sends at enqueue, each `(to, template)` with `to` normalized: one query
/// for the templates and one or two for whom the numbers belong to (`prefer`'s records
/// first). Answers per send, in order.
pub async fn render(
    pool: &PgPool,
    cx: &Context,
    prefer: Prefer,
    sends: &[(&str, &Request)],
) -> sqlx::Result<Vec<Result<Rendered, Vec<FieldError>>>> {
    if sends.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys: Vec<&str> = sends.iter().map(|(_, t)| t.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let templates = super::repo::current_many(pool, &keys).await?;
    let mut phones: Vec<&str> = sends
        .iter()
        .filter(|(_, t)| templates.contains_key(&t.key))
        .map(|(to, _)| *to)
        .collect();
    phones.sort_unstable();
    phones.dedup();
    let recipients = recipient::find(pool, &phones, prefer).await?;
    Ok(sends
        .iter()
        .map(|(to, t)| render_one(templates.get(&t.key), recipients.get(*to), t, cx))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::{Bodies, recipient::Vehicle};

    fn cx() -> Context {
        Context {
            workshop: Workshop {
                service_phone: "0855".into(),
                name: "Bengkel Jaya".into(),
            },
            today: NaiveDate::from_ymd_opt(2026, 11, 29).unwrap(),
            interval_months: 4,
        }
    }

    fn current(key: &str, id: &str, en: Option<&str>) -> Current {
        Current {
            key: key.into(),
            version: 2,
            bodies: Bodies {
                id: id.into(),
                en: en.map(Into::into),
            },
        }
    }

    fn request(v: Value) -> Request {
        parse(&v).unwrap()
    }

    fn siti() -> Recipient {
        Recipient {
            name: Some("Siti".into()),
            salutation: Some("Ibu".into()),
            language: Language::En,
            vehicle: Some(Vehicle {
                no_pol: Some("B 1 A".into()),
                model: None,
                next: NaiveDate::from_ymd_opt(2026, 12, 1),
                last: None,
            }),
        }
    }

    fn fields(r: Result<impl std::fmt::Debug, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn the_shape_is_checked_field_by_field() {
        assert_eq!(fields(parse(&serde_json::json!("promo"))), ["template"]);
        assert_eq!(
            fields(parse(&serde_json::json!({
                "values": {"nama": ["x"], "kode": "1", "hari": true}, "language": "fr"
            }))),
            [
                "template.key",
                "template.language",
                "template.values.hari",
                "template.values.kode",
                "template.values.nama"
            ]
        );
        assert_eq!(
            fields(parse(&serde_json::json!({"key": 5, "values": []}))),
            ["template.key", "template.values"]
        );
        let r = request(serde_json::json!({"key": "promo", "values": {"hari": 3, "nama": null}}));
        assert_eq!(r.values, Values::from([("hari".into(), "3".into())]));
        assert_eq!(
            r.fingerprint(),
            serde_json::json!({"key": "promo", "language": null, "values": {"hari": "3"}})
        );
    }

    #[test]
    fn custom_values_win_and_the_salutation_follows_the_name() {
        let t = current(
            "promo",
            "Halo {salutation} {nama} ({no_pol}) - {workshop_name}",
            None,
        );
        let r = render_one(
            Some(&t),
            Some(&siti()),
            &request(serde_json::json!({"key": "promo", "values": {"nama": "Bu Ani"}})),
            &cx(),
        )
        .unwrap();
        assert_eq!(r.text, "Halo Bu Ani (B 1 A) - Bengkel Jaya");
        // No `en` body: the `id` one, with its dates in Indonesian, and that is recorded.
        assert_eq!(r.origin.language, Language::Id);
        let values: Value = serde_json::from_str(r.origin.values.as_str()).unwrap();
        assert_eq!(values["tanggal"], "1 Desember 2026");
        assert_eq!(values["salutation"], "");
        assert_eq!(values["hari"], "2");
        assert_eq!(values["service_phone"], "0855");
    }

    #[test]
    fn a_builtin_key_keeps_the_recipients_data() {
        let t = current(
            MANUAL,
            "Halo {salutation} {nama}, {no_pol} {tanggal}",
            Some("Hi {salutation} {nama}, {tanggal}"),
        );
        let r = render_one(
            Some(&t),
            Some(&siti()),
            &request(
                serde_json::json!({"key": MANUAL, "values": {"nama": "X", "salutation": "Kak"}}),
            ),
            &cx(),
        )
        .unwrap();
        assert_eq!(r.text, "Hi Ibu Siti, 1 December 2026");
        assert_eq!(r.origin.language, Language::En);
        let nobody = render_one(
            Some(&t),
            None,
            &request(serde_json::json!({"key": MANUAL, "values": {"nama": "Joko", "no_pol": "D 2", "tanggal": "besok"}})),
            &cx(),
        )
        .unwrap();
        assert_eq!(nobody.text, "Halo Bapak Joko, D 2 besok");
    }

    #[test]
    fn what_nothing_fills_is_named_and_an_unknown_key_too() {
        let t = current(
            "promo",
            "Halo {salutation} {nama}, {no_pol} {workshop_name}",
            None,
        );
        let req = request(serde_json::json!({"key": "promo", "values": {"no_pol": ""}}));
        assert_eq!(
            fields(render_one(Some(&t), None, &req, &cx())),
            [
                "template.values.salutation",
                "template.values.nama",
                "template.values.no_pol"
            ]
        );
        assert_eq!(
            fields(render_one(None, None, &req, &cx())),
            ["template.key"]
        );
        let long = current("promo", &"{nama}".repeat(600), None);
        let req = request(serde_json::json!({"key": "promo", "values": {"nama": "Budi Santoso"}}));
        let e = render_one(Some(&long), None, &req, &cx()).unwrap_err();
        assert_eq!(e[0].field, "template");
        assert!(e[0].message.contains("7200 characters"), "{}", e[0].message);
    }
}
