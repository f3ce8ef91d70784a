//! `PhoneNumber::parse`: the one place where a WhatsApp number is accepted (README "Sending").
//!
//! Strip spaces, `-`, `.`, `(`, `)`; drop a leading `+`; `0…` becomes `62…`; a bare `8…` becomes
//! `628…`; the result must be 10..=15 digits starting with a country code (not `0`).

use std::fmt;

use serde::Serialize;

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
