//! The Cloud API sandbox (SPEC §13, README "Cloud API sandbox"): a Graph API look-alike served
//! by the process itself, so that `GATEWAY=cloud_api` runs locally with no Meta account. It
//! takes `POST /sandbox/cloud-api/{version}/{phone_number_id}/messages` as Graph does (bearer
//! token, the same checks, the same success and error bodies), keeps what it took, and posts
//! signed status webhooks for it — `sent`, `delivered`, `read` — to the service's own
//! `POST /inbound/cloud-api`.
//!
//! As with the StarSender sandbox, the send endpoint takes only this process's random key and
//! the listing needs a token. What it took is kept in `sandbox_messages`, beside the StarSender
//! sandbox's rows, with `message_type` `cloud_api:<type>` and the request (and its wamid) as
//! JSON in `body`: every process on the database lists what every other one took.

mod graph;
mod statuses;

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{FromRequest, Path, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use graph::{MAX_CALLBACK_DATA, MAX_CAPTION, MAX_TEXT};

use self::{
    graph::{Fault, Trial},
    statuses::{Poster, Taken},
};
use crate::{
    config::Secret,
    error::AppResult,
    http::{
        auth::Caller,
        envelope::{Envelope, Reply},
        extract::QueryPairs,
        responses::{BadRequest, Invalid, Unauthorized, Unavailable},
    },
    state::AppState,
};

/// Where the sandbox's Graph API starts: the client's base URL is
/// `http://<this process>{BASE_PATH}`, its sends go to `{BASE_PATH}/{version}/{id}/messages`.
pub const BASE_PATH: &str = "/sandbox/cloud-api";
/// What the sandbox took, newest first.
pub const LIST_PATH: &str = "/sandbox/cloud-api/messages";
/// The wait before each status webhook when nothing else is configured.
pub const DEFAULT_STATUS_DELAY: Duration = Duration::from_millis(200);

const SEND_ROUTE: &str = "/sandbox/cloud-api/{version}/{phone_number_id}/messages";
/// `sandbox_messages.message_type` of the sandbox's rows starts with this.
pub(crate) const MESSAGE_TYPE_PREFIX: &str = "cloud_api:";

/// One process's Cloud API sandbox.
#[derive(Debug, Clone)]
pub struct CloudSandbox {
    /// Where status webhooks go: this process's `POST /inbound/cloud-api`.
    pub inbound_url: String,
    /// Signs the status webhooks (`X-Hub-Signature-256`).
    pub app_secret: Secret,
    /// The only phone number id it sends from; another → Graph's "object does not exist".
    pub phone_number_id: String,
    /// The only access token it takes (this process's random sandbox key).
    pub key: Secret,
    /// The wait before each status webhook.
    pub status_delay: Duration,
}

/// `POST /sandbox/cloud-api/{version}/{phone_number_id}/messages`, answered as `sandbox`. The
/// listing is [`list_router`]'s, mounted whenever the process is in sandbox mode.
pub fn router(sandbox: Arc<CloudSandbox>) -> anyhow::Result<Router<AppState>> {
    let poster = Arc::new(Poster::new(sandbox)?);
    Ok(Router::new()
        .route(SEND_ROUTE, post(send))
        .layer(Extension(poster)))
}

/// `GET /sandbox/cloud-api/messages`.
pub fn list_router() -> Router<AppState> {
    Router::new().route(LIST_PATH, get(list))
}

/// Compares `Bearer <key>` with the sandbox's key, in time that does not depend on where they
/// differ.
fn authorized(req: &Request, key: &Secret) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer")
                && crate::gateway::sandbox::same_key(
                    token.trim().as_bytes(),
                    key.expose().as_bytes(),
                )
        })
}

/// A fresh wamid (`wamid.` and 32 random hex digits, upper case as Meta's base64 looks).
fn new_wamid() -> String {
    format!(
        "wamid.SANDBOX{}",
        uuid::Uuid::new_v4().simple().to_string().to_uppercase()
    )
}

/// What a row's `body` holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    wamid: String,
    request: Value,
}

/// Answers like Graph: the key first (before the body is read), then the phone number id, then
/// the request's checks; a trial number's error; else the message is kept, `200` with its wamid,
/// and its statuses follow.
async fn send(
    State(state): State<AppState>,
    Extension(poster): Extension<Arc<Poster>>,
    Path((_version, phone_number_id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let sandbox = &poster.sandbox;
    if !authorized(&req, &sandbox.key) {
        return Fault::bad_token().into_response();
    }
    if phone_number_id != sandbox.phone_number_id {
        return Fault::unknown_object(&phone_number_id).into_response();
    }
    let body = match Bytes::from_request(req, &state).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let accepted = match graph::check(&body) {
        Ok(accepted) => accepted,
        Err(details) => return Fault::invalid(details).into_response(),
    };
    let fails_with = match graph::trial(&accepted.to) {
        Some(Trial::Refused(code)) => return graph::refusal(code).into_response(),
        Some(Trial::FailsLater(code)) => Some(code),
        None => None,
    };
    let wamid = new_wamid();
    let stored = Stored {
        wamid: wamid.clone(),
        request: accepted.request,
    };
    let kept = sqlx::query(
        "INSERT INTO sandbox_messages (message_type, to_phone, body) VALUES ($1, $2, $3)",
    )
    .bind(format!("{MESSAGE_TYPE_PREFIX}{}", accepted.kind))
    .bind(&accepted.to)
    // Serialized JSON escapes every control character: no NUL reaches the text column.
    .bind(serde_json::to_string(&stored).unwrap_or_default())
    .execute(&state.pool)
    .await;
    if let Err(e) = kept {
        tracing::warn!("the Cloud API sandbox could not keep a message: {e}");
        return Fault::unavailable().into_response();
    }
    poster.spawn(Taken {
        wamid: wamid.clone(),
        to: accepted.to.clone(),
        callback: accepted.callback,
        template: accepted.kind == "template",
        fails_with,
    });
    let answer = json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": accepted.to, "wa_id": accepted.to}],
        "messages": [{"id": wamid}],
    });
    (StatusCode::OK, Json(answer)).into_response()
}

/// A message the Cloud API sandbox took.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CloudSandboxMessage {
    id: i64,
    received_at: DateTime<Utc>,
    /// The id the sandbox answered with (`messages[0].id`), on every status it posted.
    wamid: String,
    /// `text`, `document`, `image` or `template`.
    #[serde(rename = "type")]
    kind: String,
    to: String,
    /// `biz_opaque_callback_data` of the request (echoed on its statuses).
    #[serde(skip_serializing_if = "Option::is_none")]
    biz_opaque_callback_data: Option<String>,
    /// The Graph request as the sandbox received it.
    #[schema(value_type = Object)]
    request: Value,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    received_at: DateTime<Utc>,
    message_type: String,
    to_phone: String,
    body: String,
}

impl From<Row> for CloudSandboxMessage {
    fn from(row: Row) -> Self {
        let stored: Option<Stored> = serde_json::from_str(&row.body).ok();
        let (wamid, request) =
            stored.map_or((String::new(), Value::Null), |s| (s.wamid, s.request));
        Self {
            id: row.id,
            received_at: row.received_at,
            wamid,
            kind: row
                .message_type
                .strip_prefix(MESSAGE_TYPE_PREFIX)
                .unwrap_or(&row.message_type)
                .to_owned(),
            to: row.to_phone,
            biz_opaque_callback_data: request
                .get("biz_opaque_callback_data")
                .and_then(Value::as_str)
                .map(str::to_owned),
            request,
        }
    }
}

/// What the Cloud API sandbox took, newest first; `?to=` filters by number, `?limit=` (≤ 500).
/// Any token (the bodies and numbers are the workshop's customers').
#[utoipa::path(get, path = "/sandbox/cloud-api/messages", operation_id = "list_cloud_sandbox_messages", tag = "sandbox",
    params(("to" = Option<String>, Query, description = "only this number, as sent (digits, e.g. `628123456789`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "default 100")),
    responses((status = 200, description = "Messages the Cloud API sandbox took", body = Envelope<Vec<CloudSandboxMessage>>),
        BadRequest, Unauthorized, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _: Caller,
    q: QueryPairs,
) -> AppResult<Reply<Vec<CloudSandboxMessage>>> {
    let limit = q.limit_or(100)?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, received_at, message_type, to_phone, body FROM sandbox_messages
         WHERE starts_with(message_type, $1) AND ($2::text IS NULL OR to_phone = $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(MESSAGE_TYPE_PREFIX)
    .bind(q.get("to"))
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let messages: Vec<CloudSandboxMessage> = rows.into_iter().map(Into::into).collect();
    let n = messages.len();
    Ok(Reply::ok(
        messages,
        format!("{n} message(s) taken by the Cloud API sandbox"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wamids_are_fresh() {
        let (a, b) = (new_wamid(), new_wamid());
        assert!(a.starts_with("wamid."), "{a}");
        assert_ne!(a, b);
    }
}
