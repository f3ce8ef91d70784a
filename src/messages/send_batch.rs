//! `POST /whatsapp/send-batch` (README "Bulk sending"): up to 1,000 messages in one request, one
//! transaction and one commit. Every item is checked like a single send; the valid ones are
//! stored with their jobs, the invalid ones reported by index — a `202` either way. An
//! `Idempotency-Key` covers the whole batch.

use std::collections::HashMap;

use axum::{extract::State, http::HeaderMap};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    Status,
    cloud_admit::{self, TextField},
    idempotency::{IdempotencyKey, KeyReused, idempotency_key},
    read, render,
    request::{self, NewMessage},
    send_batches,
    store::{self, Stored},
};
use crate::{
    error::{AppError, AppResult, FieldError},
    gateway::settings::GatewayKind,
    http::{
        auth::Caller,
        envelope::{Envelope, Reply},
        extract::BulkJson,
        responses::{BadRequest, BodyTimeout, Invalid, TooLarge, Unauthorized, Unavailable},
    },
    state::AppState,
    templates::{recipient::Prefer, send::Context},
};

/// The most messages in one batch.
pub const MAX_ITEMS: usize = 1_000;
/// The longest `client_ref`.
pub const MAX_CLIENT_REF: usize = 255;

/// One message of a batch, as the OpenAPI document shows it: the fields of `POST
/// /whatsapp/send` and a `client_ref` echoed in the answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct BatchMessage {
    #[serde(flatten)]
    send: request::SendRequest,
    /// Yours, echoed in this item's result (up to 255 characters), e.g. your invoice number.
    #[schema(max_length = 255)]
    client_ref: Option<String>,
}

/// The body of `POST /whatsapp/send-batch`.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"messages": [
    {"to": "0812 3456 789", "body": "Invoice INV-001 sudah terbit", "client_ref": "INV-001"},
    {"to": "0813 1111 2222", "body": "Invoice INV-002 sudah terbit", "client_ref": "INV-002", "delay": 60}]}))]
#[allow(dead_code)]
pub struct BatchRequest {
    /// 1 to 1,000 messages.
    #[schema(min_items = 1, max_items = 1000)]
    messages: Vec<BatchMessage>,
}

/// What became of one item.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// Its position in `messages` (from 0).
    pub index: usize,
    /// The stored message (absent when the item was rejected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// `queued`, `cancelled` (the number opted out: `last_error`), or `rejected` (see
    /// `errors`); on a replay, the message's current status.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
    /// When it is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why it was rejected: one entry per invalid field, as a single send names them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

impl BatchItem {
    fn rejected(index: usize, client_ref: &Option<String>, errors: Vec<FieldError>) -> Self {
        Self {
            index,
            id: None,
            status: "rejected".into(),
            client_ref: client_ref.clone(),
            run_at: None,
            last_error: None,
            errors: Some(errors),
        }
    }
}

/// The answer of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchAccepted {
    /// This call's id, stored as `batch_id` on each of its messages (with the item's
    /// `client_ref`): `GET /whatsapp/messages?batch=` lists them. The same on a replay.
    pub batch_id: Uuid,
    /// Items stored (with their jobs; an opted-out number's message is stored `cancelled`).
    pub accepted: usize,
    /// Items refused: nothing stored for them.
    pub rejected: usize,
    /// One per item, in order.
    pub items: Vec<BatchItem>,
}

/// An item, checked.
enum Checked {
    Valid(NewMessage, Option<String>),
    Rejected(Vec<FieldError>, Option<String>),
}

/// An item as validation leaves it: its text may be a template still to render.
enum Item {
    Valid(Box<request::Checked>, Option<String>),
    Rejected(Vec<FieldError>, Option<String>),
}

/// Renders the items given as a template (all at once: `render::complete`); one that cannot
/// be sent is rejected with the reasons, like any invalid item.
async fn render_items(pool: &PgPool, cx: &Context, items: Vec<Item>) -> sqlx::Result<Vec<Checked>> {
    // Each item's place: its `client_ref` when valid (its message comes from `done`, in
    // order), else its rejection.
    let mut places = Vec::with_capacity(items.len());
    let mut valid = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Valid(c, client_ref) => {
                valid.push(*c);
                places.push(Ok(client_ref));
            }
            Item::Rejected(errors, client_ref) => places.push(Err((errors, client_ref))),
        }
    }
    let mut done = render::complete(pool, cx, Prefer::Customers, valid)
        .await?
        .into_iter();
    Ok(places
        .into_iter()
        .map(|place| match place {
            Err((errors, client_ref)) => Checked::Rejected(errors, client_ref),
            Ok(client_ref) => match done.next() {
                Some(Ok(m)) => Checked::Valid(m, client_ref),
                Some(Err(errors)) => Checked::Rejected(errors, client_ref),
                None => {
                    Checked::Rejected(vec![FieldError::new("item", "was not checked")], client_ref)
                }
            },
        })
        .collect())
}

fn check_item(value: &Value) -> Item {
    let Some(map) = value.as_object() else {
        return Item::Rejected(
            vec![FieldError::new(
                "item",
                "must be an object with `to` and `body` (or `template`)",
            )],
            None,
        );
    };
    let mut errors = Vec::new();
    let client_ref = match map.get("client_ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.contains('\0') => {
            errors.push(FieldError::new(
                "client_ref",
                crate::http::extract::NUL_MESSAGE,
            ));
            None
        }
        Some(Value::String(s)) if s.chars().count() <= MAX_CLIENT_REF => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(
                "client_ref",
                format!("must be a string of at most {MAX_CLIENT_REF} characters"),
            ));
            None
        }
    };
    let without_ref: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| k.as_str() != "client_ref")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match request::from_json(&without_ref) {
        Ok(new) if errors.is_empty() => Item::Valid(Box::new(new), client_ref),
        Ok(_) => Item::Rejected(errors, client_ref),
        Err(AppError::Validation(mut e)) => {
            e.append(&mut errors);
            Item::Rejected(e, client_ref)
        }
        Err(other) => Item::Rejected(vec![FieldError::new("item", other.to_string())], client_ref),
    }
}

/// Queue up to 1,000 messages at once. Each item takes the fields of `POST /whatsapp/send`
/// (and the same checks; a `template` is rendered as for a single send) plus `client_ref`. Valid items are stored with their jobs in one
/// transaction; invalid ones are reported with their index and errors and nothing is stored for
/// them. With an `Idempotency-Key` the whole batch is replayed (`200`) or, with a different
/// body, refused (`409`).
#[utoipa::path(post, path = "/whatsapp/send-batch", operation_id = "send_batch", tag = "messages",
    request_body = BatchRequest,
    params(IdempotencyKey),
    responses((status = 202, description = "Stored what was valid; every item's result", body = Envelope<BatchAccepted>),
        (status = 200, description = "`Idempotency-Key` replay: the first answer, with each message's current status", body = Envelope<BatchAccepted>),
        BadRequest, BodyTimeout, TooLarge, Unauthorized, KeyReused, Invalid, Unavailable),
    security(("bearer" = [])))]
pub async fn send_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    BulkJson(body): BulkJson,
) -> AppResult<Reply<BatchAccepted>> {
    let key = idempotency_key(&headers)?;
    let items = match body.get("messages") {
        Some(Value::Array(items)) if (1..=MAX_ITEMS).contains(&items.len()) => items,
        Some(Value::Array(items)) => {
            return Err(AppError::validation(
                "messages",
                format!("must hold 1 to {MAX_ITEMS} messages (got {})", items.len()),
            ));
        }
        _ => {
            return Err(AppError::validation(
                "messages",
                format!("is required: an array of 1 to {MAX_ITEMS} messages"),
            ));
        }
    };
    let checked: Vec<Item> = items.iter().map(check_item).collect();
    let mut checked = render_items(&state.pool, &Context::new(&state.config), checked).await?;
    if state.config.gateway.kind == GatewayKind::CloudApi {
        checked = cloud_check(&state.pool, checked).await?;
    }
    let fingerprint = send_batches::fingerprint(&body);
    let stored = store(
        &state.pool,
        &checked,
        &caller.sub,
        key.as_deref().map(|k| (k, fingerprint.as_str())),
        state.config.send_max_attempts,
    )
    .await?;
    match stored {
        Outcome::Created(result) => {
            let message = format!(
                "{} message(s) queued, {} rejected",
                result.accepted, result.rejected
            );
            Ok(Reply::accepted(result, message))
        }
        Outcome::Replayed(result) => Ok(Reply::ok(
            result,
            "Idempotency-Key replay: this batch was already accepted",
        )),
        Outcome::KeyConflict => Err(AppError::Conflict(
            "Idempotency-Key was already used for a different request".into(),
        )),
    }
}

/// Rejects the items the Cloud API would refuse (`cloud_admit`), like any invalid item.
async fn cloud_check(pool: &PgPool, checked: Vec<Checked>) -> sqlx::Result<Vec<Checked>> {
    let valid: Vec<&NewMessage> = checked
        .iter()
        .filter_map(|c| match c {
            Checked::Valid(m, _) => Some(m),
            Checked::Rejected(..) => None,
        })
        .collect();
    let mut refused = cloud_admit::check(pool, &valid, TextField("body"))
        .await?
        .into_iter();
    Ok(checked
        .into_iter()
        .map(|c| match c {
            Checked::Valid(m, client_ref) => match refused.next() {
                Some(errors) if !errors.is_empty() => Checked::Rejected(errors, client_ref),
                _ => Checked::Valid(m, client_ref),
            },
            rejected => rejected,
        })
        .collect())
}

enum Outcome {
    Created(BatchAccepted),
    Replayed(BatchAccepted),
    KeyConflict,
}

/// Stores the valid items (and the batch's key) in one transaction.
async fn store(
    pool: &PgPool,
    checked: &[Checked],
    created_by: &str,
    key: Option<(&str, &str)>,
    max_attempts: u32,
) -> sqlx::Result<Outcome> {
    let mut tx = pool.begin().await?;
    let batch_id = Uuid::now_v7();
    if let Some((key, fingerprint)) = key
        && !send_batches::take_key(&mut tx, batch_id, created_by, key, fingerprint).await?
    {
        tx.rollback().await?;
        return replay(pool, created_by, key, fingerprint).await;
    }
    let items: Vec<store::Item<'_>> = checked
        .iter()
        .filter_map(|c| match c {
            Checked::Valid(new, client_ref) => Some(store::Item {
                client_ref: client_ref.as_deref(),
                ..store::Item::new(new, created_by)
            }),
            Checked::Rejected(..) => None,
        })
        .collect();
    let stored = store::store(&mut tx, &items, Some(batch_id), max_attempts).await?;
    // Its progress, for `batch.finished` when its last message is final (§12).
    crate::webhooks::outbox::batch_opened(&mut tx, batch_id).await?;
    let mut stored = stored.into_iter();
    let items: Vec<BatchItem> = checked
        .iter()
        .enumerate()
        .map(|(index, c)| {
            match (
                c,
                matches!(c, Checked::Valid(..))
                    .then(|| stored.next())
                    .flatten(),
            ) {
                (Checked::Valid(_, client_ref), Some(Stored::Created(m))) => BatchItem {
                    index,
                    id: Some(m.id),
                    status: m.status.as_str().into(),
                    client_ref: client_ref.clone(),
                    run_at: Some(m.run_at),
                    last_error: m.last_error,
                    errors: None,
                },
                (Checked::Rejected(errors, client_ref), _) => {
                    BatchItem::rejected(index, client_ref, errors.clone())
                }
                // Items without a key are always stored.
                (Checked::Valid(_, client_ref), _) => BatchItem::rejected(
                    index,
                    client_ref,
                    vec![FieldError::new("item", "was not stored")],
                ),
            }
        })
        .collect();
    let accepted = items.iter().filter(|i| i.id.is_some()).count();
    let result = BatchAccepted {
        batch_id,
        accepted,
        rejected: checked.len() - accepted,
        items,
    };
    if key.is_some() {
        send_batches::save_answer(&mut tx, batch_id, &result).await?;
    }
    tx.commit().await?;
    Ok(Outcome::Created(result))
}

/// The batch that holds `key`: its answer with each message's current status, or a conflict
/// when it was a different request.
async fn replay(
    pool: &PgPool,
    created_by: &str,
    key: &str,
    fingerprint: &str,
) -> sqlx::Result<Outcome> {
    let Some((batch_id, stored, mut result)) = send_batches::find(pool, created_by, key).await?
    else {
        // Deleted in between: nothing to replay, nothing to conflict with.
        return Ok(Outcome::KeyConflict);
    };
    if stored != fingerprint {
        return Ok(Outcome::KeyConflict);
    }
    // The row's id is the batch's id; answers stored before there was a `batch_id` lack it.
    if let Some(fields) = result.as_object_mut() {
        fields.insert("batch_id".into(), Value::String(batch_id.to_string()));
    }
    let mut result: BatchAccepted =
        serde_json::from_value(result).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let ids: Vec<Uuid> = result.items.iter().filter_map(|i| i.id).collect();
    let now: HashMap<Uuid, (Status, Option<String>)> = read::statuses(pool, &ids)
        .await?
        .into_iter()
        .map(|(id, status, error)| (id, (status, error)))
        .collect();
    for item in &mut result.items {
        if let Some((status, error)) = item.id.and_then(|id| now.get(&id)) {
            item.status = status.as_str().to_owned();
            item.last_error = error.clone();
        }
    }
    Ok(Outcome::Replayed(result))
}
