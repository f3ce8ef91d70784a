//! The response envelope `{success, data, message, errors?}` (README "HTTP API"). In the OpenAPI
//! document a success is `Envelope_<Data>` (one schema per data type) and every error is
//! [`ErrorEnvelope`].

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

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

/// One invalid field of a `422`: `{"field", "message"}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The body of every error (what the application's error type renders): `success` is `false`,
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

/// The router's safety net: an error response that is not JSON (the rejection of an extractor we
/// do not own, the answer of a layer) becomes the envelope, with the same status and headers
/// (`Retry-After`, `Allow`, `WWW-Authenticate` are kept). A 4xx keeps its text as the message; a
/// 5xx says only what its status says.
pub async fn envelope_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = if status.is_client_error() {
        axum::body::to_bytes(body, 4096)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    } else {
        None
    };
    let message = text.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let envelope = Envelope::<serde_json::Value> {
        success: false,
        data: serde_json::json!({}),
        message,
        errors: None,
    };
    let json = Json(envelope).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, json.into_body())
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")
        })
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::StatusCode};

    use super::*;

    async fn run(response: Response) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = envelope_errors(response).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_plain_text_error_becomes_the_envelope_with_its_status_and_headers() {
        let mut plain = (StatusCode::METHOD_NOT_ALLOWED, "no such method").into_response();
        plain
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        let (status, headers, body) = run(plain).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET");
        assert_eq!(
            body,
            serde_json::json!({"success": false, "data": {}, "message": "no such method"})
        );

        let (status, _, body) =
            run((StatusCode::BAD_GATEWAY, "upstream secrets").into_response()).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["message"], "Bad Gateway");

        let empty = Response::builder()
            .status(StatusCode::PAYLOAD_TOO_LARGE)
            .body(Body::empty())
            .unwrap();
        assert_eq!(run(empty).await.2["message"], "Payload Too Large");
    }

    #[tokio::test]
    async fn json_errors_and_successes_pass_unchanged() {
        let ok = (StatusCode::OK, "fine").into_response();
        assert_eq!(
            envelope_errors(ok).await.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let json = (
            StatusCode::CONFLICT,
            Json(serde_json::json!({"success": false, "data": 1, "message": "m"})),
        )
            .into_response();
        let (_, _, body) = run(json).await;
        assert_eq!(body["data"], 1);
    }
}
