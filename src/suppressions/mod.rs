//! The opt-out list (README "Opt-out"): numbers that asked not to be messaged, per scope.
//!
//! Follow the names: [`repo`] adds (cancelling the number's unsent messages in scope through
//! `messages::withdraw::cancel_for_recipient`, in the same transaction), lists and removes entries;
//! [`routes`] is the HTTP surface. Sends to a suppressed number are stored `cancelled` by
//! `messages::store::store` (the [`suppressed!`](crate::suppressed)
//! condition); the reminder passes skip them with [`OPTED_OUT`].

pub mod repo;
pub mod routes;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::messages::Kind;

/// The `last_error` of a message cancelled because its recipient opted out.
pub const RECIPIENT_OPTED_OUT: &str = "recipient opted out";
/// The `reason` of a reminder the fan-out or the manual pass skipped for an opted-out number.
pub const OPTED_OUT: &str = "opted out";
/// The longest `reason` accepted.
pub const MAX_REASON_CHARS: usize = 500;

/// What a suppression blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[schema(as = SuppressionScope)]
pub enum Scope {
    /// Kinds `maintenance` and `manual`: reminders and the manual customers' messages.
    Reminders,
    /// Every kind, ad-hoc sends too.
    All,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Reminders => "reminders",
            Scope::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reminders" => Some(Scope::Reminders),
            "all" => Some(Scope::All),
            _ => None,
        }
    }

    /// Whether a message of `kind` to a number suppressed with this scope is blocked.
    pub fn blocks(self, kind: Kind) -> bool {
        match self {
            _ if kind == Kind::Admin => false,
            Scope::All => true,
            Scope::Reminders => kind.is_reminder(),
        }
    }
}

/// Who put a number on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[schema(as = SuppressionSource)]
pub enum Source {
    /// An operator or application, through `POST /suppressions`.
    Api,
    /// The customer, by writing an opt-out keyword (README "Inbound messages and opt-out
    /// keywords"); an opt-in keyword lifts only such an entry.
    Inbound,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Api, Source::Inbound];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Inbound => "inbound",
        }
    }
}

/// Counts a number newly opted out (added, or widened to `all`) by `source`, after the change
/// committed.
pub fn count_optout(source: Source) {
    metrics::counter!("bengkel_optouts_total", "source" => source.as_str()).increment(1);
}

/// The kinds scope `reminders` blocks, as SQL (scope `all` blocks every kind); the
/// [`suppressed!`](crate::suppressed) condition and `messages::withdraw::cancel_for_recipient` use it.
#[macro_export]
macro_rules! reminder_kinds {
    () => {
        "('maintenance', 'manual')"
    };
}

/// SQL: whether a message of kind `$kind` (an SQL text expression) to `$phone` (a normalized
/// number) is blocked by the opt-out list, as a literal so that queries stay `&'static str`. A
/// `system` message (the reply confirming a keyword opt-out) passes an entry the customer made
/// with a keyword, and no other; an `admin` message (to the workshop's own people) passes all.
#[macro_export]
macro_rules! suppressed {
    ($phone:literal, $kind:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM suppressions sup WHERE ",
            $kind,
            " <> 'admin' AND sup.phone = ",
            $phone,
            " AND (sup.scope = 'all' OR ",
            $kind,
            " IN ",
            $crate::reminder_kinds!(),
            ") AND NOT (",
            $kind,
            " = 'system' AND sup.source = 'inbound'))"
        )
    };
}

/// An entry of the list.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Suppression {
    /// Normalized (`62…`).
    #[schema(example = "628123456789")]
    pub phone: String,
    pub scope: Scope,
    pub reason: Option<String>,
    /// The `sub` of the token that first added the number.
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The `sub` of the token that made the last change (scope or reason); `inbound` for a
    /// keyword's change.
    pub updated_by: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// `api` (an operator or application) or `inbound` (the customer's keyword): only an
    /// `inbound` entry is lifted by an opt-in keyword.
    pub source: Source,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reminders_block_reminder_kinds_and_all_blocks_every_kind() {
        assert!(!Scope::Reminders.blocks(Kind::Adhoc));
        assert!(Scope::Reminders.blocks(Kind::Maintenance));
        assert!(Scope::Reminders.blocks(Kind::Manual));
        assert!(!Scope::Reminders.blocks(Kind::System));
        for kind in [Kind::Adhoc, Kind::Maintenance, Kind::Manual, Kind::System] {
            assert!(Scope::All.blocks(kind));
        }
        assert!(!Scope::All.blocks(Kind::Admin) && !Scope::Reminders.blocks(Kind::Admin));
        // A campaign is promotional: `all` stops it, `reminders` does not (SPEC §15's
        // "reminder-type campaign" is not a kind of its own yet).
        assert!(Scope::All.blocks(Kind::Campaign) && !Scope::Reminders.blocks(Kind::Campaign));
        assert_eq!(Scope::parse("all"), Some(Scope::All));
        assert_eq!(Scope::parse("ALL"), None);
        assert_eq!(
            Scope::parse(Scope::Reminders.as_str()),
            Some(Scope::Reminders)
        );
    }

    #[test]
    fn the_sql_condition_names_the_reminder_kinds() {
        assert_eq!(
            suppressed!("m.to_phone", "m.kind"),
            "EXISTS (SELECT 1 FROM suppressions sup WHERE m.kind <> 'admin' AND \
             sup.phone = m.to_phone AND (sup.scope = 'all' OR m.kind IN ('maintenance', 'manual')) AND \
             NOT (m.kind = 'system' AND sup.source = 'inbound'))"
        );
    }
}
