//! The process' side of the cluster-wide rate: slots reserved from the shared bucket
//! (`sender::reserve`) a few at a time and handed to this process' runs, each at its time.
//!
//! A reservation takes at most as many slots as runs are waiting, never more than the burst and
//! never more than open within [`HORIZON`]: a process that dies loses at most that, never the
//! limit. A slot a run did not use (its message was held back at the claim) goes to the next
//! waiting run while it is fresh, or back to the bucket with the next reservation.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::{sync::Mutex, time::Instant};

use super::sender;

/// Slots are reserved only when they open within this.
pub const HORIZON: Duration = Duration::from_millis(250);
/// A slot not taken within this after it opened — and never more than half the interval
/// between two slots — is given back rather than used late (used late, it would crowd the next
/// second).
pub const FRESH: Duration = Duration::from_millis(100);

fn fresh_for(rate: f64) -> Duration {
    FRESH.min(Duration::from_secs_f64(0.5 / rate.max(0.01)))
}

/// What a run gets from the throttle.
#[derive(Debug)]
pub enum Acquired {
    /// Call now; give the slot back if the call is not made.
    Slot(Slot),
    /// No throttle (rate 0).
    Unlimited,
    /// The gateway asked for a pause: nothing goes out before then.
    RetryAfter(DateTime<Utc>),
}

#[derive(Debug)]
pub struct Slot {
    at: Instant,
    fresh: Duration,
}

#[derive(Default)]
struct Pool {
    slots: VecDeque<Instant>,
    /// Unused slots to hand back to the bucket with the next reservation.
    returned: u32,
}

#[derive(Clone)]
pub struct Throttle {
    db: PgPool,
    pool: Arc<Mutex<Pool>>,
    waiting: Arc<AtomicU32>,
}

impl Throttle {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            pool: Arc::default(),
            waiting: Arc::default(),
        }
    }

    /// Waits for a slot of the cluster's rate (`rate` and `burst` as this process last read
    /// them; the bucket itself uses the database's).
    pub async fn acquire(&self, rate: f64, burst: u32) -> Acquired {
        if rate <= 0.0 {
            return Acquired::Unlimited;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        let cap = burst.max(1);
        let fresh = fresh_for(rate);
        loop {
            let mut pool = self.pool.lock().await;
            let now = Instant::now();
            while let Some(at) = pool.slots.front().copied() {
                if at + fresh < now {
                    pool.slots.pop_front();
                    pool.returned += 1;
                } else {
                    break;
                }
            }
            if let Some(at) = pool.slots.pop_front() {
                drop(pool);
                tokio::time::sleep_until(at).await;
                if Instant::now() <= at + fresh {
                    return Acquired::Slot(Slot { at, fresh });
                }
                // Woken too late (a starved scheduler): used now, the slot would crowd the
                // next ones. It goes back; this run takes another.
                self.pool.lock().await.returned += 1;
                continue;
            }
            let want = self.waiting.load(Ordering::SeqCst).clamp(1, cap);
            let returned = std::mem::take(&mut pool.returned);
            match sender::reserve(&self.db, want, returned, HORIZON).await {
                Ok(Some(grant)) => {
                    if let Some(until) = grant.retry_after_until
                        && until > grant.now
                        && grant.granted == 0
                    {
                        return Acquired::RetryAfter(until);
                    }
                    let base = Instant::now();
                    for i in 1..=grant.granted {
                        pool.slots.push_back(base + grant.offset(i));
                    }
                    if grant.granted == 0 {
                        drop(pool);
                        tokio::time::sleep(grant.next_try(HORIZON).max(Duration::from_millis(5)))
                            .await;
                    }
                }
                Ok(None) => {
                    // No sender row (a database not seeded yet): nothing to limit against.
                    return Acquired::Unlimited;
                }
                Err(e) => {
                    pool.returned += returned;
                    drop(pool);
                    tracing::debug!("reserving send slots failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// A slot whose call was not made: the next run takes it while it is fresh, else the bucket
    /// gets it back.
    pub async fn give_back(&self, slot: Slot) {
        let mut pool = self.pool.lock().await;
        if slot.at + slot.fresh >= Instant::now() {
            pool.slots.push_front(slot.at);
        } else {
            pool.returned += 1;
        }
    }

    /// Hands every unused slot back to the bucket (shutdown).
    pub async fn release(&self) {
        let mut pool = self.pool.lock().await;
        let n = pool.returned + pool.slots.len() as u32;
        pool.slots.clear();
        pool.returned = 0;
        if n > 0
            && let Err(e) = sender::reserve(&self.db, 0, n, HORIZON).await
        {
            tracing::debug!("giving back {n} send slots failed: {e}");
        }
    }
}

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
