//! Validation of customer and vehicle bodies. Fields may be missing (the data is the workshop's,
//! often incomplete); what is given must have the right type and shape.

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::{
    error::FieldError,
    http::extract::{DATE_MESSAGE, Fields, parse_date},
    templates::Language,
};

const MAX_TEXT: usize = 500;
/// The longest `salutation` (customers and manual records).
pub const MAX_SALUTATION: usize = 30;

/// A customer as `POST /customers` and `POST /customers/bulk-import` take it, for the OpenAPI
/// document; [`customer`] is what checks it. Every field may be missing or `null` (the
/// workshop's data is often incomplete); text is trimmed and blank text is `null`.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"nama": "Budi Santoso", "hp": "0812 3456 789", "salutation": "Bapak", "language": "id", "vehicles": [{"no_pol": "B 1234 XYZ", "model": "Avanza", "next_visit_date": "2026-12-01"}, {"no_pol": "B 5678 ABC", "last_visit_date": "2026-08-01"}]}))]
#[allow(dead_code)]
pub struct NewCustomer {
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    nama: Option<String>,
    /// The phone number as written (up to 500 characters); a reminder checks it when it is due
    /// and skips an invalid one with its reason.
    #[schema(max_length = 500)]
    hp: Option<String>,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    alamat: Option<String>,
    /// An address with an `@` that is neither first nor last; up to 500 characters.
    #[schema(
        max_length = 500,
        pattern = r"^\s*(?:[^@\s][\s\S]*@[\s\S]*[^@\s])?\s*$"
    )]
    email: Option<String>,
    /// How the customer is addressed in reminders (`Bapak`, `Ibu`, `Kak`, …): trimmed, up to 30
    /// characters. `""` stores "no salutation"; absent or `null`: not given — reminders say
    /// `Bapak`, unless `nama` already starts with a salutation.
    #[schema(max_length = 30)]
    salutation: Option<String>,
    /// `id` (Indonesian, the default) or `en`: the language of their reminders. `null` is the
    /// default.
    language: Option<Language>,
    vehicles: Option<Vec<VehicleFields>>,
}

/// `PUT /customers/{id}`: the fields given are changed, `null` clears one (`language`: back to
/// `id`), absent ones are kept. Vehicles are changed through their own endpoints (`vehicles`
/// here → `422`).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"hp": "0813 1111 2222", "alamat": null, "salutation": "Ibu", "language": "en"}))]
#[allow(dead_code)]
pub struct CustomerChanges {
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    nama: Option<String>,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    hp: Option<String>,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    alamat: Option<String>,
    /// An address with an `@` that is neither first nor last; up to 500 characters.
    #[schema(
        max_length = 500,
        pattern = r"^\s*(?:[^@\s][\s\S]*@[\s\S]*[^@\s])?\s*$"
    )]
    email: Option<String>,
    /// Trimmed, up to 30 characters; `""`: no salutation; `null`: not given (`Bapak` unless
    /// `nama` starts with a salutation).
    #[schema(max_length = 30)]
    salutation: Option<String>,
    /// `id` or `en`; `null` sets the default `id`.
    language: Option<Language>,
}

/// A vehicle to add (`POST /customers/{id}/vehicles`, `vehicles` of a new customer) or the
/// changes to one (`PUT /vehicles/{id}`: absent fields are kept, `null` clears one).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"no_pol": "B 1234 XYZ", "model": "Avanza", "last_visit_date": "2026-08-01"}))]
#[allow(dead_code)]
pub struct VehicleFields {
    /// The number plate; up to 500 characters.
    #[schema(max_length = 500)]
    no_pol: Option<String>,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    model: Option<String>,
    /// The next service date, `YYYY-MM-DD`: reminders go out in the days before it.
    #[schema(format = Date)]
    next_visit_date: Option<String>,
    /// The last service date, `YYYY-MM-DD`. Without a `next_visit_date` the vehicle is due
    /// `SERVICE_INTERVAL_MONTHS` (default 4) after it; an explicit `next_visit_date` wins.
    #[schema(format = Date)]
    last_visit_date: Option<String>,
}

/// `POST /customers/bulk-import`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CustomerImport {
    /// Up to 10,000 customers; each invalid one is reported with its index, the others are
    /// imported.
    #[schema(max_items = 10000)]
    customers: Vec<NewCustomer>,
}

/// A field of an update: absent (keep), null (clear) or a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch<T> {
    Keep,
    Set(Option<T>),
}

impl<T> Patch<T> {
    pub fn into_option(self) -> Option<T> {
        match self {
            Patch::Keep | Patch::Set(None) => None,
            Patch::Set(v) => v,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CustomerInput {
    pub nama: Patch<String>,
    pub hp: Patch<String>,
    pub alamat: Patch<String>,
    pub email: Patch<String>,
    /// `Set(Some(""))`: explicitly none; `Set(None)`: not given.
    pub salutation: Patch<String>,
    /// `None`: keep (update) or the default (create).
    pub language: Option<Language>,
    pub vehicles: Vec<VehicleInput>,
}

#[derive(Debug, Clone)]
pub struct VehicleInput {
    pub no_pol: Patch<String>,
    pub model: Patch<String>,
    pub next_visit_date: Patch<NaiveDate>,
    pub last_visit_date: Patch<NaiveDate>,
}

fn text(f: &mut Fields<'_>, map: &Map<String, Value>, field: &str, prefix: &str) -> Patch<String> {
    if !map.contains_key(field) {
        return Patch::Keep;
    }
    let name = format!("{prefix}{field}");
    match map.get(field) {
        Some(Value::Null) => Patch::Set(None),
        Some(Value::String(s)) if s.chars().count() > MAX_TEXT => {
            f.errors.push(FieldError::new(
                name,
                format!("must be at most {MAX_TEXT} characters"),
            ));
            Patch::Keep
        }
        Some(Value::String(s)) => {
            let t = s.trim();
            Patch::Set((!t.is_empty()).then(|| t.to_owned()))
        }
        _ => {
            f.errors
                .push(FieldError::new(name, "must be a string or null"));
            Patch::Keep
        }
    }
}

fn date(
    f: &mut Fields<'_>,
    map: &Map<String, Value>,
    field: &str,
    prefix: &str,
) -> Patch<NaiveDate> {
    match text(f, map, field, prefix) {
        Patch::Keep => Patch::Keep,
        Patch::Set(None) => Patch::Set(None),
        Patch::Set(Some(raw)) => match parse_date(&raw) {
            Some(d) => Patch::Set(Some(d)),
            None => {
                f.errors
                    .push(FieldError::new(format!("{prefix}{field}"), DATE_MESSAGE));
                Patch::Keep
            }
        },
    }
}

/// `salutation` of a customer or a manual record: `None` absent, `Some(None)` null (not
/// given), else the trimmed text — `""` is kept: it means "no salutation".
pub fn salutation(f: &mut Fields<'_>, map: &Map<String, Value>) -> Option<Option<String>> {
    match map.get("salutation")? {
        Value::Null => Some(None),
        Value::String(s) => {
            let t = s.trim();
            if t.chars().count() > MAX_SALUTATION {
                f.errors.push(FieldError::new(
                    "salutation",
                    format!("must be at most {MAX_SALUTATION} characters"),
                ));
                return None;
            }
            Some(Some(t.to_owned()))
        }
        _ => {
            f.errors
                .push(FieldError::new("salutation", "must be a string or null"));
            None
        }
    }
}

/// `language` of a customer or a manual record: `None` absent, `null` the default (`id`).
pub fn language(f: &mut Fields<'_>, map: &Map<String, Value>) -> Option<Language> {
    let parsed = match map.get("language")? {
        Value::Null => Some(Language::default()),
        Value::String(s) => Language::parse(s),
        _ => None,
    };
    if parsed.is_none() {
        f.errors
            .push(FieldError::new("language", Language::MESSAGE));
    }
    parsed
}

fn vehicle_fields(f: &mut Fields<'_>, map: &Map<String, Value>, prefix: &str) -> VehicleInput {
    VehicleInput {
        no_pol: text(f, map, "no_pol", prefix),
        model: text(f, map, "model", prefix),
        next_visit_date: date(f, map, "next_visit_date", prefix),
        last_visit_date: date(f, map, "last_visit_date", prefix),
    }
}

pub fn vehicle(map: &Map<String, Value>) -> Result<VehicleInput, Vec<FieldError>> {
    let mut f = Fields::new(map);
    let v = vehicle_fields(&mut f, map, "");
    if f.errors.is_empty() {
        Ok(v)
    } else {
        Err(f.errors)
    }
}

/// A customer, with `vehicles` only where `with_vehicles` (create and import).
pub fn customer(
    map: &Map<String, Value>,
    with_vehicles: bool,
) -> Result<CustomerInput, Vec<FieldError>> {
    let mut f = Fields::new(map);
    let nama = text(&mut f, map, "nama", "");
    let hp = text(&mut f, map, "hp", "");
    let alamat = text(&mut f, map, "alamat", "");
    let email = text(&mut f, map, "email", "");
    if let Patch::Set(Some(e)) = &email
        && !(e.contains('@') && !e.starts_with('@') && !e.ends_with('@'))
    {
        f.errors
            .push(FieldError::new("email", "must be an email address"));
    }
    let salutation = match salutation(&mut f, map) {
        None => Patch::Keep,
        Some(s) => Patch::Set(s),
    };
    let language = language(&mut f, map);
    let mut vehicles = Vec::new();
    match map.get("vehicles") {
        None | Some(Value::Null) => {}
        Some(_) if !with_vehicles => f.errors.push(FieldError::new(
            "vehicles",
            "vehicles are changed through /customers/{id}/vehicles and /vehicles/{id}",
        )),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(v) => {
                        vehicles.push(vehicle_fields(&mut f, v, &format!("vehicles[{i}].")))
                    }
                    _ => f.errors.push(FieldError::new(
                        format!("vehicles[{i}]"),
                        "must be an object",
                    )),
                }
            }
        }
        Some(_) => f
            .errors
            .push(FieldError::new("vehicles", "must be an array")),
    }
    if f.errors.is_empty() {
        Ok(CustomerInput {
            nama,
            hp,
            alamat,
            email,
            salutation,
            language,
            vehicles,
        })
    } else {
        Err(f.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_may_be_missing_but_not_malformed() {
        let ok = serde_json::json!({"nama": "Budi", "vehicles": [{"no_pol": "B 1 X", "next_visit_date": "2026-12-01"}]});
        let c = customer(ok.as_object().unwrap(), true).unwrap();
        assert_eq!(c.nama, Patch::Set(Some("Budi".into())));
        assert_eq!(c.hp, Patch::Keep);
        assert_eq!(
            c.vehicles[0].next_visit_date,
            Patch::Set(NaiveDate::from_ymd_opt(2026, 12, 1))
        );

        assert_eq!((c.salutation, c.language), (Patch::Keep, None));

        let bad = serde_json::json!({"nama": 5, "email": "nope", "vehicles": [{"next_visit_date": "01-12-2026"}, 3]});
        let errors = customer(bad.as_object().unwrap(), true).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "nama",
                "email",
                "vehicles[0].next_visit_date",
                "vehicles[1]"
            ]
        );
    }

    #[test]
    fn salutation_keeps_empty_text_and_language_is_id_or_en() {
        let given = serde_json::json!({"salutation": "  Ibu ", "language": "en", "vehicles": [{"last_visit_date": "2026-08-01"}]});
        let c = customer(given.as_object().unwrap(), true).unwrap();
        assert_eq!(c.salutation, Patch::Set(Some("Ibu".into())));
        assert_eq!(c.language, Some(Language::En));
        assert_eq!(
            c.vehicles[0].last_visit_date,
            Patch::Set(NaiveDate::from_ymd_opt(2026, 8, 1))
        );
        let none = serde_json::json!({"salutation": " ", "language": null});
        let c = customer(none.as_object().unwrap(), false).unwrap();
        assert_eq!(c.salutation, Patch::Set(Some(String::new())));
        assert_eq!(c.language, Some(Language::Id));
        let cleared = serde_json::json!({"salutation": null});
        let c = customer(cleared.as_object().unwrap(), false).unwrap();
        assert_eq!(c.salutation, Patch::Set(None));

        let bad = serde_json::json!({"salutation": "x".repeat(31), "language": "fr", "vehicles": [{"last_visit_date": "2026-13-01"}]});
        let errors = customer(bad.as_object().unwrap(), true).unwrap_err();
        let got: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("salutation", "must be at most 30 characters"),
                ("language", "must be id or en"),
                ("vehicles[0].last_visit_date", DATE_MESSAGE)
            ]
        );
        let typed = serde_json::json!({"salutation": 1, "language": 1});
        assert_eq!(
            customer(typed.as_object().unwrap(), false)
                .unwrap_err()
                .len(),
            2
        );
    }
}
