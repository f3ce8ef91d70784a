//! Group commit of single sends (README "Bulk sending"): `POST /whatsapp/send` calls that
//! arrive together are written by one statement and one commit (`repo::store_group`), each
//! caller answered with its own result once its group committed. When idle a request is written
//! at once, alone.

use std::sync::Arc;

use sqlx::PgPool;

use super::repo::{self, Enqueue, Stored};
use crate::{db::batch::Batcher, error::AppError};

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

pub type Enqueuer = Batcher<Enqueue, Result<Stored, Failed>>;

/// The process' group writer.
///
/// A group that fails because the database is unreachable fails every request in it at once
/// (`503`, as a single insert would: the caller retries, with its `Idempotency-Key` if it has
/// one) — never retried here, where a commit of unknown outcome could store a message twice.
/// Any other failure (one request the database refuses) is retried by the batcher request by
/// request, so that it does not fail the others: nothing was committed.
pub fn spawn(pool: PgPool, max_attempts: u32) -> Enqueuer {
    Batcher::spawn(WRITERS, MAX_GROUP, move |group: Arc<Vec<Enqueue>>| {
        let pool = pool.clone();
        async move {
            match repo::store_group(&pool, &group, max_attempts).await {
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
