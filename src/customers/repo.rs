//! SQL for customers and vehicles.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    Customer, Vehicle,
    request::{CustomerInput, Patch, VehicleInput},
};

const CUSTOMER: &str = "id, nama, hp, alamat, email, salutation, language, created_at, updated_at";

fn keep<T>(p: &Patch<T>) -> bool {
    matches!(p, Patch::Keep)
}

fn value<T: Clone>(p: &Patch<T>) -> Option<T> {
    match p {
        Patch::Set(v) => v.clone(),
        Patch::Keep => None,
    }
}

/// Inserts customers with their vehicles set-wise on the caller's transaction.
pub async fn insert_many(
    conn: &mut PgConnection,
    customers: &[CustomerInput],
) -> sqlx::Result<Vec<Uuid>> {
    let ids: Vec<Uuid> = customers.iter().map(|_| Uuid::now_v7()).collect();
    let (mut nama, mut hp, mut alamat, mut email, mut salutation, mut language) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut v_ids, mut v_customer, mut v_no_pol, mut v_model, mut v_next, mut v_last) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (c, id) in customers.iter().zip(&ids) {
        nama.push(value(&c.nama));
        hp.push(value(&c.hp));
        alamat.push(value(&c.alamat));
        email.push(value(&c.email));
        salutation.push(value(&c.salutation));
        language.push(c.language.unwrap_or_default().as_str());
        for v in &c.vehicles {
            v_ids.push(Uuid::now_v7());
            v_customer.push(*id);
            v_no_pol.push(value(&v.no_pol));
            v_model.push(value(&v.model));
            v_next.push(value(&v.next_visit_date));
            v_last.push(value(&v.last_visit_date));
        }
    }
    sqlx::query(
        "INSERT INTO customers (id, nama, hp, alamat, email, salutation, language)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[])",
    )
    .bind(&ids)
    .bind(&nama)
    .bind(&hp)
    .bind(&alamat)
    .bind(&email)
    .bind(&salutation)
    .bind(&language)
    .execute(&mut *conn)
    .await?;
    if !v_ids.is_empty() {
        sqlx::query(
            "INSERT INTO vehicles (id, customer_id, no_pol, model, next_visit_date, last_visit_date)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::date[],
                                  $6::date[])",
        )
        .bind(&v_ids)
        .bind(&v_customer)
        .bind(&v_no_pol)
        .bind(&v_model)
        .bind(&v_next)
        .bind(&v_last)
        .execute(&mut *conn)
        .await?;
    }
    Ok(ids)
}

/// Customers by id, each with its vehicles, in the order of `ids` (vehicles without their due
/// date: [`Customer::with_due`] fills it).
pub async fn load(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Customer>> {
    let mut customers: Vec<Customer> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CUSTOMER} FROM customers WHERE id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let vehicles: Vec<Vehicle> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {VEHICLE} FROM vehicles WHERE customer_id = ANY($1) ORDER BY id"
    )))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    for v in vehicles {
        if let Some(c) = customers.iter_mut().find(|c| c.id == v.customer_id) {
            c.vehicles.push(v);
        }
    }
    customers.sort_by_key(|c| ids.iter().position(|id| *id == c.id));
    Ok(customers)
}

/// A page of customers, newest first (ids are UUIDv7), with their vehicles.
pub async fn list(pool: &PgPool, before: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<Customer>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM customers WHERE ($1::uuid IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    load(&mut *pool.acquire().await?, &ids).await
}

/// Applies the given fields; false when there is no such customer.
pub async fn update(pool: &PgPool, id: Uuid, c: &CustomerInput) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE customers SET
            nama = CASE WHEN $2 THEN nama ELSE $3 END,
            hp = CASE WHEN $4 THEN hp ELSE $5 END,
            alamat = CASE WHEN $6 THEN alamat ELSE $7 END,
            email = CASE WHEN $8 THEN email ELSE $9 END,
            salutation = CASE WHEN $10 THEN salutation ELSE $11 END,
            language = coalesce($12, language),
            updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(keep(&c.nama))
    .bind(value(&c.nama))
    .bind(keep(&c.hp))
    .bind(value(&c.hp))
    .bind(keep(&c.alamat))
    .bind(value(&c.alamat))
    .bind(keep(&c.email))
    .bind(value(&c.email))
    .bind(keep(&c.salutation))
    .bind(value(&c.salutation))
    .bind(c.language.map(|l| l.as_str()))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM customers WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

const VEHICLE: &str =
    "id, customer_id, no_pol, model, next_visit_date, last_visit_date, created_at, updated_at";

/// A new vehicle of `customer_id`; `None` when there is no such customer.
pub async fn add_vehicle(
    pool: &PgPool,
    customer_id: Uuid,
    v: &VehicleInput,
) -> sqlx::Result<Option<Vehicle>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO vehicles (id, customer_id, no_pol, model, next_visit_date, last_visit_date)
         SELECT $1, id, $3, $4, $5, $6 FROM customers WHERE id = $2
         RETURNING {VEHICLE}"
    )))
    .bind(Uuid::now_v7())
    .bind(customer_id)
    .bind(value(&v.no_pol))
    .bind(value(&v.model))
    .bind(value(&v.next_visit_date))
    .bind(value(&v.last_visit_date))
    .fetch_optional(pool)
    .await
}

pub async fn update_vehicle(
    pool: &PgPool,
    id: Uuid,
    v: &VehicleInput,
) -> sqlx::Result<Option<Vehicle>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE vehicles SET
            no_pol = CASE WHEN $2 THEN no_pol ELSE $3 END,
            model = CASE WHEN $4 THEN model ELSE $5 END,
            next_visit_date = CASE WHEN $6 THEN next_visit_date ELSE $7 END,
            last_visit_date = CASE WHEN $8 THEN last_visit_date ELSE $9 END,
            updated_at = now()
         WHERE id = $1 RETURNING {VEHICLE}"
    )))
    .bind(id)
    .bind(keep(&v.no_pol))
    .bind(value(&v.no_pol))
    .bind(keep(&v.model))
    .bind(value(&v.model))
    .bind(keep(&v.next_visit_date))
    .bind(value(&v.next_visit_date))
    .bind(keep(&v.last_visit_date))
    .bind(value(&v.last_visit_date))
    .fetch_optional(pool)
    .await
}

pub async fn delete_vehicle(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM vehicles WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}
