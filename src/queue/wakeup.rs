//! When an idle worker looks for jobs: when apalis' insert trigger announces a due job (NOTIFY),
//! and every [`super::POLL_INTERVAL`] for jobs that come due later (scheduled sends, retries,
//! snoozes).
//!
//! One LISTEN connection per process, shared by every worker of every queue (apalis' own
//! `Pubsub` opens one per worker, outside the pool: with 8 workers that was 8 connections the
//! connection budget could not see). A listener that drops reconnects and wakes everybody, since
//! it may have missed announcements.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use futures::FutureExt;
use serde::Deserialize;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::{Notify, futures::OwnedNotified};
use tokio_util::sync::CancellationToken;

/// The channel apalis' insert trigger notifies (see apalis-postgres' migrations).
const CHANNEL: &str = "apalis::job::insert";

/// One `Notify` per queue, fed by the process' listener.
#[derive(Clone, Default)]
pub struct Wakeups {
    queues: Arc<std::sync::Mutex<HashMap<String, Arc<Notify>>>>,
}

#[derive(Deserialize)]
struct InsertEvent {
    job_type: String,
}

impl Wakeups {
    fn notify(&self, queue: &str) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.entry(queue.to_owned()).or_default().clone()
    }

    /// Wakes this process' idle workers of `queue` to fetch now: a bulk run that settled left
    /// room for the next bulk job (`get_jobs.sql` gives a worker at most half its slots of
    /// them, so a worker that found nothing else parked and would wait for its next poll).
    pub fn wake(&self, queue: &str) {
        self.notify(queue).notify_waiters();
    }

    fn wake_all(&self) {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for n in queues.values() {
            n.notify_waiters();
        }
    }

    /// The poll strategy of one worker of `queue`.
    pub fn wakeup(&self, queue: &str, period: Duration) -> Wakeup {
        let notify = self.notify(queue);
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Wakeup {
            notified: Box::pin(notify.clone().notified_owned()),
            notify,
            interval,
        }
    }

    /// Listens until `shutdown`, reconnecting after a lost connection.
    pub fn spawn_listener(&self, pool: PgPool, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = this.listen(&pool) => {
                        if let Err(e) = result {
                            tracing::debug!("job listener lost its connection: {e}");
                        }
                    }
                }
                this.wake_all();
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
    }

    async fn listen(&self, pool: &PgPool) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        // Anything inserted while we were not listening.
        self.wake_all();
        loop {
            let notification = listener.recv().await?;
            if let Ok(event) = serde_json::from_str::<InsertEvent>(notification.payload()) {
                self.notify(&event.job_type).notify_waiters();
            }
        }
    }
}

pub struct Wakeup {
    notify: Arc<Notify>,
    notified: Pin<Box<OwnedNotified>>,
    interval: tokio::time::Interval,
}

impl PollStrategy for Wakeup {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut ready = false;
        // Poll both sources every time, so that each keeps its waker registered.
        if self.notified.as_mut().poll_unpin(cx).is_ready() {
            ready = true;
            self.notified = Box::pin(self.notify.clone().notified_owned());
            let _ = self.notified.as_mut().poll_unpin(cx);
        }
        while self.interval.poll_tick(cx).is_ready() {
            ready = true;
        }
        if ready {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
