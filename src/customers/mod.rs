//! Customers and vehicles: the data the maintenance reminders are computed from (README "Maintenance reminders").

pub mod demo;
pub mod repo;
pub mod request;
pub mod routes;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Vehicle {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub no_pol: Option<String>,
    pub model: Option<String>,
    pub next_visit_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Customer {
    pub id: Uuid,
    pub nama: Option<String>,
    pub hp: Option<String>,
    pub alamat: Option<String>,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[sqlx(skip)]
    pub vehicles: Vec<Vehicle>,
}
