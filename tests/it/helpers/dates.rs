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
