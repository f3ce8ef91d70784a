//! `/customers` and `/vehicles` (README "Maintenance reminders").

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    routing::{get, post, put},
};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Customer, Vehicle, repo, request};
use crate::{
    error::{AppError, AppResult, FieldError},
    http::{
        auth::Caller,
        envelope::{Envelope, Reply},
        extract::{BulkJson, JsonObject, Path, QueryPairs},
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Invalid, NotFound, TooLarge, Unauthorized,
            Unavailable,
        },
    },
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/customers", post(create).get(list))
        .route("/customers/bulk-import", post(bulk_import))
        .route("/customers/{id}", get(detail).put(update).delete(remove))
        .route("/customers/{id}/vehicles", post(add_vehicle))
        .route("/vehicles/{id}", put(update_vehicle).delete(remove_vehicle))
}

fn id(raw: &str, what: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound(format!("{what} {raw} not found")))
}

/// The service interval the due dates of vehicles are computed with.
fn months(state: &AppState) -> u32 {
    state.config.service_interval_months
}

async fn one(state: &AppState, id: Uuid) -> AppResult<Customer> {
    repo::load(&mut *state.pool.acquire().await?, &[id])
        .await?
        .pop()
        .map(|c| c.with_due(months(state)))
        .ok_or_else(|| AppError::NotFound(format!("customer {id} not found")))
}

/// Create a customer (`salutation`, `language` optional), optionally with
/// `vehicles: [{no_pol, model, next_visit_date, last_visit_date}]`. Each vehicle is returned
/// with its `due_date` and `due_source`.
#[utoipa::path(post, path = "/customers", operation_id = "create_customer", tag = "customers",
    request_body = request::NewCustomer,
    responses((status = 201, description = "Created, with its vehicles", body = Envelope<Customer>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _: Caller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Customer>> {
    let input = request::customer(&body, true).map_err(AppError::Validation)?;
    let mut tx = state.pool.begin().await?;
    let ids = repo::insert_many(&mut tx, std::slice::from_ref(&input)).await?;
    tx.commit().await?;
    let customer = one(&state, ids[0]).await?;
    Ok(Reply(
        StatusCode::CREATED,
        customer,
        "Customer created".into(),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CustomerPage {
    items: Vec<Customer>,
    next_cursor: Option<Uuid>,
}

/// Customers with their vehicles, newest first; `limit` (≤ 500) and `cursor`.
#[utoipa::path(get, path = "/customers", operation_id = "list_customers", tag = "customers",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 50"),
        ("cursor" = Option<String>, Query, format = Uuid, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "A page of customers", body = Envelope<CustomerPage>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<CustomerPage>> {
    let mut errors = Vec::new();
    let (limit, before) = q.page(&mut errors);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let items: Vec<Customer> = repo::list(&state.pool, before, limit)
        .await?
        .into_iter()
        .map(|c| c.with_due(months(&state)))
        .collect();
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|c| c.id))
        .flatten();
    let n = items.len();
    Ok(Reply::ok(
        CustomerPage { items, next_cursor },
        format!("{n} customer(s)"),
    ))
}

/// One customer with its vehicles.
#[utoipa::path(get, path = "/customers/{id}", operation_id = "get_customer", tag = "customers",
    params(("id" = String, Path, format = Uuid, description = "the customer id")),
    responses((status = 200, description = "The customer", body = Envelope<Customer>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Customer>> {
    let customer = one(&state, id(&raw, "customer")?).await?;
    Ok(Reply::ok(customer, "Customer found"))
}

/// Change the given fields of a customer (`null` clears one).
#[utoipa::path(put, path = "/customers/{id}", operation_id = "update_customer", tag = "customers",
    params(("id" = String, Path, format = Uuid, description = "the customer id")),
    request_body = request::CustomerChanges,
    responses((status = 200, description = "The changed customer", body = Envelope<Customer>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, NotFound, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Customer>> {
    let id = id(&raw, "customer")?;
    let input = request::customer(&body, false).map_err(AppError::Validation)?;
    if !repo::update(&state.pool, id, &input).await? {
        return Err(AppError::NotFound(format!("customer {id} not found")));
    }
    Ok(Reply::ok(one(&state, id).await?, "Customer updated"))
}

/// What a delete answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Deleted {
    id: Uuid,
}

/// Delete a customer and its vehicles.
#[utoipa::path(delete, path = "/customers/{id}", operation_id = "delete_customer", tag = "customers",
    params(("id" = String, Path, format = Uuid, description = "the customer id")),
    responses((status = 200, description = "Deleted", body = Envelope<Deleted>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Deleted>> {
    let id = id(&raw, "customer")?;
    if !repo::delete(&state.pool, id).await? {
        return Err(AppError::NotFound(format!("customer {id} not found")));
    }
    Ok(Reply::ok(Deleted { id }, "Customer deleted"))
}

/// Add a vehicle to a customer.
#[utoipa::path(post, path = "/customers/{id}/vehicles", operation_id = "add_vehicle", tag = "customers",
    params(("id" = String, Path, format = Uuid, description = "the customer id")),
    request_body = request::VehicleFields,
    responses((status = 201, description = "Added", body = Envelope<Vehicle>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, NotFound, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn add_vehicle(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Vehicle>> {
    let customer_id = id(&raw, "customer")?;
    let input = request::vehicle(&body).map_err(AppError::Validation)?;
    let vehicle = repo::add_vehicle(&state.pool, customer_id, &input)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("customer {customer_id} not found")))?
        .with_due(months(&state));
    Ok(Reply(StatusCode::CREATED, vehicle, "Vehicle added".into()))
}

/// Change the given fields of a vehicle.
#[utoipa::path(put, path = "/vehicles/{id}", operation_id = "update_vehicle", tag = "customers",
    params(("id" = String, Path, format = Uuid, description = "the vehicle id")),
    request_body = request::VehicleFields,
    responses((status = 200, description = "The changed vehicle", body = Envelope<Vehicle>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, NotFound, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn update_vehicle(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Vehicle>> {
    let vehicle_id = id(&raw, "vehicle")?;
    let input = request::vehicle(&body).map_err(AppError::Validation)?;
    let vehicle = repo::update_vehicle(&state.pool, vehicle_id, &input)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("vehicle {vehicle_id} not found")))?
        .with_due(months(&state));
    Ok(Reply::ok(vehicle, "Vehicle updated"))
}

/// Delete a vehicle.
#[utoipa::path(delete, path = "/vehicles/{id}", operation_id = "delete_vehicle", tag = "customers",
    params(("id" = String, Path, format = Uuid, description = "the vehicle id")),
    responses((status = 200, description = "Deleted", body = Envelope<Deleted>),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn remove_vehicle(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
) -> AppResult<Reply<Deleted>> {
    let vehicle_id = id(&raw, "vehicle")?;
    if !repo::delete_vehicle(&state.pool, vehicle_id).await? {
        return Err(AppError::NotFound(format!(
            "vehicle {vehicle_id} not found"
        )));
    }
    Ok(Reply::ok(Deleted { id: vehicle_id }, "Vehicle deleted"))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = CustomerImportFailure)]
pub struct ImportFailure {
    index: usize,
    errors: Vec<FieldError>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = CustomerImportResult)]
pub struct ImportResult {
    total: usize,
    imported: usize,
    failed: usize,
    ids: Vec<Uuid>,
    failures: Vec<ImportFailure>,
}

pub const MAX_IMPORT: usize = 10_000;

/// `{"customers": [...]}`: valid items are imported (in one transaction), each invalid one (a NUL
/// character included) is reported with its index and errors.
#[utoipa::path(post, path = "/customers/bulk-import", operation_id = "import_customers", tag = "customers",
    request_body = request::CustomerImport,
    responses((status = 200, description = "What was imported and what was not (per item)", body = Envelope<ImportResult>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn bulk_import(
    State(state): State<AppState>,
    _: Caller,
    BulkJson(body): BulkJson,
) -> AppResult<Reply<ImportResult>> {
    let Value::Object(body) = body else {
        return Err(AppError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    };
    let Some(Value::Array(items)) = body.get("customers") else {
        return Err(AppError::validation(
            "customers",
            "must be an array of customers",
        ));
    };
    if items.len() > MAX_IMPORT {
        return Err(AppError::validation(
            "customers",
            format!("at most {MAX_IMPORT} per request"),
        ));
    }
    let mut valid = Vec::new();
    let mut failures = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let parsed = match item {
            Value::Object(map) => request::customer(map, true),
            _ => Err(vec![FieldError::new("customer", "must be an object")]),
        };
        match parsed {
            Ok(c) => valid.push(c),
            Err(errors) => failures.push(ImportFailure { index, errors }),
        }
    }
    let mut tx = state.pool.begin().await?;
    let ids = repo::insert_many(&mut tx, &valid).await?;
    tx.commit().await?;
    let result = ImportResult {
        total: items.len(),
        imported: ids.len(),
        failed: failures.len(),
        ids,
        failures,
    };
    let message = format!("{} imported, {} failed", result.imported, result.failed);
    Ok(Reply::ok(result, message))
}
