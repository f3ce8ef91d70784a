//! How long a rendered text may be (README "Templates"): a message of at most
//! [`MAX_TEXT_CHARS`] characters. A saved body is short, but placeholders grow it — `{nama}` 500
//! times renders the name 500 times — so the limit is checked on the rendered text, wherever
//! one is made: a reminder pass skips the recipient, a preview answers `422`.

use std::fmt;

/// The most characters a rendered message text may have (what a send accepts as `body`).
pub const MAX_TEXT_CHARS: usize = 4_096;

/// The reason a reminder pass gives for a text over [`MAX_TEXT_CHARS`].
pub const TEXT_TOO_LONG: &str = "text too long";

/// A rendered text over [`MAX_TEXT_CHARS`]: its length in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong(pub usize);

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "renders to {} characters; a message may have at most {MAX_TEXT_CHARS}",
            self.0
        )
    }
}

/// `Err` when `text` has more than [`MAX_TEXT_CHARS`] characters.
pub fn check_text(text: &str) -> Result<(), TooLong> {
    // A character is at least one byte: a text within the limit in bytes needs no count (the
    // common case, checked once per reminder of a pass).
    if text.len() <= MAX_TEXT_CHARS {
        return Ok(());
    }
    match text.chars().count() {
        n if n > MAX_TEXT_CHARS => Err(TooLong(n)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_counts_characters_not_bytes() {
        assert_eq!(check_text(&"x".repeat(MAX_TEXT_CHARS)), Ok(()));
        assert_eq!(
            check_text(&"x".repeat(MAX_TEXT_CHARS + 1)),
            Err(TooLong(MAX_TEXT_CHARS + 1))
        );
        // 📅 is four bytes: 4,096 of them are 16 KiB and still one message.
        assert_eq!(check_text(&"📅".repeat(MAX_TEXT_CHARS)), Ok(()));
        assert_eq!(
            check_text(&"📅".repeat(MAX_TEXT_CHARS + 1)),
            Err(TooLong(MAX_TEXT_CHARS + 1))
        );
        assert_eq!(
            TooLong(5_000).to_string(),
            "renders to 5000 characters; a message may have at most 4096"
        );
    }
}
