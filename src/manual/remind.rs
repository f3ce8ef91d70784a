//! Reminders for manual records, through the send pipeline (kind `manual`): keyed
//! `(manual_id, reminder_date)` under a unique index, so `send-reminders` run twice — or
//! concurrently — queues each record once a day; `{id}/send-reminder?force=true` adds another.
//! `send-reminders` (and the daily run's manual pass) is a [`pass::Pass`].

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    messages::{Kind, phone::PhoneNumber, request::NewMessage, store},
    reminders::{
        calendar::{self, DaysBefore, DueWalk},
        pass::{self, Followers, Outcome, Skip},
    },
    suppressions,
    templates::{Current, Language, Subject, Workshop},
};

/// `created_by` of manual reminders.
const CREATED_BY: &str = "manual";

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
    /// Every candidate is skipped with this reason (`templates::cloud_api::unsendable`).
    pub unsendable: Option<String>,
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
/// active ones. One due date at a time, as for vehicles (`calendar::due_walks`).
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
    /// opt-out list; `text too long`: the rendered text is over 4,096 characters); after
    /// `wait_seconds` also `sent` / `failed` / `expired`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub message_id: Option<Uuid>,
    /// The text; absent when it is too long to send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
    /// The records in the date window that were skipped, by reason (those outside it, also
    /// counted in `skipped`, are not listed).
    pub skipped_by_reason: BTreeMap<String, i64>,
    /// Of today's manual reminders: delivered / failed so far.
    pub reminder_sent: i64,
    pub reminder_failed: i64,
    pub details: Vec<Detail>,
    pub details_truncated: bool,
}

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
    let (body, origin) = template.render_recorded(&subject, workshop);
    let mut message = NewMessage::internal(Kind::Manual, to, body, None).with_template(origin);
    message.expires_at = Some(expires_at);
    Some(message)
}

/// Inserts a reminder row of `date` for each `(record, message id)`; returns the message ids
/// of the rows that were new. `forced` rows are never in conflict.
async fn insert_rows(
    conn: &mut PgConnection,
    date: NaiveDate,
    rows: &[(Uuid, Uuid)],
    forced: bool,
) -> sqlx::Result<HashSet<Uuid>> {
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
    let manual_ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let message_ids: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
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
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
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

impl pass::Pass for Pass {
    type Walk = DueWalk;
    type Cursor = (NaiveDate, Uuid);
    type Candidate = Candidate;
    type Detail = Detail;

    const CREATED_BY: &'static str = CREATED_BY;

    fn kind(&self) -> Kind {
        Kind::Manual
    }

    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    fn unsendable(&self) -> Option<&str> {
        self.unsendable.as_deref()
    }

    fn walks(&self) -> Vec<(DueWalk, (NaiveDate, Uuid))> {
        calendar::due_walks(&self.days_before, self.date, self.interval_months)
    }

    async fn page(
        &self,
        pool: &PgPool,
        walk: &DueWalk,
        after: &(NaiveDate, Uuid),
        limit: i64,
    ) -> sqlx::Result<Vec<Candidate>> {
        let query = match *walk {
            DueWalk::Next { due } => sqlx::query_as(NEXT_SERVICE_WALK)
                .bind(due)
                .bind(self.only_active)
                .bind(after.1)
                .bind(limit),
            DueWalk::Last { due, from, to } => sqlx::query_as(LAST_SERVICE_WALK)
                .bind(from)
                .bind(to)
                .bind(due)
                .bind(self.only_active)
                .bind(after.0)
                .bind(after.1)
                .bind(limit)
                .bind(self.interval_months as i32),
        };
        query.fetch_all(pool).await
    }

    fn cursor(c: &Candidate) -> (NaiveDate, Uuid) {
        (c.walk_date, c.id)
    }

    fn key(c: &Candidate) -> Uuid {
        c.id
    }

    fn judge(&self, c: &Candidate) -> Result<NewMessage, String> {
        message(
            c,
            self.date,
            &self.template,
            &self.workshop,
            self.expires_at,
        )
        .ok_or_else(|| "the stored phone number is not valid".to_owned())
    }

    async fn follow(
        &self,
        conn: &mut PgConnection,
        rows: &[(&Candidate, Uuid)],
    ) -> sqlx::Result<HashSet<Uuid>> {
        let rows: Vec<(Uuid, Uuid)> = rows.iter().map(|(c, id)| (c.id, *id)).collect();
        insert_rows(conn, self.date, &rows, false).await
    }

    async fn existing(&self, pool: &PgPool, keys: &[Uuid]) -> sqlx::Result<HashMap<Uuid, Uuid>> {
        existing(pool, self.date, keys).await
    }

    fn detail(&self, c: &Candidate, outcome: Outcome<'_>) -> Option<Detail> {
        let message = match outcome {
            // A record whose number no longer parses is counted, not listed (as the seed).
            Outcome::Skipped(Skip::Refused(_)) => return None,
            Outcome::Skipped(Skip::OptedOut(m)) => Some(m.body.clone()),
            _ => outcome.text().map(str::to_owned),
        };
        Some(Detail {
            id: c.id,
            customer_name: c.customer_name.clone(),
            nopol: c.nopol.clone(),
            next_service: c.next_service,
            days_until_service: (c.next_service - self.date).num_days(),
            status: outcome.status().into(),
            reason: outcome.reason(),
            message_id: outcome.message_id(),
            message,
        })
    }
}

/// `send-reminders`: every record in the window ([`pass::walk`]).
pub async fn run(pool: &PgPool, pass: &Pass) -> sqlx::Result<Summary> {
    let total_records: i64 =
        sqlx::query_scalar("SELECT count(*) FROM manual_whatsapp WHERE NOT $1 OR is_active = 1")
            .bind(pass.only_active)
            .fetch_one(pool)
            .await?;
    let walked = pass::walk(pool, pass).await?;
    let mut s = Summary {
        date: pass.date,
        total_records,
        eligible: walked.eligible,
        reminder_queued: walked.reminder_queued,
        already_queued: walked.already_queued,
        // The records outside the window count as skipped too (the seed's count).
        skipped: walked.skipped + total_records - walked.eligible.min(total_records),
        skipped_by_reason: walked.skipped_by_reason,
        reminder_sent: 0,
        reminder_failed: 0,
        details: walked.details,
        details_truncated: walked.details_truncated,
    };
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

impl pass::Listed for Detail {
    fn message_id(&self) -> Option<Uuid> {
        self.message_id
    }

    fn finish(&mut self, status: String, reason: Option<String>) {
        self.status = status;
        self.reason = reason;
    }
}

/// `wait_seconds`: waits for today's manual reminders, then reports each listed record.
pub async fn wait(pool: &PgPool, s: &mut Summary, wait: std::time::Duration) -> sqlx::Result<()> {
    pass::settle(pool, Followers::Manual, s.date, wait, &mut s.details).await?;
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
    /// The text renders longer than a message may be: nothing queued.
    TooLong(crate::templates::TooLong),
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
    if let Err(too_long) = crate::templates::check_text(&m.body) {
        return Ok(Some(Single::TooLong(too_long)));
    }
    let blocked = suppressions::repo::blocked_among(pool, &[m.to.as_str()], Kind::Manual).await?;
    if !blocked.is_empty() {
        return Ok(Some(Single::OptedOut { message: m.body }));
    }
    let message_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let queued = insert_rows(&mut tx, date, &[(c.id, message_id)], force)
        .await?
        .contains(&message_id);
    if queued {
        store::store_followed(
            &mut tx,
            &[message_id],
            std::slice::from_ref(&m),
            CREATED_BY,
            max_attempts,
        )
        .await?;
    }
    tx.commit().await?;
    if queued {
        return Ok(Some(Single::Queued {
            message_id,
            message: m.body,
        }));
    }
    let earlier = existing(pool, date, &[c.id]).await?;
    Ok(Some(Single::AlreadyQueued {
        message_id: earlier.get(&c.id).copied(),
        message: m.body,
    }))
}
