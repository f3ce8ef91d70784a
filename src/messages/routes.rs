//! `/whatsapp/*`: the send endpoints and the message read/cancel API (README "Sending").

use axum::{
    Router,
    extract::State,
    http::HeaderMap,
    routing::{get, post},
};
use serde::Serialize;
use uuid::Uuid;

use super::{
    Accepted, Attempt, Kind, Message, Status,
    cloud_admit::{self, TextField},
    enqueue::Enqueue,
    idempotency::{IdempotencyKey, KeyReused, idempotency_key},
    phone::PhoneNumber,
    query::{self, QueryRoute},
    read::{self, DeliveryFilter, ListFilter, Owner},
    render,
    request::{self, NewMessage},
    store::Stored,
    withdraw::{self, Cancelled},
};
use crate::{
    error::{AppError, AppResult},
    gateway::settings::GatewayKind,
    http::{
        auth::{Caller, Role, SendCaller},
        envelope::{Envelope, Reply},
        extract::{JsonObject, Path, QueryPairs},
        responses::{
            BadPathParameter, BadRequest, BodyTimeout, Invalid, NotFound, RateLimited, TooLarge,
            Unauthorized, Unavailable,
        },
    },
    state::AppState,
    templates::{recipient::Prefer, send::Context},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/whatsapp/send", post(send))
        .route("/whatsapp/send-batch", post(super::send_batch::send_batch))
        .route("/whatsapp/send-simple", post(send_simple))
        .route("/whatsapp/send-with-file", post(send_with_file))
        .route("/whatsapp/send-scheduled", post(send_scheduled))
        .route("/whatsapp/messages", get(list))
        .route("/whatsapp/messages/{id}", get(detail))
        .route("/whatsapp/messages/{id}/cancel", post(cancel))
}

async fn enqueue(
    state: &AppState,
    new: NewMessage,
    scope: &str,
    headers: &HeaderMap,
    field: TextField,
) -> AppResult<Reply<Accepted>> {
    let key = idempotency_key(headers)?;
    if state.config.gateway.kind == GatewayKind::CloudApi {
        let refused = cloud_admit::check(&state.pool, &[&new], field).await?;
        if let Some(errors) = refused.into_iter().find(|e| !e.is_empty()) {
            return Err(AppError::Validation(errors));
        }
    }
    let stored = state
        .enqueuer
        .submit(Enqueue {
            new,
            created_by: scope.to_owned(),
            idempotency_key: key,
        })
        .await
        .map_err(|e| AppError::Internal(e.into()))??;
    match stored {
        Stored::Created(m) => {
            let message = if m.status == Status::Cancelled {
                "Not sent: the recipient opted out"
            } else if m.run_at > chrono::Utc::now() {
                "Message scheduled"
            } else {
                "Message queued"
            };
            Ok(Reply::accepted(m, message))
        }
        Stored::Replayed(m) => Ok(Reply::ok(
            m,
            "Idempotency-Key replay: this request was already accepted",
        )),
        Stored::KeyConflict => Err(AppError::Conflict(
            "Idempotency-Key was already used for a different request".into(),
        )),
    }
}

/// Queue a WhatsApp message (immediate, delayed or scheduled): a `body`, or a saved `template`
/// rendered now with the recipient's data and `values`. To a number on the opt-out list (scope
/// `all`) it is accepted but never sent: `status` `cancelled`, `last_error` `recipient opted
/// out`.
#[utoipa::path(post, path = "/whatsapp/send", operation_id = "send_message", tag = "messages",
    request_body = super::request::SendRequest,
    params(IdempotencyKey),
    responses((status = 202, description = "Queued (or scheduled); to an opted-out number: `cancelled`, with `last_error`", body = Envelope<Accepted>,
        links(
            ("get_message" = (operation_id = "get_message", parameters(("id" = "$response.body#/data/id")))),
            ("cancel_message" = (operation_id = "cancel_message", parameters(("id" = "$response.body#/data/id")))))),
        (status = 200, description = "`Idempotency-Key` replay: the message this key created, with its current status", body = Envelope<Accepted>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, KeyReused, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> AppResult<Reply<Accepted>> {
    let checked = request::from_json(&body)?;
    let cx = Context::new(&state.config);
    let new = render::complete_one(&state.pool, &cx, Prefer::Customers, checked).await?;
    enqueue(&state, new, &caller.sub, &headers, TextField("body")).await
}

/// Queue a text message from query parameters `phone`, `message`. Without a token only when
/// `PUBLIC_SEND_ENDPOINTS=true` (then limited per client address).
#[utoipa::path(post, path = "/whatsapp/send-simple", operation_id = "send_simple", tag = "messages",
    params(SimpleSend, Deadline, IdempotencyKey),
    responses((status = 202, description = "Queued; to an opted-out number: `cancelled`, with `last_error`", body = Envelope<Accepted>),
        (status = 200, description = "`Idempotency-Key` replay", body = Envelope<Accepted>),
        BadRequest, Unauthorized, KeyReused, Invalid, RateLimited, Unavailable),
    security(("bearer" = []), ()))]
pub async fn send_simple(
    State(state): State<AppState>,
    caller: SendCaller,
    headers: HeaderMap,
    q: QueryPairs,
) -> AppResult<Reply<Accepted>> {
    let new = query::from_query(&q, QueryRoute::Simple)?;
    enqueue(&state, new, &caller.scope(), &headers, TextField("message")).await
}

/// Queue a media message from query parameters `phone`, `message`, `file_url`. Without a token
/// only when `PUBLIC_SEND_ENDPOINTS=true`.
#[utoipa::path(post, path = "/whatsapp/send-with-file", operation_id = "send_with_file", tag = "messages",
    params(SimpleSend, FileSend, Deadline, IdempotencyKey),
    responses((status = 202, description = "Queued; to an opted-out number: `cancelled`, with `last_error`", body = Envelope<Accepted>),
        (status = 200, description = "`Idempotency-Key` replay", body = Envelope<Accepted>),
        BadRequest, Unauthorized, KeyReused, Invalid, RateLimited, Unavailable),
    security(("bearer" = []), ()))]
pub async fn send_with_file(
    State(state): State<AppState>,
    caller: SendCaller,
    headers: HeaderMap,
    q: QueryPairs,
) -> AppResult<Reply<Accepted>> {
    let new = query::from_query(&q, QueryRoute::WithFile)?;
    enqueue(&state, new, &caller.scope(), &headers, TextField("message")).await
}

/// Queue a message for `schedule_timestamp_ms` (unix milliseconds: at most 60 s in the past
/// and 366 days ahead). Without a token only when `PUBLIC_SEND_ENDPOINTS=true`.
#[utoipa::path(post, path = "/whatsapp/send-scheduled", operation_id = "send_scheduled", tag = "messages",
    params(SimpleSend, ScheduledSend, Deadline, IdempotencyKey),
    responses((status = 202, description = "Scheduled; to an opted-out number: `cancelled`, with `last_error`", body = Envelope<Accepted>),
        (status = 200, description = "`Idempotency-Key` replay", body = Envelope<Accepted>),
        BadRequest, Unauthorized, KeyReused, Invalid, RateLimited, Unavailable),
    security(("bearer" = []), ()))]
pub async fn send_scheduled(
    State(state): State<AppState>,
    caller: SendCaller,
    headers: HeaderMap,
    q: QueryPairs,
) -> AppResult<Reply<Accepted>> {
    let new = query::from_query(&q, QueryRoute::Scheduled)?;
    enqueue(&state, new, &caller.scope(), &headers, TextField("message")).await
}

/// `phone` and `message` of the query-string sends (checked by [`request::from_query`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SimpleSend {
    /// The recipient (see `to` of `POST /whatsapp/send`).
    #[param(
        pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$",
        example = "0812 3456 789"
    )]
    phone: String,
    /// The text: 1 to 4096 characters once trimmed.
    #[param(min_length = 1, max_length = 4096, pattern = r"\S")]
    message: String,
}

/// The optional deadline and send-window opt-in of the query-string sends, as in the body of
/// `POST /whatsapp/send` (checked by [`request::from_query`]; a blank value is absent).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct Deadline {
    /// Unsent by then (RFC 3339 with offset; encode `+` as `%2B`), the message is `expired` and
    /// never sent late. In the future and later than the time the message is due. Not together
    /// with `ttl_seconds`.
    #[param(example = "2026-12-01T21:00:00+07:00")]
    expires_at: Option<String>,
    /// The deadline as seconds after the message is due: 1 to 2,592,000.
    #[param(minimum = 1, maximum = 2592000)]
    ttl_seconds: Option<i64>,
    /// `true`/`1`: wait for the send window (quiet hours) like a reminder.
    respect_window: Option<bool>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FileSend {
    /// An absolute `http(s)` URL of the file to attach, up to 2048 characters. (No `format`:
    /// with the pattern it leaves a schema-driven client almost nothing to generate.)
    #[param(max_length = 2048, pattern = r"^\s*[hH][tT][tT][pP][sS]?://[^/?#\s]")]
    file_url: String,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ScheduledSend {
    /// When to send, unix milliseconds: at most 60 s in the past and 366 days ahead.
    schedule_timestamp_ms: i64,
}

/// A message id from the path; anything that is not a UUID cannot name a message → 404.
fn message_id(raw: &str) -> AppResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound(format!("message {raw} not found")))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    message: Message,
    history: History,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct History {
    created_at: chrono::DateTime<chrono::Utc>,
    first_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    last_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    attempts: Vec<Attempt>,
}

/// One message with its status history.
#[utoipa::path(get, path = "/whatsapp/messages/{id}", operation_id = "get_message", tag = "messages",
    params(("id" = String, Path, format = Uuid, description = "the message id")),
    responses((status = 200, description = "The message and its attempts", body = Envelope<MessageDetail>,
        links(
            ("get_job" = (operation_id = "get_job", parameters(("id" = "$response.body#/data/job_id")))),
            ("requeue_job" = (operation_id = "requeue_job", parameters(("id" = "$response.body#/data/job_id")))),
            ("cancel_job" = (operation_id = "cancel_job", parameters(("id" = "$response.body#/data/job_id")))))),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<Reply<MessageDetail>> {
    let id = message_id(&id)?;
    let mut conn = state.pool.acquire().await?;
    let message = read::find(&mut conn, id, owner(&caller))
        .await?
        .ok_or_else(|| AppError::NotFound(format!("message {id} not found")))?;
    drop(conn);
    let attempts = read::attempts(&state.pool, id).await?;
    let history = History {
        created_at: message.created_at,
        first_attempt_at: attempts.first().map(|a| a.started_at),
        last_attempt_at: attempts.last().map(|a| a.finished_at),
        attempts,
    };
    Ok(Reply::ok(
        MessageDetail { message, history },
        "Message found",
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    items: Vec<Message>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<Uuid>,
}

/// Messages, newest first; filters `status`, `kind`, `to`, `batch`, `delivery_status`;
/// `limit` ≤ 500; `cursor`.
#[utoipa::path(get, path = "/whatsapp/messages", operation_id = "list_messages", tag = "messages",
    params(("status" = Option<Status>, Query), ("kind" = Option<Kind>, Query),
        ("delivery_status" = Option<DeliveryFilter>, Query,
            description = "what WhatsApp reported: `delivered` (not yet read), `read`, `undelivered`, or `none` (no receipt: not sent, not reported yet, or a gateway that reports none)"),
        ("to" = Option<String>, Query, description = "a phone number, any spelling",
            pattern = r"^\s*\+?[ ().-]*(?:0[ ().-]*(?:[0-9][ ().-]*){8,13}|8[ ().-]*(?:[0-9][ ().-]*){7,12}|[1-79][ ().-]*(?:[0-9][ ().-]*){9,14})\s*$"),
        ("batch" = Option<String>, Query, format = Uuid,
            description = "only the messages of this `POST /whatsapp/send-batch` call (its `batch_id`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 50"),
        ("cursor" = Option<String>, Query, format = Uuid, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "A page of messages", body = Envelope<MessagePage>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryPairs,
) -> AppResult<Reply<MessagePage>> {
    let mut errors = Vec::new();
    let mut bad =
        |field: &str, message: &str| errors.push(crate::error::FieldError::new(field, message));
    let status = q.get("status").and_then(|s| {
        let st = Status::parse(s);
        if st.is_none() {
            bad(
                "status",
                "must be one of queued, sending, sent, retrying, failed, cancelled, expired",
            );
        }
        st
    });
    let kind = q.get("kind").and_then(|s| {
        let k = Kind::parse(s);
        if k.is_none() {
            bad("kind", &format!("must be one of {}", Kind::names()));
        }
        k
    });
    let to = q.get("to").and_then(|s| match PhoneNumber::parse(s) {
        Ok(p) => Some(p.as_str().to_owned()),
        Err(e) => {
            bad("to", &e.to_string());
            None
        }
    });
    let batch = q.get("batch").and_then(|s| match Uuid::parse_str(s) {
        Ok(b) => Some(b),
        Err(_) => {
            bad(
                "batch",
                "must be a batch id (a UUID, `batch_id` of a send-batch answer)",
            );
            None
        }
    });
    let delivery = q.get("delivery_status").and_then(|s| {
        let d = DeliveryFilter::parse(s);
        if d.is_none() {
            bad(
                "delivery_status",
                "must be one of delivered, read, undelivered, none",
            );
        }
        d
    });
    let (limit, before) = q.page(&mut errors);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let items = read::list(
        &state.pool,
        &ListFilter {
            status,
            kind,
            to,
            batch,
            delivery,
            before,
            limit,
            owner: owner(&caller),
        },
    )
    .await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|m| m.id))
        .flatten();
    let n = items.len();
    Ok(Reply::ok(
        MessagePage { items, next_cursor },
        format!("{n} message(s)"),
    ))
}

/// Cancel a message that is not yet sent.
#[utoipa::path(post, path = "/whatsapp/messages/{id}/cancel", operation_id = "cancel_message", tag = "messages",
    params(("id" = String, Path, format = Uuid, description = "the message id")),
    responses((status = 200, description = "Cancelled", body = Envelope<Message>),
        (status = 409, description = "The message is being sent or is finished", body = crate::http::envelope::ErrorEnvelope),
        BadRequest, BadPathParameter, Unauthorized, NotFound, Unavailable),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<Reply<Message>> {
    let id = message_id(&id)?;
    match withdraw::cancel(&state.pool, id, owner(&caller)).await? {
        Cancelled::Done(m) => Ok(Reply::ok(*m, "Message cancelled")),
        Cancelled::NotFound => Err(AppError::NotFound(format!("message {id} not found"))),
        Cancelled::TooLate(status) => Err(AppError::Conflict(format!(
            "message is {} and can no longer be cancelled",
            status.as_str()
        ))),
    }
}

/// A client sees (and cancels) only the messages its token's `sub` created; ops sees all
/// (README "Callers see their own messages").
fn owner(caller: &Caller) -> Owner<'_> {
    (caller.role != Role::Ops).then_some(caller.sub.as_str())
}
