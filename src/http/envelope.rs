//! The response envelope `{success, data, message, errors?}` (README "HTTP API").

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::error::FieldError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    pub data: T,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
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
