//! Finding a customer, a manual record or a number: a `q` that parses as a phone number
//! matches that number (normalized); anything else matches names and number plates,
//! case-insensitively. Each number involved comes with its opt-out state and its conversation.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    customers::{self, Customer},
    manual,
    messages::{DeliveryStatus, Status, phone::PhoneNumber},
    reminders::calendar::{self, DueSource},
    suppressions::Suppression,
};

/// The longest `q`, in characters.
pub const MAX_QUERY: usize = 100;
/// The most customers and the most manual records an answer lists (each).
pub const MAX_RECORDS: i64 = 20;
/// The most numbers an answer shows a conversation for.
pub const MAX_PHONES: usize = 5;
/// The most messages of one conversation.
pub const MAX_CONVERSATION: i64 = 100;

/// What `q` is taken as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// A phone number, normalized (`62…`).
    Phone(PhoneNumber),
    /// A piece of a name or a number plate.
    Text(String),
}

impl Query {
    /// `q` trimmed: a phone number when it parses as one, else text. `Err` says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let q = raw.trim();
        if q.is_empty() {
            return Err("must not be blank".into());
        }
        if q.chars().count() > MAX_QUERY {
            return Err(format!("must be at most {MAX_QUERY} characters"));
        }
        Ok(match PhoneNumber::parse(q) {
            Ok(phone) => Self::Phone(phone),
            Err(_) => Self::Text(q.to_owned()),
        })
    }
}

/// `text` as an `ILIKE` pattern matching it anywhere (its `\`, `%` and `_` taken literally).
pub fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// One line of a conversation: a message we sent (`out`) or one the customer wrote (`in`).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = ConsoleConversationEntry)]
pub struct Entry {
    /// `out` (a message to the number) or `in` (from it).
    pub direction: String,
    /// The message's (`out`) or the inbound message's (`in`) id.
    pub id: Uuid,
    /// When it was queued (`out`) or received (`in`).
    pub at: DateTime<Utc>,
    pub text: Option<String>,
    /// `out` only, as is every field below but `keyword`.
    pub kind: Option<String>,
    pub status: Option<Status>,
    pub delivery_status: Option<DeliveryStatus>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    /// Gateway calls made so far.
    pub attempts: Option<i32>,
    /// The send job (`POST /ops/jobs/{id}/requeue`).
    pub job_id: Option<String>,
    pub last_error: Option<String>,
    pub held_reason: Option<String>,
    /// `in` only: `optout` or `optin` when the text was a keyword.
    pub keyword: Option<String>,
}

/// A manual record with its due date (README "Reminder calendar").
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ConsoleManualRecord)]
pub struct ManualRecord {
    #[serde(flatten)]
    pub record: manual::Record,
    /// `next_service`, else `last_service` + `SERVICE_INTERVAL_MONTHS`; `null` with neither.
    pub due_date: Option<chrono::NaiveDate>,
    pub due_source: Option<DueSource>,
}

/// A number involved in the answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ConsolePhone)]
pub struct Phone {
    /// Normalized (`62…`).
    pub phone: String,
    /// Its entry on the opt-out list; `null`: not opted out.
    pub suppression: Option<Suppression>,
    /// Every message to and from it, newest first, at most 100.
    pub conversation: Vec<Entry>,
    /// There were more than 100.
    pub conversation_truncated: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ConsoleLookup)]
pub struct Lookup {
    /// `phone` (q parsed as a number) or `text` (names and number plates).
    pub matched_as: String,
    /// The normalized number when `matched_as` is `phone`.
    pub phone: Option<String>,
    /// Matching customers, newest first, at most 20, with their vehicles and due dates.
    pub customers: Vec<Customer>,
    /// Matching manual records, newest first, at most 20, with their due dates.
    pub manual: Vec<ManualRecord>,
    /// The numbers involved (the searched number, else those of the records), at most 5.
    pub phones: Vec<Phone>,
    /// More customers, manual records or numbers matched than are shown.
    pub truncated: bool,
}

/// Answers `q` (see [`Query`]); `months` is `SERVICE_INTERVAL_MONTHS`, for the due dates.
pub async fn lookup(conn: &mut PgConnection, q: &Query, months: u32) -> sqlx::Result<Lookup> {
    let (customer_ids, mut manual) = match q {
        Query::Phone(phone) => (
            customers_by_phone(&mut *conn, phone.as_str()).await?,
            manual_by_phone(&mut *conn, phone.as_str()).await?,
        ),
        Query::Text(text) => (
            customers_by_text(&mut *conn, text).await?,
            manual_by_text(&mut *conn, text).await?,
        ),
    };
    let mut truncated =
        customer_ids.len() as i64 > MAX_RECORDS || manual.len() as i64 > MAX_RECORDS;
    let ids: Vec<Uuid> = customer_ids
        .into_iter()
        .take(MAX_RECORDS as usize)
        .collect();
    manual.truncate(MAX_RECORDS as usize);
    let customers: Vec<Customer> = customers::repo::load(&mut *conn, &ids)
        .await?
        .into_iter()
        .map(|c| c.with_due(months))
        .collect();

    let mut numbers: Vec<String> = Vec::new();
    let mut add = |n: String| {
        if !numbers.contains(&n) {
            numbers.push(n);
        }
    };
    if let Query::Phone(phone) = q {
        add(phone.as_str().to_owned());
    }
    for c in &customers {
        if let Some(p) = c.hp.as_deref().and_then(|hp| PhoneNumber::parse(hp).ok()) {
            add(p.as_str().to_owned());
        }
    }
    for m in &manual {
        add(m.no_hp.clone());
    }
    let manual: Vec<ManualRecord> = manual
        .into_iter()
        .map(|record| {
            let due = calendar::due_date(record.next_service, record.last_service, months);
            ManualRecord {
                record,
                due_date: due.map(|(d, _)| d),
                due_source: due.map(|(_, s)| s),
            }
        })
        .collect();
    truncated |= numbers.len() > MAX_PHONES;
    numbers.truncate(MAX_PHONES);

    let mut phones = Vec::with_capacity(numbers.len());
    for phone in numbers {
        let suppression = suppression(&mut *conn, &phone).await?;
        let mut conversation = conversation(&mut *conn, &phone).await?;
        let conversation_truncated = conversation.len() as i64 > MAX_CONVERSATION;
        conversation.truncate(MAX_CONVERSATION as usize);
        phones.push(Phone {
            phone,
            suppression,
            conversation,
            conversation_truncated,
        });
    }
    let (matched_as, phone) = match q {
        Query::Phone(p) => ("phone", Some(p.as_str().to_owned())),
        Query::Text(_) => ("text", None),
    };
    Ok(Lookup {
        matched_as: matched_as.into(),
        phone,
        customers,
        manual,
        phones,
        truncated,
    })
}

/// Customers whose `hp`, normalized, is `phone` (the fan-out's reading of `hp`), newest first;
/// one more than shown, to tell truncation.
async fn customers_by_phone(conn: &mut PgConnection, phone: &str) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar("SELECT id FROM customers WHERE phone = $1 ORDER BY id DESC LIMIT $2")
        .bind(phone)
        .bind(MAX_RECORDS + 1)
        .fetch_all(&mut *conn)
        .await
}

/// Customers whose name or one of whose number plates contains `text` (case-insensitive; a
/// plate also matches with its spaces left out: `b1234xy` finds `B 1234 XY`).
async fn customers_by_text(conn: &mut PgConnection, text: &str) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT c.id FROM customers c \
          WHERE c.nama ILIKE $1 \
             OR EXISTS (SELECT 1 FROM vehicles v WHERE v.customer_id = c.id \
                        AND (v.no_pol ILIKE $1 OR replace(v.no_pol, ' ', '') ILIKE $2)) \
          ORDER BY c.id DESC LIMIT $3",
    )
    .bind(contains_pattern(text))
    .bind(contains_pattern(&text.replace(' ', "")))
    .bind(MAX_RECORDS + 1)
    .fetch_all(&mut *conn)
    .await
}

async fn manual_by_phone(
    conn: &mut PgConnection,
    phone: &str,
) -> sqlx::Result<Vec<manual::Record>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM manual_whatsapp WHERE no_hp = $1 ORDER BY id DESC LIMIT $2",
        manual::COLUMNS
    )))
    .bind(phone)
    .bind(MAX_RECORDS + 1)
    .fetch_all(&mut *conn)
    .await
}

async fn manual_by_text(conn: &mut PgConnection, text: &str) -> sqlx::Result<Vec<manual::Record>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM manual_whatsapp \
          WHERE customer_name ILIKE $1 OR nopol ILIKE $1 OR replace(nopol, ' ', '') ILIKE $2 \
          ORDER BY id DESC LIMIT $3",
        manual::COLUMNS
    )))
    .bind(contains_pattern(text))
    .bind(contains_pattern(&text.replace(' ', "")))
    .bind(MAX_RECORDS + 1)
    .fetch_all(&mut *conn)
    .await
}

async fn suppression(conn: &mut PgConnection, phone: &str) -> sqlx::Result<Option<Suppression>> {
    sqlx::query_as(
        "SELECT phone, scope, reason, created_by, created_at, updated_by, updated_at, source \
         FROM suppressions WHERE phone = $1",
    )
    .bind(phone)
    .fetch_optional(&mut *conn)
    .await
}

/// Messages to and from `phone`, newest first, one more than shown. Each side is read newest
/// first through its `(phone, id DESC)` index (ids are UUIDv7, in time order) before merging.
async fn conversation(conn: &mut PgConnection, phone: &str) -> sqlx::Result<Vec<Entry>> {
    sqlx::query_as(
        "SELECT * FROM ( \
           (SELECT 'out' AS direction, m.id, m.created_at AS at, m.body AS text, m.kind, \
                   m.status, m.delivery_status, m.sent_at, m.delivered_at, m.read_at, \
                   m.attempts, m.job_id, m.last_error, m.held_reason, NULL::text AS keyword \
              FROM messages m WHERE m.to_phone = $1 ORDER BY m.id DESC LIMIT $2) \
           UNION ALL \
           (SELECT 'in', i.id, i.received_at, i.text, NULL, NULL, NULL, NULL, NULL, NULL, \
                   NULL, NULL, NULL, NULL, i.keyword \
              FROM inbound_messages i WHERE i.from_phone = $1 ORDER BY i.id DESC LIMIT $2) \
         ) c ORDER BY c.at DESC, c.id DESC LIMIT $2",
    )
    .bind(phone)
    .bind(MAX_CONVERSATION + 1)
    .fetch_all(&mut *conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_in_any_spelling_is_a_phone_and_anything_else_is_text() {
        let phone = |q: &str| match Query::parse(q) {
            Ok(Query::Phone(p)) => p.as_str().to_owned(),
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(phone("08123456789"), "628123456789");
        assert_eq!(phone(" +62 812-3456-789 "), "628123456789");
        assert_eq!(
            Query::parse(" B 1234 XY "),
            Ok(Query::Text("B 1234 XY".into()))
        );
        assert_eq!(Query::parse("0812"), Ok(Query::Text("0812".into())));
    }

    #[test]
    fn a_blank_or_long_q_is_refused() {
        assert!(Query::parse("").is_err());
        assert!(Query::parse("   ").is_err());
        assert!(Query::parse(&"a".repeat(MAX_QUERY)).is_ok());
        assert!(Query::parse(&"é".repeat(MAX_QUERY + 1)).is_err());
    }

    #[test]
    fn like_wildcards_are_taken_literally() {
        assert_eq!(contains_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
        assert_eq!(contains_pattern("Budi"), "%Budi%");
    }
}
