//! Campaigns (SPEC §15): steps with weighted variants (templates, or a holdout that gets no
//! message) sent to a segment's recipients through the §11 batch path; a later step waits
//! `delay_days` after the previous one's last message became final and goes only to those its
//! `only_if` keeps. [`request`] reads a new campaign, [`repo`] stores it and moves its status.

pub mod driver;
pub mod repo;
pub mod request;
pub mod results;
pub mod routes;
pub mod step;

use serde::{Deserialize, Serialize};

/// A campaign's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = CampaignStatus)]
pub enum Status {
    /// Made, not started.
    Draft,
    /// Started with a `start_at` still ahead.
    Scheduled,
    /// Its steps go out.
    Running,
    /// Held: its unsent messages wait, no step starts.
    Paused,
    /// Every step done.
    Finished,
    /// Stopped for good: its unsent messages were cancelled.
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Who of the previous step's recipients a later step keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = CampaignOnlyIf)]
pub enum OnlyIf {
    /// Their previous message was not read (no `read` receipt).
    NotRead,
    /// They wrote nothing to us since the previous step started.
    NoReply,
    /// No newer `last_visit_date` (`last_service`) since the campaign started.
    NoVisit,
    /// Their previous message has no `delivered` or `read` receipt.
    NotDelivered,
}

impl OnlyIf {
    pub const NAMES: &str = "not_read, no_reply, no_visit, not_delivered";

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "not_read" => Some(Self::NotRead),
            "no_reply" => Some(Self::NoReply),
            "no_visit" => Some(Self::NoVisit),
            "not_delivered" => Some(Self::NotDelivered),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRead => "not_read",
            Self::NoReply => "no_reply",
            Self::NoVisit => "no_visit",
            Self::NotDelivered => "not_delivered",
        }
    }
}

/// One variant of a step: a template, or a holdout (its recipients get no message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CampaignVariant)]
pub struct Variant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_key: Option<String>,
    /// 1 to 100: its share is its weight over the step's total.
    pub weight: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holdout: bool,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = CampaignStepDefinition)]
pub struct Step {
    pub variants: Vec<Variant>,
    /// Whole days after every message of the previous step became final (0 for the first).
    #[serde(default)]
    pub delay_days: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_if: Option<OnlyIf>,
}

/// Whether `now` is outside a campaign's own send window (`None`, or one that does not parse:
/// never outside it).
pub fn outside_window(
    window: Option<&str>,
    tz: chrono_tz::Tz,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    window
        .and_then(|w| w.parse::<crate::policy::window::SendWindow>().ok())
        .is_some_and(|w| !w.contains(now, tz))
}

/// The variant of `phone` in a step of campaign `campaign`: a point in `[0, total weight)`
/// from a hash of (campaign, phone) — the same for every step and every run — picks the
/// variant whose share covers it.
pub fn assign(campaign: uuid::Uuid, phone: &str, variants: &[Variant]) -> usize {
    use sha2::{Digest, Sha256};
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return 0;
    }
    let mut hash = Sha256::new();
    hash.update(campaign.as_bytes());
    hash.update(phone.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let mut point = u64::from_be_bytes(first) % total;
    for (i, v) in variants.iter().enumerate() {
        let w = u64::from(v.weight);
        if point < w {
            return i;
        }
        point -= w;
    }
    variants.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(weight: u32) -> Variant {
        Variant {
            template_key: Some("promo".into()),
            weight,
            holdout: false,
        }
    }

    #[test]
    fn assignment_is_stable_and_near_the_weights() {
        let campaign = uuid::Uuid::from_u128(42);
        let variants = [variant(70), variant(30)];
        let mut counts = [0usize; 2];
        for i in 0..10_000 {
            let phone = format!("62812{i:08}");
            let v = assign(campaign, &phone, &variants);
            assert_eq!(v, assign(campaign, &phone, &variants), "stable");
            counts[v] += 1;
        }
        assert!((6_700..=7_300).contains(&counts[0]), "{counts:?}");
        // Another campaign shuffles people differently.
        let other = uuid::Uuid::from_u128(43);
        let moved = (0..1_000)
            .filter(|i| {
                let phone = format!("62812{i:08}");
                assign(campaign, &phone, &variants) != assign(other, &phone, &variants)
            })
            .count();
        assert!(moved > 200, "{moved}");
    }
}
