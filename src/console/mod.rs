//! The workshop's console (README "Console"): what the ops page shows beside the queue views.
//! [`today`] is today's reminder run and its reminders, [`lookup`] finds a customer, a manual
//! record or a number and its conversation; [`routes`] is the HTTP surface (role `ops`). Both
//! only read: every change the page makes goes through the existing endpoints (suppressions,
//! requeue, cancel).

pub mod lookup;
pub mod routes;
pub mod today;

/// A read-only transaction whose statements all see one snapshot (`REPEATABLE READ`): the
/// several reads of one answer agree with each other while sends and receipts go on.
pub async fn snapshot(
    pool: &sqlx::PgPool,
) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}
