//! The delivery policy (README "Delivery policy"): cluster-wide rules that keep a real WhatsApp
//! number safe. A job held back by the policy is snoozed (`queue::snooze`): no attempt spent, no
//! slot held.

pub mod hold;
pub mod routes;
pub mod sender;
pub mod settings;
pub mod throttle;
pub mod window;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use self::{sender::SenderState, settings::Settings, throttle::Throttle};

/// How often a process reads the settings and the sender's state: a change made through the
/// API on any process is followed by all within this (README: within 2 s).
pub const REFRESH: Duration = Duration::from_millis(500);
/// A job held while the half-open probe is out is looked at again after at most this.
const PROBE_RECHECK_SECS: i64 = 5;
/// Every process has read a change after this (a refresh may take a moment).
pub const FOLLOWED_WITHIN: Duration = Duration::from_millis(1_500);

pub use self::{hold::HoldReason, sender::Circuit};

/// `secs` seconds as a [`Duration`] from `ZERO` to `max`: computed from rates read from the
/// database, a wait may come out negative, NaN or beyond what a `Duration` holds, and
/// `Duration::from_secs_f64` panics on those.
pub fn clamped_secs(secs: f64, max: Duration) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else if secs >= max.as_secs_f64() {
        max
    } else {
        Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
    }
}

/// What this process knows of the policy, refreshed every [`REFRESH`].
#[derive(Debug, Clone)]
pub struct View {
    pub settings: Settings,
    pub sender: SenderState,
}

/// One per process: the policy as last read, and the process' share of the rate.
#[derive(Clone)]
pub struct Policy {
    pool: PgPool,
    view: Arc<RwLock<Option<View>>>,
    pub throttle: Throttle,
    pub tz: Tz,
}

/// The delivery policy as it stands when a group of claims is made (`messages::claim`).
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules {
    /// `SEND_RETRY_AMBIGUOUS`: a message found `sending` is sent again.
    pub take_interrupted: bool,
    /// Whether now is inside the send window, and when it next opens.
    pub in_window: bool,
    pub next_opening: DateTime<Utc>,
    /// Two calls to one number at least this far apart (0 = no spacing).
    pub spacing_secs: u32,
}

/// Where a run stands before it claims its message (from this process' view).
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    Go,
    /// This run is the half-open circuit's probe.
    Probe,
    Hold {
        until: DateTime<Utc>,
        reason: HoldReason,
    },
}

impl Policy {
    pub fn new(pool: PgPool, tz: Tz) -> Self {
        Self {
            throttle: Throttle::new(pool.clone()),
            pool,
            view: Arc::default(),
            tz,
        }
    }

    pub fn view(&self) -> Option<View> {
        self.view.read().ok().and_then(|v| v.clone())
    }

    pub async fn refresh(&self) -> sqlx::Result<()> {
        let settings = settings::load(&self.pool).await?;
        let sender = sender::state(&self.pool).await?;
        if let (Some(settings), Some(sender)) = (settings, sender) {
            metrics::gauge!("bengkel_send_rate_effective").set(sender.rate_effective);
            metrics::gauge!("bengkel_circuit_open").set(if sender.circuit == Circuit::Closed {
                0.0
            } else {
                1.0
            });
            self.throttle.follow(sender.rate_effective, settings.burst);
            if let Ok(mut v) = self.view.write() {
                *v = Some(View { settings, sender });
            }
        }
        Ok(())
    }

    /// Keeps the view fresh until `shutdown`, then gives unused slots back.
    pub fn spawn_refresher(&self, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        this.throttle.release().await;
                        return;
                    }
                    _ = tick.tick() => {
                        if let Err(e) = this.refresh().await {
                            tracing::debug!("delivery policy refresh failed: {e}");
                        }
                    }
                }
            }
        });
    }

    /// The sender's holds and the send window, before a run waits for the rate or claims:
    /// what can be decided without the database. The claim checks all of it again.
    pub async fn gate(
        &self,
        run_id: &str,
        window_applies: bool,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Gate> {
        let Some(view) = self.view() else {
            return Ok(Gate::Go);
        };
        let s = &view.sender;
        if let Some(until) = s.retry_after_until.filter(|u| *u > now) {
            return Ok(Gate::Hold {
                until,
                reason: HoldReason::RetryAfter,
            });
        }
        let circuit_hold = |until: Option<DateTime<Utc>>| Gate::Hold {
            until: until
                .filter(|u| *u > now)
                .unwrap_or(now + chrono::Duration::seconds(1)),
            reason: HoldReason::CircuitOpen,
        };
        match s.circuit {
            Circuit::Open if s.reopen_at.is_some_and(|r| r > now) => {
                return Ok(circuit_hold(s.reopen_at));
            }
            Circuit::HalfOpen if s.probe_until.is_some_and(|p| p > now) => {
                // The probe's answer may close the circuit any moment: look again soon.
                let soon = now + chrono::Duration::seconds(PROBE_RECHECK_SECS);
                return Ok(circuit_hold(s.probe_until.map(|p| p.min(soon))));
            }
            Circuit::Open | Circuit::HalfOpen => {
                let lease = Duration::from_secs(60);
                if sender::try_probe(&self.pool, run_id, lease).await? {
                    let _ = self.refresh().await;
                    return Ok(Gate::Probe);
                }
                return Ok(circuit_hold(None));
            }
            Circuit::Closed => {}
        }
        if window_applies && !view.settings.send_window.contains(now, self.tz) {
            return Ok(Gate::Hold {
                until: view.settings.send_window.next_opening(now, self.tz),
                reason: HoldReason::SendWindow,
            });
        }
        Ok(Gate::Go)
    }

    /// The rules a group of claims is made under.
    pub fn claim_rules(&self, take_interrupted: bool, now: DateTime<Utc>) -> ClaimRules {
        let (window, spacing) = match self.view() {
            Some(v) => (
                v.settings.send_window,
                v.settings.recipient_min_interval_secs,
            ),
            None => (window::SendWindow::ALWAYS, 0),
        };
        ClaimRules {
            take_interrupted,
            in_window: window.contains(now, self.tz),
            next_opening: window.next_opening(now, self.tz),
            spacing_secs: spacing,
        }
    }

    /// The rate and burst to pace with (0 = no limit).
    pub fn rate(&self) -> (f64, u32) {
        match self.view() {
            Some(v) => (v.sender.rate_effective, v.settings.burst),
            None => (0.0, 1),
        }
    }
}

/// A policy change may free held messages: the jobs of messages held by the window or the
/// spacing are due again now (each is looked at again at its claim). Returns how many.
pub async fn wake_held(pool: &PgPool) -> sqlx::Result<u64> {
    let mut conn = pool.acquire().await?;
    let held = crate::messages::read::held_jobs(
        &mut conn,
        &[HoldReason::SendWindow, HoldReason::RecipientSpacing],
    )
    .await?;
    crate::queue::wake(&mut conn, &held).await
}
