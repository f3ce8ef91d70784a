//! `demo-data --vehicles N`: customers (two vehicles each) with due dates spread evenly over the
//! next 60 days from the business date, so about 5 % fall in the default 3-day reminder window.
//! One in 49 customers has no phone number, to show the `skipped` path (49, not 50: 50 shares
//! factors with the 60-day spread and would put them all on a few dates).
//!
//! Personalisation (README "Templates"): most customers have no salutation (`Bapak` is used),
//! one in 7 `Ibu`, some `Kak`, some `''` (none); every 97th name already starts with one
//! ("Bapak Joko 97", no salutation stored) so the "no Bapak Bapak" rule shows; one in 10
//! customers reads English.
//!
//! The last-visit rule: of each 600 consecutive vehicles, the 60 of one 60-vehicle block — one
//! per due date — have no `next_visit_date` but a `last_visit_date` [`INTERVAL_MONTHS`] before
//! the due date they would have had, so the due dates (and the fan-out's counts) are the same
//! as with explicit dates. A due date that month arithmetic cannot reach back to (31 March −
//! 4 months + 4 months = 30 March) keeps its explicit date.
//!
//! Set-wise SQL in chunks: a million vehicles is a few dozen statements.

use chrono::NaiveDate;
use sqlx::PgPool;

pub const SPREAD_DAYS: i64 = 60;
/// Even, so that a customer's two vehicles are always in the same chunk.
const CHUNK: i64 = 100_000;
/// The service interval the last visits are set back by: `SERVICE_INTERVAL_MONTHS`' default.
/// With another interval configured those vehicles fall due that much later or earlier.
pub const INTERVAL_MONTHS: i32 = 4;

/// Inserts `vehicles` vehicles (and half as many customers); returns (customers, vehicles).
pub async fn load(pool: &PgPool, vehicles: i64, today: NaiveDate) -> sqlx::Result<(i64, i64)> {
    let mut customers = 0;
    let mut start = 0;
    while start < vehicles {
        let n = CHUNK.min(vehicles - start);
        let mut tx = pool.begin().await?;
        // Vehicle k (0-based, global) belongs to customer k / 2 of this run; its due date is
        // day k % 60, and block k / 60 % 10 = 3 is the one dated by its last visit.
        let inserted: (i64, i64) = sqlx::query_as(
            "WITH src AS MATERIALIZED (
                SELECT g, gen_random_uuid() AS id
                FROM generate_series($1::bigint / 2, ($1::bigint + $2::bigint - 1) / 2) g
             ), c AS (
                INSERT INTO customers (id, nama, hp, alamat, email, salutation, language)
                SELECT id,
                       CASE WHEN g % 97 = 0
                            THEN (ARRAY['Bapak Joko', 'Ibu Siti', 'Pak Budi', 'Kak Rina'])[1 + (g / 97 % 4)::int] || ' ' || g
                            ELSE 'Pelanggan ' || g END,
                       CASE WHEN g % 49 = 0 THEN NULL ELSE '0812' || lpad(g::text, 8, '0') END,
                       'Jl. Contoh No. ' || g, 'pelanggan' || g || '@example.com',
                       CASE WHEN g % 97 = 0 THEN NULL
                            WHEN g % 7 = 1 THEN 'Ibu'
                            WHEN g % 11 = 2 THEN 'Kak'
                            WHEN g % 13 = 3 THEN ''
                       END,
                       CASE WHEN g % 10 = 4 THEN 'en' ELSE 'id' END
                FROM src
                RETURNING 1
             ), v AS (
                INSERT INTO vehicles (id, customer_id, no_pol, model, next_visit_date, last_visit_date)
                SELECT gen_random_uuid(), src.id,
                       'B ' || (1000 + k % 9000) || ' ' || chr(65 + (k % 26)::int) || chr(65 + (k / 26 % 26)::int),
                       (ARRAY['Avanza', 'Xenia', 'Brio', 'Jazz', 'Ertiga', 'Innova'])[1 + k % 6],
                       CASE WHEN by_last THEN NULL ELSE due END,
                       CASE WHEN by_last THEN last END
                FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) k
                JOIN src ON src.g = k / 2
                CROSS JOIN LATERAL (SELECT $3::date + (k % $4)::int AS due) d
                CROSS JOIN LATERAL (SELECT (due - make_interval(months => $5))::date AS last) l
                CROSS JOIN LATERAL (
                    SELECT k / $4 % 10 = 3 AND (last + make_interval(months => $5))::date = due AS by_last
                ) b
                RETURNING 1
             )
             SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM v)",
        )
        .bind(start)
        .bind(n)
        .bind(today)
        .bind(SPREAD_DAYS)
        .bind(INTERVAL_MONTHS)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        customers += inserted.0;
        start += n;
    }
    Ok((customers, vehicles))
}
