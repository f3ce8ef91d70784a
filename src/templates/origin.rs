//! What a message rendered from a template records (README "Templates"): the key and version,
//! the language of the body used, and the value of every placeholder available when it was
//! rendered — not only those the body used. A gateway that sends templates rather than text (the
//! WhatsApp Cloud API fills a Meta template's parameters from our placeholders in a configured
//! order) needs the values, not the rendered text.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, ser::SerializeMap};

use super::{Bodies, Current, Language, Subject, Workshop, render_with, salutation, tanggal};

/// The template a message text came from, as `messages.template_key`, `template_version`,
/// `template_language` and `template_values` keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub key: String,
    pub version: i32,
    /// The language of the body that was rendered (`id` when an `en` one was asked for and the
    /// template has none).
    pub language: Language,
    pub values: ValuesJson,
}

/// Placeholder values as the text of a JSON object (`{"nama": "Budi", …}`), written once when
/// the message is made: a reminder pass makes a million of them, and the database stores the
/// text as `jsonb` without another copy in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValuesJson(String);

/// A JSON object written straight from `(name, value)` pairs, with no map in between.
struct Pairs<'p, 'v>(&'p [(&'v str, Cow<'v, str>)]);

impl Serialize for Pairs<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value.as_ref())?;
        }
        map.end()
    }
}

impl ValuesJson {
    /// The object of `pairs` (names are unique: each placeholder once).
    pub fn from_pairs(pairs: &[(&str, Cow<'_, str>)]) -> Self {
        // Strings only: serializing cannot fail.
        Self(serde_json::to_string(&Pairs(pairs)).unwrap_or_else(|_| "{}".to_owned()))
    }

    /// The object of `values`, names in order.
    pub fn from_values(values: &super::Values) -> Self {
        let mut pairs: Vec<(&str, Cow<'_, str>)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Self::from_pairs(&pairs)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Bodies {
    /// The language of the body a recipient of `language` gets: `id` when `en` is asked for and
    /// there is none.
    pub fn language_of(&self, language: Language) -> Language {
        match language {
            Language::En if self.en.is_some() => Language::En,
            _ => Language::Id,
        }
    }
}

impl<'a> Subject<'a> {
    /// Every placeholder's value for this reminder, each computed once: what it renders from
    /// and what its message records. `model` only when the vehicle has one.
    pub fn all_values(&self, workshop: &'a Workshop) -> Vec<(&'static str, Cow<'a, str>)> {
        let mut out = Vec::with_capacity(super::PLACEHOLDERS.len());
        out.push((
            "salutation",
            Cow::Owned(salutation(self.salutation, self.name)),
        ));
        out.push(("nama", Cow::Borrowed(self.name)));
        out.push(("no_pol", Cow::Borrowed(self.no_pol)));
        if let Some(model) = self.model.filter(|m| !m.is_empty()) {
            out.push(("model", Cow::Borrowed(model)));
        }
        out.push(("tanggal", Cow::Owned(tanggal(self.due, self.language))));
        out.push(("tanggal_dmy", Cow::Owned(super::tanggal_dmy(self.due))));
        out.push((
            "hari",
            Cow::Owned((self.due - self.today).num_days().to_string()),
        ));
        out.push((
            "service_phone",
            Cow::Borrowed(workshop.service_phone.as_str()),
        ));
        out.push(("workshop_name", Cow::Borrowed(workshop.name.as_str())));
        out
    }
}

impl Current {
    /// The reminder about `subject` in its language, and what its message records.
    pub fn render_recorded(&self, subject: &Subject<'_>, workshop: &Workshop) -> (String, Origin) {
        let values = subject.all_values(workshop);
        let text = render_with(self.bodies.for_language(subject.language), |name| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| Cow::Borrowed(v.as_ref()))
        });
        let origin = Origin {
            key: self.key.clone(),
            version: self.version,
            language: self.bodies.language_of(subject.language),
            values: ValuesJson::from_pairs(&values),
        };
        (text, origin)
    }
}

/// The template of a message as the API shows it (`GET /whatsapp/messages/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = MessageTemplate)]
pub struct Recorded {
    pub key: String,
    pub version: i32,
    /// The language of the body that was rendered; null for messages made before it was kept.
    pub language: Option<Language>,
    /// The value of every placeholder available when it was rendered (not only those the body
    /// used): what a gateway that sends templates fills their parameters from. Null for
    /// messages made before it was kept.
    #[schema(value_type = Option<std::collections::HashMap<String, String>>)]
    pub values: Option<serde_json::Map<String, serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn subject(model: Option<&str>) -> Subject<'_> {
        Subject {
            name: "Siti \"Ani\"",
            salutation: Some("Ibu"),
            language: Language::En,
            no_pol: "B 1 A",
            model,
            due: NaiveDate::from_ymd_opt(2026, 12, 3).unwrap(),
            today: NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        }
    }

    fn workshop() -> Workshop {
        Workshop {
            service_phone: "0855".into(),
            name: "Bengkel".into(),
        }
    }

    #[test]
    fn a_reminder_records_every_value_it_had_not_only_those_it_used() {
        let current = Current {
            key: "maintenance_reminder".into(),
            version: 3,
            bodies: Bodies {
                id: "{nama}".into(),
                en: None,
            },
        };
        let workshop = workshop();
        let (text, origin) = current.render_recorded(&subject(Some("Avanza")), &workshop);
        assert_eq!(text, "Siti \"Ani\"");
        // No English body: the Indonesian one was rendered, and that is what is recorded.
        assert_eq!(origin.language, Language::Id);
        let values: serde_json::Value = serde_json::from_str(origin.values.as_str()).unwrap();
        assert_eq!(
            values,
            serde_json::json!({
                "salutation": "Ibu", "nama": "Siti \"Ani\"", "no_pol": "B 1 A", "model": "Avanza",
                "tanggal": "3 December 2026", "tanggal_dmy": "03-12-2026", "hari": "2",
                "service_phone": "0855", "workshop_name": "Bengkel"
            })
        );
        let (_, origin) = current.render_recorded(&subject(None), &workshop);
        assert!(!origin.values.as_str().contains("model"), "{origin:?}");
    }
}
