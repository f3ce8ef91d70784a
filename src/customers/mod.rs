//! Customers and vehicles: the data the maintenance reminders are computed from (README "Maintenance reminders").

pub mod demo;
pub mod repo;
pub mod request;
pub mod routes;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    reminders::calendar::{self, DueSource},
    templates::Language,
};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Vehicle {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub no_pol: Option<String>,
    pub model: Option<String>,
    /// The explicit next service date: the due date when set.
    pub next_visit_date: Option<NaiveDate>,
    /// The last service: with no `next_visit_date`, the vehicle is due
    /// `SERVICE_INTERVAL_MONTHS` after it.
    pub last_visit_date: Option<NaiveDate>,
    /// When the vehicle is due (reminders go out in the days before it): `next_visit_date`,
    /// else `last_visit_date` + `SERVICE_INTERVAL_MONTHS` (a day the month lacks is its last
    /// day); `null` with neither.
    #[sqlx(skip)]
    pub due_date: Option<NaiveDate>,
    /// Which field `due_date` comes from; `null` with neither.
    #[sqlx(skip)]
    pub due_source: Option<DueSource>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Vehicle {
    /// Fills `due_date` and `due_source` for a service interval of `months`.
    pub fn with_due(mut self, months: u32) -> Self {
        let due = calendar::due_date(self.next_visit_date, self.last_visit_date, months);
        self.due_date = due.map(|(d, _)| d);
        self.due_source = due.map(|(_, s)| s);
        self
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Customer {
    pub id: Uuid,
    pub nama: Option<String>,
    pub hp: Option<String>,
    pub alamat: Option<String>,
    pub email: Option<String>,
    /// How the customer is addressed (`Bapak`, `Ibu`, `Kak`, …); `""`: no salutation; `null`:
    /// not given — `Bapak`, unless `nama` starts with a salutation. README "Templates".
    pub salutation: Option<String>,
    /// `id` (default) or `en`: the language of their reminders.
    pub language: Language,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[sqlx(skip)]
    pub vehicles: Vec<Vehicle>,
}

impl Customer {
    /// Fills the due date of every vehicle (see [`Vehicle::with_due`]).
    pub fn with_due(mut self, months: u32) -> Self {
        self.vehicles = self
            .vehicles
            .into_iter()
            .map(|v| v.with_due(months))
            .collect();
        self
    }
}
