//! SQL for `manual_whatsapp`: small functions over a pool or connection.

use std::collections::HashSet;

use chrono::NaiveDate;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{COLUMNS, Input, Record};

pub async fn find(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Record>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM manual_whatsapp WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Number plates compare without case (`B 1 X` = `b 1 x`), as the unique index does.
pub async fn find_by_nopol(pool: &PgPool, nopol: &str) -> sqlx::Result<Option<Record>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM manual_whatsapp WHERE upper(nopol) = upper($1)"
    )))
    .bind(nopol)
    .fetch_optional(pool)
    .await
}

/// Inserts validated creates in one statement; returns the ids of those inserted (a nopol that
/// exists is skipped) in input order, `None` where skipped.
pub async fn insert(conn: &mut PgConnection, items: &[Input]) -> sqlx::Result<Vec<Option<Uuid>>> {
    let ids: Vec<Uuid> = items.iter().map(|_| Uuid::now_v7()).collect();
    let names: Vec<Option<&str>> = items.iter().map(|i| i.customer_name.as_deref()).collect();
    let nopols: Vec<Option<&str>> = items.iter().map(|i| i.nopol.as_deref()).collect();
    let phones: Vec<Option<&str>> = items
        .iter()
        .map(|i| i.no_hp.as_ref().map(|p| p.as_str()))
        .collect();
    let last: Vec<Option<NaiveDate>> = items.iter().map(|i| i.last_service.flatten()).collect();
    let next: Vec<Option<NaiveDate>> = items.iter().map(|i| i.next_service.flatten()).collect();
    let active: Vec<i32> = items.iter().map(|i| i.is_active.unwrap_or(1)).collect();
    let notes: Vec<Option<&str>> = items
        .iter()
        .map(|i| i.notes.as_ref().and_then(|n| n.as_deref()))
        .collect();
    let salutations: Vec<Option<&str>> = items
        .iter()
        .map(|i| i.salutation.as_ref().and_then(|s| s.as_deref()))
        .collect();
    let languages: Vec<&str> = items
        .iter()
        .map(|i| i.language.unwrap_or_default().as_str())
        .collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO manual_whatsapp (id, customer_name, nopol, no_hp, last_service, next_service, is_active, notes,
                                      salutation, language)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::date[], $6::date[], $7::int[], $8::text[],
                              $9::text[], $10::text[])
         ON CONFLICT ((upper(nopol))) DO NOTHING
         RETURNING id",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&nopols)
    .bind(&phones)
    .bind(&last)
    .bind(&next)
    .bind(&active)
    .bind(&notes)
    .bind(&salutations)
    .bind(&languages)
    .fetch_all(conn)
    .await?;
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    Ok(ids
        .into_iter()
        .map(|id| inserted.contains(&id).then_some(id))
        .collect())
}

/// (total, active).
pub async fn counts(pool: &PgPool) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE is_active = 1) FROM manual_whatsapp")
        .fetch_one(pool)
        .await
}

/// Newest first.
pub async fn list(
    pool: &PgPool,
    active_only: bool,
    limit: i64,
    offset: i64,
) -> sqlx::Result<Vec<Record>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM manual_whatsapp WHERE NOT $1 OR is_active = 1
         ORDER BY id DESC LIMIT $2 OFFSET $3"
    )))
    .bind(active_only)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}

/// Changes the fields `p` sets; false when there is no such record.
pub async fn update(pool: &PgPool, id: Uuid, p: &Input) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE manual_whatsapp SET
            customer_name = coalesce($2, customer_name),
            nopol = coalesce($3, nopol),
            no_hp = coalesce($4, no_hp),
            last_service = CASE WHEN $5 THEN $6 ELSE last_service END,
            next_service = CASE WHEN $7 THEN $8 ELSE next_service END,
            is_active = coalesce($9, is_active),
            notes = CASE WHEN $10 THEN $11 ELSE notes END,
            salutation = CASE WHEN $12 THEN $13 ELSE salutation END,
            language = coalesce($14, language),
            updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(&p.customer_name)
    .bind(&p.nopol)
    .bind(p.no_hp.as_ref().map(|h| h.as_str()))
    .bind(p.last_service.is_some())
    .bind(p.last_service.flatten())
    .bind(p.next_service.is_some())
    .bind(p.next_service.flatten())
    .bind(p.is_active)
    .bind(p.notes.is_some())
    .bind(p.notes.clone().flatten())
    .bind(p.salutation.is_some())
    .bind(p.salutation.clone().flatten())
    .bind(p.language.map(|l| l.as_str()))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn toggle_active(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE manual_whatsapp SET is_active = 1 - is_active, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Its reminder log goes with it (cascade); its messages stay.
pub async fn delete(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM manual_whatsapp WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// (total, active, reminders delivered, active records due in `[today, end)`).
pub async fn stats(
    pool: &PgPool,
    today: NaiveDate,
    end: NaiveDate,
) -> sqlx::Result<(i64, i64, i64, i64)> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE is_active = 1),
                coalesce(sum(reminder_sent_count), 0)::bigint,
                count(*) FILTER (WHERE is_active = 1 AND next_service >= $1 AND next_service < $2)
         FROM manual_whatsapp",
    )
    .bind(today)
    .bind(end)
    .fetch_one(pool)
    .await
}

/// Moves the manual reminders of `changes` to their message's status (see
/// `reminders::log::follow`); a delivery bumps the record's `reminder_sent_count` and
/// `last_reminder_sent`, once (an expired reminder bumps nothing). Changes of other messages do
/// nothing.
pub async fn follow(
    conn: &mut PgConnection,
    changes: &[crate::messages::Change],
) -> sqlx::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let (ids, statuses, errors) = crate::messages::change_columns(changes);
    sqlx::query(concat!(
        crate::follow_cte!(
            "manual_reminders",
            "manual_reminders.manual_id, manual_reminders.status"
        ),
        "UPDATE manual_whatsapp SET
             reminder_sent_count = reminder_sent_count + d.n,
             last_reminder_sent = now()
         FROM (SELECT manual_id, count(*) AS n FROM r WHERE status = 'sent' GROUP BY manual_id) d
         WHERE manual_whatsapp.id = d.manual_id",
    ))
    .bind(&ids)
    .bind(&statuses)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}
