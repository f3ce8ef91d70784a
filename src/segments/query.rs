//! A segment's recipients in one statement: the vehicles' side and the manual records' side,
//! filtered, then one row per normalized number (`DISTINCT ON (phone)`: the earliest due; a
//! vehicle before a manual record), without opted-out numbers. Only fixed SQL text is written
//! here; every value a client gave is a bind parameter.

use std::fmt::Write as _;

use sqlx::{Arguments, PgPool, postgres::PgArguments};

use super::{Filters, Recipient, Source};
use crate::{console::lookup::contains_pattern, reminders::calendar::last_visit_range};

/// How many recipients a preview lists.
pub const PREVIEW: i64 = 20;

/// What to select: a segment, and which opt-outs leave a number out.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub source: Source,
    pub filters: &'a Filters,
    /// A reminder-type campaign: numbers opted out of reminders (scope `reminders`) are left
    /// out too, not only those opted out of everything (`all`).
    pub reminder_type: bool,
    /// `SERVICE_INTERVAL_MONTHS`: the due date of a vehicle or record without a next one.
    pub interval_months: u32,
}

/// The statement's text and its parameters.
struct Sql {
    text: String,
    args: PgArguments,
    n: usize,
    error: Option<sqlx::error::BoxDynError>,
}

impl Sql {
    /// A parameter placeholder (`$n`) for `value`.
    fn bind<T>(&mut self, value: T) -> String
    where
        T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    {
        if let Err(e) = self.args.add(value)
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        self.n += 1;
        format!("${}", self.n)
    }
}

/// `WITH c AS (…), d AS (…)`: `d` is the recipients (one per number), in the columns of
/// [`Recipient`].
fn recipients_cte(spec: &Spec<'_>) -> Sql {
    let f = spec.filters;
    let mut q = Sql {
        text: String::with_capacity(2048),
        args: PgArguments::default(),
        n: 0,
        error: None,
    };
    let months = q.bind(spec.interval_months as i32);
    let want_vehicles =
        spec.source != Source::Manual && (!f.explicit() || f.customer_ids.is_some());
    // A manual record has no model: a model filter leaves them all out.
    let want_manual = spec.source != Source::Vehicles
        && f.model.is_none()
        && (!f.explicit() || f.manual_ids.is_some());

    let v_due = format!(
        "coalesce(v.next_visit_date, (v.last_visit_date + make_interval(months => {months}))::date)"
    );
    let mut vehicles = format!(
        "SELECT c.phone, 'vehicle'::text AS source, c.id AS customer_id, v.id AS vehicle_id, \
                NULL::uuid AS manual_id, c.nama AS name, c.salutation, v.no_pol, v.model, \
                {v_due} AS due_date, v.last_visit_date, c.language \
           FROM vehicles v JOIN customers c ON c.id = v.customer_id \
          WHERE {want_vehicles}"
    );
    let m_due = format!(
        "coalesce(m.next_service, (m.last_service + make_interval(months => {months}))::date)"
    );
    let mut manual = format!(
        "SELECT m.no_hp, 'manual'::text, NULL::uuid, NULL::uuid, m.id, m.customer_name, \
                m.salutation, m.nopol, NULL::text, {m_due}, m.last_service, m.language \
           FROM manual_whatsapp m \
          WHERE {want_manual} AND m.is_active = 1"
    );

    if let Some(model) = &f.model {
        let p = q.bind(contains_pattern(model.trim()));
        let _ = write!(vehicles, " AND v.model ILIKE {p}");
    }
    if let Some(from) = f.due_from {
        let p = q.bind(from);
        let _ = write!(vehicles, " AND {v_due} >= {p}");
        let _ = write!(manual, " AND {m_due} >= {p}");
    }
    if let Some(to) = f.due_to {
        let p = q.bind(to);
        let _ = write!(vehicles, " AND {v_due} <= {p}");
        let _ = write!(manual, " AND {m_due} <= {p}");
    }
    if let (Some(from), Some(to)) = (f.due_from, f.due_to) {
        // The same range, in a shape the indexes on the next visit and on the last visit (of
        // vehicles without a next one) can answer.
        let (lo, hi) = last_visit_range(from, to, spec.interval_months);
        let (from, to, lo, hi) = (q.bind(from), q.bind(to), q.bind(lo), q.bind(hi));
        let _ = write!(
            vehicles,
            " AND (v.next_visit_date BETWEEN {from} AND {to} \
                   OR (v.next_visit_date IS NULL AND v.last_visit_date BETWEEN {lo} AND {hi}))"
        );
        let _ = write!(
            manual,
            " AND (m.next_service BETWEEN {from} AND {to} \
                   OR (m.next_service IS NULL AND m.last_service BETWEEN {lo} AND {hi}))"
        );
    }
    if let Some(before) = f.last_visit_before {
        let p = q.bind(before);
        let _ = write!(vehicles, " AND v.last_visit_date < {p}");
        let _ = write!(manual, " AND m.last_service < {p}");
    }
    if let Some(after) = f.last_visit_after {
        let p = q.bind(after);
        let _ = write!(vehicles, " AND v.last_visit_date > {p}");
        let _ = write!(manual, " AND m.last_service > {p}");
    }
    if let Some(language) = f.language {
        let p = q.bind(language.as_str());
        let _ = write!(vehicles, " AND c.language = {p}");
        let _ = write!(manual, " AND m.language = {p}");
    }
    if let Some(ids) = &f.customer_ids {
        let p = q.bind(ids.clone());
        let _ = write!(vehicles, " AND c.id = ANY({p})");
    }
    if let Some(ids) = &f.manual_ids {
        let p = q.bind(ids.clone());
        let _ = write!(manual, " AND m.id = ANY({p})");
    }

    let scopes: Vec<&str> = if spec.reminder_type {
        vec!["all", "reminders"]
    } else {
        vec!["all"]
    };
    let scopes = q.bind(scopes);
    let inbound = match f.has_inbound_since {
        Some(since) => {
            let p = q.bind(since);
            format!(
                " AND EXISTS (SELECT 1 FROM whatsapp_contacts w \
                              WHERE w.phone = c.phone AND w.last_inbound_at >= {p})"
            )
        }
        None => String::new(),
    };
    let _ = write!(
        q.text,
        "WITH c AS ({vehicles} UNION ALL {manual}), \
         d AS (SELECT DISTINCT ON (phone) * FROM c \
                WHERE phone IS NOT NULL \
                  AND NOT EXISTS (SELECT 1 FROM suppressions s \
                                  WHERE s.phone = c.phone AND s.scope = ANY({scopes})){inbound} \
                ORDER BY phone, due_date NULLS LAST, source DESC, \
                         coalesce(vehicle_id, manual_id)) "
    );
    q
}

fn check(q: Sql) -> sqlx::Result<(String, PgArguments)> {
    match q.error {
        Some(e) => Err(sqlx::Error::Encode(e)),
        None => Ok((q.text, q.args)),
    }
}

#[derive(sqlx::FromRow)]
struct Counted {
    total: i64,
    #[sqlx(flatten)]
    recipient: Recipient,
}

/// A transaction for a segment's query: it sorts up to a row per vehicle, in memory
/// (PostgreSQL's default 4 MB spills a million-vehicle segment to disk), and without JIT
/// compilation (which the row estimate asks for and which costs more than it saves here).
pub async fn begin(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// How many recipients `spec` has, and the first [`PREVIEW`] (earliest due first).
pub async fn preview(pool: &PgPool, spec: &Spec<'_>) -> sqlx::Result<(i64, Vec<Recipient>)> {
    let mut tx = begin(pool).await?;
    let mut q = recipients_cte(spec);
    let limit = q.bind(PREVIEW);
    let _ = write!(
        q.text,
        "SELECT count(*) OVER () AS total, d.* FROM d \
         ORDER BY due_date NULLS LAST, phone LIMIT {limit}"
    );
    let (text, args) = check(q)?;
    let rows: Vec<Counted> = sqlx::query_as_with(sqlx::AssertSqlSafe(text), args)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let total = rows.first().map_or(0, |r| r.total);
    Ok((total, rows.into_iter().map(|r| r.recipient).collect()))
}

/// Every recipient of `spec` (a campaign step's snapshot), on the caller's transaction (begun
/// with [`begin`]).
pub async fn all(conn: &mut sqlx::PgConnection, spec: &Spec<'_>) -> sqlx::Result<Vec<Recipient>> {
    let mut q = recipients_cte(spec);
    q.text.push_str("SELECT * FROM d ORDER BY phone");
    let (text, args) = check(q)?;
    sqlx::query_as_with(sqlx::AssertSqlSafe(text), args)
        .fetch_all(conn)
        .await
}
