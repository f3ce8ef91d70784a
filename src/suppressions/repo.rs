//! SQL for `suppressions` and its history `suppression_changes`. Adding an entry cancels the
//! number's unsent messages in scope in the same transaction
//! (`messages::withdraw::cancel_for_recipient`); every change is recorded with who made it and when
//! in the same transaction as the change. The API's changes ([`add`], [`remove`]) and a
//! customer's keywords ([`opt_out_by_keyword`], [`lift_keyword_opt_out`]) share that path.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Scope, Source, Suppression, count_optout};
use crate::{
    messages::{Kind, read, withdraw},
    webhooks::{EventType, outbox},
};

/// The columns of a [`Suppression`], as a literal so that statements stay `&'static str`.
macro_rules! columns {
    () => {
        "phone, scope, reason, created_by, created_at, updated_by, updated_at, source"
    };
}

/// What [`add`] did.
pub enum AddOutcome {
    Added(Added),
    /// The number is opted out of everything and the caller may not narrow that to reminders
    /// only: nothing changed.
    NarrowingRefused,
}

/// What [`add`] stored.
pub struct Added {
    pub entry: Suppression,
    /// The number was not on the list before.
    pub created: bool,
    /// How many unsent messages it cancelled, per kind.
    pub cancelled: BTreeMap<&'static str, u64>,
}

impl Added {
    pub fn cancelled_total(&self) -> u64 {
        self.cancelled.values().sum()
    }

    /// Counts the messages it cancelled (`bengkel_messages_suppressed_total`), once committed.
    pub fn count(&self) {
        for (kind, n) in &self.cancelled {
            metrics::counter!("bengkel_messages_suppressed_total", "kind" => *kind).increment(*n);
        }
    }
}

/// Puts `phone` on the list with `scope` and `reason` (replacing both if it is there, unless
/// that narrows scope `all` to `reminders` and `may_narrow` is false), and cancels its unsent
/// messages in scope, their jobs and reminder rows, in one transaction with the change's record.
/// The entry is the API's from then on (`source` `api`), also one a keyword had made.
pub async fn add(
    pool: &PgPool,
    phone: &str,
    scope: Scope,
    reason: Option<&str>,
    by: &str,
    may_narrow: bool,
) -> sqlx::Result<AddOutcome> {
    let mut tx = pool.begin().await?;
    // `xmax = 0`: the row was inserted, not updated. No row: the update was refused (the
    // check sits in the statement, so a concurrent change cannot slip between check and write).
    // `widened`: the number is opted out of more than before (new, or reminders → all).
    let row: Option<SuppressionRow> = sqlx::query_as(concat!(
        "WITH old AS (SELECT scope FROM suppressions WHERE phone = $1 FOR UPDATE)
         INSERT INTO suppressions (phone, scope, reason, created_by, updated_by, source)
         VALUES ($1, $2, $3, $4, $4, 'api')
         ON CONFLICT (phone) DO UPDATE SET
             scope = excluded.scope, reason = excluded.reason,
             updated_by = excluded.updated_by, updated_at = now(), source = 'api'
         WHERE $5 OR NOT (suppressions.scope = 'all' AND excluded.scope = 'reminders')
         RETURNING ",
        columns!(),
        ", (xmax = 0) AS created,
           CASE WHEN EXISTS (SELECT 1 FROM old) THEN (SELECT scope FROM old) = 'reminders' AND $2 = 'all'
                ELSE true END AS widened"
    ))
    .bind(phone)
    .bind(scope)
    .bind(reason)
    .bind(by)
    .bind(may_narrow)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(SuppressionRow {
        entry,
        created,
        widened,
    }) = row
    else {
        return Ok(AddOutcome::NarrowingRefused);
    };
    let added = recorded(&mut tx, entry, created, by).await?;
    tx.commit().await?;
    added.count();
    if widened {
        count_optout(Source::Api);
    }
    Ok(AddOutcome::Added(added))
}

/// Records an entry just added or changed by `by` and cancels the number's unsent messages in
/// its scope, on the caller's transaction.
async fn recorded(
    conn: &mut sqlx::PgConnection,
    entry: Suppression,
    created: bool,
    by: &str,
) -> sqlx::Result<Added> {
    let action = if created { "added" } else { "changed" };
    record(&mut *conn, &entry, action, by).await?;
    let kinds = withdraw::cancel_for_recipient(conn, &entry.phone, entry.scope).await?;
    let mut cancelled = BTreeMap::new();
    for kind in kinds {
        *cancelled.entry(kind.as_str()).or_insert(0) += 1;
    }
    Ok(Added {
        entry,
        created,
        cancelled,
    })
}

/// What a keyword opt-out did.
pub enum KeywordOptOut {
    /// The number was put on the list (`created`), or its `reminders` entry widened to `all`
    /// (an operator's entry stays the operator's: its source and reason are kept).
    Opted(Added),
    /// It was opted out of everything already: nothing changed. Whose entry it is.
    Already(Source),
}

/// A customer's opt-out keyword, on the caller's transaction: `phone` is opted out of every
/// message (`scope` `all`, `reason` `keyword`, `source` `inbound`) — its unsent messages
/// cancelled, the change recorded by [`BY`](crate::inbound::BY), `optout.created` emitted — as
/// [`add`] does. An entry already there is not replaced: one of scope `reminders` is widened to
/// `all`, one of scope `all` is left as it is. Nothing is counted: the caller counts
/// ([`Added::count`], [`count_optout`]) once it committed.
pub async fn opt_out_by_keyword(
    conn: &mut sqlx::PgConnection,
    phone: &str,
) -> sqlx::Result<KeywordOptOut> {
    let by = crate::inbound::BY;
    let row: Option<SuppressionRow> = sqlx::query_as(concat!(
        "INSERT INTO suppressions (phone, scope, reason, created_by, updated_by, source)
         VALUES ($1, 'all', 'keyword', $2, $2, 'inbound')
         ON CONFLICT (phone) DO UPDATE SET
             scope = 'all', updated_by = excluded.updated_by, updated_at = now()
         WHERE suppressions.scope <> 'all'
         RETURNING ",
        columns!(),
        ", (xmax = 0) AS created, true AS widened"
    ))
    .bind(phone)
    .bind(by)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(KeywordOptOut::Opted(
            recorded(conn, row.entry, row.created, by).await?,
        )),
        None => {
            let source: Source =
                sqlx::query_scalar("SELECT source FROM suppressions WHERE phone = $1")
                    .bind(phone)
                    .fetch_one(&mut *conn)
                    .await?;
            Ok(KeywordOptOut::Already(source))
        }
    }
}

/// A customer's opt-in keyword, on the caller's transaction: `phone`'s entry is removed when a
/// keyword made it (`source` `inbound`; an operator's stays), recorded by
/// [`BY`](crate::inbound::BY), with `optout.removed`. Returns the entry removed.
pub async fn lift_keyword_opt_out(
    conn: &mut sqlx::PgConnection,
    phone: &str,
) -> sqlx::Result<Option<Suppression>> {
    let removed: Option<Suppression> = sqlx::query_as(concat!(
        "DELETE FROM suppressions WHERE phone = $1 AND source = 'inbound' RETURNING ",
        columns!()
    ))
    .bind(phone)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(entry) = &removed {
        record(conn, entry, "removed", crate::inbound::BY).await?;
    }
    Ok(removed)
}

/// Notes a change of `entry` (as it is after it; as it was, for `removed`) by `by`.
async fn record(
    tx: &mut sqlx::PgConnection,
    entry: &Suppression,
    action: &str,
    by: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO suppression_changes (phone, action, scope, reason, changed_by)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&entry.phone)
    .bind(action)
    .bind(entry.scope)
    .bind(&entry.reason)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    // `optout.created` for an entry added or changed, `optout.removed`; same transaction.
    let kind = if action == "removed" {
        EventType::OptoutRemoved
    } else {
        EventType::OptoutCreated
    };
    let event = outbox::Event {
        kind,
        message_id: None,
        data: outbox::without_message(serde_json::json!({
            "phone": entry.phone,
            "scope": entry.scope,
            "source": entry.source,
        })),
    };
    outbox::emit(tx, &[event]).await?;
    Ok(())
}

/// One recorded change of an entry.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = SuppressionChange)]
pub struct Change {
    /// `added`, `changed` or `removed`.
    pub action: String,
    /// The scope after the change (before it, for `removed`).
    pub scope: Scope,
    pub reason: Option<String>,
    /// The `sub` of the token that made it.
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
}

/// The changes of `phone`, oldest first.
pub async fn changes(pool: &PgPool, phone: &str) -> sqlx::Result<Vec<Change>> {
    sqlx::query_as(
        "SELECT action, scope, reason, changed_by, changed_at FROM suppression_changes
         WHERE phone = $1 ORDER BY changed_at, id",
    )
    .bind(phone)
    .fetch_all(pool)
    .await
}

#[derive(sqlx::FromRow)]
struct SuppressionRow {
    #[sqlx(flatten)]
    entry: Suppression,
    created: bool,
    widened: bool,
}

/// Waits until no message to `phone` that `scope` blocks is being sent (a run that claimed it
/// before the opt-out finishes its gateway call), polling every 50 ms for at most `within`.
/// Returns whether none is left.
pub async fn wait_in_flight(
    pool: &PgPool,
    phone: &str,
    scope: Scope,
    within: Duration,
) -> sqlx::Result<bool> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if read::in_flight_to(pool, phone, scope).await? == 0 {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where a page of [`list`] starts: after this entry (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub phone: String,
}

impl Cursor {
    /// `{created_at as unix microseconds}-{phone}`.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.created_at.timestamp_micros(), self.phone)
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let (micros, phone) = raw.split_once('-')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        let phone_ok =
            !phone.is_empty() && phone.len() <= 15 && phone.bytes().all(|b| b.is_ascii_digit());
        phone_ok.then(|| Self {
            created_at,
            phone: phone.to_owned(),
        })
    }
}

/// Newest first (`created_at`, then phone); `phone` (normalized) filters to that number.
pub async fn list(
    pool: &PgPool,
    phone: Option<&str>,
    after: Option<&Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<Suppression>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM suppressions
         WHERE ($1::text IS NULL OR phone = $1)
           AND ($2::timestamptz IS NULL OR (created_at, phone) < ($2, $3::text))
         ORDER BY created_at DESC, phone DESC LIMIT $4"
    ))
    .bind(phone)
    .bind(after.map(|c| c.created_at))
    .bind(after.map(|c| c.phone.as_str()))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Takes `phone` off the list (by `by`, recorded); the entry removed, if there was one.
/// Messages cancelled when it was added stay cancelled.
pub async fn remove(pool: &PgPool, phone: &str, by: &str) -> sqlx::Result<Option<Suppression>> {
    let mut tx = pool.begin().await?;
    let removed: Option<Suppression> = sqlx::query_as(concat!(
        "DELETE FROM suppressions WHERE phone = $1 RETURNING ",
        columns!()
    ))
    .bind(phone)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(entry) = &removed {
        record(&mut tx, entry, "removed", by).await?;
    }
    tx.commit().await?;
    Ok(removed)
}

/// The numbers among `phones` that have opted out of `kind`'s messages: one statement for a
/// whole page of a reminder pass.
pub async fn blocked_among(
    pool: &PgPool,
    phones: &[&str],
    kind: Kind,
) -> sqlx::Result<std::collections::HashSet<String>> {
    if phones.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<String> = sqlx::query_scalar(concat!(
        "SELECT phone FROM suppressions
         WHERE phone = ANY($1) AND (scope = 'all' OR $2::text IN ",
        crate::reminder_kinds!(),
        ")"
    ))
    .bind(phones)
    .bind(kind)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            phone: "628123456789".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in [
            "",
            "x-628123456789",
            "123",
            "123-",
            "123-62812abc",
            "99999999999999999999-628",
            "123-6281234567890123",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
