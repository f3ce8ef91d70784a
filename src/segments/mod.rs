//! Segments (SPEC §15): saved, named filters over vehicles and manual records that give one
//! recipient per phone number — the people a campaign step writes to. [`query`] turns a segment
//! into its recipients in one SQL statement; [`routes`] is `/segments`.

pub mod query;
pub mod request;
pub mod routes;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::templates::Language;

/// What a segment walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = SegmentSource)]
pub enum Source {
    /// Customers' vehicles.
    Vehicles,
    /// Manual records (active ones).
    Manual,
    /// Both (a number in both is one recipient).
    #[default]
    Both,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vehicles => "vehicles",
            Self::Manual => "manual",
            Self::Both => "both",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "vehicles" => Some(Self::Vehicles),
            "manual" => Some(Self::Manual),
            "both" => Some(Self::Both),
            _ => None,
        }
    }
}

/// A segment's filters; every one given must hold (absent: no condition).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SegmentFilters)]
#[schema(example = json!({"model": "avanza", "due_from": "2027-01-01", "due_to": "2027-01-31", "language": "id"}))]
pub struct Filters {
    /// The vehicle's model contains it (case-insensitive). Manual records have no model: with
    /// this filter they are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The computed due date (the next visit, else the last visit plus
    /// `SERVICE_INTERVAL_MONTHS`; for a manual record `next_service`, else `last_service` plus
    /// it) is on or after this date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_from: Option<NaiveDate>,
    /// … and on or before this date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_to: Option<NaiveDate>,
    /// The last visit (`last_visit_date`; a manual record's `last_service`) is before this date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_visit_before: Option<NaiveDate>,
    /// … or after this date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_visit_after: Option<NaiveDate>,
    /// The customer's or record's language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    /// The number wrote to us (an inbound message) at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_inbound_since: Option<DateTime<Utc>>,
    /// Only these customers' vehicles. With `customer_ids` or `manual_ids` given, a side
    /// without its list contributes nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_ids: Option<Vec<Uuid>>,
    /// Only these manual records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual_ids: Option<Vec<Uuid>>,
}

impl Filters {
    /// Whether explicit ids choose the people.
    pub fn explicit(&self) -> bool {
        self.customer_ids.is_some() || self.manual_ids.is_some()
    }
}

/// A saved segment.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Segment {
    pub id: Uuid,
    pub name: String,
    pub source: String,
    #[schema(value_type = Filters)]
    pub filters: sqlx::types::Json<Filters>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One recipient: a number and the vehicle or record it was chosen by (the earliest due; a
/// vehicle before a manual record).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = SegmentRecipient)]
pub struct Recipient {
    /// Normalized (`62…`).
    pub phone: String,
    /// `vehicle` or `manual`.
    pub source: String,
    pub customer_id: Option<Uuid>,
    pub vehicle_id: Option<Uuid>,
    pub manual_id: Option<Uuid>,
    /// The customer's `nama` or the record's `customer_name`.
    pub name: Option<String>,
    pub salutation: Option<String>,
    pub no_pol: Option<String>,
    pub model: Option<String>,
    pub due_date: Option<NaiveDate>,
    pub last_visit_date: Option<NaiveDate>,
    pub language: Language,
}
