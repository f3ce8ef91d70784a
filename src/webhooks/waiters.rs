//! Runs waiting in this process for a slot of their subscription (`deliver::claim`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::Notify;
use uuid::Uuid;

/// How long a run whose subscription has [`super::MAX_IN_FLIGHT`] deliveries in flight waits in this
/// process for one of them to finish (woken by [`Waiters::finished`]) before it snoozes.
pub(super) const CAPACITY_WAIT: Duration = Duration::from_secs(2);

/// Runs waiting in this process for a slot of their subscription, woken one by one as its
/// deliveries finish here. Every worker slot may wait (a burst to one receiver then runs 4 at a
/// time with no snooze); a waiter gives up after [`CAPACITY_WAIT`], so a slow receiver delays
/// the others' deliveries by at most that, now and then.
#[derive(Default)]
pub struct Waiters {
    waiting: std::sync::Mutex<HashMap<Uuid, (Arc<Notify>, i64)>>,
}

/// A place among a subscription's waiters; leaves it when dropped.
pub(super) struct Waiting<'a> {
    waiters: &'a Waiters,
    subscription_id: Uuid,
    pub(super) notify: Arc<Notify>,
}

impl Waiters {
    pub(super) fn enter(&self, subscription_id: Uuid) -> Waiting<'_> {
        let mut map = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(subscription_id).or_default();
        entry.1 += 1;
        Waiting {
            waiters: self,
            subscription_id,
            notify: entry.0.clone(),
        }
    }

    /// A delivery of `subscription_id` finished here: one waiter may try again.
    pub fn finished(&self, subscription_id: Uuid) {
        let map = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((notify, _)) = map.get(&subscription_id) {
            notify.notify_one();
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut map = self
            .waiters
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(&self.subscription_id) {
            entry.1 -= 1;
            if entry.1 <= 0 {
                map.remove(&self.subscription_id);
            }
        }
    }
}
