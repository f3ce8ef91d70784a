//! Manual WhatsApp customers (SPEC §7): records kept outside the customer table, reminded
//! through the same queue as everything else. [`routes`] is the HTTP surface (seed field names
//! inside the envelope), [`repo`] its SQL, [`remind`] queues reminders idempotently per record
//! and date.

pub mod remind;
pub mod repo;
pub mod routes;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    error::FieldError,
    http::extract::{DATE_MESSAGE, Fields, parse_date},
    messages::phone::PhoneNumber,
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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "id, customer_name, nopol, no_hp, last_service, next_service, is_active, \
     reminder_sent_count, last_reminder_sent, notes, created_at, updated_at";

const MONTHS: [&str; 12] = [
    "Januari",
    "Februari",
    "Maret",
    "April",
    "Mei",
    "Juni",
    "Juli",
    "Agustus",
    "September",
    "Oktober",
    "November",
    "Desember",
];

/// `15 Januari 2026`.
pub fn tanggal(date: NaiveDate) -> String {
    format!(
        "{} {} {}",
        date.day(),
        MONTHS[date.month0() as usize],
        date.year()
    )
}

/// The default manual reminder text (SPEC §7).
pub fn reminder_text(
    customer_name: &str,
    nopol: &str,
    next: NaiveDate,
    service_phone: &str,
) -> String {
    format!(
        "Halo Bapak {customer_name},\n\n\
         Kami mengingatkan bahwa kendaraan dengan nomor polisi {nopol} Anda akan jatuh tempo untuk service maintenance pada:\n\n\
         📅 {}\n\n\
         Mohon segera menghubungi kami untuk melakukan penjadwalan service:\n\
         📞 {service_phone}\n\n\
         Terima kasih atas kepercayaan Anda.",
        tanggal(next)
    )
}

pub const MAX_NAME: usize = 255;
pub const MAX_NOPOL: usize = 20;
pub const MAX_NOTES: usize = 500;
pub const MAX_CUSTOM_MESSAGE: usize = 2000;

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
    if f.errors.is_empty() {
        Ok(Input {
            customer_name,
            nopol,
            no_hp,
            last_service,
            next_service,
            is_active,
            notes,
        })
    } else {
        Err(f.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_indonesian_month_names() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 15).unwrap();
        assert_eq!(tanggal(d), "15 Januari 2026");
        assert_eq!(
            tanggal(NaiveDate::from_ymd_opt(2026, 8, 3).unwrap()),
            "3 Agustus 2026"
        );
        assert_eq!(
            reminder_text("Joko", "B 1234 XYZ", d, "08551000727"),
            "Halo Bapak Joko,\n\nKami mengingatkan bahwa kendaraan dengan nomor polisi B 1234 XYZ Anda akan jatuh tempo untuk service maintenance pada:\n\n📅 15 Januari 2026\n\nMohon segera menghubungi kami untuk melakukan penjadwalan service:\n📞 08551000727\n\nTerima kasih atas kepercayaan Anda."
        );
    }

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
        let patch = serde_json::json!({"notes": null});
        let p = input(patch.as_object().unwrap(), false).unwrap();
        assert_eq!((p.customer_name, p.notes), (None, Some(None)));
    }
}
