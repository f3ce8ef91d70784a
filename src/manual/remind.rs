//! Reminders for manual records, through the send pipeline (kind `manual`): keyed
//! `(manual_id, reminder_date)` under a unique index, so `send-reminders` run twice — or
//! concurrently — queues each record once a day; `{id}/send-reminder?force=true` adds another.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::reminder_text;
use crate::{
    messages::{Kind, phone::PhoneNumber, repo, request::NewMessage},
    reminders::fanout::{MAX_DETAILS, PAGE, final_outcomes, wait_settled},
    suppressions,
};

#[derive(Debug, Clone)]
pub struct Pass {
    pub date: NaiveDate,
    pub threshold_days: u32,
    pub only_active: bool,
    pub service_phone: String,
    pub max_attempts: u32,
    /// The reminders' deadline: the end of `date` in the workshop's time zone
    /// (`reminders::end_of_business_day`).
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: Uuid,
    pub customer_name: String,
    pub nopol: String,
    pub no_hp: String,
    pub next_service: NaiveDate,
}

/// One record of a `send-reminders` answer (seed names).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ManualReminderDetail)]
pub struct Detail {
    pub id: Uuid,
    pub customer_name: String,
    pub nopol: String,
    pub next_service: NaiveDate,
    pub days_until_service: i64,
    /// `queued`, `already_queued`, `skipped` (with `reason` `opted out`: the number is on the
    /// opt-out list); after `wait_seconds` also `sent` / `failed` / `expired`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub message_id: Option<Uuid>,
    pub message: String,
}

/// The answer of `send-reminders`: the seed's `total_records`, `reminder_sent`,
/// `reminder_failed` and `details`, plus the queue's view. `eligible` records have
/// `0 <= next_service - today < days_threshold`; `skipped` are the other records considered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ManualReminderSummary)]
pub struct Summary {
    pub date: NaiveDate,
    pub total_records: i64,
    pub eligible: i64,
    pub reminder_queued: i64,
    pub already_queued: i64,
    pub skipped: i64,
    /// Of today's manual reminders: delivered / failed so far.
    pub reminder_sent: i64,
    pub reminder_failed: i64,
    pub details: Vec<Detail>,
    pub details_truncated: bool,
}

/// Today's manual reminders whose message is still on its way.
const OPEN: &str = "SELECT count(*) FROM manual_reminders r JOIN messages m ON m.id = r.message_id
     WHERE r.reminder_date = $1 AND m.status IN ('queued', 'sending', 'retrying')";

fn message(c: &Candidate, service_phone: &str, expires_at: DateTime<Utc>) -> Option<NewMessage> {
    // Stored numbers are normalized; one that no longer parses is not sent.
    let to = PhoneNumber::parse(&c.no_hp).ok()?;
    let body = reminder_text(&c.customer_name, &c.nopol, c.next_service, service_phone);
    let mut message = NewMessage::internal(Kind::Manual, to, body, None);
    message.expires_at = Some(expires_at);
    Some(message)
}

/// Inserts reminder rows (+ their messages and jobs) for `rows`; returns the message ids of
/// the rows that were new. `forced` rows are never in conflict.
async fn queue(
    conn: &mut PgConnection,
    date: NaiveDate,
    rows: &[(Uuid, NewMessage, Uuid)],
    forced: bool,
    max_attempts: u32,
) -> sqlx::Result<HashSet<Uuid>> {
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
    let manual_ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let message_ids: Vec<Uuid> = rows.iter().map(|r| r.2).collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO manual_reminders (id, manual_id, reminder_date, forced, message_id)
         SELECT r.id, r.manual_id, $3, $4, r.message_id
         FROM unnest($1::uuid[], $2::uuid[], $5::uuid[]) AS r(id, manual_id, message_id)
         ON CONFLICT (manual_id, reminder_date) WHERE NOT forced DO NOTHING
         RETURNING message_id",
    )
    .bind(&ids)
    .bind(&manual_ids)
    .bind(date)
    .bind(forced)
    .bind(&message_ids)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: HashSet<Uuid> = inserted.into_iter().collect();
    let (new_ids, new_messages): (Vec<Uuid>, Vec<NewMessage>) = rows
        .iter()
        .filter(|r| inserted.contains(&r.2))
        .map(|(_, m, id)| (*id, m.clone()))
        .unzip();
    if !new_ids.is_empty() {
        repo::store_batch_with_ids(conn, &new_ids, &new_messages, "manual", max_attempts).await?;
    }
    Ok(inserted)
}

/// The message of the (unforced) reminder a record already has for `date`.
async fn existing(
    pool: &PgPool,
    date: NaiveDate,
    manual_ids: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, Uuid>> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT manual_id, message_id FROM manual_reminders
         WHERE reminder_date = $1 AND manual_id = ANY($2) AND NOT forced",
    )
    .bind(date)
    .bind(manual_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// `send-reminders`: every record in the window, a page per transaction.
pub async fn run(pool: &PgPool, pass: &Pass) -> sqlx::Result<Summary> {
    let total_records: i64 =
        sqlx::query_scalar("SELECT count(*) FROM manual_whatsapp WHERE NOT $1 OR is_active = 1")
            .bind(pass.only_active)
            .fetch_one(pool)
            .await?;
    let end = pass.date + chrono::Days::new(u64::from(pass.threshold_days));
    let mut s = Summary {
        date: pass.date,
        total_records,
        eligible: 0,
        reminder_queued: 0,
        already_queued: 0,
        skipped: 0,
        reminder_sent: 0,
        reminder_failed: 0,
        details: Vec::new(),
        details_truncated: false,
    };
    let mut cursor = (pass.date, Uuid::nil());
    loop {
        let page: Vec<Candidate> = sqlx::query_as(
            "SELECT id, customer_name, nopol, no_hp, next_service FROM manual_whatsapp
             WHERE next_service >= $1 AND next_service < $2 AND (NOT $3 OR is_active = 1)
               AND (next_service, id) > ($4, $5)
             ORDER BY next_service, id LIMIT $6",
        )
        .bind(pass.date)
        .bind(end)
        .bind(pass.only_active)
        .bind(cursor.0)
        .bind(cursor.1)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        let Some(last) = page.last() else { break };
        cursor = (last.next_service, last.id);
        let full = page.len() as i64 == PAGE;
        let built: Vec<(Uuid, NewMessage)> = page
            .iter()
            .filter_map(|c| Some((c.id, message(c, &pass.service_phone, pass.expires_at)?)))
            .collect();
        // Numbers on the opt-out list (README "Opt-out"): one query for the page.
        let phones: Vec<&str> = built.iter().map(|(_, m)| m.to.as_str()).collect();
        let blocked = suppressions::repo::blocked_among(pool, &phones, Kind::Manual).await?;
        let (opted_out, rows): (Vec<_>, Vec<_>) = built
            .into_iter()
            .map(|(id, m)| (id, m, Uuid::now_v7()))
            .partition(|(_, m, _)| blocked.contains(m.to.as_str()));
        let opted_out: HashMap<Uuid, String> = opted_out
            .into_iter()
            .map(|(id, m, _)| (id, m.body))
            .collect();
        let mut tx = pool.begin().await?;
        let inserted = queue(&mut tx, pass.date, &rows, false, pass.max_attempts).await?;
        tx.commit().await?;
        let others: Vec<Uuid> = rows
            .iter()
            .filter(|r| !inserted.contains(&r.2))
            .map(|r| r.0)
            .collect();
        let earlier = if others.is_empty() || s.details.len() >= MAX_DETAILS {
            HashMap::new()
        } else {
            existing(pool, pass.date, &others).await?
        };
        let by_record: HashMap<Uuid, &(Uuid, NewMessage, Uuid)> =
            rows.iter().map(|r| (r.0, r)).collect();
        for c in &page {
            s.eligible += 1;
            let Some((_, m, message_id)) = by_record.get(&c.id).copied() else {
                s.skipped += 1;
                if let Some(body) = opted_out.get(&c.id) {
                    if s.details.len() < MAX_DETAILS {
                        s.details.push(Detail {
                            id: c.id,
                            customer_name: c.customer_name.clone(),
                            nopol: c.nopol.clone(),
                            next_service: c.next_service,
                            days_until_service: (c.next_service - pass.date).num_days(),
                            status: "skipped".into(),
                            reason: Some(suppressions::OPTED_OUT.into()),
                            message_id: None,
                            message: body.clone(),
                        });
                    } else {
                        s.details_truncated = true;
                    }
                }
                continue;
            };
            let (status, message_id) = if inserted.contains(message_id) {
                s.reminder_queued += 1;
                ("queued", Some(*message_id))
            } else {
                s.already_queued += 1;
                ("already_queued", earlier.get(&c.id).copied())
            };
            if s.details.len() < MAX_DETAILS {
                s.details.push(Detail {
                    id: c.id,
                    customer_name: c.customer_name.clone(),
                    nopol: c.nopol.clone(),
                    next_service: c.next_service,
                    days_until_service: (c.next_service - pass.date).num_days(),
                    status: status.into(),
                    reason: None,
                    message_id,
                    message: m.body.clone(),
                });
            } else {
                s.details_truncated = true;
            }
        }
        if !full {
            break;
        }
    }
    s.skipped += total_records - s.eligible.min(total_records);
    counts(pool, &mut s).await?;
    Ok(s)
}

async fn counts(pool: &PgPool, s: &mut Summary) -> sqlx::Result<()> {
    let (sent, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'failed')
         FROM manual_reminders WHERE reminder_date = $1",
    )
    .bind(s.date)
    .fetch_one(pool)
    .await?;
    (s.reminder_sent, s.reminder_failed) = (sent, failed);
    Ok(())
}

/// `wait_seconds`: waits for today's manual reminders, then reports each listed record.
pub async fn wait(pool: &PgPool, s: &mut Summary, wait: std::time::Duration) -> sqlx::Result<()> {
    wait_settled(pool, OPEN, s.date, wait).await?;
    let ids: Vec<Uuid> = s.details.iter().filter_map(|d| d.message_id).collect();
    let outcomes = final_outcomes(pool, &ids).await?;
    for d in &mut s.details {
        if let Some((status, reason)) = d.message_id.and_then(|id| outcomes.get(&id)) {
            d.status = status.clone();
            d.reason = reason.clone();
        }
    }
    counts(pool, s).await
}

/// What `{id}/send-reminder` did.
pub enum Single {
    Queued {
        message_id: Uuid,
        message: String,
    },
    AlreadyQueued {
        message_id: Option<Uuid>,
        message: String,
    },
    /// The number is on the opt-out list (README "Opt-out"): nothing queued.
    OptedOut {
        message: String,
    },
}

/// One record's reminder for `date`, whatever its `next_service` window; idempotent per record
/// and date unless `force`. Like the others, it expires at the end of `date`.
pub async fn send_one(
    pool: &PgPool,
    c: &Candidate,
    (date, expires_at): (NaiveDate, DateTime<Utc>),
    force: bool,
    service_phone: &str,
    max_attempts: u32,
) -> sqlx::Result<Option<Single>> {
    let Some(m) = message(c, service_phone, expires_at) else {
        return Ok(None);
    };
    let blocked = suppressions::repo::blocked_among(pool, &[m.to.as_str()], Kind::Manual).await?;
    if !blocked.is_empty() {
        return Ok(Some(Single::OptedOut { message: m.body }));
    }
    let message_id = Uuid::now_v7();
    let body = m.body.clone();
    let mut tx = pool.begin().await?;
    let inserted = queue(&mut tx, date, &[(c.id, m, message_id)], force, max_attempts).await?;
    tx.commit().await?;
    if inserted.contains(&message_id) {
        return Ok(Some(Single::Queued {
            message_id,
            message: body,
        }));
    }
    let earlier = existing(pool, date, &[c.id]).await?;
    Ok(Some(Single::AlreadyQueued {
        message_id: earlier.get(&c.id).copied(),
        message: body,
    }))
}
