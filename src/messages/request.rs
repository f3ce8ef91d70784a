//! Validation of a send request into a [`NewMessage`] (README "Sending"). Every invalid field is
//! reported at once; nothing here touches the database.

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value};

use super::{Kind, phone::PhoneNumber};
use crate::{
    error::{AppError, FieldError},
    http::extract::Fields,
};

pub const MAX_BODY_CHARS: usize = 4096;
/// The gateway fetches the file from this URL; longer ones are refused (and are no URL anyone
/// means to send).
pub const MAX_FILE_URL_CHARS: usize = 2048;
pub const MAX_DELAY_SECS: i64 = 2_592_000;
pub const SCHEDULE_PAST_TOLERANCE_SECS: i64 = 60;
pub const SCHEDULE_MAX_AHEAD_DAYS: i64 = 366;
/// The longest `ttl_seconds`: 30 days, as `delay`.
pub const MAX_TTL_SECS: i64 = 2_592_000;

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
    /// The deadline (RFC 3339 with offset): a message still unsent then becomes `expired` (within
    /// 15 s) and is never sent late. Must be in the future and later than the time the message
    /// is due (`delay`/`schedule`). Not together with `ttl_seconds`.
    #[schema(format = DateTime, example = "2026-12-01T21:00:00+07:00")]
    expires_at: Option<String>,
    /// The deadline as seconds after the message is due (now, or `delay`/`schedule`): 1 to
    /// 2,592,000 (30 days). Not together with `expires_at`.
    #[schema(minimum = 1, maximum = 2592000)]
    ttl_seconds: Option<i64>,
    /// `true`: wait for the send window (`SEND_WINDOW`, quiet hours) like a reminder. Ad-hoc
    /// sends ignore the window by default.
    #[schema(default = false)]
    respect_window: Option<bool>,
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
    /// The template (key, version) the body was rendered from (README "Templates").
    pub template: Option<(String, i32)>,
}

impl NewMessage {
    /// The payload of this message's send job.
    pub fn job(&self, message_id: uuid::Uuid) -> crate::queue::SendJob {
        crate::queue::SendJob {
            message_id,
            window: self.respect_window || self.kind.keeps_window(),
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
            template: None,
        }
    }

    /// Notes the template version the body was rendered from.
    pub fn from_template(mut self, current: &crate::templates::Current) -> Self {
        self.template = Some((current.key.clone(), current.version));
        self
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

/// An `expires_at` as a client writes it: RFC 3339 with an offset.
fn parse_deadline(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            "must be an RFC 3339 timestamp with an offset, e.g. 2026-12-01T21:00:00+07:00"
                .to_owned()
        })
}

/// The deadline of a message due at `due`: `expires_at`, or `ttl_seconds` after `due`. A
/// deadline at or before `due` could never be met.
fn check_deadline(
    expires_at: DateTime<Utc>,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    if expires_at <= now {
        return Err("must not be in the past".into());
    }
    if expires_at <= due {
        return Err(format!(
            "must be later than the time the message is due ({})",
            due.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    Ok(expires_at)
}

pub(super) struct Raw<'a> {
    pub(super) to: Option<&'a str>,
    pub(super) body: Option<&'a str>,
    pub(super) file: Option<&'a str>,
    pub(super) delay: Option<i64>,
    pub(super) schedule: Option<i64>,
    pub(super) expires_at: Option<&'a str>,
    pub(super) ttl_seconds: Option<i64>,
    pub(super) respect_window: Option<bool>,
}

pub(super) const EXPIRES_AT: &str = "expires_at";
pub(super) const TTL_SECONDS: &str = "ttl_seconds";

pub(super) fn build(
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
    // The deadline counts from when the message is due (a delay of 0 or a schedule a few
    // seconds past is due now).
    let due = run_at.filter(|at| *at > now).unwrap_or(now);
    let mut expires_at = None;
    match (raw.expires_at, raw.ttl_seconds) {
        (Some(_), Some(_)) => {
            let both = format!("give either `{EXPIRES_AT}` or `{TTL_SECONDS}`, not both");
            push(EXPIRES_AT, Err(both.clone()));
            push(TTL_SECONDS, Err(both));
        }
        (Some(at), None) => match parse_deadline(at).and_then(|at| check_deadline(at, due, now)) {
            Ok(at) => expires_at = Some(at),
            Err(e) => push(EXPIRES_AT, Err(e)),
        },
        (None, Some(ttl)) if (1..=MAX_TTL_SECS).contains(&ttl) => {
            expires_at = Some(due + Duration::seconds(ttl));
        }
        (None, Some(_)) => push(
            TTL_SECONDS,
            Err(format!("must be between 1 and {MAX_TTL_SECS} seconds")),
        ),
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
    let respect_window = raw.respect_window.unwrap_or(false);
    let mut fingerprint = serde_json::json!({
        "to": to.as_str(), "body": body, "file": file, "delay": raw.delay, "schedule": raw.schedule,
    });
    // The deadline fields only when given, so that a request without them keeps the
    // fingerprint it had before they existed (keys are kept 24 h across upgrades).
    if raw.expires_at.is_some() {
        fingerprint["expires_at"] =
            serde_json::json!(expires_at.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)));
    }
    if let Some(ttl) = raw.ttl_seconds {
        fingerprint["ttl_seconds"] = serde_json::json!(ttl);
    }
    if respect_window {
        fingerprint["respect_window"] = serde_json::json!(true);
    }
    Ok(NewMessage {
        kind: Kind::Adhoc,
        to,
        body,
        file,
        run_at,
        expires_at,
        respect_window,
        fingerprint: fingerprint.to_string(),
        template: None,
    })
}

/// `POST /whatsapp/send` body: `{to, body, file?, delay?, schedule?, expires_at?, ttl_seconds?,
/// respect_window?}`.
pub fn from_json(map: &Map<String, Value>) -> Result<NewMessage, AppError> {
    let mut f = Fields::new(map);
    let to = f.required_str("to");
    let body = f.required_str("body");
    let file = f.optional_str("file");
    let delay = f.optional_i64("delay");
    let schedule = f.optional_i64("schedule");
    let expires_at = f.optional_str(EXPIRES_AT);
    let ttl_seconds = f.optional_i64(TTL_SECONDS);
    let respect_window = f.optional_bool("respect_window");
    build(
        Raw {
            to,
            body,
            file,
            delay,
            schedule,
            expires_at,
            ttl_seconds,
            respect_window,
        },
        ["to", "body", "file", "delay", "schedule"],
        f.errors,
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

    #[test]
    fn deadline_rules() {
        let to = |extra: Value| {
            let mut body = serde_json::json!({"to": "0812345678", "body": "x"});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            json(body)
        };
        let in_an_hour = (Utc::now() + Duration::hours(1)).to_rfc3339();
        assert_eq!(
            fields(to(
                serde_json::json!({"expires_at": in_an_hour, "ttl_seconds": 5})
            )),
            ["expires_at", "ttl_seconds"]
        );
        assert_eq!(
            fields(to(
                serde_json::json!({"expires_at": in_an_hour, "delay": 3600})
            )),
            ["expires_at"]
        );
        assert_eq!(
            fields(to(serde_json::json!({"expires_at": "2099-01-01 10:00"}))),
            ["expires_at"]
        );
        assert_eq!(
            fields(to(serde_json::json!({"ttl_seconds": MAX_TTL_SECS + 1}))),
            ["ttl_seconds"]
        );
        assert_eq!(
            fields(to(serde_json::json!({"respect_window": "true"}))),
            ["respect_window"]
        );
        let m = to(serde_json::json!({"delay": 60, "ttl_seconds": 30, "respect_window": true}))
            .unwrap();
        assert_eq!(
            m.expires_at.unwrap() - m.run_at.unwrap(),
            Duration::seconds(30)
        );
        assert!(m.respect_window && m.job(uuid::Uuid::nil()).window);
        // A request without the new fields keeps its old fingerprint.
        let plain = to(serde_json::json!({"respect_window": false})).unwrap();
        assert!(
            !plain.fingerprint.contains("expires_at"),
            "{}",
            plain.fingerprint
        );
        assert!(!plain.fingerprint.contains("respect_window"));
    }
}
