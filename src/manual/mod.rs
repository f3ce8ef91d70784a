//! Manual WhatsApp customers (README "Manual WhatsApp customers"): records kept outside the customer table, reminded
//! through the same queue as everything else. [`routes`] is the HTTP surface (seed field names
//! inside the envelope), [`repo`] its SQL, [`remind`] queues reminders idempotently per record
//! and date.

pub mod remind;
pub mod repo;
pub mod routes;
pub mod sends;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    customers::request::{language, salutation},
    error::FieldError,
    http::extract::{DATE_MESSAGE, Fields, parse_date},
    messages::phone::PhoneNumber,
    templates::Language,
};

/// A `manual_whatsapp` row, as the seed names its fields.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Record {
    pub id: Uuid,
    pub customer_name: String,
    pub nopol: String,
    /// Normalized (`62…`).
    pub no_hp: String,
    pub last_service: Option<NaiveDate>,
    pub next_service: Option<NaiveDate>,
    /// 1 active, 0 inactive.
    pub is_active: i32,
    pub reminder_sent_count: i32,
    pub last_reminder_sent: Option<DateTime<Utc>>,
    pub notes: Option<String>,
    /// How the customer is addressed (`Bapak`, `Ibu`, `Kak`, …; empty: no salutation; absent:
    /// `Bapak` unless the name starts with one). README "Templates".
    pub salutation: Option<String>,
    /// `id` (default) or `en`: the language of their reminders.
    pub language: Language,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "id, customer_name, nopol, no_hp, last_service, next_service, is_active, \
     reminder_sent_count, last_reminder_sent, notes, salutation, language, created_at, updated_at";

pub const MAX_NAME: usize = 255;
pub const MAX_NOPOL: usize = 20;
pub const MAX_NOTES: usize = 500;
pub const MAX_CUSTOM_MESSAGE: usize = 2000;

/// A new record as `POST /manual-whatsapp/` and the bulk import take it, for the OpenAPI
/// document; [`input`] is what checks it. Text is trimmed.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"customer_name": "Joko", "nopol": "B 1234 XYZ", "no_hp": "08123456789", "last_service": "2025-10-15", "next_service": "2026-01-15", "notes": "Customer VIP", "salutation": "Bapak", "language": "id"}))]
#[allow(dead_code)]
pub struct NewRecord {
    /// 1 to 255 characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    customer_name: String,
    /// The number plate, unique (case-insensitive): 1 to 20 characters.
    #[schema(min_length = 1, max_length = 20, pattern = r"\S")]
    nopol: String,
    /// The phone number (see `to` of `POST /whatsapp/send`); stored normalized (`62…`).
    #[schema(
        pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$",
        example = "08123456789"
    )]
    no_hp: String,
    #[schema(format = Date)]
    last_service: Option<String>,
    /// The due date reminders are about.
    #[schema(format = Date)]
    next_service: Option<String>,
    /// 1 active (default), 0 inactive.
    #[schema(minimum = 0, maximum = 1, nullable = false)]
    is_active: Option<i32>,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    notes: Option<String>,
    /// How the customer is addressed in reminders (`Bapak`, `Ibu`, `Kak`, …): trimmed, up to 30
    /// characters. `""` stores "no salutation"; absent or `null`: not given — reminders say
    /// `Bapak`, unless `customer_name` already starts with a salutation.
    #[schema(max_length = 30)]
    salutation: Option<String>,
    /// `id` (Indonesian, the default) or `en`: the language of their reminders. `null` is the
    /// default.
    language: Option<Language>,
}

/// `PUT /manual-whatsapp/{record_id}`: the fields given are changed; `null` clears the dates,
/// `notes` and `salutation`, and sets `language` back to `id` (the others cannot be cleared).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"next_service": "2026-02-01", "is_active": 1, "salutation": "Ibu", "language": "en"}))]
#[allow(dead_code)]
pub struct RecordChanges {
    /// 1 to 255 characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"\S", nullable = false)]
    customer_name: Option<String>,
    /// 1 to 20 characters, unique (case-insensitive).
    #[schema(min_length = 1, max_length = 20, pattern = r"\S", nullable = false)]
    nopol: Option<String>,
    /// The phone number (see `to` of `POST /whatsapp/send`).
    #[schema(
        pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$",
        nullable = false
    )]
    no_hp: Option<String>,
    #[schema(format = Date)]
    last_service: Option<String>,
    #[schema(format = Date)]
    next_service: Option<String>,
    /// 1 active, 0 inactive.
    #[schema(minimum = 0, maximum = 1, nullable = false)]
    is_active: Option<i32>,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    notes: Option<String>,
    /// Trimmed, up to 30 characters; `""`: no salutation; `null`: not given (`Bapak` unless
    /// `customer_name` starts with a salutation).
    #[schema(max_length = 30)]
    salutation: Option<String>,
    /// `id` or `en`; `null` sets the default `id`.
    language: Option<Language>,
}

/// `POST /manual-whatsapp/bulk-import`: a JSON array of records, or `{"customers": [...]}`;
/// up to 10,000. Each invalid record (bad field, a `nopol` that exists or repeats) is reported
/// with its index, the others are imported.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum RecordImport {
    Records(Vec<NewRecord>),
    Wrapped(RecordImportObject),
}

/// `{"customers": [...]}` of [`RecordImport`].
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct RecordImportObject {
    #[schema(max_items = 10000)]
    customers: Vec<NewRecord>,
}

/// `POST /manual-whatsapp/send-reminders` (all optional; the body may be empty).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"days_threshold": 3, "only_active": true}))]
#[allow(dead_code)]
pub struct SendReminders {
    /// Records with `0 <= next_service - today < days_threshold` are reminded (default 3).
    #[schema(minimum = 1, maximum = 366)]
    days_threshold: Option<i64>,
    /// Only active records (default `true`).
    only_active: Option<bool>,
    /// Wait up to this many seconds (0 to 120) for the sends and report `sent` / `failed`;
    /// also accepted in the query string.
    #[schema(minimum = 0, maximum = 120)]
    wait_seconds: Option<i64>,
}

/// `POST /manual-whatsapp/send-custom-message`.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"no_hp": "08123456789", "message": "Halo, ada promo service gratis minggu ini!"}))]
#[allow(dead_code)]
pub struct CustomMessage {
    /// The recipient (see `to` of `POST /whatsapp/send`).
    #[schema(
        pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$",
        example = "08123456789"
    )]
    no_hp: String,
    /// 1 to 2000 characters once trimmed. Exactly one of `message` and `template`.
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    message: Option<String>,
    /// A saved template instead of `message`, rendered now (README "Templates": sending a
    /// template) with the fields of the manual record the number belongs to (`nama`, `no_pol`,
    /// the due date, its salutation and language) and `values` for the rest.
    template: Option<crate::templates::send::TemplateSend>,
}

/// A validated create (`fields all set`) or update (`None` = keep; for the optional fields
/// `Some(None)` = clear).
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub customer_name: Option<String>,
    pub nopol: Option<String>,
    pub no_hp: Option<PhoneNumber>,
    pub last_service: Option<Option<NaiveDate>>,
    pub next_service: Option<Option<NaiveDate>>,
    pub is_active: Option<i32>,
    pub notes: Option<Option<String>>,
    /// `Some(Some(""))`: explicitly none; `Some(None)`: not given.
    pub salutation: Option<Option<String>>,
    /// `None`: keep (update) or the default (create).
    pub language: Option<Language>,
}

fn text(f: &mut Fields<'_>, field: &str, max: usize, required: bool) -> Option<String> {
    let raw = if required {
        f.required_str(field)
    } else {
        f.optional_str(field)
    }?;
    let t = raw.trim();
    if t.is_empty() {
        f.errors.push(FieldError::new(field, "must not be empty"));
        return None;
    }
    if t.chars().count() > max {
        f.errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
        return None;
    }
    Some(t.to_owned())
}

fn date(f: &mut Fields<'_>, map: &Map<String, Value>, field: &str) -> Option<Option<NaiveDate>> {
    if !map.contains_key(field) {
        return None;
    }
    match f.optional_str(field) {
        None => Some(None),
        Some(raw) => match parse_date(raw.trim()) {
            Some(d) => Some(Some(d)),
            None => {
                f.errors.push(FieldError::new(field, DATE_MESSAGE));
                None
            }
        },
    }
}

/// Validates a create (`create = true`: name, nopol and phone required) or an update body.
pub fn input(map: &Map<String, Value>, create: bool) -> Result<Input, Vec<FieldError>> {
    let mut f = Fields::new(map);
    let present = |k: &str| create || map.contains_key(k);
    let customer_name = present("customer_name")
        .then(|| text(&mut f, "customer_name", MAX_NAME, true))
        .flatten();
    let nopol = present("nopol")
        .then(|| text(&mut f, "nopol", MAX_NOPOL, true))
        .flatten();
    let no_hp = present("no_hp")
        .then(|| f.required_str("no_hp"))
        .flatten()
        .and_then(|raw| match PhoneNumber::parse(raw) {
            Ok(p) => Some(p),
            Err(e) => {
                f.errors.push(FieldError::new("no_hp", e.to_string()));
                None
            }
        });
    let last_service = date(&mut f, map, "last_service");
    let next_service = date(&mut f, map, "next_service");
    let is_active = if create && !map.contains_key("is_active") {
        None
    } else {
        match f.optional_i64("is_active") {
            Some(v @ (0 | 1)) => Some(v as i32),
            Some(_) => {
                f.errors
                    .push(FieldError::new("is_active", "must be 1 or 0"));
                None
            }
            None if map.get("is_active").is_some_and(Value::is_null) => {
                f.errors
                    .push(FieldError::new("is_active", "must be 1 or 0"));
                None
            }
            None => None,
        }
    };
    let notes = if map.contains_key("notes") {
        match f.optional_str("notes").map(str::trim) {
            None => Some(None),
            Some(n) if n.chars().count() > MAX_NOTES => {
                f.errors.push(FieldError::new(
                    "notes",
                    format!("must be at most {MAX_NOTES} characters"),
                ));
                None
            }
            Some(n) => Some((!n.is_empty()).then(|| n.to_owned())),
        }
    } else {
        None
    };
    let salutation = salutation(&mut f, map);
    let language = language(&mut f, map);
    if f.errors.is_empty() {
        Ok(Input {
            customer_name,
            nopol,
            no_hp,
            last_service,
            next_service,
            is_active,
            notes,
            salutation,
            language,
        })
    } else {
        Err(f.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_requires_name_nopol_and_a_valid_phone() {
        let bad = serde_json::json!({"customer_name": " ", "no_hp": "12", "next_service": "15-01-2026", "is_active": 2});
        let errors = input(bad.as_object().unwrap(), true).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "customer_name",
                "nopol",
                "no_hp",
                "next_service",
                "is_active"
            ]
        );
        let ok = serde_json::json!({"customer_name": "Joko", "nopol": "B 1 X", "no_hp": "0812 3456 789"});
        let i = input(ok.as_object().unwrap(), true).unwrap();
        assert_eq!(i.no_hp.unwrap().as_str(), "628123456789");
        assert_eq!((i.salutation, i.language), (None, None));
        let patch = serde_json::json!({"notes": null});
        let p = input(patch.as_object().unwrap(), false).unwrap();
        assert_eq!((p.customer_name, p.notes), (None, Some(None)));
    }

    #[test]
    fn salutation_and_language_are_checked() {
        let ok = serde_json::json!({"salutation": " Kak ", "language": "en"});
        let p = input(ok.as_object().unwrap(), false).unwrap();
        assert_eq!(
            (p.salutation, p.language),
            (Some(Some("Kak".into())), Some(Language::En))
        );
        let empty = serde_json::json!({"salutation": "", "language": null});
        let p = input(empty.as_object().unwrap(), false).unwrap();
        assert_eq!(
            (p.salutation, p.language),
            (Some(Some(String::new())), Some(Language::Id))
        );
        let bad = serde_json::json!({"salutation": "Yang Terhormat Bapak Haji Joko Susilo", "language": "EN"});
        let errors = input(bad.as_object().unwrap(), false).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["salutation", "language"]);
        assert_eq!(errors[1].message, Language::MESSAGE);
    }
}
