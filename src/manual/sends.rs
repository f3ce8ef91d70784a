//! `/manual-whatsapp`'s sends: the reminder pass over the records, one record's reminder, and a
//! free-text message (seed field names inside our envelope).

use axum::extract::State;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    MAX_CUSTOM_MESSAGE, remind,
    routes::{find, record_id},
};
use crate::{
    error::{AppError, AppResult, FieldError},
    http::{
        auth::Caller,
        envelope::{Envelope, ErrorEnvelope, Reply},
        extract::{Fields, JsonObject, OptionalJsonObject, Path, QueryPairs},
        responses::{
            BadRequest, BodyTimeout, Invalid, NotFound, TooLarge, Unauthorized, Unavailable,
        },
    },
    messages::{Accepted, Kind, phone::PhoneNumber, request::NewMessage, store},
    reminders::{
        business_date,
        calendar::DaysBefore,
        end_of_business_day,
        schedule::{self, MAX_WAIT},
    },
    state::AppState,
    templates::{
        recipient::Prefer,
        send::{self, Context},
    },
};

/// Queues a reminder for every record with `0 <= next_service - today < days_threshold`
/// (default 3), only active ones unless `only_active: false`; idempotent per record and day.
/// `wait_seconds` (≤ 120, body or query) waits for the sends and reports `sent` / `failed`.
#[utoipa::path(post, path = "/manual-whatsapp/send-reminders", operation_id = "send_manual_reminders", tag = "manual-whatsapp",
    request_body(content = Option<super::SendReminders>, description = "optional: an empty body takes the defaults"),
    params(("wait_seconds" = Option<i64>, Query, minimum = 0, maximum = 120, description = "as `wait_seconds` of the body")),
    responses((status = 200, description = "What the pass queued, found queued or skipped", body = Envelope<remind::Summary>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn send_reminders(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
    OptionalJsonObject(body): OptionalJsonObject,
) -> AppResult<Reply<remind::Summary>> {
    let mut f = Fields::new(&body);
    let threshold = f.optional_i64("days_threshold");
    let only_active = match body.get("only_active") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            f.errors
                .push(FieldError::new("only_active", "must be true or false"));
            true
        }
    };
    let body_wait = f.optional_i64("wait_seconds");
    let mut errors = f.errors;
    let threshold = match threshold {
        None => 3,
        Some(n) if (1..=366).contains(&n) => n as u32,
        Some(_) => {
            errors.push(FieldError::new(
                "days_threshold",
                "must be an integer between 1 and 366",
            ));
            3
        }
    };
    // `wait_seconds` in the body, or in the query string like the fan-out endpoints.
    let max = MAX_WAIT.as_secs() as i64;
    let query_wait = q.int_opt("wait_seconds", 0..=max, &mut errors);
    let wait = match body_wait {
        None => query_wait,
        Some(n) if (0..=max).contains(&n) => Some(n),
        Some(_) => {
            errors.push(FieldError::new(
                "wait_seconds",
                format!("must be an integer between 0 and {max}"),
            ));
            None
        }
    }
    .map(|n| std::time::Duration::from_secs(n as u64));
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let date = business_date(state.config.app_timezone, Utc::now());
    let pass = remind::Pass {
        date,
        expires_at: end_of_business_day(state.config.app_timezone, date),
        days_before: DaysBefore::within(threshold),
        interval_months: state.config.service_interval_months,
        only_active,
        template: manual_template(&state).await?,
        workshop: schedule::workshop(&state.config),
        max_attempts: state.config.send_max_attempts,
        unsendable: crate::templates::cloud_api::unsendable(
            &state.pool,
            state.config.gateway.kind,
            crate::templates::MANUAL,
        )
        .await?,
    };
    let mut summary = remind::run(&state.pool, &pass).await?;
    if let Some(wait) = wait {
        remind::wait(&state.pool, &mut summary, wait).await?;
    }
    let message = format!(
        "{} reminder(s) queued, {} already queued today",
        summary.reminder_queued, summary.already_queued
    );
    Ok(Reply::ok(summary, message))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SingleReminder {
    id: Uuid,
    customer_name: String,
    nopol: String,
    /// `queued`, `already_queued` (today's reminder exists; `force=true` sends another), or
    /// `skipped` (`reason` `opted out`: the number is on the opt-out list; `text too long`: the
    /// reminder renders over 4,096 characters, `message` is then empty).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message_id: Option<Uuid>,
    message: String,
}

/// Queues this record's reminder now, whatever its `next_service` window. Once per record and
/// day (`already_queued` after that) unless `?force=true`.
#[utoipa::path(post, path = "/manual-whatsapp/{record_id}/send-reminder", operation_id = "send_manual_reminder", tag = "manual-whatsapp",
    params(("record_id" = String, Path, format = Uuid, description = "the record id"),
        ("force" = Option<bool>, Query, description = "`true`/`1`: another reminder even if today's is queued")),
    responses((status = 202, description = "Queued", body = Envelope<SingleReminder>),
        (status = 200, description = "Today's reminder was already queued (`status` `already_queued`), or the number opted out and nothing was queued (`status` `skipped`, `reason` `opted out`)", body = Envelope<SingleReminder>),
        (status = 422, description = "An invalid `force`, or the record has no `next_service` or no valid phone number", body = ErrorEnvelope),
        BadRequest, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn send_reminder(
    State(state): State<AppState>,
    _: Caller,
    Path(raw): Path<String>,
    q: QueryPairs,
) -> AppResult<Reply<SingleReminder>> {
    let mut errors = Vec::new();
    let force = q.flag("force", false, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let record = find(&state, record_id(&raw)?).await?;
    let Some(next_service) = record.next_service else {
        return Err(AppError::validation(
            "next_service",
            "the record has no next_service date to remind of",
        ));
    };
    let candidate = remind::Candidate {
        id: record.id,
        customer_name: record.customer_name.clone(),
        nopol: record.nopol.clone(),
        no_hp: record.no_hp.clone(),
        next_service,
        walk_date: next_service,
        salutation: record.salutation.clone(),
        language: record.language.as_str().to_owned(),
    };
    let date = business_date(state.config.app_timezone, Utc::now());
    let template = manual_template(&state).await?;
    let outcome = remind::send_one(
        &state.pool,
        &candidate,
        (date, end_of_business_day(state.config.app_timezone, date)),
        force,
        (&template, &schedule::workshop(&state.config)),
        state.config.send_max_attempts,
    )
    .await?
    .ok_or_else(|| AppError::validation("no_hp", "the stored phone number is not valid"))?;
    let reply = |status, message_id, message| SingleReminder {
        id: record.id,
        customer_name: record.customer_name.clone(),
        nopol: record.nopol.clone(),
        status,
        reason: None,
        message_id,
        message,
    };
    Ok(match outcome {
        remind::Single::Queued {
            message_id,
            message,
        } => Reply::accepted(
            reply("queued", Some(message_id), message),
            "Reminder queued",
        ),
        remind::Single::AlreadyQueued {
            message_id,
            message,
        } => Reply::ok(
            reply("already_queued", message_id, message),
            "Today's reminder for this record is already queued; use ?force=true to send another",
        ),
        remind::Single::OptedOut { message } => Reply::ok(
            SingleReminder {
                reason: Some(crate::suppressions::OPTED_OUT),
                ..reply("skipped", None, message)
            },
            "Not queued: this number is on the opt-out list",
        ),
        remind::Single::TooLong(too_long) => Reply::ok(
            SingleReminder {
                reason: Some(crate::templates::TEXT_TOO_LONG),
                ..reply("skipped", None, String::new())
            },
            format!("Not queued: the reminder {too_long}"),
        ),
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CustomAccepted {
    #[serde(flatten)]
    accepted: Accepted,
    no_hp: String,
    message: String,
}

/// Queues a free-text message (≤ 2000 characters) to any number (kind `manual`), or a saved
/// `template` rendered now — with the fields of the manual record the number belongs to, as its
/// reminder would, and `values` for the rest. A number on the opt-out list (either scope) gets
/// nothing: the message is stored `cancelled` with `last_error` `recipient opted out`, like any
/// send to it.
#[utoipa::path(post, path = "/manual-whatsapp/send-custom-message", operation_id = "send_custom_message", tag = "manual-whatsapp",
    request_body = super::CustomMessage,
    responses((status = 202, description = "Queued (or, to an opted-out number, stored `cancelled`)", body = Envelope<CustomAccepted>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn send_custom_message(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<CustomAccepted>> {
    let (to, text) = custom(&body).map_err(AppError::Validation)?;
    let message = match text {
        CustomText::Message(text) => NewMessage::internal(Kind::Manual, to, text, None),
        CustomText::Template(template) => {
            let cx = Context::new(&state.config);
            let sends = [(to.as_str(), &template)];
            let rendered = send::render(&state.pool, &cx, Prefer::Manual, &sends)
                .await?
                .pop()
                .ok_or_else(|| AppError::validation(send::FIELD, "was not rendered"))?
                .map_err(AppError::Validation)?;
            NewMessage::internal(Kind::Manual, to, rendered.text, None)
                .with_template(rendered.origin)
        }
    };
    let text = message.body.clone();
    let stored = store::store_one(
        &state.pool,
        &message,
        &caller.sub,
        state.config.send_max_attempts,
    )
    .await?;
    Ok(Reply::accepted(
        CustomAccepted {
            no_hp: stored.to.clone(),
            accepted: stored.clone(),
            message: text,
        },
        if stored.status == crate::messages::Status::Cancelled {
            "Not sent: the recipient opted out"
        } else {
            "Message queued"
        },
    ))
}

/// The text of a custom message: given, or a template to render.
enum CustomText {
    Message(String),
    Template(send::Request),
}

fn custom(body: &Map<String, Value>) -> Result<(PhoneNumber, CustomText), Vec<FieldError>> {
    let mut f = Fields::new(body);
    let phone = f.required_str("no_hp");
    let text = f.optional_str("message");
    let given = |name: &str| body.get(name).is_some_and(|v| !v.is_null());
    let mut errors = f.errors;
    let one_text = "give exactly one of `message` or `template`";
    let template = match (
        given("message"),
        body.get("template").filter(|v| !v.is_null()),
    ) {
        (true, Some(_)) => {
            errors.push(FieldError::new(
                send::FIELD,
                format!("{one_text}, not both"),
            ));
            None
        }
        (false, None) => {
            errors.push(FieldError::new(
                "message",
                format!("is required: {one_text}"),
            ));
            None
        }
        (true, None) => None,
        (false, Some(t)) => match send::parse(t) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.extend(e);
                None
            }
        },
    };
    let to = phone.and_then(|p| {
        PhoneNumber::parse(p)
            .map_err(|e| errors.push(FieldError::new("no_hp", e.to_string())))
            .ok()
    });
    let text = text.and_then(|t| {
        let t = t.trim();
        let n = t.chars().count();
        if n == 0 {
            errors.push(FieldError::new("message", "must not be empty"));
            None
        } else if n > MAX_CUSTOM_MESSAGE {
            errors.push(FieldError::new(
                "message",
                format!("must be at most {MAX_CUSTOM_MESSAGE} characters (got {n})"),
            ));
            None
        } else {
            Some(t.to_owned())
        }
    });
    match (to, template, text) {
        (Some(to), Some(t), _) if errors.is_empty() => Ok((to, CustomText::Template(t))),
        (Some(to), None, Some(text)) if errors.is_empty() => Ok((to, CustomText::Message(text))),
        _ => Err(errors),
    }
}

/// The current `manual_reminder` version.
async fn manual_template(state: &AppState) -> AppResult<crate::templates::Current> {
    crate::templates::repo::current(&state.pool, crate::templates::MANUAL)
        .await?
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "the built-in template {} is missing",
                crate::templates::MANUAL
            ))
        })
}
