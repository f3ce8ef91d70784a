//! Runs waiting in this process for a slot of their subscription (`deliver::claim`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::Notify;
use uuid::Uuid;

/// How long a run whose subscription has [`super::MAX_IN_FLIGHT`] deliveries in flight waits in this
/// process for one of them to finish (woken by [`Waiters::finished`]) before it snoozes.
pub(super) const CAPACITY_WAIT: Duration = Duration::from_secs(2);

/// At most this many runs of one subscription wait in a process: half of its webhook worker
/// slots (16), so that a receiver that hangs leaves the other half (less its 4 in flight) to
/// every other subscription.
pub(super) const MAX_WAITERS: i64 = 8;

/// Runs waiting in this process for a slot of their subscription, woken one by one as its
/// deliveries finish here. At most [`MAX_WAITERS`] runs wait per subscription (a burst to one
/// receiver runs 4 at a time with the next ones ready); any more snooze at once, to be woken by a
/// finishing delivery's record. A waiter gives up after [`CAPACITY_WAIT`]. (When every worker
/// slot could wait, a receiver that hung held the process's workers: another subscription's 40
/// deliveries took 4.6 s longer. With 4 waiters at most, a burst to one receiver fell from
/// ~300 to 89 deliveries/s: most runs snoozed and waited for a wake-up each.)
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
    /// A place among `subscription_id`'s waiters, or `None` when it has its fill.
    pub(super) fn enter(&self, subscription_id: Uuid) -> Option<Waiting<'_>> {
        let mut map = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(subscription_id).or_default();
        if entry.1 >= MAX_WAITERS {
            return None;
        }
        entry.1 += 1;
        Some(Waiting {
            waiters: self,
            subscription_id,
            notify: entry.0.clone(),
        })
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
