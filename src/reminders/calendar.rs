//! The reminder calendar (README "Reminder calendar"): on which days before its due date a
//! vehicle (or a manual record) is reminded, and the due date itself — the explicit next visit,
//! else the last visit plus `SERVICE_INTERVAL_MONTHS`.

use std::{fmt, str::FromStr};

use chrono::{Months, NaiveDate};
use serde::Serialize;

/// The most days before a due date a reminder can go out.
pub const MAX_DAYS_BEFORE: u32 = 366;
/// The most reminders per due date.
pub const MAX_ENTRIES: usize = 31;

/// Days before the due date, largest first, no repeats, never empty (`2,1,0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct DaysBefore(Vec<u32>);

impl DaysBefore {
    /// The seed's behaviour: a reminder on each of the three days up to the due date.
    pub fn standard() -> Self {
        Self(vec![2, 1, 0])
    }

    /// `REMINDER_DAYS_THRESHOLD`'s meaning: every day of `0..threshold`.
    pub fn within(threshold: u32) -> Self {
        Self((0..threshold.clamp(1, MAX_DAYS_BEFORE + 1)).rev().collect())
    }

    pub fn from_values(values: impl IntoIterator<Item = i64>) -> Result<Self, String> {
        let mut days = Vec::new();
        for v in values {
            let d = u32::try_from(v)
                .ok()
                .filter(|d| *d <= MAX_DAYS_BEFORE)
                .ok_or_else(|| {
                    format!("each entry must be a whole number of days from 0 to {MAX_DAYS_BEFORE}")
                })?;
            if !days.contains(&d) {
                days.push(d);
            }
        }
        if days.is_empty() {
            return Err("must name at least one day (e.g. 2,1,0)".into());
        }
        if days.len() > MAX_ENTRIES {
            return Err(format!("must name at most {MAX_ENTRIES} days"));
        }
        days.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Self(days))
    }

    pub fn days(&self) -> &[u32] {
        &self.0
    }

    /// The due dates reminded on business date `date`, earliest first.
    pub fn due_dates(&self, date: NaiveDate) -> Vec<NaiveDate> {
        let mut due: Vec<NaiveDate> = self
            .0
            .iter()
            .map(|d| date + chrono::Days::new(u64::from(*d)))
            .collect();
        due.sort_unstable();
        due
    }

    /// For the database (`integer[]`).
    pub fn to_db(&self) -> Vec<i32> {
        self.0.iter().map(|d| *d as i32).collect()
    }
}

impl FromStr for DaysBefore {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let values = s
            .split(',')
            .map(|p| {
                p.trim().parse::<i64>().map_err(|_| {
                    format!(
                        "expected days before the due date separated by commas (2,1,0), got {p:?}"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_values(values)
    }
}

impl fmt::Display for DaysBefore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Where a due date comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DueSource {
    /// The explicit `next_visit_date` (or a manual record's `next_service`).
    NextVisitDate,
    /// `last_visit_date` (`last_service`) plus `SERVICE_INTERVAL_MONTHS`.
    LastVisitDate,
}

impl DueSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NextVisitDate => "next_visit_date",
            Self::LastVisitDate => "last_visit_date",
        }
    }
}

/// The due date: an explicit next visit wins; else the last visit plus `months` (a day that
/// the month lacks is its last day: 31 October + 4 months = 28 February, as PostgreSQL counts).
pub fn due_date(
    next: Option<NaiveDate>,
    last: Option<NaiveDate>,
    months: u32,
) -> Option<(NaiveDate, DueSource)> {
    if let Some(next) = next {
        return Some((next, DueSource::NextVisitDate));
    }
    let last = last?;
    last.checked_add_months(Months::new(months))
        .map(|d| (d, DueSource::LastVisitDate))
}

/// The last visits whose due date (`+ months`) can fall within `first..=last`: from the first
/// day that month arithmetic can reach them to three days later (a month end clamps 29–31 to
/// 28). A superset, narrowed by the exact due date.
pub fn last_visit_range(first: NaiveDate, last: NaiveDate, months: u32) -> (NaiveDate, NaiveDate) {
    let back = |d: NaiveDate| d.checked_sub_months(Months::new(months)).unwrap_or(d);
    (back(first), back(last) + chrono::Days::new(3))
}

/// One ordered walk of a reminder pass over one index: the records due on `due`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueWalk {
    /// Due by an explicit next visit (`next_visit_date`, `next_service`); walked by id.
    Next { due: NaiveDate },
    /// No next visit: due by the last visit plus the interval; walked by (last visit, id) over
    /// the last visits `from..=to` ([`last_visit_range`]).
    Last {
        due: NaiveDate,
        from: NaiveDate,
        to: NaiveDate,
    },
}

impl DueWalk {
    /// The cursor before the walk's first record: (walk date, id).
    fn start(self) -> (NaiveDate, uuid::Uuid) {
        match self {
            Self::Next { due } => (due, uuid::Uuid::nil()),
            Self::Last { from, .. } => (from, uuid::Uuid::nil()),
        }
    }
}

/// The walks of a pass on business date `date`, each with the cursor before its first record:
/// explicit next visits first, then last visits, one due date at a time. Each walk is then a
/// plain ordered range of one index (a set of dates in one query makes the planner sort every
/// match of the window for each page).
pub fn due_walks(
    days_before: &DaysBefore,
    date: NaiveDate,
    months: u32,
) -> Vec<(DueWalk, (NaiveDate, uuid::Uuid))> {
    let due = days_before.due_dates(date);
    let next = due.iter().map(|&due| DueWalk::Next { due });
    let last = due.iter().map(|&due| {
        let (from, to) = last_visit_range(due, due, months);
        DueWalk::Last { due, from, to }
    });
    next.chain(last).map(|w| (w, w.start())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn days_before_parse_sort_and_refuse_nonsense() {
        assert_eq!("0, 2,1,2".parse::<DaysBefore>().unwrap().days(), [2, 1, 0]);
        assert_eq!("3,1".parse::<DaysBefore>().unwrap().to_string(), "3,1");
        assert!("".parse::<DaysBefore>().is_err());
        assert!("1,-1".parse::<DaysBefore>().is_err());
        assert!("367".parse::<DaysBefore>().is_err());
        assert!("a".parse::<DaysBefore>().is_err());
        assert_eq!(DaysBefore::within(3), DaysBefore::standard());
        assert_eq!(
            DaysBefore::standard().due_dates(d(2026, 12, 30)),
            [d(2026, 12, 30), d(2026, 12, 31), d(2027, 1, 1)]
        );
    }

    #[test]
    fn an_explicit_next_visit_wins_over_the_last_visit() {
        assert_eq!(
            due_date(Some(d(2026, 12, 5)), Some(d(2026, 1, 1)), 4),
            Some((d(2026, 12, 5), DueSource::NextVisitDate))
        );
        assert_eq!(
            due_date(None, Some(d(2026, 8, 1)), 4),
            Some((d(2026, 12, 1), DueSource::LastVisitDate))
        );
        assert_eq!(
            due_date(None, Some(d(2026, 10, 31)), 4),
            Some((d(2027, 2, 28), DueSource::LastVisitDate))
        );
        assert_eq!(due_date(None, None, 4), None);
    }

    #[test]
    fn a_pass_walks_next_visits_first_then_last_visits_a_due_date_at_a_time() {
        let days = "1,0".parse::<DaysBefore>().unwrap();
        let (walks, starts): (Vec<_>, Vec<_>) =
            due_walks(&days, d(2026, 12, 1), 4).into_iter().unzip();
        assert_eq!(
            walks,
            [
                DueWalk::Next {
                    due: d(2026, 12, 1)
                },
                DueWalk::Next {
                    due: d(2026, 12, 2)
                },
                DueWalk::Last {
                    due: d(2026, 12, 1),
                    from: d(2026, 8, 1),
                    to: d(2026, 8, 4)
                },
                DueWalk::Last {
                    due: d(2026, 12, 2),
                    from: d(2026, 8, 2),
                    to: d(2026, 8, 5)
                },
            ]
        );
        assert_eq!(starts[0], (d(2026, 12, 1), uuid::Uuid::nil()));
        assert_eq!(starts[2], (d(2026, 8, 1), uuid::Uuid::nil()));
    }

    #[test]
    fn the_last_visit_range_holds_every_visit_due_in_the_window() {
        // Every last visit of 2026 whose due date falls in the window is inside the range.
        for months in [1, 4, 6] {
            for (first, last) in [
                (d(2027, 2, 26), d(2027, 2, 28)),
                (d(2027, 3, 29), d(2027, 3, 31)),
            ] {
                let (lo, hi) = last_visit_range(first, last, months);
                let mut day = d(2026, 1, 1);
                while day < d(2027, 4, 1) {
                    let (due, _) = due_date(None, Some(day), months).unwrap();
                    if due >= first && due <= last {
                        assert!(day >= lo && day <= hi, "{day} due {due} outside {lo}..{hi}");
                    }
                    day = day.succ_opt().unwrap();
                }
            }
        }
    }
}
