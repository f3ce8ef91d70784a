//! Validation of a send request into a [`NewMessage`] (README "Sending"). Every invalid field is
//! reported at once; nothing here touches the database.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Map, Value};

use super::{Kind, phone::PhoneNumber};
use crate::{
    error::{AppError, FieldError},
    http::extract::{Fields, QueryPairs},
};

pub const MAX_BODY_CHARS: usize = 4096;
/// The gateway fetches the file from this URL; longer ones are refused (and are no URL anyone
/// means to send).
pub const MAX_FILE_URL_CHARS: usize = 2048;
pub const MAX_DELAY_SECS: i64 = 2_592_000;
pub const SCHEDULE_PAST_TOLERANCE_SECS: i64 = 60;
pub const SCHEDULE_MAX_AHEAD_DAYS: i64 = 366;

/// The body of `POST /whatsapp/send` as the OpenAPI document shows it; [`from_json`] is what
/// checks it (unknown fields are ignored; `null` is the same as absent for optional fields).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"to": "0812 3456 789", "body": "Kendaraan Anda sudah selesai diservis", "delay": 5}))]
#[allow(dead_code)]
pub struct SendRequest {
    /// The recipient: digits, optionally with spaces, `-`, `.`, `(`, `)` and a leading `+`.
    /// `0…` and a bare `8…` are Indonesian numbers (`62…`); 10 to 15 digits once normalized.
    #[schema(
        pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$",
        example = "0812 3456 789"
    )]
    to: String,
    /// The text: 1 to 4096 characters once trimmed.
    #[schema(min_length = 1, max_length = 4096, pattern = r"\S")]
    body: String,
    /// An absolute `http(s)` URL of a file to attach (the message goes out as media), up to 2048
    /// characters.
    #[schema(
        format = "uri",
        max_length = 2048,
        pattern = r"^\s*[hH][tT][tT][pP][sS]?://[^/?#\s]"
    )]
    file: Option<String>,
    /// Send after this many seconds (0 to 2,592,000 = 30 days). Not together with `schedule`.
    #[schema(minimum = 0, maximum = 2592000)]
    delay: Option<i64>,
    /// Send at this time, unix milliseconds: at most 60 s in the past and 366 days ahead.
    /// Not together with `delay`.
    schedule: Option<i64>,
}

/// A message that passed validation, ready to be stored with its job.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub kind: Kind,
    pub to: PhoneNumber,
    pub body: String,
    pub file: Option<String>,
    /// `None`: due now.
    pub run_at: Option<DateTime<Utc>>,
    /// Unsent by then: `expired` (README "Delivery policy": deadlines).
    pub expires_at: Option<DateTime<Utc>>,
    /// Ad-hoc: wait for the send window like a reminder (reminders always do).
    pub respect_window: bool,
    /// The canonical request, compared for `Idempotency-Key` replays.
    pub fingerprint: String,
}

impl NewMessage {
    /// The payload of this message's send job.
    pub fn job(&self, message_id: uuid::Uuid) -> crate::queue::SendJob {
        crate::queue::SendJob {
            message_id,
            window: self.respect_window || self.kind != Kind::Adhoc,
            expires_at: self.expires_at,
        }
    }

    /// A message built by the service itself (reminders, benchmarks): already valid.
    pub fn internal(
        kind: Kind,
        to: PhoneNumber,
        body: String,
        run_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            kind,
            to,
            body,
            file: None,
            run_at,
            expires_at: None,
            respect_window: false,
            fingerprint: String::new(),
        }
    }
}

fn check_body(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err("must not be empty".into());
    }
    if chars > MAX_BODY_CHARS {
        return Err(format!(
            "must be at most {MAX_BODY_CHARS} characters (got {chars})"
        ));
    }
    Ok(trimmed.to_owned())
}

pub fn check_file_url(raw: &str) -> Result<String, String> {
    let chars = raw.trim().chars().count();
    if chars > MAX_FILE_URL_CHARS {
        return Err(format!(
            "must be at most {MAX_FILE_URL_CHARS} characters (got {chars})"
        ));
    }
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|_| "must be an absolute http(s) URL".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an absolute http(s) URL".into());
    }
    Ok(raw.trim().to_owned())
}

fn check_delay(delay: i64, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if !(0..=MAX_DELAY_SECS).contains(&delay) {
        return Err(format!("must be between 0 and {MAX_DELAY_SECS} seconds"));
    }
    Ok(now + Duration::seconds(delay))
}

fn check_schedule(ms: i64, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let at = Utc
        .timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| "is not a valid unix timestamp in milliseconds".to_owned())?;
    if at < now - Duration::seconds(SCHEDULE_PAST_TOLERANCE_SECS) {
        return Err(format!(
            "must not be more than {SCHEDULE_PAST_TOLERANCE_SECS} s in the past"
        ));
    }
    if at > now + Duration::days(SCHEDULE_MAX_AHEAD_DAYS) {
        return Err(format!(
            "must not be more than {SCHEDULE_MAX_AHEAD_DAYS} days ahead"
        ));
    }
    Ok(at)
}

struct Raw<'a> {
    to: Option<&'a str>,
    body: Option<&'a str>,
    file: Option<&'a str>,
    delay: Option<i64>,
    schedule: Option<i64>,
}

fn build(
    raw: Raw<'_>,
    names: [&str; 5],
    mut errors: Vec<FieldError>,
) -> Result<NewMessage, AppError> {
    let [to_name, body_name, file_name, delay_name, schedule_name] = names;
    let now = Utc::now();
    let mut push = |field: &str, r: Result<(), String>| {
        if let Err(m) = r {
            errors.push(FieldError::new(field, m));
        }
    };
    let mut to = None;
    if let Some(raw_to) = raw.to {
        match PhoneNumber::parse(raw_to) {
            Ok(p) => to = Some(p),
            Err(e) => push(to_name, Err(e.to_string())),
        }
    }
    let mut body = None;
    if let Some(b) = raw.body {
        match check_body(b) {
            Ok(b) => body = Some(b),
            Err(e) => push(body_name, Err(e)),
        }
    }
    let mut file = None;
    if let Some(f) = raw.file {
        match check_file_url(f) {
            Ok(f) => file = Some(f),
            Err(e) => push(file_name, Err(e)),
        }
    }
    let mut run_at = None;
    match (raw.delay, raw.schedule) {
        (Some(_), Some(_)) => push(
            schedule_name,
            Err(format!(
                "give either `{delay_name}` or `{schedule_name}`, not both"
            )),
        ),
        (Some(d), None) => match check_delay(d, now) {
            Ok(at) => run_at = Some(at),
            Err(e) => push(delay_name, Err(e)),
        },
        (None, Some(ms)) => match check_schedule(ms, now) {
            Ok(at) => run_at = Some(at),
            Err(e) => push(schedule_name, Err(e)),
        },
        (None, None) => {}
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let (Some(to), Some(body)) = (to, body) else {
        return Err(AppError::Validation(vec![FieldError::new(
            to_name,
            "is required",
        )]));
    };
    // A delay of 0 is "now": keep it None so that the job is announced at once.
    let run_at = run_at.filter(|at| *at > now);
    let fingerprint = serde_json::json!({
        "to": to.as_str(), "body": body, "file": file, "delay": raw.delay, "schedule": raw.schedule,
    })
    .to_string();
    Ok(NewMessage {
        kind: Kind::Adhoc,
        to,
        body,
        file,
        run_at,
        expires_at: None,
        respect_window: false,
        fingerprint,
    })
}

/// `POST /whatsapp/send` body: `{to, body, file?, delay?, schedule?}`.
pub fn from_json(map: &Map<String, Value>) -> Result<NewMessage, AppError> {
    let mut f = Fields::new(map);
    let to = f.required_str("to");
    let body = f.required_str("body");
    let file = f.optional_str("file");
    let delay = f.optional_i64("delay");
    let schedule = f.optional_i64("schedule");
    build(
        Raw {
            to,
            body,
            file,
            delay,
            schedule,
        },
        ["to", "body", "file", "delay", "schedule"],
        f.errors,
    )
}

/// The query-string endpoints: `phone`, `message`, and `file_url` / `schedule_timestamp_ms`
/// where the route requires them.
pub fn from_query(
    q: &QueryPairs,
    with_file: bool,
    with_schedule: bool,
) -> Result<NewMessage, AppError> {
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
    let file = if with_file {
        required("file_url")
    } else {
        None
    };
    let schedule_raw = if with_schedule {
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
    build(
        Raw {
            to: phone,
            body: message,
            file,
            delay: None,
            schedule,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: Value) -> Result<NewMessage, AppError> {
        from_json(v.as_object().unwrap())
    }

    fn fields(r: Result<NewMessage, AppError>) -> Vec<String> {
        match r {
            Err(AppError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_request_is_normalized() {
        let m = json(serde_json::json!({"to": "0812 3456 789", "body": "  halo  "})).unwrap();
        assert_eq!(m.to.as_str(), "628123456789");
        assert_eq!(m.body, "halo");
        assert!(m.run_at.is_none());
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let r =
            json(serde_json::json!({"to": "12", "body": " ", "file": "ftp://x/y", "delay": -1}));
        assert_eq!(fields(r), ["to", "body", "file", "delay"]);
        assert_eq!(fields(json(serde_json::json!({}))), ["to", "body"]);
        assert_eq!(
            fields(json(
                serde_json::json!({"to": 628123456789u64, "body": "x"})
            )),
            ["to"]
        );
    }

    #[test]
    fn delay_and_schedule_rules() {
        let now_ms = Utc::now().timestamp_millis();
        let both = json(
            serde_json::json!({"to": "0812345678", "body": "x", "delay": 5, "schedule": now_ms}),
        );
        assert_eq!(fields(both), ["schedule"]);
        let past = json(
            serde_json::json!({"to": "0812345678", "body": "x", "schedule": now_ms - 120_000}),
        );
        assert_eq!(fields(past), ["schedule"]);
        let far = json(
            serde_json::json!({"to": "0812345678", "body": "x", "schedule": now_ms + 367 * 86_400_000i64}),
        );
        assert_eq!(fields(far), ["schedule"]);
        let too_long =
            json(serde_json::json!({"to": "0812345678", "body": "x", "delay": MAX_DELAY_SECS + 1}));
        assert_eq!(fields(too_long), ["delay"]);
        let ok = json(serde_json::json!({"to": "0812345678", "body": "x", "delay": 60})).unwrap();
        assert!(ok.run_at.unwrap() > Utc::now() + Duration::seconds(55));
        let body = "x".repeat(MAX_BODY_CHARS + 1);
        assert_eq!(
            fields(json(serde_json::json!({"to": "0812345678", "body": body}))),
            ["body"]
        );
    }
}
