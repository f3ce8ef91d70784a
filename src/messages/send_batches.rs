//! The `send_batches` table: one row per `POST /whatsapp/send-batch` call made with an
//! `Idempotency-Key` — the key, a hash of the request, and the answer to replay.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

/// What a replay is compared with: the SHA-256 of the canonical body (object keys sorted), in
/// hex. A hash, not the body: a 1,000-item batch is up to a few megabytes.
pub fn fingerprint(body: &impl serde::Serialize) -> String {
    // Serializing a JSON value cannot fail.
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes `key` in `owner`'s key space for batch `id`, on the caller's transaction. False when a
/// committed batch holds it (a concurrent one waited for that commit).
pub async fn take_key(
    conn: &mut PgConnection,
    id: Uuid,
    owner: &str,
    key: &str,
    fingerprint: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO send_batches (id, idempotency_scope, idempotency_key, request_fingerprint, result)
         VALUES ($1, $2, $3, $4, '{}') ON CONFLICT (idempotency_scope, idempotency_key) DO NOTHING",
    )
    .bind(id)
    .bind(owner)
    .bind(key)
    .bind(fingerprint)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps the batch's answer for replays.
pub async fn save_answer<T: serde::Serialize + Sync>(
    conn: &mut PgConnection,
    id: Uuid,
    answer: &T,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE send_batches SET result = $2 WHERE id = $1")
        .bind(id)
        .bind(Json(answer))
        .execute(conn)
        .await?;
    Ok(())
}

/// The batch that holds `key` in `owner`'s key space: its id, request fingerprint and answer.
pub async fn find(
    pool: &PgPool,
    owner: &str,
    key: &str,
) -> sqlx::Result<Option<(Uuid, String, Value)>> {
    let row: Option<(Uuid, String, Json<Value>)> = sqlx::query_as(
        "SELECT id, request_fingerprint, result FROM send_batches
         WHERE idempotency_scope = $1 AND idempotency_key = $2",
    )
    .bind(owner)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, fingerprint, Json(answer))| (id, fingerprint, answer)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fingerprint_is_a_sha256_of_the_canonical_body() {
        let a = super::fingerprint(&serde_json::json!({"messages": [{"to": "1", "body": "x"}]}));
        let b = super::fingerprint(&serde_json::json!({"messages": [{"body": "x", "to": "1"}]}));
        assert_eq!(a, b, "key order does not matter");
        assert_eq!(a.len(), 64);
        assert_ne!(a, super::fingerprint(&serde_json::json!({"messages": []})));
    }
}
