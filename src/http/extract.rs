//! Extractors whose rejections speak our envelope: malformed JSON or query → 400 (README "HTTP API").
//! Bodies are read as a JSON object and validated field by field by the feature modules, so
//! that a client gets every invalid field at once as 422 `errors[]`.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use serde_json::{Map, Value};

use crate::error::AppError;

/// The body as JSON; `None` when it is empty (only whitespace).
async fn json_or_empty<S: Send + Sync>(req: Request, state: &S) -> Result<Option<Value>, AppError> {
    let bytes = Bytes::from_request(req, state)
        .await
        .map_err(|e| AppError::BadRequest(format!("cannot read the request body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Value>(&bytes)
        .map(Some)
        .map_err(|e| AppError::BadRequest(format!("malformed JSON: {e}")))
}

fn object(value: Value) -> Result<Map<String, Value>, AppError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(AppError::BadRequest(
            "the request body must be a JSON object".into(),
        )),
    }
}

/// A request body that must be JSON (any value).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        json_or_empty(req, state)
            .await?
            .map(Self)
            .ok_or_else(|| AppError::BadRequest("the request body is empty; expected JSON".into()))
    }
}

/// A request body that must be a JSON object.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        object(JsonBody::from_request(req, state).await?.0).map(Self)
    }
}

/// A body that may be empty (= `{}`) or a JSON object.
pub struct OptionalJsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match json_or_empty(req, state).await? {
            None => Ok(Self(Map::new())),
            Some(value) => object(value).map(Self),
        }
    }
}

/// The query string as ordered pairs; a string that is not valid `x-www-form-urlencoded` → 400.
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    /// An optional integer parameter within `range`; a problem is added to `errors`.
    pub fn int_opt(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
        errors: &mut Vec<crate::error::FieldError>,
    ) -> Option<i64> {
        match self.get(name).map(str::parse::<i64>) {
            None => None,
            Some(Ok(n)) if range.contains(&n) => Some(n),
            Some(_) => {
                errors.push(crate::error::FieldError::new(
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
        errors: &mut Vec<crate::error::FieldError>,
    ) -> i64 {
        self.int_opt(name, range, errors).unwrap_or(default)
    }

    /// `true`/`1` or `false`/`0`; a problem is added to `errors`.
    pub fn flag(
        &self,
        name: &str,
        default: bool,
        errors: &mut Vec<crate::error::FieldError>,
    ) -> bool {
        match self.get(name) {
            None => default,
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(_) => {
                errors.push(crate::error::FieldError::new(name, "must be true or false"));
                default
            }
        }
    }

    /// `limit` of a list: 1..=500, default 50; a problem is added to `errors`.
    pub fn limit(&self, errors: &mut Vec<crate::error::FieldError>) -> i64 {
        self.int("limit", 50, 1..=500, errors)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `limit` (1..=500, default 50) and `cursor` (an id from a previous page) of a newest-first
    /// list; problems are added to `errors`.
    pub fn page(&self, errors: &mut Vec<crate::error::FieldError>) -> (i64, Option<uuid::Uuid>) {
        use crate::error::FieldError;
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
        Ok(Self(pairs))
    }
}

/// Field readers that collect errors instead of stopping at the first one.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    pub errors: Vec<crate::error::FieldError>,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors
            .push(crate::error::FieldError::new(field, message));
    }

    pub fn required_str(&mut self, field: &str) -> Option<&'a str> {
        match self.map.get(field) {
            None | Some(Value::Null) => {
                self.error(field, "is required");
                None
            }
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    pub fn optional_str(&mut self, field: &str) -> Option<&'a str> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    /// An integer; `5.0` is one too (JSON and JSON Schema do not tell them apart, and some
    /// clients write every number with a fraction).
    pub fn optional_i64(&mut self, field: &str) -> Option<i64> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= -(2f64.powi(63)) && *f < 2f64.powi(63))
                    .map(|f| f as i64)
            }) {
                Some(v) => Some(v),
                None => {
                    self.error(field, "must be an integer");
                    None
                }
            },
            Some(_) => {
                self.error(field, "must be an integer");
                None
            }
        }
    }
}

#[cfg(test)]
mod field_tests {
    use super::Fields;

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let body =
            serde_json::json!({"a": 5, "b": 36500.0, "c": 2.5, "d": 1e300, "e": "5", "f": -3.0});
        let map = body.as_object().unwrap();
        let mut f = Fields::new(map);
        assert_eq!(f.optional_i64("a"), Some(5));
        assert_eq!(f.optional_i64("b"), Some(36_500));
        assert_eq!(f.optional_i64("c"), None);
        assert_eq!(f.optional_i64("d"), None);
        assert_eq!(f.optional_i64("e"), None);
        assert_eq!(f.optional_i64("f"), Some(-3));
        assert_eq!(f.optional_i64("missing"), None);
        let fields: Vec<&str> = f.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["c", "d", "e"]);
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
