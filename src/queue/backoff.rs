//! Exponential backoff with jitter: `min(max, base · 2^(attempt-1))`, then "equal jitter" so that
//! a burst of failures does not come back as a burst of retries. Pure, so it is unit-tested here.

use std::time::Duration;

use rand::RngExt;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The un-jittered delay after failed attempt number `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let factor = 1u64 << exp;
        let secs = self.base.as_secs_f64() * factor as f64;
        Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
    }

    /// The delay to wait after failed attempt `attempt`: uniformly in `[ceiling/2, ceiling]`,
    /// never zero when the base is not zero.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::rng().random_range(0.0..=1.0))
    }

    /// [`Self::delay`] with the jitter given (`0` = half the ceiling, `1` = the ceiling).
    pub fn delay_with(&self, attempt: u32, jitter: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = ceiling - half;
        half + spread.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let b = Backoff::new(Duration::from_secs(10), Duration::from_secs(3600));
        assert_eq!(b.ceiling(1), Duration::from_secs(10));
        assert_eq!(b.ceiling(2), Duration::from_secs(20));
        assert_eq!(b.ceiling(4), Duration::from_secs(80));
        assert_eq!(b.ceiling(20), Duration::from_secs(3600));
        assert_eq!(b.ceiling(500), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_between_half_and_the_ceiling() {
        let b = Backoff::new(Duration::from_secs(10), Duration::from_secs(3600));
        for attempt in 1..10 {
            for _ in 0..100 {
                let d = b.delay(attempt);
                assert!(
                    d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt),
                    "{d:?}"
                );
                assert!(!d.is_zero());
            }
        }
    }
}
