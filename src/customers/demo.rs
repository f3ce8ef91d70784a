//! `demo-data --vehicles N`: customers (two vehicles each) with due dates spread evenly over the
//! next 60 days from the business date, so about 5 % fall in the default 3-day reminder window.
//! One in 49 customers has no phone number, to show the `skipped` path (49, not 50: 50 shares
//! factors with the 60-day spread and would put them all on a few dates). Set-wise SQL in
//! chunks: a million vehicles is a few dozen statements.

use chrono::NaiveDate;
use sqlx::PgPool;

pub const SPREAD_DAYS: i64 = 60;
/// Even, so that a customer's two vehicles are always in the same chunk.
const CHUNK: i64 = 100_000;

/// Inserts `vehicles` vehicles (and half as many customers); returns (customers, vehicles).
pub async fn load(pool: &PgPool, vehicles: i64, today: NaiveDate) -> sqlx::Result<(i64, i64)> {
    let mut customers = 0;
    let mut start = 0;
    while start < vehicles {
        let n = CHUNK.min(vehicles - start);
        let mut tx = pool.begin().await?;
        // Vehicle k (0-based, global) belongs to customer k / 2 of this run.
        let inserted: (i64, i64) = sqlx::query_as(
            "WITH src AS MATERIALIZED (
                SELECT g, gen_random_uuid() AS id
                FROM generate_series($1::bigint / 2, ($1::bigint + $2::bigint - 1) / 2) g
             ), c AS (
                INSERT INTO customers (id, nama, hp, alamat, email)
                SELECT id, 'Pelanggan ' || g,
                       CASE WHEN g % 49 = 0 THEN NULL ELSE '0812' || lpad(g::text, 8, '0') END,
                       'Jl. Contoh No. ' || g, 'pelanggan' || g || '@example.com'
                FROM src
                RETURNING 1
             ), v AS (
                INSERT INTO vehicles (id, customer_id, no_pol, model, next_visit_date)
                SELECT gen_random_uuid(), src.id,
                       'B ' || (1000 + k % 9000) || ' ' || chr(65 + (k % 26)::int) || chr(65 + (k / 26 % 26)::int),
                       (ARRAY['Avanza', 'Xenia', 'Brio', 'Jazz', 'Ertiga', 'Innova'])[1 + k % 6],
                       $3::date + (k % $4)::int
                FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) k JOIN src ON src.g = k / 2
                RETURNING 1
             )
             SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM v)",
        )
        .bind(start)
        .bind(n)
        .bind(today)
        .bind(SPREAD_DAYS)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        customers += inserted.0;
        start += n;
    }
    Ok((customers, vehicles))
}
