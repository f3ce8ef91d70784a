//! Group commit for send outcomes. Every handler hands its outcome to one recorder task per
//! process and waits until it is committed; the recorder writes whatever has gathered in one
//! statement. Under load that is one commit for dozens of sends instead of one each, and a
//! handler still returns only once its outcome is durable.

use std::{sync::Arc, time::Duration};

use apalis::prelude::BoxDynError;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::repo::{self, Recorded};

const MAX_BATCH: usize = 500;
/// Batches in flight at once: while one waits for its WAL flush the next one gathers.
const WRITERS: usize = 3;

type Reply = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<(Recorded, Reply)>,
}

impl Recorder {
    /// Starts the recorder task; it ends when the last handle is dropped.
    pub fn spawn(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(run(pool.clone(), rx.clone()));
        }
        Self { tx }
    }

    /// Returns once `recorded` is committed.
    pub async fn record(&self, recorded: Recorded) -> Result<(), BoxDynError> {
        let outcome = recorded.outcome;
        let (reply, done) = oneshot::channel();
        self.tx
            .send((recorded, reply))
            .await
            .map_err(|_| "the outcome recorder has stopped")?;
        done.await
            .map_err(|_| "the outcome recorder has stopped")??;
        metrics::counter!("bengkel_sends_total", "outcome" => outcome).increment(1);
        Ok(())
    }
}

async fn run(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<(Recorded, Reply)>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Only gathering holds the lock; writing does not, so writers overlap.
        if rx.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (records, replies): (Vec<Recorded>, Vec<Reply>) = batch.drain(..).unzip();
        let result = write(&pool, &records).await.map_err(|e| e.to_string());
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
}

/// Retries briefly through a database blip: losing a `sent` here would make the next run send
/// again.
async fn write(pool: &PgPool, records: &[Recorded]) -> sqlx::Result<()> {
    let mut wait = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        let result = async {
            let mut conn = pool.acquire().await?;
            repo::record_batch(&mut conn, records).await
        }
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if tries < 8 => {
                tracing::warn!(
                    count = records.len(),
                    "recording send outcomes failed, retrying: {e}"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
