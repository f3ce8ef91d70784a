//! Maintenance reminders (README "Maintenance reminders"): who is due, what they are told, the daily fan-out that
//! queues one idempotent reminder per vehicle and date, and its schedule.
//!
//! Follow the names: [`pass`] is the paged walk every reminder pass shares (a page per
//! transaction, set-wise), [`fanout`] the vehicles' pass,
//! [`schedule`] decides when a pass runs (apalis-cron ticks, ticks claimed in the database),
//! [`log`] keeps each reminder row in step with its message, [`report`] is the
//! `whatsapp_report` table, [`routes`] the HTTP surface.

pub mod calendar;
pub mod fanout;
pub mod log;
pub mod pass;
pub mod report;
pub mod routes;
pub mod schedule;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::{
    messages::phone::PhoneNumber,
    templates::{Current, Language, Origin, Subject, Workshop},
};

/// The scheduler's job id and name, as the seed's status endpoint shows them.
pub const JOB_ID: &str = "maintenance_reminder_job";
pub const JOB_NAME: &str = "Maintenance Reminder WhatsApp";

/// The business date of `now` in the workshop's time zone.
pub fn business_date(tz: Tz, now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// The deadline of a reminder for business date `date`: the end of that day, midnight in the
/// workshop's time zone at the start of the next day (README "Delivery policy": deadlines). A
/// midnight that a daylight-saving change skips is the first instant after it.
pub fn end_of_business_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let next = date
        .succ_opt()
        .unwrap_or(date)
        .and_time(chrono::NaiveTime::MIN);
    (0..=24)
        .find_map(|hour| {
            tz.from_local_datetime(&(next + chrono::Duration::hours(hour)))
                .earliest()
        })
        .map_or_else(|| next.and_utc(), |t| t.with_timezone(&Utc))
}

/// A vehicle due on one of the pass' dates, with its customer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub vehicle_id: uuid::Uuid,
    pub customer_id: uuid::Uuid,
    pub no_pol: Option<String>,
    pub model: Option<String>,
    /// The due date (README "Reminder calendar") and where it comes from.
    pub due_date: NaiveDate,
    pub due_source: String,
    /// The date the pass walks the vehicles by (`next_visit_date` or `last_visit_date`).
    pub walk_date: NaiveDate,
    pub nama: Option<String>,
    pub hp: Option<String>,
    pub salutation: Option<String>,
    pub language: String,
}

/// What the fan-out does with a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The text, and what its message records of the template.
    Remind {
        to: PhoneNumber,
        body: String,
        template: Origin,
    },
    Skip(String),
}

fn present(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Eligible vehicles with incomplete data are skipped with the reason (README "Maintenance
/// reminders"); the others get the template rendered for them.
pub fn verdict(c: &Candidate, date: NaiveDate, template: &Current, workshop: &Workshop) -> Verdict {
    let Some(nama) = present(&c.nama) else {
        return Verdict::Skip("customer has no name".into());
    };
    let Some(hp) = present(&c.hp) else {
        return Verdict::Skip("customer has no phone number".into());
    };
    let to = match PhoneNumber::parse(hp) {
        Ok(to) => to,
        Err(e) => return Verdict::Skip(format!("customer phone number {hp:?} is invalid: {e}")),
    };
    let Some(no_pol) = present(&c.no_pol) else {
        return Verdict::Skip("vehicle has no no_pol".into());
    };
    let subject = Subject {
        name: nama,
        salutation: c.salutation.as_deref(),
        language: Language::from_db(&c.language),
        no_pol,
        model: present(&c.model),
        due: c.due_date,
        today: date,
    };
    let (body, template) = template.render_recorded(&subject, workshop);
    Verdict::Remind { to, body, template }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate() -> Candidate {
        let due = NaiveDate::from_ymd_opt(2025, 12, 18).unwrap();
        Candidate {
            vehicle_id: uuid::Uuid::nil(),
            customer_id: uuid::Uuid::nil(),
            no_pol: Some("B 1234 ABC".into()),
            model: None,
            due_date: due,
            due_source: "next_visit_date".into(),
            walk_date: due,
            nama: Some(" Budi Santoso ".into()),
            hp: Some("08551234567".into()),
            salutation: None,
            language: "id".into(),
        }
    }

    /// The seeded Indonesian body (migrations/20261201000005_templates_calendar.sql).
    fn seeded() -> Current {
        Current {
            key: crate::templates::MAINTENANCE.into(),
            version: 1,
            bodies: crate::templates::Bodies {
                id: "{salutation} {nama} untuk nomor kendaraan {no_pol} sebentar lagi tiba saat pemeliharaan rutin pada tanggal {tanggal_dmy}, daftarkan segera melalui nomor pelayanan kami {service_phone}".into(),
                en: None,
            },
        }
    }

    fn judge(c: &Candidate) -> Verdict {
        let workshop = Workshop {
            service_phone: "08551000727".into(),
            name: "Bengkel".into(),
        };
        verdict(c, c.due_date, &seeded(), &workshop)
    }

    #[test]
    fn the_text_is_the_spec_text() {
        let Verdict::Remind { to, body, template } = judge(&candidate()) else {
            panic!("should remind");
        };
        assert_eq!(
            (template.key.as_str(), template.version),
            ("maintenance_reminder", 1)
        );
        assert_eq!(to.as_str(), "628551234567");
        assert_eq!(
            body,
            "Bapak Budi Santoso untuk nomor kendaraan B 1234 ABC sebentar lagi tiba saat pemeliharaan rutin pada tanggal 18-12-2025, daftarkan segera melalui nomor pelayanan kami 08551000727"
        );
    }

    #[test]
    fn incomplete_data_is_skipped_with_a_reason() {
        let mut c = candidate();
        c.nama = Some("  ".into());
        assert_eq!(judge(&c), Verdict::Skip("customer has no name".into()));
        let mut c = candidate();
        c.hp = None;
        assert_eq!(
            judge(&c),
            Verdict::Skip("customer has no phone number".into())
        );
        let mut c = candidate();
        c.hp = Some("12ab".into());
        assert!(matches!(judge(&c), Verdict::Skip(r) if r.contains("invalid")));
        let mut c = candidate();
        c.no_pol = None;
        assert_eq!(judge(&c), Verdict::Skip("vehicle has no no_pol".into()));
    }

    #[test]
    fn a_reminder_expires_at_the_next_local_midnight() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        assert_eq!(
            end_of_business_day(chrono_tz::Asia::Jakarta, date).to_rfc3339(),
            "2026-12-01T17:00:00+00:00"
        );
        assert_eq!(
            end_of_business_day(chrono_tz::UTC, date).to_rfc3339(),
            "2026-12-02T00:00:00+00:00"
        );
        // Santiago skips 00:00-01:00 on 2026-09-06: the day ends at 01:00 local (-03:00).
        let spring = NaiveDate::from_ymd_opt(2026, 9, 5).unwrap();
        assert_eq!(
            end_of_business_day(chrono_tz::America::Santiago, spring).to_rfc3339(),
            "2026-09-06T04:00:00+00:00"
        );
    }

    #[test]
    fn business_date_is_in_the_zone() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T18:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            business_date(chrono_tz::Asia::Jakarta, now),
            NaiveDate::from_ymd_opt(2026, 1, 2).unwrap()
        );
        assert_eq!(
            business_date(chrono_tz::UTC, now),
            NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
        );
    }
}
