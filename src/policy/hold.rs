//! Why the delivery policy holds a message back: the `held_reason` on a message, the reason of
//! a snoozed job, and the `reason` label of `bengkel_sends_held_total`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// Waited for the cluster's rate (only counted; a message is never marked with it).
    RateLimit,
    /// The gateway's `Retry-After` after a 429 (or a 503 with `Retry-After`).
    RetryAfter,
    /// The circuit breaker is open, or its probe is out.
    CircuitOpen,
    /// Outside the send window (quiet hours).
    SendWindow,
    /// The number was called less than `RECIPIENT_MIN_INTERVAL_SECS` ago.
    RecipientSpacing,
    /// The send queue is paused (by an operator, or by the circuit after a 401/403).
    Paused,
    /// The gateway's limit on messages to one recipient (Cloud API `131056`).
    PairLimit,
}

impl HoldReason {
    pub const ALL: [HoldReason; 7] = [
        HoldReason::RateLimit,
        HoldReason::RetryAfter,
        HoldReason::CircuitOpen,
        HoldReason::SendWindow,
        HoldReason::RecipientSpacing,
        HoldReason::Paused,
        HoldReason::PairLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::RateLimit => "rate_limit",
            HoldReason::RetryAfter => "retry_after",
            HoldReason::CircuitOpen => "circuit_open",
            HoldReason::SendWindow => "send_window",
            HoldReason::RecipientSpacing => "recipient_spacing",
            HoldReason::Paused => "paused",
            HoldReason::PairLimit => "pair_limit",
        }
    }

    /// Counts one held run.
    pub fn count(self) {
        metrics::counter!("bengkel_sends_held_total", "reason" => self.as_str()).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::HoldReason;

    #[test]
    fn every_reason_has_its_own_label() {
        let labels: std::collections::HashSet<_> =
            HoldReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), HoldReason::ALL.len());
    }
}
