//! `PhoneNumber::parse`: the one place where a WhatsApp number is accepted (README "Sending").
//!
//! Strip spaces, `-`, `.`, `(`, `)`; drop a leading `+`; `0…` becomes `62…`; a bare `8…` becomes
//! `628…`; the result must be 10..=15 digits starting with a country code (not `0`).

use std::fmt;

use serde::Serialize;

/// What [`PhoneNumber::parse`] accepts, as an ECMA-262 pattern for the OpenAPI document: a
/// leading `+`, separators ` ().-`, and a digit count that normalizes to 10..=15 digits (`0…`
/// gains one digit, a bare `8…` two). Attributes cannot name a constant, so the annotations
/// repeat it; a test checks every copy and this pattern against the parser.
pub const PHONE_PATTERN: &str = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("phone number may contain only digits, spaces, '+', '-', '.', '(' and ')'")]
    InvalidCharacter,
    #[error("phone number must have 10 to 15 digits including the country code")]
    Length,
}

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, PhoneError> {
        let trimmed = raw.trim();
        let without_plus = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let mut digits = String::with_capacity(without_plus.len());
        for c in without_plus.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(PhoneError::InvalidCharacter),
            }
        }
        if digits.is_empty() {
            return Err(PhoneError::Empty);
        }
        let normalized = if let Some(rest) = digits.strip_prefix('0') {
            format!("62{rest}")
        } else if digits.starts_with('8') {
            format!("62{digits}")
        } else {
            digits
        };
        if !(10..=15).contains(&normalized.len()) || normalized.starts_with('0') {
            return Err(PhoneError::Length);
        }
        Ok(Self(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_spellings_of_the_spec_become_one_number() {
        for raw in ["+62 812-3456-789", "0812 3456 789", "812-3456-789"] {
            assert_eq!(
                PhoneNumber::parse(raw).unwrap().as_str(),
                "628123456789",
                "{raw}"
            );
        }
    }

    #[test]
    fn keeps_other_country_codes_and_strips_punctuation() {
        assert_eq!(
            PhoneNumber::parse("(62) 812.3456.7890").unwrap().as_str(),
            "6281234567890"
        );
        assert_eq!(
            PhoneNumber::parse("+1 415 555 2671").unwrap().as_str(),
            "14155552671"
        );
    }

    /// The pattern of the OpenAPI document accepts exactly what the parser accepts.
    #[test]
    fn the_documented_pattern_is_the_parser() {
        let pattern = regex::Regex::new(PHONE_PATTERN).unwrap();
        let samples = [
            "+62 812-3456-789",
            "0812 3456 789",
            "812-3456-789",
            "(62) 812.3456.7890",
            "+1 415 555 2671",
            "+0812345678901",
            "  0812345678  ",
            "081234567",
            "08123456",
            "81234567",
            "8123456",
            "1234567890",
            "123456789",
            "123456789012345",
            "1234567890123456",
            "08123456789012",
            "081234567890123",
            "8123456789012",
            "81234567890123",
            "0812abc",
            "++62812345678",
            "62 812\t3456 789",
            "",
            "   ",
            "+",
            "(((0812345678)))",
            "0-8-1-2-3-4-5-6-7-8",
        ];
        for raw in samples {
            assert_eq!(
                pattern.is_match(raw),
                PhoneNumber::parse(raw).is_ok(),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn rejects_what_cannot_be_a_number() {
        assert_eq!(PhoneNumber::parse("   "), Err(PhoneError::Empty));
        assert_eq!(
            PhoneNumber::parse("0812abc"),
            Err(PhoneError::InvalidCharacter)
        );
        assert_eq!(
            PhoneNumber::parse("++62812345678"),
            Err(PhoneError::InvalidCharacter)
        );
        assert_eq!(PhoneNumber::parse("0812"), Err(PhoneError::Length));
        assert_eq!(
            PhoneNumber::parse("6281234567890123"),
            Err(PhoneError::Length)
        );
        assert_eq!(
            PhoneNumber::parse("+0812345678901"),
            Ok(PhoneNumber("62812345678901".into()))
        );
    }
}
