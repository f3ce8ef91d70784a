//! Reminders for manual records, through the send pipeline (kind `manual`): keyed
//! `(manual_id, reminder_date)` under a unique index, so `send-reminders` run twice — or
//! concurrently — queues each record once a day; `{id}/send-reminder?force=true` adds another.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    messages::{Kind, phone::PhoneNumber, request::NewMessage, store},
    reminders::{
        calendar::{self, DaysBefore},
        fanout::{MAX_DETAILS, PAGE, final_outcomes, wait_settled},
    },
    suppressions,
    templates::{Current, Language, Subject, Workshop},
};

#[derive(Debug, Clone)]
pub struct Pass {
    pub date: NaiveDate,
    /// Records due this many days after `date` are reminded (`send-reminders`' threshold:
    /// every day of `0..threshold`).
    pub days_before: DaysBefore,
    /// A record with no `next_service` is due this many months after its `last_service`.
    pub interval_months: u32,
    pub only_active: bool,
    /// The `manual_reminder` version current when the pass started.
    pub template: Current,
    pub workshop: Workshop,
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
    /// The due date: `next_service`, else `last_service` + the interval.
    pub next_service: NaiveDate,
    /// The date the pass walks by (`next_service` or `last_service`).
    pub walk_date: NaiveDate,
    pub salutation: Option<String>,
    pub language: String,
}

/// Records due on `$1` by their `next_service`, after id `$3`, `$4` at a time; `$2` only
/// active ones. One due date at a time, as for vehicles (`reminders::fanout`).
const NEXT_SERVICE_WALK: &str =
    "SELECT id, customer_name, nopol, no_hp, next_service, next_service AS walk_date, salutation, language
     FROM manual_whatsapp
     WHERE next_service = $1 AND (NOT $2 OR is_active = 1) AND id > $3
     ORDER BY id LIMIT $4";
/// Records with no `next_service` due on `$3` by `last_service` + `$8` months: last services in
/// `$1..=$2` after `($5, $6)`, `$7` at a time; `$4` only active ones.
const LAST_SERVICE_WALK: &str = "SELECT id, customer_name, nopol, no_hp,
            (last_service + make_interval(months => $8))::date AS next_service,
            last_service AS walk_date, salutation, language
     FROM manual_whatsapp
     WHERE next_service IS NULL AND last_service >= $1 AND last_service <= $2
       AND (last_service + make_interval(months => $8))::date = $3
       AND (NOT $4 OR is_active = 1) AND (last_service, id) > ($5, $6)
     ORDER BY last_service, id LIMIT $7";

/// One record of a `send-reminders` answer (seed names).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ManualReminderDetail)]
pub struct Detail {
    pub id: Uuid,
    pub customer_name: String,
    pub nopol: String,
    /// The due date: `next_service`, else `last_service` + `SERVICE_INTERVAL_MONTHS`.
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
/// `reminder_failed` and `details`, plus the queue's view. `eligible` records are due on one of
/// the pass' days (`send-reminders`: `0..days_threshold-1` days from today); `skipped` are the
/// other records considered.
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

/// What a record's reminder says, rendered from `template` for the record's salutation and
/// language.
pub fn message(
    c: &Candidate,
    date: NaiveDate,
    template: &Current,
    workshop: &Workshop,
    expires_at: DateTime<Utc>,
) -> Option<NewMessage> {
    // Stored numbers are normalized; one that no longer parses is not sent.
    let to = PhoneNumber::parse(&c.no_hp).ok()?;
    let subject = Subject {
        name: &c.customer_name,
        salutation: c.salutation.as_deref(),
        language: Language::from_db(&c.language),
        no_pol: &c.nopol,
        model: None,
        due: c.next_service,
        today: date,
    };
    let body = template.render(&subject, workshop);
    let mut message = NewMessage::internal(Kind::Manual, to, body, None).from_template(template);
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
        store::store_followed(conn, &new_ids, &new_messages, "manual", max_attempts).await?;
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
    let due = pass.days_before.due_dates(pass.date);
    let months = pass.interval_months as i32;
    for by_last_service in [false, true] {
        for &date in &due {
            let (from, to) = if by_last_service {
                calendar::last_visit_range(date, date, pass.interval_months)
            } else {
                (date, date)
            };
            let mut cursor = (from, Uuid::nil());
            loop {
                let query = if by_last_service {
                    sqlx::query_as(LAST_SERVICE_WALK)
                        .bind(from)
                        .bind(to)
                        .bind(date)
                        .bind(pass.only_active)
                        .bind(cursor.0)
                        .bind(cursor.1)
                        .bind(PAGE)
                        .bind(months)
                } else {
                    sqlx::query_as(NEXT_SERVICE_WALK)
                        .bind(date)
                        .bind(pass.only_active)
                        .bind(cursor.1)
                        .bind(PAGE)
                };
                let page: Vec<Candidate> = query.fetch_all(pool).await?;
                let Some(last) = page.last() else { break };
                cursor = (last.walk_date, last.id);
                if !remind_page(pool, pass, &page, &mut s).await? {
                    break;
                }
            }
        }
    }
    s.skipped += total_records - s.eligible.min(total_records);
    counts(pool, &mut s).await?;
    Ok(s)
}

/// Queues a page's reminders and notes them in the summary; false when it was the last page.
async fn remind_page(
    pool: &PgPool,
    pass: &Pass,
    page: &[Candidate],
    s: &mut Summary,
) -> sqlx::Result<bool> {
    let full = page.len() as i64 == PAGE;
    {
        let built: Vec<(Uuid, NewMessage)> = page
            .iter()
            .filter_map(|c| {
                let m = message(
                    c,
                    pass.date,
                    &pass.template,
                    &pass.workshop,
                    pass.expires_at,
                )?;
                Some((c.id, m))
            })
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
        for c in page {
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
    }
    Ok(full)
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
    (template, workshop): (&Current, &Workshop),
    max_attempts: u32,
) -> sqlx::Result<Option<Single>> {
    let Some(m) = message(c, date, template, workshop, expires_at) else {
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
