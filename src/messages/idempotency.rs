//! The `Idempotency-Key` header of the send endpoints: how it is read, and how the OpenAPI
//! document shows it and its `409`.

use axum::http::HeaderMap;

use crate::error::{AppError, AppResult};

const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header of the send endpoints, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// The same key with the same request returns the original message (`200`); with a
    /// different request, `409`. Kept at least 24 h. 1 to 255 visible ASCII characters; given
    /// twice on one request, `400`.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"
    )]
    idempotency_key: Option<String>,
}

/// `409` of the send endpoints.
pub struct KeyReused;

impl utoipa::IntoResponses for KeyReused {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        crate::http::responses::error_response(
            409,
            "The `Idempotency-Key` was already used for a different request",
            &[],
        )
    }
}

pub fn idempotency_key(headers: &HeaderMap) -> AppResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| AppError::validation("Idempotency-Key", "must be visible ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(AppError::validation(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_LEN} characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}
