//! Reading a JSON body: one pass that refuses an object naming a key twice ([`parse_json`]), and
//! the paths of what holds a NUL character ([`nul_paths`]). See `extract.rs` for why both.

use std::cell::RefCell;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::extract::NUL_MESSAGE;
use crate::error::{AppError, FieldError};

/// The paths (`nama`, `vehicles[0].no_pol`, `[3].nopol`) of the strings and object keys in `value`
/// that contain a NUL character; a string at the root is `body`.
pub fn nul_paths(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(value, &mut String::new(), &mut out);
    out
}

pub(super) fn walk(value: &Value, path: &mut String, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.contains('\0') => out.push(if path.is_empty() {
            "body".to_owned()
        } else {
            path.clone()
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, out);
                path.truncate(len);
            }
        }
        Value::Object(map) => walk_map(map, path, out),
        _ => {}
    }
}

pub(super) fn walk_map(map: &Map<String, Value>, path: &mut String, out: &mut Vec<String>) {
    for (key, item) in map {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&shown(key));
        if key.contains('\0') {
            out.push(path.clone());
        }
        walk(item, path, out);
        path.truncate(len);
    }
}

/// A name as it can be shown in an error (a NUL as `\u0000`).
pub(super) fn shown(name: &str) -> String {
    name.replace('\0', "\\u0000")
}

pub(super) fn nul_errors(paths: Vec<String>) -> Vec<FieldError> {
    paths
        .into_iter()
        .map(|p| FieldError::new(p, NUL_MESSAGE))
        .collect()
}

/// A request body as JSON: malformed JSON, or an object that names a key twice, is a 400 (the
/// latter naming the key and its path). One pass: the check is made while the value is built.
pub fn parse_json(bytes: &[u8]) -> Result<Value, AppError> {
    let trail = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = UniqueKeys { trail: &trail }
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    parsed.map_err(|e| {
        let trail = trail.into_inner();
        match trail.first() {
            // Filled only on the way out of a duplicate: innermost first.
            Some(key) => {
                let path = trail.iter().rev().fold(String::new(), |mut path, segment| {
                    if !path.is_empty() && !segment.starts_with('[') {
                        path.push('.');
                    }
                    path.push_str(segment);
                    path
                });
                AppError::BadRequest(format!(
                    "malformed JSON: the key \"{}\" appears twice in one object (at `{}`); \
                     each key may appear once",
                    clipped(key),
                    clipped(&path)
                ))
            }
            None => AppError::BadRequest(format!("malformed JSON: {e}")),
        }
    })
}

/// At most [`SHOWN_CHARS`] characters of a name a client sent, for a message.
fn clipped(name: &str) -> String {
    match name.char_indices().nth(SHOWN_CHARS) {
        None => name.to_owned(),
        Some((at, _)) => format!("{}…", &name[..at]),
    }
}

const SHOWN_CHARS: usize = 100;

/// Builds a [`Value`] like `serde_json`'s own deserializer, but refuses an object with a key
/// it has seen already. On that error `trail` gets the key, then each enclosing key or `[index]`
/// as the error travels out.
struct UniqueKeys<'a> {
    trail: &'a RefCell<Vec<String>>,
}

impl UniqueKeys<'_> {
    fn note(&self, segment: impl FnOnce() -> String) {
        let mut trail = self.trail.borrow_mut();
        if !trail.is_empty() {
            trail.push(segment());
        }
    }
}

impl<'de> DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity: `from_f64` always gives a number here.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            match seq.next_element_seed(UniqueKeys { trail: self.trail }) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    self.note(|| format!("[{}]", items.len()));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                self.trail.borrow_mut().push(shown(&key));
                return Err(de::Error::custom("duplicate key"));
            }
            match map.next_value_seed(UniqueKeys { trail: self.trail }) {
                Ok(value) => {
                    object.insert(key, value);
                }
                Err(e) => {
                    self.note(|| shown(&key));
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(object))
    }
}
