//! Validation of a send request into a [`NewMessage`] (README "Sending"). Every invalid field is
//! reported at once; nothing here touches the database.

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value};

use super::{Kind, phone::PhoneNumber};
use crate::{
    error::{AppError, FieldError},
    http::extract::Fields,
    templates::send::{self as template_send, Request as TemplateRequest},
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
    /// The text: 1 to 4096 characters once trimmed. Exactly one of `body` and `template`.
    #[schema(min_length = 1, max_length = 4096, pattern = r"\S")]
    body: Option<String>,
    /// A saved template instead of `body`, rendered now (README "Templates": sending a
    /// template): the placeholders the send can fill itself (the workshop's; the customer's or
    /// manual record's the number belongs to) and `values` for the rest. `422` for an unknown
    /// key, a placeholder nothing fills (named), or a text over 4,096 characters.
    template: Option<crate::templates::send::TemplateSend>,
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
    /// The template the body was rendered from, with what it records (README "Templates").
    pub template: Option<crate::templates::Origin>,
}

impl NewMessage {
    /// The payload of this message's send job.
    pub fn job(&self, message_id: uuid::Uuid) -> crate::queue::SendJob {
        crate::queue::SendJob {
            message_id,
            window: self.respect_window || self.kind.keeps_window(),
            expires_at: self.expires_at,
            bulk: self.kind.class() == crate::queue::Class::Bulk,
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

    /// Notes the template the body was rendered from.
    pub fn with_template(mut self, origin: crate::templates::Origin) -> Self {
        self.template = Some(origin);
        self
    }
}

/// A send request that passed validation: a message, or one whose text is a template still to
/// render (at enqueue: `templates::send::render`).
#[derive(Debug, Clone)]
pub enum Checked {
    Ready(NewMessage),
    Template(Pending),
}

impl Checked {
    /// The template to render, if any.
    pub fn template(&self) -> Option<&TemplateRequest> {
        match self {
            Checked::Ready(_) => None,
            Checked::Template(p) => Some(&p.template),
        }
    }

    /// The canonical request, compared for `Idempotency-Key` replays.
    pub fn fingerprint(&self) -> &str {
        match self {
            Checked::Ready(m) => &m.fingerprint,
            Checked::Template(p) => &p.message.fingerprint,
        }
    }

    /// The recipient, normalized.
    pub fn to(&self) -> &PhoneNumber {
        match self {
            Checked::Ready(m) => &m.to,
            Checked::Template(p) => &p.message.to,
        }
    }
}

/// A message waiting for its template's text; only [`Pending::rendered`] makes it a
/// [`NewMessage`].
#[derive(Debug, Clone)]
pub struct Pending {
    /// Everything but the text.
    message: NewMessage,
    template: TemplateRequest,
}

impl Pending {
    /// The message with the rendered text, recording where it came from.
    pub fn rendered(self, r: crate::templates::send::Rendered) -> NewMessage {
        NewMessage {
            body: r.text,
            ..self.message
        }
        .with_template(r.origin)
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

/// The text of a send: a body, or a template to render.
pub(super) enum Text<'a> {
    Body(&'a str),
    Template(TemplateRequest),
}

pub(super) struct Raw<'a> {
    pub(super) to: Option<&'a str>,
    /// `None`: missing or invalid (its error is already noted).
    pub(super) text: Option<Text<'a>>,
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
) -> Result<(NewMessage, Option<TemplateRequest>), AppError> {
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
    let mut template = None;
    match raw.text {
        Some(Text::Body(b)) => match check_body(b) {
            Ok(b) => body = Some(b),
            Err(e) => push(body_name, Err(e)),
        },
        Some(Text::Template(t)) => {
            body = Some(String::new());
            template = Some(t);
        }
        None => {}
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
        "to": to.as_str(), "body": template.is_none().then_some(&body), "file": file,
        "delay": raw.delay, "schedule": raw.schedule,
    });
    // A template send is compared by its template: key, language and values (a body send keeps
    // the fingerprint it always had).
    if let Some(t) = &template {
        fingerprint["template"] = t.fingerprint();
    }
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
    let message = NewMessage {
        kind: Kind::Adhoc,
        to,
        body,
        file,
        run_at,
        expires_at,
        respect_window,
        fingerprint: fingerprint.to_string(),
        template: None,
    };
    // A template's message has no text yet: it is [`Pending`] until rendered.
    Ok((message, template))
}

/// The rule `body` and `template` follow.
pub const ONE_TEXT: &str = "give exactly one of `body` or `template`";

/// `POST /whatsapp/send` body (and a batch item): `{to, body | template, file?, delay?,
/// schedule?, expires_at?, ttl_seconds?, respect_window?}`.
pub fn from_json(map: &Map<String, Value>) -> Result<Checked, AppError> {
    let mut f = Fields::new(map);
    let to = f.required_str("to");
    let body = f.optional_str("body");
    let given = |name: &str| map.get(name).is_some_and(|v| !v.is_null());
    let file = f.optional_str("file");
    let delay = f.optional_i64("delay");
    let schedule = f.optional_i64("schedule");
    let expires_at = f.optional_str(EXPIRES_AT);
    let ttl_seconds = f.optional_i64(TTL_SECONDS);
    let respect_window = f.optional_bool("respect_window");
    let mut errors = f.errors;
    let text = match (given("body"), map.get("template").filter(|v| !v.is_null())) {
        (true, Some(_)) => {
            errors.push(FieldError::new(
                template_send::FIELD,
                format!("{ONE_TEXT}, not both"),
            ));
            None
        }
        (false, None) => {
            errors.push(FieldError::new("body", format!("is required: {ONE_TEXT}")));
            None
        }
        (true, None) => body.map(Text::Body),
        (false, Some(t)) => match template_send::parse(t) {
            Ok(t) => Some(Text::Template(t)),
            Err(e) => {
                errors.extend(e);
                None
            }
        },
    };
    let (message, template) = build(
        Raw {
            to,
            text,
            file,
            delay,
            schedule,
            expires_at,
            ttl_seconds,
            respect_window,
        },
        ["to", "body", "file", "delay", "schedule"],
        errors,
    )?;
    Ok(match template {
        None => Checked::Ready(message),
        Some(template) => Checked::Template(Pending { message, template }),
    })
}
