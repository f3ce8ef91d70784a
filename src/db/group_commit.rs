//! Group commit: many tasks hand in one item each and wait; a few writer tasks take whatever has
//! gathered and write it with one statement. Under load that is one round trip and one commit
//! for dozens of items instead of one each; when idle an item is written at once, alone. Each
//! caller gets its own answer and returns only once its item is written.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{Mutex, mpsc, oneshot};

type Reply<O> = oneshot::Sender<Result<O, String>>;
type Inbox<I, O> = Arc<Mutex<mpsc::Receiver<(I, Reply<O>)>>>;

pub struct GroupCommit<I, O> {
    tx: mpsc::Sender<(I, Reply<O>)>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GroupError(String);

impl<I: Clone + Send + Sync + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// `write` gets a group and returns one answer per item, in order. `writers` groups may be
    /// in flight at once (while one waits for its commit the next gathers). A write that fails
    /// because the database is unreachable is retried until it is back; any other failure a
    /// few times, then its callers get the error.
    pub fn spawn<F, Fut>(writers: usize, max_group: usize, write: F) -> Self
    where
        F: Fn(Arc<Vec<I>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = sqlx::Result<Vec<O>>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(4 * max_group);
        let rx = Arc::new(Mutex::new(rx));
        let write = Arc::new(write);
        for _ in 0..writers.max(1) {
            tokio::spawn(run(rx.clone(), write.clone(), max_group));
        }
        Self { tx }
    }

    pub async fn submit(&self, item: I) -> Result<O, GroupError> {
        let stopped = || GroupError("the group writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(GroupError)
    }
}

async fn run<I, O, F, Fut>(rx: Inbox<I, O>, write: Arc<F>, max_group: usize)
where
    I: Clone + Send + Sync + 'static,
    O: Send + 'static,
    F: Fn(Arc<Vec<I>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = sqlx::Result<Vec<O>>> + Send + 'static,
{
    let mut gathered = Vec::with_capacity(max_group);
    loop {
        // Only gathering holds the lock; writing does not, so writers overlap.
        if rx.lock().await.recv_many(&mut gathered, max_group).await == 0 {
            return;
        }
        let (items, replies): (Vec<I>, Vec<Reply<O>>) = gathered.drain(..).unzip();
        let n = items.len();
        match write_with_retries(&*write, Arc::new(items.clone()), n).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            // One bad item must not fail the others it was grouped with: each alone.
            Err(_) if n > 1 => {
                for (item, reply) in items.into_iter().zip(replies) {
                    let answer = write_with_retries(&*write, Arc::new(vec![item]), 1)
                        .await
                        .and_then(|mut a| a.pop().ok_or_else(|| "no answer".to_owned()));
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes one group: waits out an unreachable database (what waits here already happened — a
/// gateway call — and giving up would leave it unrecorded, to be sent again), retries any
/// other failure a few times.
async fn write_with_retries<I, O, F, Fut>(
    write: &F,
    items: Arc<Vec<I>>,
    n: usize,
) -> Result<Vec<O>, String>
where
    F: Fn(Arc<Vec<I>>) -> Fut,
    Fut: Future<Output = sqlx::Result<Vec<O>>>,
{
    let mut wait = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        match write(items.clone()).await {
            Ok(answers) if answers.len() == n => return Ok(answers),
            Ok(answers) => {
                return Err(format!(
                    "group write answered {} of {n} items",
                    answers.len()
                ));
            }
            Err(e) if super::is_transient(&e) => {
                tracing::warn!(count = n, "group write waits for the database: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(500));
            }
            Err(e) if tries < 3 => {
                tracing::warn!(count = n, "group write failed, retrying: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
                tries += 1;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn every_caller_gets_its_own_answer_and_items_are_grouped() {
        let batches = Arc::new(AtomicUsize::new(0));
        let seen = batches.clone();
        let doubler = GroupCommit::spawn(1, 64, move |items: Arc<Vec<u32>>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(items.iter().map(|x| x * 2).collect())
            }
        });
        let answers = futures::future::join_all((0..100u32).map(|i| {
            let d = doubler.clone();
            async move { (i, d.submit(i).await.unwrap()) }
        }))
        .await;
        assert!(answers.iter().all(|(i, a)| *a == i * 2));
        assert!(
            batches.load(Ordering::SeqCst) < 100,
            "items were written in groups"
        );
    }

    #[tokio::test]
    async fn one_bad_item_fails_alone_and_the_others_of_its_group_are_written() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let opened = gate.clone();
        let writer = GroupCommit::spawn(1, 64, move |items: Arc<Vec<u32>>| {
            let gate = opened.clone();
            async move {
                // Hold the first write so that the rest gather into one group.
                if items.contains(&0) {
                    gate.notified().await;
                }
                if items.contains(&13) {
                    Err(sqlx::Error::RowNotFound)
                } else {
                    Ok(items.to_vec())
                }
            }
        });
        let first = tokio::spawn({
            let w = writer.clone();
            async move { w.submit(0).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rest = futures::future::join_all((10..16u32).map(|i| {
            let w = writer.clone();
            async move { (i, w.submit(i).await) }
        }));
        let rest = tokio::spawn(rest);
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), 0);
        for (i, answer) in rest.await.unwrap() {
            if i == 13 {
                assert!(answer.is_err());
            } else {
                assert_eq!(answer.unwrap(), i);
            }
        }
    }

    #[tokio::test]
    async fn another_failure_reaches_the_callers_after_a_few_tries() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let broken = GroupCommit::spawn(1, 8, move |_: Arc<Vec<u32>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Err::<Vec<u32>, _>(sqlx::Error::RowNotFound) }
        });
        assert!(broken.submit(7).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_write_waits_for_an_unreachable_database() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let flaky = GroupCommit::spawn(1, 8, move |items: Arc<Vec<u32>>| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 5 {
                    Err(sqlx::Error::PoolTimedOut)
                } else {
                    Ok(items.to_vec())
                }
            }
        });
        assert_eq!(flaky.submit(7).await.unwrap(), 7);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            6,
            "an unreachable database is waited for, beyond the retries of other errors"
        );
    }
}
