//! The business calendar of the default `APP_TIMEZONE` (Asia/Jakarta, no daylight saving).

use chrono::{NaiveDate, Utc};

/// Today in Jakarta.
pub fn today() -> NaiveDate {
    Utc::now()
        .with_timezone(&chrono_tz::Asia::Jakarta)
        .date_naive()
}

/// `offset` days from today in Jakarta.
pub fn day(offset: i64) -> NaiveDate {
    today() + chrono::Duration::days(offset)
}

/// A send window (`SEND_WINDOW`) that does not contain the current time in Jakarta.
pub fn window_excluding_now() -> String {
    use chrono::Timelike;
    let now = Utc::now().with_timezone(&chrono_tz::Asia::Jakarta);
    format!(
        "{:02}:00-{:02}:00",
        (now.hour() + 2) % 24,
        (now.hour() + 3) % 24
    )
}
