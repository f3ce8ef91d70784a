//! Message templates (README "Templates"): texts kept in the database with versions, one body
//! per language, `{placeholder}` syntax; the salutation rule and dates per language.
//!
//! [`render`] fills a body, [`salutation`] decides how a person is addressed, [`check_text`]
//! how long a rendered text may be, [`Origin`] is what a message rendered from a template
//! records, [`send`] renders a send given as a template at enqueue (with [`recipient`]: whom
//! the number belongs to), [`repo`] keeps the versions, [`routes`] is the HTTP surface.

pub mod cloud_api;
mod length;
mod origin;
pub mod recipient;
pub mod repo;
pub mod routes;
pub mod send;

pub use length::{MAX_TEXT_CHARS, TEXT_TOO_LONG, TooLong, check_text};
pub use origin::{Origin, Recorded, ValuesJson};

use std::{borrow::Cow, collections::HashMap};

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// The built-in templates.
pub const MAINTENANCE: &str = "maintenance_reminder";
pub const MANUAL: &str = "manual_reminder";

/// Every placeholder a template may use.
pub const PLACEHOLDERS: [&str; 9] = [
    "salutation",
    "nama",
    "no_pol",
    "model",
    "tanggal",
    "tanggal_dmy",
    "hari",
    "service_phone",
    "workshop_name",
];

/// The placeholders of the reply to a keyword opt-out (`inbound::OPTOUT_CONFIRMATION`): it goes
/// to a number, not to a customer record; `optin_keyword` is the first of `OPTIN_KEYWORDS`, the
/// word that undoes the opt-out.
pub const CONFIRMATION_PLACEHOLDERS: [&str; 3] =
    ["workshop_name", "service_phone", "optin_keyword"];

/// The placeholders a template may use: a manual record has no vehicle model; the opt-out
/// confirmation knows no customer.
pub fn placeholders_for(key: &str) -> Vec<&'static str> {
    if key == crate::inbound::OPTOUT_CONFIRMATION {
        return CONFIRMATION_PLACEHOLDERS.to_vec();
    }
    if let Some(placeholders) = crate::admin::placeholders_for(key) {
        return placeholders;
    }
    PLACEHOLDERS
        .into_iter()
        .filter(|p| key != MANUAL || *p != "model")
        .collect()
}

/// The language of a customer, a record and a template body.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Language {
    /// Indonesian (the default).
    #[default]
    Id,
    /// English.
    En,
}

impl Language {
    pub const MESSAGE: &str = "must be id or en";

    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim() {
            "id" => Some(Self::Id),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::En => "en",
        }
    }

    /// A stored value (the column's CHECK allows only `id` and `en`).
    pub fn from_db(raw: &str) -> Self {
        Self::parse(raw).unwrap_or_default()
    }
}

const MONTHS_ID: [&str; 12] = [
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
const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `15 Januari 2026` / `15 January 2026`.
pub fn tanggal(date: NaiveDate, language: Language) -> String {
    let months = match language {
        Language::Id => &MONTHS_ID,
        Language::En => &MONTHS_EN,
    };
    format!(
        "{} {} {}",
        date.day(),
        months[date.month0() as usize],
        date.year()
    )
}

/// `01-12-2026`.
pub fn tanggal_dmy(date: NaiveDate) -> String {
    date.format("%d-%m-%Y").to_string()
}

/// Words that already address someone when a name starts with them.
const SALUTATIONS: [&str; 7] = ["bapak", "bpk", "pak", "ibu", "bu", "sdr", "kak"];

/// True when the name's first word is a salutation (whole word, any case, a trailing `.`
/// allowed: "Bpk. Joko"). "Budi" does not start with "Bu".
pub fn starts_with_salutation(name: &str) -> bool {
    name.split_whitespace().next().is_some_and(|first| {
        let word = first.trim_end_matches('.').to_lowercase();
        SALUTATIONS.contains(&word.as_str())
    })
}

/// How a person is addressed: the stored salutation (`Some("")`: none), or `Bapak` when none is
/// stored — and nothing when the name already starts with a salutation, so that "Bapak Joko"
/// never becomes "Bapak Bapak Joko".
pub fn salutation(stored: Option<&str>, name: &str) -> String {
    if starts_with_salutation(name) {
        return String::new();
    }
    match stored {
        Some(s) => s.trim().to_owned(),
        None => "Bapak".to_owned(),
    }
}

/// A body split into text and placeholders. `{{` and `}}` are literal braces (a text part of
/// their own). Nothing is copied: a pass renders tens of thousands of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn parse(body: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::with_capacity(16);
    let mut rest = body;
    while let Some(i) = rest.find(['{', '}']) {
        if i > 0 {
            parts.push(Part::Text(&rest[..i]));
        }
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            parts.push(Part::Text(&tail[..1]));
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err("has a `}` without its `{` (write `}}` for a brace)".into());
        }
        let Some(end) = tail.find('}') else {
            return Err("has a `{` that is never closed (write `{{` for a brace)".into());
        };
        let name = &tail[1..end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "has `{{{name}}}`, not a placeholder (lowercase letters, digits, `_`)"
            ));
        }
        parts.push(Part::Placeholder(name));
        rest = &tail[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    Ok(parts)
}

/// Why a body cannot be saved for `key`: empty, malformed, or with placeholders the template
/// does not know (each named).
pub fn check(key: &str, body: &str) -> Result<(), String> {
    if body.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let parts = parse(body)?;
    let allowed = placeholders_for(key);
    let mut unknown: Vec<&str> = Vec::new();
    for p in parts {
        if let Part::Placeholder(name) = p
            && !allowed.contains(&name)
            && !unknown.contains(&name)
        {
            unknown.push(name);
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unknown placeholder(s) {}; allowed: {}",
            unknown
                .iter()
                .map(|u| format!("{{{u}}}"))
                .collect::<Vec<_>>()
                .join(", "),
            allowed.join(", ")
        ))
    }
}

/// The placeholders a body uses, in order of first use.
pub fn used(body: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in parse(body).unwrap_or_default() {
        if let Part::Placeholder(name) = p
            && !out.iter().any(|o| o == name)
        {
            out.push(name.to_owned());
        }
    }
    out
}

/// Values of the placeholders.
pub type Values = HashMap<String, String>;

/// Fills `body` from `values`. See [`render_with`].
pub fn render(body: &str, values: &Values) -> String {
    render_with(body, |name| {
        values.get(name).map(|v| Cow::Borrowed(v.as_str()))
    })
}

/// Fills `body`, asking `value` for each placeholder. A placeholder with no value or an empty
/// one renders as nothing, and takes one space next to it along, so that an empty salutation
/// leaves no double space ("Halo Siti,"). A body that does not parse (saved bodies always do)
/// is returned as it is.
pub fn render_with<'v>(body: &str, value: impl Fn(&str) -> Option<Cow<'v, str>>) -> String {
    let Ok(parts) = parse(body) else {
        return body.to_owned();
    };
    let mut out = String::with_capacity(body.len() + 64);
    // An empty placeholder just rendered: the space next to it goes too.
    let mut after_empty = false;
    for part in parts {
        match part {
            Part::Text(mut t) => {
                if after_empty {
                    let bare = out.is_empty() || out.ends_with([' ', '\n']);
                    match t.strip_prefix(' ') {
                        Some(rest) if bare => t = rest,
                        Some(_) => {}
                        None if out.ends_with(' ') => {
                            out.pop();
                        }
                        None => {}
                    }
                }
                after_empty = false;
                out.push_str(t);
            }
            Part::Placeholder(name) => match value(name).filter(|v| !v.is_empty()) {
                Some(v) => {
                    out.push_str(&v);
                    after_empty = false;
                }
                None => after_empty = true,
            },
        }
    }
    if after_empty && out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Who a reminder is for, and about what.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub name: &'a str,
    pub salutation: Option<&'a str>,
    pub language: Language,
    pub no_pol: &'a str,
    pub model: Option<&'a str>,
    pub due: NaiveDate,
    /// The business date the reminder is for (`hari` = days from it to `due`).
    pub today: NaiveDate,
}

/// The workshop's own values (`SERVICE_PHONE`, `WORKSHOP_NAME`).
#[derive(Debug, Clone)]
pub struct Workshop {
    pub service_phone: String,
    pub name: String,
}

impl<'a> Subject<'a> {
    /// One placeholder's value for this reminder (computed only when the body uses it).
    pub fn value(&self, name: &str, workshop: &'a Workshop) -> Option<Cow<'a, str>> {
        Some(match name {
            "salutation" => Cow::Owned(salutation(self.salutation, self.name)),
            "nama" => Cow::Borrowed(self.name),
            "no_pol" => Cow::Borrowed(self.no_pol),
            "model" => Cow::Borrowed(self.model.unwrap_or_default()),
            "tanggal" => Cow::Owned(tanggal(self.due, self.language)),
            "tanggal_dmy" => Cow::Owned(tanggal_dmy(self.due)),
            "hari" => Cow::Owned((self.due - self.today).num_days().to_string()),
            "service_phone" => Cow::Borrowed(workshop.service_phone.as_str()),
            "workshop_name" => Cow::Borrowed(workshop.name.as_str()),
            _ => return None,
        })
    }
}

/// Every placeholder's value for a reminder.
pub fn values(s: &Subject<'_>, workshop: &Workshop) -> Values {
    PLACEHOLDERS
        .into_iter()
        .filter_map(|p| Some((p.to_owned(), s.value(p, workshop)?.into_owned())))
        .collect()
}

/// One version of a template: its bodies per language.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Bodies {
    /// Indonesian: always present.
    pub id: String,
    /// English: optional; an `en` recipient gets `id` when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

impl Bodies {
    pub fn for_language(&self, language: Language) -> &str {
        match language {
            Language::En => self.en.as_deref().unwrap_or(&self.id),
            Language::Id => &self.id,
        }
    }
}

/// The version of a template a pass renders with.
#[derive(Debug, Clone)]
pub struct Current {
    pub key: String,
    pub version: i32,
    pub bodies: Bodies,
}

impl Current {
    /// The reminder about `subject`, in its language.
    pub fn render(&self, subject: &Subject<'_>, workshop: &Workshop) -> String {
        render_with(self.bodies.for_language(subject.language), |name| {
            subject.value(name, workshop)
        })
    }
}

#[cfg(test)]
mod tests;
