//! When a failed delivery is tried again (SPEC §12 "Delivery"): the `WEBHOOK_RETRY_SCHEDULE`
//! delay of the attempt × a random factor in [0.8, 1.2]; at least 60 s after `429`, `502`, `504`
//! or a timeout; at least a `Retry-After` of up to an hour.

use std::{fmt, str::FromStr, time::Duration};

use rand::RngExt;

use super::AttemptClass;

/// The floor after an answer that says "slow down".
pub const SLOW_DOWN_FLOOR: Duration = Duration::from_secs(60);
/// The longest `Retry-After` honoured.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// The delays between attempts: `n` delays make `n + 1` attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(Vec<Duration>);

impl Default for Schedule {
    fn default() -> Self {
        "5s,5m,30m,2h,5h,10h,10h"
            .parse()
            .unwrap_or_else(|_| Schedule(vec![Duration::from_secs(5)]))
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let delays = raw
            .split(',')
            .map(|part| parse_duration(part.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 50 {
            return Err("at most 50 delays".into());
        }
        Ok(Schedule(delays))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `5s`, `5m`, `2h`, `5d` (and what `humantime` reads: `1h 30m`); more than zero.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw).map_err(|e| format!("`{raw}`: {e}"))?;
    if d.is_zero() {
        return Err(format!("`{raw}`: must be more than zero"));
    }
    Ok(d)
}

impl Schedule {
    /// Attempts in all.
    pub fn attempts(&self) -> i32 {
        self.0.len() as i32 + 1
    }

    /// The delay after failed attempt `attempt` (1-based) with jitter `factor`, before the
    /// floors; `None` when it was the last.
    fn base(&self, attempt: i32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.0.get(index).copied()
    }

    /// How long to wait after failed attempt `attempt` (1-based) of class `class`, with the
    /// receiver's `Retry-After`; `None`: no attempt left.
    pub fn next(
        &self,
        attempt: i32,
        class: AttemptClass,
        http_status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let factor = rand::rng().random_range(0.8..=1.2);
        self.next_with(attempt, class, http_status, retry_after, factor)
    }

    fn next_with(
        &self,
        attempt: i32,
        class: AttemptClass,
        http_status: Option<u16>,
        retry_after: Option<Duration>,
        factor: f64,
    ) -> Option<Duration> {
        let mut delay = self.base(attempt)?.mul_f64(factor);
        let slow_down = matches!(class, AttemptClass::RateLimited | AttemptClass::Timeout)
            || matches!(http_status, Some(502 | 504));
        if slow_down {
            delay = delay.max(SLOW_DOWN_FLOOR);
        }
        if let Some(after) = retry_after {
            delay = delay.max(after.min(RETRY_AFTER_CAP));
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_default_is_eight_attempts() {
        let s = Schedule::default();
        assert_eq!(s.attempts(), 8);
        assert_eq!(s.base(1), Some(S(5)));
        assert_eq!(s.base(2), Some(S(300)));
        assert_eq!(s.base(7), Some(S(36_000)));
        assert_eq!(s.base(8), None);
        assert_eq!(s.to_string(), "5s,5m,30m,2h,5h,10h,10h");
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!("".parse::<Schedule>().is_err());
        assert!("5s,,5m".parse::<Schedule>().is_err());
        assert!("5x".parse::<Schedule>().is_err());
        assert!("0s".parse::<Schedule>().is_err());
        assert_eq!("1s".parse::<Schedule>().map(|s| s.attempts()), Ok(2));
    }

    #[test]
    fn jitter_scales_the_delay() {
        let s = Schedule::default();
        let next = |f| s.next_with(2, AttemptClass::ServerError, Some(500), None, f);
        assert_eq!(next(0.8), Some(S(240)));
        assert_eq!(next(1.2), Some(S(360)));
        for _ in 0..100 {
            let d = s
                .next(2, AttemptClass::ServerError, Some(500), None)
                .unwrap();
            assert!(d >= S(240) && d <= S(360), "{d:?}");
        }
    }

    #[test]
    fn slow_down_answers_wait_at_least_a_minute() {
        let s = Schedule::default();
        for (class, status) in [
            (AttemptClass::RateLimited, Some(429)),
            (AttemptClass::ServerError, Some(502)),
            (AttemptClass::ServerError, Some(504)),
            (AttemptClass::Timeout, None),
        ] {
            assert_eq!(s.next_with(1, class, status, None, 1.0), Some(S(60)));
        }
        assert_eq!(
            s.next_with(1, AttemptClass::ServerError, Some(500), None, 1.0),
            Some(S(5))
        );
        assert_eq!(
            s.next_with(1, AttemptClass::Connect, None, None, 1.0),
            Some(S(5))
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_an_hour() {
        let s = Schedule::default();
        let next = |after| s.next_with(1, AttemptClass::RateLimited, Some(429), Some(after), 1.0);
        assert_eq!(next(S(120)), Some(S(120)));
        assert_eq!(next(S(10)), Some(S(60)));
        assert_eq!(next(S(86_400)), Some(S(3600)));
        assert_eq!(
            s.next_with(8, AttemptClass::RateLimited, Some(429), Some(S(1)), 1.0),
            None
        );
    }
}
