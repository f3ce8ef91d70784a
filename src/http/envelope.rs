//! The response envelope `{success, data, message, errors?}` (README "HTTP API"). In the OpenAPI
//! document a success is `Envelope_<Data>` (one schema per data type) and every error is
//! [`ErrorEnvelope`].

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::error::FieldError;

/// A successful answer: `success` is `true`, `data` what was asked for, `message` for people.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    pub data: T,
    pub message: String,
    /// Only errors carry it; see [`ErrorEnvelope`].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub errors: Option<Vec<FieldError>>,
}

/// The body of every error (what [`crate::error::AppError`] renders): `success` is `false`,
/// `data` an empty object, `message` says what went wrong; a `422` lists every invalid field
/// in `errors`. Documentation only.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorEnvelope {
    /// Always `false`.
    #[schema(example = false)]
    success: bool,
    /// Always `{}`.
    #[schema(value_type = Object)]
    data: (),
    message: String,
    /// Every invalid field (`422` only).
    #[schema(nullable = false)]
    errors: Option<Vec<FieldError>>,
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// A successful answer: status, data and a human message.
pub struct Reply<T>(pub StatusCode, pub T, pub String);

impl<T> Reply<T> {
    pub fn ok(data: T, message: impl Into<String>) -> Self {
        Self(StatusCode::OK, data, message.into())
    }
    pub fn accepted(data: T, message: impl Into<String>) -> Self {
        Self(StatusCode::ACCEPTED, data, message.into())
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let Reply(status, data, message) = self;
        (
            status,
            Envelope {
                success: true,
                data,
                message,
                errors: None,
            },
        )
            .into_response()
    }
}
