//! The process' side of the cluster-wide rate: slots reserved from the shared bucket
//! (`sender::reserve`) a few at a time and handed to this process' runs, each at its time.
//!
//! A reservation takes at most as many slots as runs are waiting, never more than the burst and
//! never more than open within [`HORIZON`]: a process that dies loses at most that, never the
//! limit. A slot a run did not use (its message was held back at the claim) goes to the next
//! waiting run while it is fresh, or back to the bucket with the next reservation.
//!
//! Runs of class [`Class::Bulk`] (campaign messages) yield to the others (README "Delivery
//! policy": campaigns yield): a bulk run takes a slot only while no single run of this process
//! is still looking for one, and only once the slot has opened (a single run takes it ahead of
//! time), so that a single run that arrives finds the next slot free: it waits for one slot
//! interval at most, as if no bulk run were there. While
//! single runs wait, bulk runs get no slot at all (strict priority: "at most 50 %" of the rate
//! with the shortest wait for the reminders); when none waits, bulk runs take every slot.
//!
//! No wait lasts longer than the policy in force needs: a run that got no slot sleeps until the
//! next one could open, never more than [`MAX_WAIT`], and at once asks again when this process
//! reads a new rate or burst ([`Throttle::follow`]) — so a policy change reaches runs already
//! waiting within the refresh interval plus one reservation.

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
use tokio::{
    sync::{Mutex, watch},
    time::Instant,
};

use super::{clamped_secs, sender};
use crate::queue::Class;

/// Slots are reserved only when they open within this.
pub const HORIZON: Duration = Duration::from_millis(250);
/// A slot not taken within this after it opened — and never more than half the interval
/// between two slots — is given back rather than used late (used late, it would crowd the next
/// second).
pub const FRESH: Duration = Duration::from_millis(100);
/// The longest a run sleeps without asking the bucket again: whatever the rate said when it
/// went to sleep, it learns the bucket's current one at least this often.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

fn fresh_for(rate: f64) -> Duration {
    clamped_secs(0.5 / rate, FRESH)
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
    /// When the throttle let it go (the wall clock read at the check against `fresh`).
    pub released_at: DateTime<Utc>,
}

#[derive(Default)]
struct Pool {
    slots: VecDeque<Instant>,
    /// Unused slots to hand back to the bucket with the next reservation.
    returned: u32,
    /// The bucket had nothing to give before this: the runs of this process wait for it
    /// together rather than each asking again. Cleared when the policy changes.
    not_before: Option<Instant>,
}

/// The rate and burst this process last read (`None` before the first reading).
type Pace = Option<(f64, u32)>;

/// How this process reads the bucket's clock (the database's): a slot is a database time, used
/// at the matching local instant. Taken from the reservation with the shortest round trip in
/// the last [`ANCHOR_FOR`] (as NTP does), so that a reply that comes back late does not move
/// its slots late with it — slots moved late by different amounts in different processes
/// would crowd one second.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// The round trip it was read with: the database's time lies within it.
    rtt: Duration,
    /// The middle of that round trip, and the database's time then.
    local: Instant,
    db: DateTime<Utc>,
}

/// An anchor is read afresh after this.
const ANCHOR_FOR: Duration = Duration::from_secs(30);
/// Round trips per reading of the anchor.
const PINGS: usize = 3;

impl Anchor {
    fn observe(current: Option<Self>, sent: Instant, received: Instant, db: DateTime<Utc>) -> Self {
        let rtt = received.saturating_duration_since(sent);
        let fresh = Self {
            rtt,
            local: sent + rtt / 2,
            db,
        };
        match current {
            Some(a) if a.rtt < rtt && received.saturating_duration_since(a.local) < ANCHOR_FOR => a,
            _ => fresh,
        }
    }

    /// The local instant of database time `at`, never early: the anchor's error is at most half
    /// its round trip.
    fn local_of(&self, at: DateTime<Utc>) -> Instant {
        let margin = self.rtt / 2;
        match (at - self.db).to_std() {
            Ok(ahead) => self.local + ahead + margin,
            Err(_) => {
                let behind = (self.db - at).to_std().unwrap_or_default();
                (self.local + margin)
                    .checked_sub(behind)
                    .unwrap_or(self.local)
            }
        }
    }
}

#[derive(Clone)]
pub struct Throttle {
    db: PgPool,
    pool: Arc<Mutex<Pool>>,
    waiting: Arc<AtomicU32>,
    anchor: Arc<std::sync::Mutex<Option<Anchor>>>,
    pace: Arc<watch::Sender<Pace>>,
    /// Single runs of this process looking for a slot (not yet holding one): bulk runs wait
    /// while there are any.
    singles: Arc<watch::Sender<u32>>,
}

impl Throttle {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            pool: Arc::default(),
            waiting: Arc::default(),
            anchor: Arc::default(),
            pace: Arc::new(watch::channel(None).0),
            singles: Arc::new(watch::channel(0).0),
        }
    }

    /// The rate and burst this process just read: runs waiting for a slot take them up at once.
    pub fn follow(&self, rate: f64, burst: u32) {
        self.pace.send_if_modified(|pace| {
            let changed = *pace != Some((rate, burst));
            *pace = Some((rate, burst));
            changed
        });
    }

    /// Waits for a slot of the cluster's rate (`rate` and `burst` as this process last read
    /// them, replaced by newer readings while it waits; the bucket itself uses the database's).
    /// A [`Class::Bulk`] run lets single runs go first (see the module comment).
    pub async fn acquire(&self, rate: f64, burst: u32, class: Class) -> Acquired {
        let mut changes = self.pace.subscribe();
        let mut singles = self.singles.subscribe();
        let (mut rate, mut burst) = (rate, burst);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        let mut hunger = Hunger::new(&self.singles, class);
        loop {
            let latest = *changes.borrow_and_update();
            if let Some(pace) = latest {
                (rate, burst) = pace;
            }
            if rate <= 0.0 {
                return Acquired::Unlimited;
            }
            let cap = burst.max(1);
            let fresh = fresh_for(rate);
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
            if let Some(at) = pool.slots.front().copied() {
                if class == Class::Bulk {
                    let singles_wait = *singles.borrow_and_update() > 0;
                    if singles_wait || at > now {
                        drop(pool);
                        // Until no single run waits, or until this slot opens: a single run that
                        // comes before then takes it.
                        let until = if singles_wait { now + MAX_WAIT } else { at };
                        self.give_way(until, &mut singles, &mut changes).await;
                        continue;
                    }
                }
                pool.slots.pop_front();
                hunger.fed();
                drop(pool);
                // Within HORIZON (its offset clamped to MAX_WAIT): not cut short, or the slot
                // would be used before the bucket opened it.
                tokio::time::sleep_until(at).await;
                let released_at = Utc::now();
                if Instant::now() <= at + fresh {
                    return Acquired::Slot(Slot {
                        at,
                        fresh,
                        released_at,
                    });
                }
                // Woken too late (a starved scheduler): used now, the slot would crowd the
                // next ones. It goes back; this run takes another.
                self.pool.lock().await.returned += 1;
                hunger.hungry_again();
                continue;
            }
            if let Some(until) = pool.not_before.filter(|t| *t > now) {
                // Another run of this process just found the bucket empty.
                drop(pool);
                self.pause(until.min(now + MAX_WAIT), &mut changes).await;
                continue;
            }
            let want = self.waiting.load(Ordering::SeqCst).clamp(1, cap);
            let returned = std::mem::take(&mut pool.returned);
            match self.reserve(want, returned).await {
                Ok(Some((anchor, grant))) => {
                    if let Some(until) = grant.retry_after_until
                        && until > grant.now
                        && grant.granted == 0
                    {
                        return Acquired::RetryAfter(until);
                    }
                    if grant.rate <= 0.0 && grant.granted == 0 {
                        // The limit was lifted: the bucket no longer refills.
                        return Acquired::Unlimited;
                    }
                    let base = anchor.local_of(grant.now);
                    for i in 1..=grant.granted {
                        pool.slots.push_back(base + grant.offset(i));
                    }
                    if grant.granted == 0 {
                        let until = Instant::now()
                            + grant
                                .next_try(HORIZON)
                                .clamp(Duration::from_millis(5), MAX_WAIT);
                        pool.not_before = Some(until);
                        drop(pool);
                        self.pause(until, &mut changes).await;
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

    /// Sleeps until `until`, or until this process reads a new rate or burst: then every
    /// waiting run asks the bucket again at once.
    async fn pause(&self, until: Instant, changes: &mut watch::Receiver<Pace>) {
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            Ok(()) = changes.changed() => {
                self.pool.lock().await.not_before = None;
            }
        }
    }

    /// A bulk run waits until `until`, or until the single runs waiting change, or the rate.
    async fn give_way(
        &self,
        until: Instant,
        singles: &mut watch::Receiver<u32>,
        changes: &mut watch::Receiver<Pace>,
    ) {
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            Ok(()) = singles.changed() => {}
            Ok(()) = changes.changed() => {
                self.pool.lock().await.not_before = None;
            }
        }
    }

    /// Reserves slots, with the anchor to place them by.
    async fn reserve(
        &self,
        want: u32,
        returned: u32,
    ) -> sqlx::Result<Option<(Anchor, sender::Grant)>> {
        let mut conn = self.db.acquire().await?;
        let anchor = self.anchor(&mut conn).await?;
        let grant = sender::reserve(&mut *conn, want, returned, HORIZON).await?;
        Ok(grant.map(|g| (anchor, g)))
    }

    /// The anchor in force, read afresh ([`PINGS`] quick round trips on `conn`, the quickest
    /// kept) when there is none or it is older than [`ANCHOR_FOR`]. Not read from the
    /// reservations themselves: their round trip includes the wait for the sender's row (and on
    /// a connection's first use, preparing the statement), and slots mapped through a slow
    /// reading would go out late against those mapped through a quick one.
    async fn anchor(&self, conn: &mut sqlx::PgConnection) -> sqlx::Result<Anchor> {
        let current = *self.anchor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = current
            && a.local.elapsed() < ANCHOR_FOR
        {
            return Ok(a);
        }
        let mut next = None;
        for _ in 0..PINGS {
            let sent = Instant::now();
            let db: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
                .fetch_one(&mut *conn)
                .await?;
            let fresh = Anchor::observe(next, sent, Instant::now(), db);
            next = Some(fresh);
        }
        let next = next
            .unwrap_or_else(|| Anchor::observe(None, Instant::now(), Instant::now(), Utc::now()));
        *self.anchor.lock().unwrap_or_else(|e| e.into_inner()) = Some(next);
        Ok(next)
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

/// A single run counted among those looking for a slot until it holds one (or leaves).
struct Hunger<'a> {
    singles: &'a watch::Sender<u32>,
    class: Class,
    counted: bool,
}

impl<'a> Hunger<'a> {
    fn new(singles: &'a watch::Sender<u32>, class: Class) -> Self {
        let mut hunger = Self {
            singles,
            class,
            counted: false,
        };
        hunger.hungry_again();
        hunger
    }

    fn hungry_again(&mut self) {
        if self.class == Class::Single && !self.counted {
            self.counted = true;
            self.singles.send_modify(|n| *n += 1);
        }
    }

    fn fed(&mut self) {
        if self.counted {
            self.counted = false;
            self.singles.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

impl Drop for Hunger<'_> {
    fn drop(&mut self) {
        self.fed();
    }
}

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_reply_that_comes_back_late_does_not_move_its_slots_late() {
        let t0 = Instant::now();
        let d0 = Utc::now();
        // A quick round trip: the database's time was read 1 ms after sending.
        let quick = Anchor::observe(None, t0, t0 + ms(2), d0 + chrono::Duration::milliseconds(1));
        // A second later the database answers at once, but the reply takes 300 ms to arrive.
        let t1 = t0 + ms(1000);
        let d1 = d0 + chrono::Duration::milliseconds(1001);
        let anchor = Anchor::observe(Some(quick), t1, t1 + ms(300), d1);
        let slot = anchor.local_of(d1);
        assert!(slot >= t1 + ms(1), "never early");
        assert!(
            slot <= t1 + ms(3),
            "at the database's time, not the reply's: {:?}",
            slot - t1
        );
    }

    #[test]
    fn an_old_anchor_gives_way_and_a_quicker_one_replaces_it() {
        let t0 = Instant::now();
        let d0 = Utc::now();
        let first = Anchor::observe(None, t0, t0 + ms(10), d0);
        let quicker = Anchor::observe(Some(first), t0 + ms(100), t0 + ms(102), d0);
        assert_eq!(quicker.rtt, ms(2));
        let slower = Anchor::observe(Some(quicker), t0 + ms(200), t0 + ms(250), d0);
        assert_eq!(slower.rtt, ms(2), "kept while recent");
        let later = t0 + ANCHOR_FOR + ms(200);
        let renewed = Anchor::observe(Some(quicker), later, later + ms(50), d0);
        assert_eq!(renewed.rtt, ms(50), "renewed after ANCHOR_FOR");
    }

    #[test]
    fn a_time_before_the_anchor_maps_before_it() {
        let t0 = Instant::now() + ms(1000);
        let d0 = Utc::now();
        let anchor = Anchor::observe(None, t0, t0 + ms(2), d0);
        let earlier = anchor.local_of(d0 - chrono::Duration::milliseconds(500));
        assert_eq!(earlier, t0 + ms(1) + ms(1) - ms(500));
    }
}
