//! The reminder log follows its message: the one place that moves `reminders` rows after the
//! fan-out created them, called in the transaction that moves the messages.

use sqlx::PgConnection;

use crate::messages::Change;

/// Moves the reminders of `changes` to their message's status: `sent` (with `sent_at`, and the
/// `whatsapp_report` frequency of that customer and vehicle counted once), `failed` or `expired`
/// (with the reason; neither is counted in the report), `cancelled`, or `queued` again
/// (requeue). Changes of other messages do nothing.
pub async fn follow(conn: &mut PgConnection, changes: &[Change]) -> sqlx::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let (ids, statuses, errors) = crate::messages::change_columns(changes);
    sqlx::query(concat!(
        crate::follow_cte!(
            "reminders",
            "reminders.customer_id, reminders.vehicle_id, reminders.status"
        ),
        "INSERT INTO whatsapp_report (id_customer, id_vehicle, last_message_date, frequency)
         SELECT r.customer_id, r.vehicle_id, now(), count(*)
         FROM r
         -- a vehicle or customer deleted since the fan-out has no report row to keep
         JOIN vehicles v ON v.id = r.vehicle_id
         JOIN customers cu ON cu.id = r.customer_id
         WHERE r.status = 'sent'
         GROUP BY r.customer_id, r.vehicle_id
         ON CONFLICT (id_customer, id_vehicle) DO UPDATE SET
             frequency = whatsapp_report.frequency + excluded.frequency,
             last_message_date = excluded.last_message_date,
             updated_at = now()",
    ))
    .bind(&ids)
    .bind(&statuses)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}
