//! Group commit of single sends (README "Bulk sending"): `POST /whatsapp/send` calls that
//! arrive together are written by one statement and one commit ([`store_group`]), each
//! caller answered with its own result once its group committed. When idle a request is written
//! at once, alone.

use std::sync::Arc;

use sqlx::PgPool;

use super::{
    request::NewMessage,
    store::{self, Item, Stored},
};
use crate::{db::group_commit::GroupCommit, error::AppError};

/// Requests written together at most.
pub const MAX_GROUP: usize = 64;
/// Groups in flight at once: while one commits, the next gathers.
const WRITERS: usize = 2;

/// Why a group was not stored, for every request in it.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The database is unreachable: `503`, try again.
    unavailable: bool,
    message: String,
}

impl From<Failed> for AppError {
    fn from(f: Failed) -> Self {
        if f.unavailable {
            AppError::Unavailable(f.message)
        } else {
            AppError::Internal(anyhow::anyhow!(f.message))
        }
    }
}

/// One `POST /whatsapp/send` (or query-string send) to store, with its idempotency origin.
#[derive(Debug, Clone)]
pub struct Enqueue {
    pub new: NewMessage,
    pub created_by: String,
    pub idempotency_key: Option<String>,
}

/// Stores a group of single sends with one statement and one commit; answers in order (a key
/// used by an earlier request of the same group is a replay or a conflict, as it would be
/// after that request's own commit).
pub async fn store_group(
    pool: &PgPool,
    group: &[Enqueue],
    max_attempts: u32,
) -> sqlx::Result<Vec<Stored>> {
    let items: Vec<Item<'_>> = group
        .iter()
        .map(|e| Item {
            idempotency_key: e.idempotency_key.as_deref(),
            ..Item::new(&e.new, &e.created_by)
        })
        .collect();
    let mut tx = pool.begin().await?;
    let stored = store::store(&mut tx, &items, None, max_attempts).await?;
    tx.commit().await?;
    metrics::histogram!("bengkel_enqueue_group_size").record(group.len() as f64);
    Ok(stored)
}

pub type Enqueuer = GroupCommit<Enqueue, Result<Stored, Failed>>;

/// The process' group writer.
///
/// A group that fails because the database is unreachable fails every request in it at once
/// (`503`, as a single insert would: the caller retries, with its `Idempotency-Key` if it has
/// one) — never retried here, where a commit of unknown outcome could store a message twice.
/// Any other failure (one request the database refuses) is retried by the batcher request by
/// request, so that it does not fail the others: nothing was committed.
pub fn spawn(pool: PgPool, max_attempts: u32) -> Enqueuer {
    GroupCommit::spawn(WRITERS, MAX_GROUP, move |group: Arc<Vec<Enqueue>>| {
        let pool = pool.clone();
        async move {
            match store_group(&pool, &group, max_attempts).await {
                Ok(stored) => Ok(stored.into_iter().map(Ok).collect()),
                Err(e) if crate::db::is_transient(&e) => {
                    let failed = Failed {
                        unavailable: true,
                        message: match AppError::from(e) {
                            AppError::Unavailable(m) => m,
                            other => other.to_string(),
                        },
                    };
                    Ok((0..group.len()).map(|_| Err(failed.clone())).collect())
                }
                Err(e) => Err(e),
            }
        }
    })
}
