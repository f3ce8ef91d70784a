//! The opt-out and opt-in keywords (`OPTOUT_KEYWORDS`, `OPTIN_KEYWORDS`): a text is a keyword when,
//! [`normalize`]d, it equals one of the list's entries normalized the same way — so that
//! `" Berhenti "`, `"stop!"` and `"Jangan  kirim."` all count, and "stop sending me the promo"
//! does not (a whole message, not a word in it).

use serde::Serialize;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// `OPTOUT_KEYWORDS` when unset.
pub const DEFAULT_OPTOUT: &str = "STOP,BERHENTI,UNSUBSCRIBE,JANGAN KIRIM";
/// `OPTIN_KEYWORDS` when unset.
pub const DEFAULT_OPTIN: &str = "MULAI,START";

/// What a keyword asks for (the `keyword` of an inbound message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[schema(as = InboundKeyword)]
pub enum Keyword {
    /// No more messages: the number is opted out of everything.
    Optout,
    /// Messages again: a keyword's opt-out is lifted.
    Optin,
}

impl Keyword {
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Optout => "optout",
            Keyword::Optin => "optin",
        }
    }
}

/// Trimmed, case-folded, without punctuation, symbols (emoji included) or invisible format
/// characters, inner whitespace collapsed to one space.
pub fn normalize(text: &str) -> String {
    let kept: String = text
        .chars()
        .filter(|c| {
            !matches!(
                c.general_category_group(),
                GeneralCategoryGroup::Punctuation | GeneralCategoryGroup::Symbol
            ) && c.general_category() != GeneralCategory::Format
                // variation selectors (the emoji presentation of a symbol) are marks
                && !('\u{fe00}'..='\u{fe0f}').contains(c)
        })
        .flat_map(char::to_lowercase)
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The two lists, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keywords {
    optout: Vec<String>,
    optin: Vec<String>,
    /// The first opt-in keyword as configured (placeholder `optin_keyword`).
    first_optin: String,
}

impl Default for Keywords {
    fn default() -> Self {
        // The defaults are valid lists.
        Self::parse(DEFAULT_OPTOUT, DEFAULT_OPTIN).unwrap_or_else(|_| Self {
            optout: vec!["stop".into()],
            optin: vec!["start".into()],
            first_optin: "START".into(),
        })
    }
}

/// Why a keyword list is refused: the variable, and what is wrong.
pub type ListError = (&'static str, String);

impl Keywords {
    /// Comma-separated lists (`OPTOUT_KEYWORDS`, `OPTIN_KEYWORDS`). Each needs at least one
    /// keyword, no entry may be empty once normalized, and no keyword may be in both.
    pub fn parse(optout: &str, optin: &str) -> Result<Self, ListError> {
        let list = |var: &'static str, raw: &str| -> Result<(Vec<String>, String), ListError> {
            let entries: Vec<&str> = raw.split(',').map(str::trim).collect();
            let mut out = Vec::new();
            for entry in &entries {
                let n = normalize(entry);
                if n.is_empty() {
                    return Err((
                        var,
                        format!(
                            "every comma-separated keyword must have a letter or digit (got {entry:?})"
                        ),
                    ));
                }
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            Ok((out, entries.first().copied().unwrap_or_default().to_owned()))
        };
        let (optout, _) = list("OPTOUT_KEYWORDS", optout)?;
        let (optin, first_optin) = list("OPTIN_KEYWORDS", optin)?;
        if let Some(both) = optin.iter().find(|k| optout.contains(k)) {
            return Err((
                "OPTIN_KEYWORDS",
                format!("{both:?} is an opt-out keyword too (OPTOUT_KEYWORDS)"),
            ));
        }
        Ok(Self {
            optout,
            optin,
            first_optin,
        })
    }

    /// The keyword `text` is, if any.
    pub fn matches(&self, text: &str) -> Option<Keyword> {
        let n = normalize(text);
        if n.is_empty() {
            None
        } else if self.optout.contains(&n) {
            Some(Keyword::Optout)
        } else if self.optin.contains(&n) {
            Some(Keyword::Optin)
        } else {
            None
        }
    }

    /// The opt-in keyword to quote in a reply (the first configured, as written).
    pub fn optin_example(&self) -> &str {
        &self.first_optin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_case_and_punctuation_do_not_matter() {
        let k = Keywords::default();
        for text in [
            " Berhenti ",
            "stop!",
            "Jangan  kirim.",
            "STOP",
            "s.t.o.p",
            "¡Stop! 🙏",
            "❤️ unsubscribe",
            "jangan\u{a0}kirim\u{200b}",
            "\tJANGAN\nKIRIM !!!",
        ] {
            assert_eq!(k.matches(text), Some(Keyword::Optout), "{text:?}");
        }
        for text in ["mulai", "  Start. ", "MULAI!!"] {
            assert_eq!(k.matches(text), Some(Keyword::Optin), "{text:?}");
        }
        for text in [
            "",
            "   ",
            "!!!",
            "stop sending me the promo",
            "stopp",
            "jangan",
            "kirim",
            "berhenti dulu",
            "start engine",
        ] {
            assert_eq!(k.matches(text), None, "{text:?}");
        }
    }

    #[test]
    fn normalizing_keeps_letters_of_every_script_and_digits() {
        assert_eq!(normalize("  Ça  VA?  "), "ça va");
        assert_eq!(normalize("Tolong, BERHENTI 2x!"), "tolong berhenti 2x");
        assert_eq!(normalize("«стоп»"), "стоп");
    }

    #[test]
    fn lists_are_normalized_and_checked() {
        let k = Keywords::parse(" keluar , Stop!,STOP", "gabung").unwrap();
        assert_eq!(k.matches("KELUAR"), Some(Keyword::Optout));
        assert_eq!(k.matches("stop"), Some(Keyword::Optout));
        assert_eq!(k.matches("Gabung."), Some(Keyword::Optin));
        assert_eq!(k.matches("mulai"), None, "the defaults are replaced");
        assert_eq!(k.optin_example(), "gabung");
        assert_eq!(Keywords::default().optin_example(), "MULAI");

        let (var, why) = Keywords::parse("stop,,berhenti", "mulai").unwrap_err();
        assert_eq!(var, "OPTOUT_KEYWORDS", "{why}");
        let (var, _) = Keywords::parse("stop", "!!!").unwrap_err();
        assert_eq!(var, "OPTIN_KEYWORDS");
        let (var, why) = Keywords::parse("stop,mulai", "Mulai!").unwrap_err();
        assert_eq!(var, "OPTIN_KEYWORDS");
        assert!(why.contains("mulai"), "{why}");
    }
}
