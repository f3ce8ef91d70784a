//! Reading an object's fields one by one, collecting every error instead of stopping at the
//! first (a client gets all its invalid fields at once as 422 `errors[]`).

use serde_json::{Map, Value};

use super::json::{nul_errors, walk_map};
use crate::error::FieldError;

/// What an RFC 3339 time field must be.
pub const RFC3339: &str = "must be an RFC 3339 timestamp (2026-12-01T07:00:00+07:00)";

/// An RFC 3339 time, in UTC.
pub fn rfc3339(raw: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Field readers that collect errors instead of stopping at the first one.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    pub errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Starts the validation of one object (a body or an item of a bulk import): a string or key
    /// anywhere in it that contains a NUL character is already an error.
    pub fn new(map: &'a Map<String, Value>) -> Self {
        let mut paths = Vec::new();
        walk_map(map, &mut String::new(), &mut paths);
        Self {
            map,
            errors: nul_errors(paths),
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
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

    /// An array; anything else (an object, a string) is an error.
    pub fn optional_array(&mut self, field: &str) -> Option<&'a [Value]> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items.as_slice()),
            Some(_) => {
                self.error(field, "must be an array");
                None
            }
        }
    }

    /// A string, trimmed, of 1 to `max` characters (`required`: absent is an error too).
    pub fn text(&mut self, field: &str, max: usize, required: bool) -> Option<String> {
        let raw = if required {
            self.required_str(field)
        } else {
            self.optional_str(field)
        }?;
        let text = raw.trim();
        let n = text.chars().count();
        if n == 0 || n > max {
            self.error(field, format!("must be 1 to {max} characters (got {n})"));
            return None;
        }
        Some(text.to_owned())
    }

    /// An optional RFC 3339 time.
    pub fn optional_time(&mut self, field: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let raw = self.optional_str(field)?;
        let time = rfc3339(raw);
        if time.is_none() {
            self.error(field, RFC3339);
        }
        time
    }

    /// Whether the object has `field` at all (`null` included): a `PATCH` clears with `null`.
    pub fn has(&self, field: &str) -> bool {
        self.map.contains_key(field)
    }

    /// `true` or `false`; anything else (`"true"`, `1`) is an error.
    pub fn optional_bool(&mut self, field: &str) -> Option<bool> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.error(field, "must be true or false");
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
mod tests {
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
