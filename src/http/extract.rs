//! Extractors whose rejections speak our envelope (README "HTTP API"): malformed JSON, query or path → 400,
//! a body over [`MAX_BODY_BYTES`] → 413, a body not received within `HTTP_BODY_TIMEOUT_SECS` →
//! 408. Bodies are read as a JSON object and validated field by field by the feature modules, so
//! that a client gets every invalid field at once as 422 `errors[]`.
//!
//! **NUL characters.** PostgreSQL refuses `\u0000` in text, so a NUL that reached a query would be
//! a 500. It is refused where input is parsed, once per kind of input: [`nul_paths`] walks a JSON
//! value; the body readers refuse a body that has any (422 naming each field), [`QueryPairs`] a
//! query value (422 naming the parameter), [`Path`] a path parameter (422 naming it). A bulk
//! import reads its body with [`BulkJson`], which checks everything but the items and leaves the
//! items to their validation: [`Fields::new`], where every item validator starts, reports the
//! item's NUL fields as its errors, so that one bad item fails alone and the valid ones are kept.
//!
//! **Duplicate keys.** An object that names a key twice (`{"to": "A", "to": "B"}`) is read by
//! most parsers as its last value and by some as its first: whoever checked the body and whoever
//! acts on it could read different requests. Every body is parsed by [`parse_json`], which
//! refuses such an object (400 naming the key and where it is) in the same single pass that
//! builds the value.

use axum::{
    body::Bytes,
    extract::{
        FromRequest, FromRequestParts, RawPathParams, Request,
        rejection::{BytesRejection, RawPathParamsRejection},
    },
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::json::{nul_errors, shown, walk};
pub use super::{
    fields::Fields,
    json::{nul_paths, parse_json},
};
use crate::error::{AppError, FieldError};

/// The largest request body read (the router's `DefaultBodyLimit` is set to the same value).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The message of a field that contains a NUL character.
pub const NUL_MESSAGE: &str = "must not contain NUL characters (\\u0000)";

/// A date as the API writes it, `YYYY-MM-DD` with a year from 0001 to 9999. chrono alone also
/// takes signed and longer years (`-5000-01-01`), which PostgreSQL refuses ("date out of range"):
/// every date a client sends is read here.
pub fn parse_date(raw: &str) -> Option<chrono::NaiveDate> {
    let b = raw.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped || raw.starts_with("0000") {
        return None;
    }
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()
}

/// The message of a field that is not such a date.
pub const DATE_MESSAGE: &str = "must be a date YYYY-MM-DD";

/// Whether `err` or one of its sources is an `E`.
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

fn body_error(e: BytesRejection) -> AppError {
    if caused_by::<tower_http::timeout::TimeoutError>(&e) {
        return AppError::RequestTimeout("the request body was not received in time".into());
    }
    match e {
        BytesRejection::FailedToBufferBody(
            axum::extract::rejection::FailedToBufferBody::LengthLimitError(_),
        ) => too_large(),
        other => AppError::BadRequest(format!("cannot read the request body: {other}")),
    }
}

fn too_large() -> AppError {
    AppError::PayloadTooLarge(format!(
        "the request body is larger than {MAX_BODY_BYTES} bytes"
    ))
}

/// The body as JSON; `None` when it is empty (only whitespace). NUL characters are not checked.
async fn json_or_empty<S: Send + Sync>(req: Request, state: &S) -> Result<Option<Value>, AppError> {
    // A declared length over the limit is refused before anything is read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parse_json(&bytes).map(Some)
}

/// The body as it came, at most `limit` bytes: a larger one (declared or sent) is `413` naming
/// the limit, one not received within `HTTP_BODY_TIMEOUT_SECS` is `408`. For routes that keep a
/// body as bytes (the inbound webhooks), with a limit of their own.
pub async fn bytes_within(req: Request, limit: usize) -> Result<Bytes, AppError> {
    let too_large =
        || AppError::PayloadTooLarge(format!("the request body is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) if caused_by::<tower_http::timeout::TimeoutError>(&e) => Err(
            AppError::RequestTimeout("the request body was not received in time".into()),
        ),
        Err(e) if caused_by::<http_body_util::LengthLimitError>(&e) => Err(too_large()),
        Err(e) => Err(AppError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// Refuses a value with NUL characters: 422 naming every such field.
fn without_nul(value: Value) -> Result<Value, AppError> {
    let paths = nul_paths(&value);
    if paths.is_empty() {
        Ok(value)
    } else {
        Err(AppError::Validation(nul_errors(paths)))
    }
}

fn object(value: Value) -> Result<Map<String, Value>, AppError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(AppError::BadRequest(
            "the request body must be a JSON object".into(),
        )),
    }
}

fn required(value: Option<Value>) -> Result<Value, AppError> {
    value.ok_or_else(|| AppError::BadRequest("the request body is empty; expected JSON".into()))
}

/// A request body that must be JSON (any value) without NUL characters.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        without_nul(required(json_or_empty(req, state).await?)?).map(Self)
    }
}

/// A bulk-import body: JSON whose items — the elements of the root array, or of an array
/// directly under the root object (`{"customers": [...]}`) — have their NUL characters left to
/// the validation of each item ([`Fields::new`]), so that one bad item does not fail the others.
/// A NUL anywhere else (a key of the root object, another value) is a 422 naming it.
pub struct BulkJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for BulkJson {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = required(json_or_empty(req, state).await?)?;
        let paths = nul_paths_outside_items(&value);
        if paths.is_empty() {
            Ok(Self(value))
        } else {
            Err(AppError::Validation(nul_errors(paths)))
        }
    }
}

/// [`nul_paths`] of a bulk body, skipping its items (see [`BulkJson`]).
fn nul_paths_outside_items(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match value {
        Value::Array(_) => {}
        Value::Object(map) => {
            for (key, item) in map {
                let mut path = shown(key);
                if key.contains('\0') {
                    out.push(path.clone());
                }
                if !item.is_array() {
                    walk(item, &mut path, &mut out);
                }
            }
        }
        other => walk(other, &mut String::new(), &mut out),
    }
    out
}

/// A request body that must be a JSON object without NUL characters.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        object(JsonBody::from_request(req, state).await?.0).map(Self)
    }
}

/// A body that may be empty (= `{}`) or a JSON object without NUL characters.
pub struct OptionalJsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match json_or_empty(req, state).await? {
            None => Ok(Self(Map::new())),
            Some(value) => object(without_nul(value)?).map(Self),
        }
    }
}

/// Path parameters, percent-decoded: not valid UTF-8 → 400, a NUL character → 422 naming the
/// parameter, then deserialized like axum's `Path` (a mismatch → 400); every rejection in the
/// envelope.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| match e {
                RawPathParamsRejection::InvalidUtf8InPathParam(_) => {
                    AppError::BadRequest("malformed path: not valid UTF-8".into())
                }
                other => AppError::Internal(anyhow::anyhow!("path parameters: {other}")),
            })?;
        let errors: Vec<FieldError> = raw
            .iter()
            .filter(|(_, value)| value.contains('\0'))
            .map(|(name, _)| FieldError::new(name, NUL_MESSAGE))
            .collect();
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| AppError::BadRequest(format!("malformed path: {}", e.body_text())))
    }
}

/// The query string as ordered pairs; a string that is not valid `x-www-form-urlencoded` → 400,
/// a NUL character in a name or value → 422 naming the parameter.
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// An optional parameter read by `parse`; one it refuses adds `refused` (what it must be)
    /// to `errors` under its name.
    pub fn parsed<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Option<T>,
        refused: impl FnOnce() -> String,
        errors: &mut Vec<FieldError>,
    ) -> Option<T> {
        let raw = self.get(name)?;
        let value = parse(raw);
        if value.is_none() {
            errors.push(FieldError::new(name, refused()));
        }
        value
    }

    /// An optional RFC 3339 time; a problem is added to `errors`.
    pub fn time(
        &self,
        name: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.parsed(
            name,
            super::fields::rfc3339,
            || super::fields::RFC3339.into(),
            errors,
        )
    }

    /// An optional integer parameter within `range`; a problem is added to `errors`.
    pub fn int_opt(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
        errors: &mut Vec<FieldError>,
    ) -> Option<i64> {
        match self.get(name).map(str::parse::<i64>) {
            None => None,
            Some(Ok(n)) if range.contains(&n) => Some(n),
            Some(_) => {
                errors.push(FieldError::new(
                    name,
                    format!(
                        "must be an integer between {} and {}",
                        range.start(),
                        range.end()
                    ),
                ));
                None
            }
        }
    }

    /// [`int_opt`](Self::int_opt) with a default.
    pub fn int(
        &self,
        name: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
        errors: &mut Vec<FieldError>,
    ) -> i64 {
        self.int_opt(name, range, errors).unwrap_or(default)
    }

    /// `true`/`1` or `false`/`0`; a problem is added to `errors`.
    pub fn flag(&self, name: &str, default: bool, errors: &mut Vec<FieldError>) -> bool {
        match self.get(name) {
            None => default,
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(_) => {
                errors.push(FieldError::new(name, "must be true or false"));
                default
            }
        }
    }

    /// `limit` of a list: 1..=500, default 50; a problem is added to `errors`.
    pub fn limit(&self, errors: &mut Vec<FieldError>) -> i64 {
        self.int("limit", 50, 1..=500, errors)
    }

    /// `limit` of a list with its own default (1..=500): `422` naming it when it is not one.
    pub fn limit_or(&self, default: i64) -> Result<i64, crate::error::AppError> {
        let mut errors = Vec::new();
        let limit = self.int("limit", default, 1..=500, &mut errors);
        if errors.is_empty() {
            Ok(limit)
        } else {
            Err(crate::error::AppError::Validation(errors))
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `limit` (1..=500, default 50) and `cursor` (an id from a previous page) of a newest-first
    /// list; problems are added to `errors`.
    pub fn page(&self, errors: &mut Vec<FieldError>) -> (i64, Option<uuid::Uuid>) {
        let limit = self.limit(errors);
        let cursor = match self.get("cursor").map(uuid::Uuid::parse_str) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor returned by this endpoint",
                ));
                None
            }
        };
        (limit, cursor)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let decode = |raw: &str| {
            let spaced = raw.replace('+', " ");
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| AppError::BadRequest("malformed query string: not valid UTF-8".into()))
        };
        let mut pairs = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((decode(k)?, decode(v)?));
        }
        let errors: Vec<FieldError> = pairs
            .iter()
            .filter(|(k, v)| k.contains('\0') || v.contains('\0'))
            .map(|(k, _)| FieldError::new(shown(k), NUL_MESSAGE))
            .collect();
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        Ok(Self(pairs))
    }
}

#[cfg(test)]
#[path = "extract_json_tests.rs"]
mod json_tests;

#[cfg(test)]
mod date_tests {
    use super::parse_date;

    #[test]
    fn only_four_digit_years_from_0001_are_dates() {
        assert_eq!(
            parse_date("2026-12-01"),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
        );
        assert!(parse_date("0001-01-01").is_some());
        assert!(parse_date("9999-12-31").is_some());
        for bad in [
            "-5000-01-01",
            "+2026-12-01",
            "12026-12-01",
            "0000-01-01",
            "2026-02-30",
            "2026-2-1",
            "2026-12-01 ",
            "01-12-2026",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod query_tests {
    use super::QueryPairs;

    fn q(pairs: &[(&str, &str)]) -> QueryPairs {
        QueryPairs(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    #[test]
    fn integers_and_flags_are_checked_and_every_problem_is_reported() {
        let mut errors = Vec::new();
        let good = q(&[("limit", "20"), ("force", "true"), ("hour", "7")]);
        assert_eq!(good.limit(&mut errors), 20);
        assert!(good.flag("force", false, &mut errors));
        assert_eq!(good.int_opt("hour", 0..=23, &mut errors), Some(7));
        assert_eq!(good.int_opt("minute", 0..=59, &mut errors), None);
        assert_eq!(good.int("offset", 0, 0..=10, &mut errors), 0);
        assert!(errors.is_empty());

        let bad = q(&[
            ("limit", "0"),
            ("force", "yes"),
            ("hour", "24"),
            ("offset", "x"),
        ]);
        assert_eq!(bad.limit(&mut errors), 50);
        assert!(!bad.flag("force", false, &mut errors));
        assert_eq!(bad.int_opt("hour", 0..=23, &mut errors), None);
        assert_eq!(bad.int("offset", 0, 0..=10, &mut errors), 0);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["limit", "force", "hour", "offset"]);
        assert_eq!(errors[2].message, "must be an integer between 0 and 23");
    }
}
