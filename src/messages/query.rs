//! The seed's query-string send endpoints (`/whatsapp/send-simple`, `send-with-file`,
//! `send-scheduled`): their parameters read into the same checks as a JSON send.

use super::request::{EXPIRES_AT, NewMessage, Raw, TTL_SECONDS, Text, build};
use crate::{
    error::{AppError, FieldError},
    http::extract::QueryPairs,
};

/// Which of the query-string endpoints, and so which parameters it requires besides `phone`
/// and `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryRoute {
    /// `/whatsapp/send-simple`
    Simple,
    /// `/whatsapp/send-with-file`: `file_url`
    WithFile,
    /// `/whatsapp/send-scheduled`: `schedule_timestamp_ms`
    Scheduled,
}

/// An `expires_at` from a query string, where an unencoded `+` of the offset arrives as a space
/// (`…T21:00:00 07:00`): read as the `+` it was.
fn query_deadline(raw: &str) -> String {
    let raw = raw.trim();
    match raw.rsplit_once(' ') {
        Some((head, offset))
            if head.contains('T') && offset.len() == 5 && offset.as_bytes()[2] == b':' =>
        {
            format!("{head}+{offset}")
        }
        _ => raw.to_owned(),
    }
}

/// The query-string endpoints: `phone`, `message`, and `file_url` / `schedule_timestamp_ms`
/// where the route requires them; optional `expires_at`, `ttl_seconds`, `respect_window` as in
/// the JSON body (a blank one is absent).
pub fn from_query(q: &QueryPairs, route: QueryRoute) -> Result<NewMessage, AppError> {
    let mut errors = Vec::new();
    let mut required = |name: &str| {
        let v = q.get(name).filter(|v| !v.trim().is_empty());
        if v.is_none() {
            errors.push(FieldError::new(name, "is required"));
        }
        v
    };
    let phone = required("phone");
    let message = required("message");
    let file = if route == QueryRoute::WithFile {
        required("file_url")
    } else {
        None
    };
    let schedule_raw = if route == QueryRoute::Scheduled {
        required("schedule_timestamp_ms")
    } else {
        None
    };
    let schedule = match schedule_raw.map(|s| s.trim().parse::<i64>()) {
        Some(Ok(ms)) => Some(ms),
        Some(Err(_)) => {
            errors.push(FieldError::new(
                "schedule_timestamp_ms",
                "must be an integer (unix milliseconds)",
            ));
            None
        }
        None => None,
    };
    let optional = |name: &str| q.get(name).filter(|v| !v.trim().is_empty());
    let expires_at = optional(EXPIRES_AT).map(query_deadline);
    let ttl_seconds = match optional(TTL_SECONDS).map(|s| s.trim().parse::<i64>()) {
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            errors.push(FieldError::new(TTL_SECONDS, "must be an integer"));
            None
        }
        None => None,
    };
    let respect_window = optional("respect_window")
        .is_some()
        .then(|| q.flag("respect_window", false, &mut errors));
    build(
        Raw {
            to: phone,
            text: message.map(Text::Body),
            file,
            delay: None,
            schedule,
            expires_at: expires_at.as_deref(),
            ttl_seconds,
            respect_window,
        },
        [
            "phone",
            "message",
            "file_url",
            "delay",
            "schedule_timestamp_ms",
        ],
        errors,
    )
    // `message` is a body: no template to render.
    .map(|(message, _)| message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_string_offset_whose_plus_became_a_space_is_read_as_plus() {
        assert_eq!(
            query_deadline("2099-01-01T10:00:00 07:00"),
            "2099-01-01T10:00:00+07:00"
        );
        assert_eq!(
            query_deadline("2099-01-01T10:00:00Z"),
            "2099-01-01T10:00:00Z"
        );
        assert_eq!(query_deadline("soon please"), "soon please");
        let q = QueryPairs(vec![
            ("phone".into(), "08123456789".into()),
            ("message".into(), "hi".into()),
            ("expires_at".into(), "2099-01-01T10:00:00 07:00".into()),
        ]);
        let m = from_query(&q, QueryRoute::Simple).unwrap();
        assert_eq!(
            m.expires_at.unwrap().to_rfc3339(),
            "2099-01-01T03:00:00+00:00"
        );
    }
}
