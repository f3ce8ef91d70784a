//! `/whatsapp-report` (README "WhatsApp report", field names of the seed's WHATSAPP_REPORT_DOCUMENTATION.md):
//! how often each customer + vehicle was reminded. Rows are written only by the send worker's
//! outcome statement (see `messages::record::record_runs`), once per delivered reminder. The
//! `delivered` and `read` counts (SPEC §12) are read from the reminders' messages
//! (`delivery_status`, written by `messages::receipts`) when a row is read.

use std::collections::BTreeMap;

use axum::{
    Router,
    extract::State,
    routing::{delete, get, post},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    error::{AppError, AppResult},
    http::{
        auth::{Caller, OpsCaller},
        envelope::{Envelope, Reply},
        extract::{Path, QueryPairs},
        responses::{
            BadPathParameter, BadRequest, Forbidden, Invalid, NotFound, Unauthorized, Unavailable,
        },
    },
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/whatsapp-report", get(list))
        .route("/whatsapp-report/", get(list))
        .route("/whatsapp-report/detail", get(detail))
        .route("/whatsapp-report/statistics", get(statistics))
        .route("/whatsapp-report/customer/{id_customer}", get(by_customer))
        .route(
            "/whatsapp-report/customer/{id_customer}/vehicle/{id_vehicle}",
            get(by_customer_vehicle),
        )
        .route("/whatsapp-report/reset-frequency", post(reset_frequency))
        .route("/whatsapp-report/{report_id}", delete(remove))
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Report {
    pub id: Uuid,
    pub id_customer: Uuid,
    pub id_vehicle: Uuid,
    pub last_message_date: DateTime<Utc>,
    pub frequency: i32,
    /// How many of this customer + vehicle's reminder messages WhatsApp reported delivered (the
    /// read ones included). Counted from the messages: `reset-frequency` leaves it as it is.
    pub delivered: i64,
    /// How many of them WhatsApp reported read.
    pub read: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReportDetail {
    pub id: Uuid,
    pub id_customer: Uuid,
    pub id_vehicle: Uuid,
    pub customer_name: Option<String>,
    pub customer_phone: Option<String>,
    pub vehicle_model: Option<String>,
    pub vehicle_nopol: Option<String>,
    pub last_message_date: DateTime<Utc>,
    pub frequency: i32,
    /// How many of this customer + vehicle's reminder messages WhatsApp reported delivered (the
    /// read ones included). Counted from the messages: `reset-frequency` leaves it as it is.
    pub delivered: i64,
    /// How many of them WhatsApp reported read.
    pub read: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Statistics {
    pub total_customers_with_vehicles: i64,
    pub total_messages_sent: i64,
    /// Reminder messages of these customer + vehicle pairs that WhatsApp reported delivered (the
    /// read ones included; counted from the messages, not reset by `reset-frequency`).
    pub total_messages_delivered: i64,
    /// Those of them WhatsApp reported read.
    pub total_messages_read: i64,
    pub average_messages_per_customer: f64,
    /// frequency → number of customer + vehicle pairs
    pub customers_by_frequency: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Count {
    pub message: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReportDeleted {
    pub message: &'static str,
}

fn uuid_param(raw: &str, what: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound(format!("{what} {raw} not found")))
}

/// `limit` (1..=1000, default 100) and `offset` (≥ 0) of the report lists.
fn window(q: &QueryPairs) -> AppResult<(i64, i64)> {
    let mut errors = Vec::new();
    let limit = q.int("limit", 100, 1..=1000, &mut errors);
    let offset = q.int("offset", 0, 0..=1_000_000_000, &mut errors);
    if errors.is_empty() {
        Ok((limit, offset))
    } else {
        Err(AppError::Validation(errors))
    }
}

/// The columns of a report row, as a literal: every statement here is a `&'static str` built at
/// compile time (`concat!`), nothing is formatted into SQL at run time.
macro_rules! columns {
    () => {
        "id, id_customer, id_vehicle, last_message_date, frequency, created_at, updated_at"
    };
}

/// SQL: the report rows that `$rows` (a query of [`columns!`] of `whatsapp_report`) selects, as
/// `w`, each with the receipts of its reminders' messages as `x.delivered` and `x.read`. Counted
/// for those rows only: a page is chosen before its counts are.
macro_rules! with_receipts {
    ($($rows:tt)+) => {
        concat!(
            "(",
            $($rows)+,
            ") w CROSS JOIN LATERAL (
                SELECT count(*) FILTER (WHERE m.delivery_status IN ('delivered', 'read')) AS delivered,
                       count(*) FILTER (WHERE m.delivery_status = 'read') AS read
                FROM reminders r JOIN messages m ON m.id = r.message_id
                WHERE r.vehicle_id = w.id_vehicle AND r.customer_id = w.id_customer
             ) x"
        )
    };
}

/// Every report row, most recently messaged first; `limit` (≤ 1000, default 100), `offset`.
#[utoipa::path(get, path = "/whatsapp-report/", operation_id = "list_reports", tag = "whatsapp-report",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "default 100"),
        ("offset" = Option<i64>, Query, minimum = 0, maximum = 1000000000, description = "default 0")),
    responses((status = 200, description = "Report rows", body = Envelope<Vec<Report>>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<Vec<Report>>> {
    let (limit, offset) = window(&q)?;
    let rows = sqlx::query_as(concat!(
        "SELECT w.*, x.delivered, x.read FROM ",
        with_receipts!(concat!(
            "SELECT ",
            columns!(),
            " FROM whatsapp_report ORDER BY last_message_date DESC, id LIMIT $1 OFFSET $2"
        )),
        " ORDER BY w.last_message_date DESC, w.id"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    Ok(Reply::ok(rows, "WhatsApp reports"))
}

/// Report rows with the customer's name and phone and the vehicle's model and number plate.
#[utoipa::path(get, path = "/whatsapp-report/detail", operation_id = "list_report_details", tag = "whatsapp-report",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "default 100"),
        ("offset" = Option<i64>, Query, minimum = 0, maximum = 1000000000, description = "default 0")),
    responses((status = 200, description = "Report rows with customer and vehicle", body = Envelope<Vec<ReportDetail>>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<Vec<ReportDetail>>> {
    let (limit, offset) = window(&q)?;
    let rows = sqlx::query_as(concat!(
        "SELECT w.id, w.id_customer, w.id_vehicle, c.nama AS customer_name, c.hp AS customer_phone,
                v.model AS vehicle_model, v.no_pol AS vehicle_nopol, w.last_message_date, w.frequency,
                x.delivered, x.read, w.created_at, w.updated_at
         FROM ",
        with_receipts!(concat!(
            "SELECT ",
            columns!(),
            " FROM whatsapp_report ORDER BY last_message_date DESC, id LIMIT $1 OFFSET $2"
        )),
        "
         JOIN customers c ON c.id = w.id_customer
         JOIN vehicles v ON v.id = w.id_vehicle
         ORDER BY w.last_message_date DESC, w.id"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    Ok(Reply::ok(rows, "WhatsApp report details"))
}

/// Totals over all customer + vehicle pairs.
#[utoipa::path(get, path = "/whatsapp-report/statistics", operation_id = "report_statistics", tag = "whatsapp-report",
    responses((status = 200, description = "Totals", body = Envelope<Statistics>), Unauthorized, Unavailable),
    security(("bearer" = [])))]
pub async fn statistics(State(state): State<AppState>, _: Caller) -> AppResult<Reply<Statistics>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT frequency, count(*) FROM whatsapp_report GROUP BY frequency ORDER BY frequency",
    )
    .fetch_all(&state.pool)
    .await?;
    // Driven by the messages that have a positive receipt (`messages_delivery_status_newest`),
    // not by every reminder ever sent.
    let (delivered, read): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE m.delivery_status = 'read')
         FROM messages m
         JOIN reminders r ON r.message_id = m.id
         JOIN whatsapp_report w ON w.id_customer = r.customer_id AND w.id_vehicle = r.vehicle_id
         WHERE m.delivery_status IN ('delivered', 'read')",
    )
    .fetch_one(&state.pool)
    .await?;
    let pairs: i64 = rows.iter().map(|(_, n)| n).sum();
    let total: i64 = rows.iter().map(|(f, n)| i64::from(*f) * n).sum();
    let average = if pairs == 0 {
        0.0
    } else {
        (total as f64 / pairs as f64 * 100.0).round() / 100.0
    };
    Ok(Reply::ok(
        Statistics {
            total_customers_with_vehicles: pairs,
            total_messages_sent: total,
            total_messages_delivered: delivered,
            total_messages_read: read,
            average_messages_per_customer: average,
            customers_by_frequency: rows.into_iter().map(|(f, n)| (f.to_string(), n)).collect(),
        },
        "WhatsApp report statistics",
    ))
}

/// The report rows of one customer (one per reminded vehicle).
#[utoipa::path(get, path = "/whatsapp-report/customer/{id_customer}", operation_id = "customer_reports", tag = "whatsapp-report",
    params(("id_customer" = String, Path, format = Uuid, description = "the customer id")),
    responses((status = 200, description = "The customer's rows (none: an empty list)", body = Envelope<Vec<Report>>),
        (status = 404, description = "The id is not a UUID", body = crate::http::envelope::ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, Unavailable),
    security(("bearer" = [])))]
pub async fn by_customer(
    State(state): State<AppState>,
    _: Caller,
    Path(id_customer): Path<String>,
) -> AppResult<Reply<Vec<Report>>> {
    let id = uuid_param(&id_customer, "customer")?;
    let rows = sqlx::query_as(concat!(
        "SELECT w.*, x.delivered, x.read FROM ",
        with_receipts!(concat!(
            "SELECT ",
            columns!(),
            " FROM whatsapp_report WHERE id_customer = $1"
        )),
        " ORDER BY w.last_message_date DESC"
    ))
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(Reply::ok(rows, "WhatsApp reports of the customer"))
}

/// The report row of one customer + vehicle.
#[utoipa::path(get, path = "/whatsapp-report/customer/{id_customer}/vehicle/{id_vehicle}", operation_id = "customer_vehicle_report", tag = "whatsapp-report",
    params(("id_customer" = String, Path, format = Uuid, description = "the customer id"),
        ("id_vehicle" = String, Path, format = Uuid, description = "the vehicle id")),
    responses((status = 200, description = "The row", body = Envelope<Report>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn by_customer_vehicle(
    State(state): State<AppState>,
    _: Caller,
    Path((id_customer, id_vehicle)): Path<(String, String)>,
) -> AppResult<Reply<Report>> {
    let customer = uuid_param(&id_customer, "customer")?;
    let vehicle = uuid_param(&id_vehicle, "vehicle")?;
    let row: Option<Report> = sqlx::query_as(concat!(
        "SELECT w.*, x.delivered, x.read FROM ",
        with_receipts!(concat!(
            "SELECT ",
            columns!(),
            " FROM whatsapp_report WHERE id_customer = $1 AND id_vehicle = $2"
        ))
    ))
    .bind(customer)
    .bind(vehicle)
    .fetch_optional(&state.pool)
    .await?;
    let row = row.ok_or_else(|| {
        AppError::NotFound(format!(
            "no report for customer {customer} and vehicle {vehicle}"
        ))
    })?;
    Ok(Reply::ok(row, "WhatsApp report"))
}

/// Deletes one report row. Role `ops`.
#[utoipa::path(delete, path = "/whatsapp-report/{report_id}", operation_id = "delete_report", tag = "whatsapp-report",
    params(("report_id" = String, Path, format = Uuid, description = "the report row id")),
    responses((status = 200, description = "Deleted", body = Envelope<ReportDeleted>),
        BadRequest, BadPathParameter, Unauthorized, Forbidden, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    Path(report_id): Path<String>,
) -> AppResult<Reply<ReportDeleted>> {
    let id = uuid_param(&report_id, "report")?;
    let done = sqlx::query("DELETE FROM whatsapp_report WHERE id = $1")
        .bind(id)
        .execute(&state.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(AppError::NotFound(format!("report {id} not found")));
    }
    tracing::warn!(by = caller.sub, report_id = %id, "WhatsApp report row deleted");
    Ok(Reply::ok(
        ReportDeleted {
            message: "Report berhasil dihapus",
        },
        "Report berhasil dihapus",
    ))
}

/// Sets `frequency` back to 0: all rows, or one customer's (`id_customer`), or one customer +
/// vehicle (`id_customer` and `id_vehicle`). Rows are kept. Role `ops`.
#[utoipa::path(post, path = "/whatsapp-report/reset-frequency", operation_id = "reset_report_frequency", tag = "whatsapp-report",
    params(("id_customer" = Option<String>, Query, format = Uuid), ("id_vehicle" = Option<String>, Query, format = Uuid)),
    responses((status = 200, description = "How many rows were reset", body = Envelope<Count>),
        BadRequest, Unauthorized, Forbidden, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn reset_frequency(
    State(state): State<AppState>,
    OpsCaller(caller): OpsCaller,
    q: QueryPairs,
) -> AppResult<Reply<Count>> {
    let parse = |field: &str| -> AppResult<Option<Uuid>> {
        q.get(field)
            .map(|raw| {
                Uuid::parse_str(raw).map_err(|_| AppError::validation(field, "must be a UUID"))
            })
            .transpose()
    };
    let customer = parse("id_customer")?;
    let vehicle = parse("id_vehicle")?;
    let done = sqlx::query(
        "UPDATE whatsapp_report SET frequency = 0, updated_at = now()
         WHERE ($1::uuid IS NULL OR id_customer = $1) AND ($2::uuid IS NULL OR id_vehicle = $2)",
    )
    .bind(customer)
    .bind(vehicle)
    .execute(&state.pool)
    .await?;
    let count = done.rows_affected();
    tracing::warn!(
        by = caller.sub,
        ?customer,
        ?vehicle,
        count,
        "WhatsApp report frequency reset"
    );
    let message = match (customer, vehicle) {
        (None, None) => format!("Frequency untuk {count} report berhasil direset"),
        (Some(c), None) => format!("Frequency untuk {count} report customer {c} berhasil direset"),
        (c, Some(v)) => format!(
            "Frequency untuk {count} report{} vehicle {v} berhasil direset",
            c.map(|c| format!(" customer {c}")).unwrap_or_default()
        ),
    };
    Ok(Reply::ok(
        Count {
            message: message.clone(),
            count,
        },
        message,
    ))
}
