//! The paged walk every reminder pass shares. A pass (the vehicles' fan-out, the manual
//! records' reminders, …) says which candidates it walks, a page at a time, what each is told,
//! which reminder rows follow their messages and what its response lists; [`walk`] does the
//! rest the same way for all of them: for each page, in one transaction, the pass inserts its
//! reminder rows under their unique key with `ON CONFLICT DO NOTHING` and a message + send job
//! is stored for exactly the rows that were new. Running a pass again — sequentially,
//! concurrently, after a crash half-way — creates nothing new. Memory is one page plus at most
//! [`MAX_DETAILS`] details, whatever the number of candidates.
//!
//! Before anything is stored, a candidate is skipped when its pass refuses it (incomplete
//! data), when its text is over `templates::MAX_TEXT_CHARS` (`text too long`), or when its
//! number is on the opt-out list (`opted out`, one query per page).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    time::{Duration, Instant},
};

use chrono::NaiveDate;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    messages::{Kind, Status, request::NewMessage, store},
    suppressions, templates,
};

/// Candidates per page (and per transaction).
pub const PAGE: i64 = 2_000;
/// A response lists at most this many candidates.
pub const MAX_DETAILS: usize = 1_000;

/// What differs between reminder passes. [`walk`] calls it a page at a time.
pub trait Pass: Sync {
    /// One ordered walk over the candidates (e.g. `calendar::DueWalk`: one due date by one
    /// index); a pass makes several in turn.
    type Walk: Send + Sync;
    /// Where a walk has got to: the last candidate's position in the walk's order.
    type Cursor: Send + Sync;
    type Candidate: Send + Sync;
    /// One candidate in the response.
    type Detail: Send;

    /// `created_by` of its messages.
    const CREATED_BY: &'static str;

    /// The kind of its messages, which says which opt-outs apply (a method: a campaign's
    /// depends on the campaign).
    fn kind(&self) -> Kind;

    fn max_attempts(&self) -> u32;

    /// The walks, in order, each with the cursor before its first candidate.
    fn walks(&self) -> Vec<(Self::Walk, Self::Cursor)>;

    /// Up to `limit` candidates of `walk` after `after`, in the walk's order.
    fn page(
        &self,
        pool: &PgPool,
        walk: &Self::Walk,
        after: &Self::Cursor,
        limit: i64,
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Candidate>>> + Send;

    /// The cursor at `c`.
    fn cursor(c: &Self::Candidate) -> Self::Cursor;

    /// What the reminder rows are keyed by (with the business date): the vehicle, the record.
    fn key(c: &Self::Candidate) -> Uuid;

    /// The message for `c`, or why it gets none.
    fn judge(&self, c: &Self::Candidate) -> Result<NewMessage, String>;

    /// Why no candidate of this pass can be sent at all (the Cloud API with an unmapped
    /// template: `templates::cloud_api::unsendable`): every one is skipped with it.
    fn unsendable(&self) -> Option<&str>;

    /// Inserts a reminder row for each `(candidate, message id)`, unless one exists for its key;
    /// returns the message ids of the rows it inserted. In the page's transaction: the messages
    /// are stored after it, the foreign key is checked at commit.
    fn follow(
        &self,
        conn: &mut PgConnection,
        rows: &[(&Self::Candidate, Uuid)],
    ) -> impl Future<Output = sqlx::Result<HashSet<Uuid>>> + Send;

    /// The messages of the reminder rows that already exist for `keys`, by key.
    fn existing(
        &self,
        pool: &PgPool,
        keys: &[Uuid],
    ) -> impl Future<Output = sqlx::Result<HashMap<Uuid, Uuid>>> + Send;

    /// What the response says about `c`; `None`: not listed (it is still counted).
    fn detail(&self, c: &Self::Candidate, outcome: Outcome<'_>) -> Option<Self::Detail>;
}

/// What a pass did with one candidate.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// A reminder row and its message are new.
    Queued {
        message_id: Uuid,
        message: &'a NewMessage,
    },
    /// An earlier (or concurrent) pass queued it; its message id when it was looked up (only
    /// for candidates that are listed).
    AlreadyQueued {
        message_id: Option<Uuid>,
        message: &'a NewMessage,
    },
    Skipped(Skip<'a>),
}

/// Why a candidate gets no message.
#[derive(Debug, Clone, Copy)]
pub enum Skip<'a> {
    /// The pass' own rule (incomplete data, an unusable number): its reason.
    Refused(&'a str),
    /// The rendered text is over `templates::MAX_TEXT_CHARS`.
    TooLong,
    /// The number is on the opt-out list: the message it would have had.
    OptedOut(&'a NewMessage),
}

impl Outcome<'_> {
    /// `queued`, `already_queued` or `skipped`.
    pub fn status(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::AlreadyQueued { .. } => "already_queued",
            Self::Skipped(_) => "skipped",
        }
    }

    /// A skip's reason.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Skipped(Skip::Refused(reason)) => Some((*reason).to_owned()),
            Self::Skipped(Skip::TooLong) => Some(templates::TEXT_TOO_LONG.to_owned()),
            Self::Skipped(Skip::OptedOut(_)) => Some(suppressions::OPTED_OUT.to_owned()),
            Self::Queued { .. } | Self::AlreadyQueued { .. } => None,
        }
    }

    pub fn message_id(&self) -> Option<Uuid> {
        match self {
            Self::Queued { message_id, .. } => Some(*message_id),
            Self::AlreadyQueued { message_id, .. } => *message_id,
            Self::Skipped(_) => None,
        }
    }

    /// The text of a queued (or already queued) reminder.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Queued { message, .. } | Self::AlreadyQueued { message, .. } => {
                Some(&message.body)
            }
            Self::Skipped(_) => None,
        }
    }
}

/// What a walk counted and listed. `eligible` = `reminder_queued + already_queued + skipped`.
#[derive(Debug, Clone)]
pub struct Walked<D> {
    pub eligible: i64,
    pub reminder_queued: i64,
    pub already_queued: i64,
    pub skipped: i64,
    /// `skipped` by reason (`Outcome::reason`).
    pub skipped_by_reason: BTreeMap<String, i64>,
    pub details: Vec<D>,
    /// More candidates would have been listed than [`MAX_DETAILS`].
    pub details_truncated: bool,
}

impl<D> Default for Walked<D> {
    fn default() -> Self {
        Self {
            eligible: 0,
            reminder_queued: 0,
            already_queued: 0,
            skipped: 0,
            skipped_by_reason: BTreeMap::new(),
            details: Vec::new(),
            details_truncated: false,
        }
    }
}

impl<D> Walked<D> {
    fn note(&mut self, outcome: &Outcome<'_>, detail: Option<D>) {
        self.eligible += 1;
        match outcome {
            Outcome::Queued { .. } => self.reminder_queued += 1,
            Outcome::AlreadyQueued { .. } => self.already_queued += 1,
            Outcome::Skipped(_) => {
                self.skipped += 1;
                if let Some(reason) = outcome.reason() {
                    *self.skipped_by_reason.entry(reason).or_default() += 1;
                }
            }
        }
        let Some(detail) = detail else { return };
        if self.details.len() < MAX_DETAILS {
            self.details.push(detail);
        } else {
            self.details_truncated = true;
        }
    }
}

/// Runs `pass`: every walk, a page per transaction.
pub async fn walk<P: Pass>(pool: &PgPool, pass: &P) -> sqlx::Result<Walked<P::Detail>> {
    let mut walked = Walked::default();
    for (walk, start) in pass.walks() {
        let mut cursor = start;
        loop {
            let page = pass.page(pool, &walk, &cursor, PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = P::cursor(last);
            remind_page(pool, pass, &page, &mut walked).await?;
            if (page.len() as i64) < PAGE {
                break;
            }
        }
    }
    Ok(walked)
}

/// A candidate's message, or why it has none, before the opt-out list is asked.
enum Judged {
    Remind(NewMessage),
    Refused(String),
    TooLong,
}

async fn remind_page<P: Pass>(
    pool: &PgPool,
    pass: &P,
    page: &[P::Candidate],
    walked: &mut Walked<P::Detail>,
) -> sqlx::Result<()> {
    // A text too long is dropped at once: a page of them would otherwise be held in memory.
    let judged: Vec<Judged> = page
        .iter()
        .map(|c| {
            match pass
                .unsendable()
                .map_or_else(|| pass.judge(c), |why| Err(why.to_owned()))
            {
                Ok(m) if templates::check_text(&m.body).is_err() => Judged::TooLong,
                Ok(m) => Judged::Remind(m),
                Err(reason) => Judged::Refused(reason),
            }
        })
        .collect();
    // Numbers on the opt-out list (README "Opt-out"): one query for the page.
    let phones: Vec<&str> = judged
        .iter()
        .filter_map(|j| match j {
            Judged::Remind(m) => Some(m.to.as_str()),
            _ => None,
        })
        .collect();
    let blocked = suppressions::repo::blocked_among(pool, &phones, pass.kind()).await?;
    // The message id of each candidate that is reminded, chosen before its reminder row.
    let ids: Vec<Option<Uuid>> = judged
        .iter()
        .map(|j| match j {
            Judged::Remind(m) if !blocked.contains(m.to.as_str()) => Some(Uuid::now_v7()),
            _ => None,
        })
        .collect();

    // The reminder rows first, then messages and jobs for exactly the rows that were new.
    let rows: Vec<(&P::Candidate, Uuid)> = page
        .iter()
        .zip(&ids)
        .filter_map(|(c, id)| Some((c, (*id)?)))
        .collect();
    let mut tx = pool.begin().await?;
    let inserted = pass.follow(&mut tx, &rows).await?;
    let (new_ids, new_messages): (Vec<Uuid>, Vec<NewMessage>) = judged
        .iter()
        .zip(&ids)
        .filter_map(|(j, id)| match (j, id) {
            (Judged::Remind(m), Some(id)) if inserted.contains(id) => Some((*id, m.clone())),
            _ => None,
        })
        .unzip();
    if !new_ids.is_empty() {
        store::store_followed(
            &mut tx,
            &new_ids,
            &new_messages,
            P::CREATED_BY,
            pass.max_attempts(),
        )
        .await?;
    }
    tx.commit().await?;

    // Already queued by an earlier (or concurrent) pass: their message ids, for the details
    // there is room for.
    let room = MAX_DETAILS.saturating_sub(walked.details.len());
    let earlier = if room > 0 && inserted.len() < rows.len() {
        let others: Vec<Uuid> = rows
            .iter()
            .filter(|(_, id)| !inserted.contains(id))
            .map(|(c, _)| P::key(c))
            .take(room)
            .collect();
        pass.existing(pool, &others).await?
    } else {
        HashMap::new()
    };

    for ((c, judged), id) in page.iter().zip(&judged).zip(&ids) {
        let outcome = match (judged, id) {
            (Judged::Refused(reason), _) => Outcome::Skipped(Skip::Refused(reason)),
            (Judged::TooLong, _) => Outcome::Skipped(Skip::TooLong),
            (Judged::Remind(m), None) => Outcome::Skipped(Skip::OptedOut(m)),
            (Judged::Remind(m), Some(id)) if inserted.contains(id) => Outcome::Queued {
                message_id: *id,
                message: m,
            },
            (Judged::Remind(m), Some(_)) => Outcome::AlreadyQueued {
                message_id: earlier.get(&P::key(c)).copied(),
                message: m,
            },
        };
        walked.note(&outcome, pass.detail(c, outcome));
    }
    Ok(())
}

/// Which pass' reminder rows a wait is about (each pass keeps its own table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followers {
    /// `reminders`: the vehicles' fan-out.
    Vehicles,
    /// `manual_reminders`: the manual records' pass.
    Manual,
}

/// Reminders of `date` in `followers` whose message is still on its way.
async fn open(pool: &PgPool, followers: Followers, date: NaiveDate) -> sqlx::Result<i64> {
    let count = match followers {
        Followers::Vehicles => sqlx::query_scalar(
            "SELECT count(*) FROM reminders r JOIN messages m ON m.id = r.message_id
             WHERE r.reminder_date = $1 AND m.status IN ('queued', 'sending', 'retrying')",
        ),
        Followers::Manual => sqlx::query_scalar(
            "SELECT count(*) FROM manual_reminders r JOIN messages m ON m.id = r.message_id
             WHERE r.reminder_date = $1 AND m.status IN ('queued', 'sending', 'retrying')",
        ),
    };
    count.bind(date).fetch_one(pool).await
}

/// Polls until no reminder of `date` in `followers` is still on its way, or `wait` has passed.
async fn wait_settled(
    pool: &PgPool,
    followers: Followers,
    date: NaiveDate,
    wait: Duration,
) -> sqlx::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        if open(pool, followers, date).await? == 0 || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// For messages that finished: `sent`, `expired` with the reason, or `failed` with the reason (a
/// cancelled one counts as failed). Messages still on their way are absent.
async fn final_outcomes(
    pool: &PgPool,
    ids: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, (String, Option<String>)>> {
    let rows = crate::messages::read::statuses(pool, ids).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, status, error)| match status {
            Status::Sent => Some((id, ("sent".to_owned(), None))),
            Status::Failed | Status::Cancelled => Some((
                id,
                (
                    "failed".to_owned(),
                    error.or(Some(status.as_str().to_owned())),
                ),
            )),
            Status::Expired => Some((id, ("expired".to_owned(), error))),
            Status::Queued | Status::Sending | Status::Retrying => None,
        })
        .collect())
}

/// A listed candidate whose status a wait brings up to date.
pub trait Listed {
    fn message_id(&self) -> Option<Uuid>;
    /// The message's final status (`sent` / `failed` / `expired`) and reason.
    fn finish(&mut self, status: String, reason: Option<String>);
}

/// For `wait_seconds`: waits as [`wait_settled`], then gives each of `details` the final
/// outcome of its message (those still on their way keep their status).
pub async fn settle<D: Listed>(
    pool: &PgPool,
    followers: Followers,
    date: NaiveDate,
    wait: Duration,
    details: &mut [D],
) -> sqlx::Result<()> {
    wait_settled(pool, followers, date, wait).await?;
    let ids: Vec<Uuid> = details.iter().filter_map(Listed::message_id).collect();
    let outcomes = final_outcomes(pool, &ids).await?;
    for d in details {
        if let Some((status, reason)) = d.message_id().and_then(|id| outcomes.get(&id)) {
            d.finish(status.clone(), reason.clone());
        }
    }
    Ok(())
}
