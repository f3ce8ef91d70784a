//! The send window (quiet hours): `HH:MM-HH:MM` in the business time zone, when reminders,
//! manual sends and ad-hoc sends that ask for it may go out (README "Delivery policy").

use std::{fmt, str::FromStr};

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Minutes after local midnight; `start == end` is never written (`00:00-24:00` is "always").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    start: u32,
    end: u32,
}

const DAY: u32 = 24 * 60;

impl SendWindow {
    /// `07:00-21:00`: the daily fan-out at 07:00 sends at once; nobody is woken.
    pub const DEFAULT: SendWindow = SendWindow {
        start: 7 * 60,
        end: 21 * 60,
    };
    /// `00:00-24:00`: no quiet hours.
    pub const ALWAYS: SendWindow = SendWindow { start: 0, end: DAY };

    pub fn is_always(&self) -> bool {
        self.start == 0 && self.end == DAY
    }

    fn contains_minute(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            // crosses midnight (20:00-06:00)
            minute >= self.start || minute < self.end
        }
    }

    /// Whether `at` is inside the window in `tz`.
    pub fn contains(&self, at: DateTime<Utc>, tz: Tz) -> bool {
        if self.is_always() {
            return true;
        }
        let local = at.with_timezone(&tz).time();
        let minute = local.hour_minute();
        self.contains_minute(minute)
    }

    /// The first instant at or after `at` inside the window (`at` itself when it is inside).
    pub fn next_opening(&self, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        if self.contains(at, tz) {
            return at;
        }
        let local = at.with_timezone(&tz);
        let mut day = local.date_naive();
        // Today's opening if it is still ahead, else tomorrow's (a day or two covers every
        // window; a DST gap at the opening moves it to the first valid minute after).
        for _ in 0..3 {
            let opening = day.and_time(minute_time(self.start));
            if let Some(instant) = earliest_valid(tz, opening)
                && instant > at
            {
                return instant;
            }
            day = day.succ_opt().unwrap_or(day);
        }
        at + Duration::days(1)
    }
}

impl SendWindow {
    /// When the window closes on local date `date`, for a window inside one day (`07:00-21:00`);
    /// `None` for one that is always open or crosses midnight (it is open at the day's end).
    pub fn closing_on(&self, date: chrono::NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
        if self.is_always() || self.start > self.end || self.end >= DAY {
            return None;
        }
        earliest_valid(tz, date.and_time(minute_time(self.end)))
    }
}

trait HourMinute {
    fn hour_minute(&self) -> u32;
}

impl HourMinute for NaiveTime {
    fn hour_minute(&self) -> u32 {
        use chrono::Timelike;
        self.hour() * 60 + self.minute()
    }
}

fn minute_time(minute: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(minute / 60, minute % 60, 0).unwrap_or(NaiveTime::MIN)
}

/// The instant of a local time, skipping forward over a DST gap.
fn earliest_valid(tz: Tz, local: chrono::NaiveDateTime) -> Option<DateTime<Utc>> {
    (0..=120).find_map(|m| {
        tz.from_local_datetime(&(local + Duration::minutes(m)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected HH:MM-HH:MM (00:00 to 24:00, start and end different), e.g. 07:00-21:00")]
pub struct BadWindow;

fn parse_minute(raw: &str, allow_24: bool) -> Result<u32, BadWindow> {
    let (h, m) = raw.trim().split_once(':').ok_or(BadWindow)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(BadWindow);
    }
    let h: u32 = h.parse().map_err(|_| BadWindow)?;
    let m: u32 = m.parse().map_err(|_| BadWindow)?;
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !allow_24)) {
        return Err(BadWindow);
    }
    Ok(h * 60 + m)
}

impl FromStr for SendWindow {
    type Err = BadWindow;
    fn from_str(s: &str) -> Result<Self, BadWindow> {
        let (a, b) = s.split_once('-').ok_or(BadWindow)?;
        let start = parse_minute(a, false)?;
        let end = parse_minute(b, true)?;
        if start == end || (start == 0 && end == DAY) {
            return if start == 0 && end == DAY {
                Ok(Self::ALWAYS)
            } else {
                Err(BadWindow)
            };
        }
        // 24:00 only ends a window that starts the same day
        Ok(Self { start, end })
    }
}

impl fmt::Display for SendWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Jakarta;

    fn jkt(h: u32, m: u32) -> DateTime<Utc> {
        Jakarta
            .with_ymd_and_hms(2026, 12, 1, h, m, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn parses_and_prints() {
        let w: SendWindow = "07:00-21:00".parse().unwrap();
        assert_eq!(w.to_string(), "07:00-21:00");
        assert_eq!(
            "00:00-24:00".parse::<SendWindow>().unwrap(),
            SendWindow::ALWAYS
        );
        assert_eq!(
            "20:00-06:00".parse::<SendWindow>().unwrap().to_string(),
            "20:00-06:00"
        );
        assert_eq!(
            "08:30-24:00".parse::<SendWindow>().unwrap().to_string(),
            "08:30-24:00"
        );
        for bad in [
            "",
            "7-21",
            "07:00",
            "07:00-07:00",
            "24:00-07:00",
            "07:60-08:00",
            "25:00-26:00",
            "07:00-24:01",
            "7:00-21:00",
            "aa:bb-cc:dd",
            "07:00-21:00-22:00",
        ] {
            assert!(bad.parse::<SendWindow>().is_err(), "{bad}");
        }
    }

    #[test]
    fn contains_and_next_opening() {
        let w: SendWindow = "07:00-21:00".parse().unwrap();
        assert!(w.contains(jkt(7, 0), Jakarta));
        assert!(w.contains(jkt(20, 59), Jakarta));
        assert!(!w.contains(jkt(21, 0), Jakarta));
        assert!(!w.contains(jkt(6, 59), Jakarta));
        assert_eq!(w.next_opening(jkt(12, 0), Jakarta), jkt(12, 0));
        assert_eq!(w.next_opening(jkt(5, 0), Jakarta), jkt(7, 0));
        assert_eq!(
            w.next_opening(jkt(21, 18), Jakarta),
            jkt(7, 0) + Duration::days(1)
        );
    }

    #[test]
    fn a_window_may_cross_midnight() {
        let w: SendWindow = "20:00-06:00".parse().unwrap();
        assert!(w.contains(jkt(23, 0), Jakarta));
        assert!(w.contains(jkt(2, 0), Jakarta));
        assert!(!w.contains(jkt(12, 0), Jakarta));
        assert_eq!(w.next_opening(jkt(12, 0), Jakarta), jkt(20, 0));
        assert!(SendWindow::ALWAYS.contains(jkt(3, 0), Jakarta));
    }

    #[test]
    fn a_window_inside_the_day_closes_at_its_end_on_that_date() {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let w: SendWindow = "07:00-21:00".parse().unwrap();
        assert_eq!(w.closing_on(date, Jakarta), Some(jkt(21, 0)));
        let night: SendWindow = "20:00-06:00".parse().unwrap();
        assert_eq!(night.closing_on(date, Jakarta), None);
        assert_eq!(SendWindow::ALWAYS.closing_on(date, Jakarta), None);
        let to_midnight: SendWindow = "07:00-24:00".parse().unwrap();
        assert_eq!(to_midnight.closing_on(date, Jakarta), None);
    }
}
