//! The policy's settings: one row in `delivery_policy`, seeded from the environment the first
//! time a process starts on a database, changed through `PUT /ops/policy`, followed by every
//! process (README "Delivery policy").

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{sender::RATE_FLOOR, window::SendWindow};
use crate::{config::Config, error::FieldError};

/// What `GET /ops/policy` shows and every process follows.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Settings {
    /// `HH:MM-HH:MM` in the business time zone; `00:00-24:00` = no quiet hours.
    #[schema(value_type = String, example = "07:00-21:00")]
    #[serde(serialize_with = "as_text")]
    pub send_window: SendWindow,
    pub recipient_min_interval_secs: u32,
    /// Gateway calls per second for the whole cluster; 0 = no limit.
    pub rate_per_second: f64,
    pub burst: u32,
    pub circuit_failure_threshold: u32,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
}

fn as_text<S: serde::Serializer>(w: &SendWindow, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(w)
}

/// The largest rate and burst accepted (far beyond what any WhatsApp number survives).
pub const MAX_RATE: f64 = 10_000.0;
pub const MAX_BURST: u32 = 10_000;

/// What a configured rate may be, in the words of a refusal.
pub const RATE_RULE: &str = "must be 0 (no limit) or a number from 0.05 to 10000 calls per second";

/// A configured rate is `0` (no limit) or from [`RATE_FLOOR`] to [`MAX_RATE`]. Below the floor a
/// slot would open days apart: a send would wait longer than any deadline, and a run waiting
/// for it would hold its worker slot all that time.
pub fn valid_rate(rate: f64) -> bool {
    rate == 0.0 || (RATE_FLOOR..=MAX_RATE).contains(&rate)
}

#[derive(sqlx::FromRow)]
struct Row {
    send_window: String,
    recipient_min_interval_secs: i32,
    rate_per_second: f64,
    burst: i32,
    circuit_failure_threshold: i32,
    updated_at: DateTime<Utc>,
    updated_by: Option<String>,
}

impl From<Row> for Settings {
    fn from(r: Row) -> Self {
        Settings {
            // Only ever written from a parsed window.
            send_window: r.send_window.parse().unwrap_or(SendWindow::DEFAULT),
            recipient_min_interval_secs: r.recipient_min_interval_secs.max(0) as u32,
            rate_per_second: r.rate_per_second,
            burst: r.burst.max(1) as u32,
            circuit_failure_threshold: r.circuit_failure_threshold.max(1) as u32,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        }
    }
}

/// Writes the environment's values unless the database already has settings (they are initial
/// values: runtime changes persist).
pub async fn seed(pool: &PgPool, config: &Config) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO delivery_policy (send_window, recipient_min_interval_secs, rate_per_second,
                                      burst, circuit_failure_threshold, updated_by)
         VALUES ($1, $2, $3, $4, $5, 'environment')
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(config.send_window.to_string())
    .bind(config.recipient_min_interval_secs as i32)
    .bind(config.send_rate_per_second)
    .bind(config.send_burst as i32)
    .bind(config.circuit_failure_threshold as i32)
    .execute(pool)
    .await?;
    super::sender::seed(pool, config.send_burst).await
}

pub async fn load(pool: &PgPool) -> sqlx::Result<Option<Settings>> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT send_window, recipient_min_interval_secs, rate_per_second, burst,
                circuit_failure_threshold, updated_at, updated_by
         FROM delivery_policy",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Settings::from))
}

/// A change from `PUT /ops/policy`: any subset of the settings.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Change {
    pub send_window: Option<SendWindow>,
    pub recipient_min_interval_secs: Option<u32>,
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub circuit_failure_threshold: Option<u32>,
}

impl Change {
    /// Reads a JSON object; every invalid field is reported, and then nothing changes.
    pub fn from_json(body: &serde_json::Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some(obj) = body.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let mut change = Change::default();
        let uint =
            |field: &str, max: u64, min: u64, errors: &mut Vec<FieldError>| match obj.get(field) {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => match v.as_u64() {
                    Some(n) if (min..=max).contains(&n) => Some(n as u32),
                    _ => {
                        errors.push(FieldError::new(
                            field,
                            format!("must be an integer from {min} to {max}"),
                        ));
                        None
                    }
                },
            };
        change.recipient_min_interval_secs =
            uint("recipient_min_interval_secs", 86_400, 0, &mut errors);
        change.burst = uint("burst", u64::from(MAX_BURST), 1, &mut errors);
        change.circuit_failure_threshold =
            uint("circuit_failure_threshold", 100_000, 1, &mut errors);
        match obj.get("rate_per_second") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => match v.as_f64() {
                Some(r) if valid_rate(r) => change.rate_per_second = Some(r),
                _ => errors.push(FieldError::new("rate_per_second", RATE_RULE)),
            },
        }
        match obj.get("send_window") {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => match v.as_str().map(str::parse::<SendWindow>) {
                Some(Ok(w)) => change.send_window = Some(w),
                Some(Err(e)) => errors.push(FieldError::new("send_window", e.to_string())),
                None => errors.push(FieldError::new(
                    "send_window",
                    "must be a string HH:MM-HH:MM",
                )),
            },
        }
        if errors.is_empty() {
            Ok(change)
        } else {
            Err(errors)
        }
    }
}

/// Applies a change (by `who`) and returns the new settings.
pub async fn update(pool: &PgPool, change: &Change, who: &str) -> sqlx::Result<Option<Settings>> {
    let row: Option<Row> = sqlx::query_as(
        "UPDATE delivery_policy SET
            send_window = coalesce($1, send_window),
            recipient_min_interval_secs = coalesce($2, recipient_min_interval_secs),
            rate_per_second = coalesce($3, rate_per_second),
            burst = coalesce($4, burst),
            circuit_failure_threshold = coalesce($5, circuit_failure_threshold),
            updated_at = now(),
            updated_by = $6
         RETURNING send_window, recipient_min_interval_secs, rate_per_second, burst,
                   circuit_failure_threshold, updated_at, updated_by",
    )
    .bind(change.send_window.map(|w| w.to_string()))
    .bind(change.recipient_min_interval_secs.map(|v| v as i32))
    .bind(change.rate_per_second)
    .bind(change.burst.map(|v| v as i32))
    .bind(change.circuit_failure_threshold.map(|v| v as i32))
    .bind(who)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Settings::from))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_change_takes_any_subset_and_reports_every_bad_field() {
        let c = Change::from_json(&json!({"send_window": "08:00-20:00", "burst": 3})).unwrap();
        assert_eq!(
            c.send_window.map(|w| w.to_string()).as_deref(),
            Some("08:00-20:00")
        );
        assert_eq!(c.burst, Some(3));
        assert_eq!(c.rate_per_second, None);
        assert_eq!(Change::from_json(&json!({})).unwrap(), Change::default());
        let errors = Change::from_json(&json!({
            "send_window": "7-21", "burst": 0, "rate_per_second": -1,
            "recipient_min_interval_secs": "6", "circuit_failure_threshold": 1.5
        }))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "send_window",
            "burst",
            "rate_per_second",
            "recipient_min_interval_secs",
            "circuit_failure_threshold",
        ] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
        assert!(Change::from_json(&json!([1])).is_err());
        assert_eq!(
            Change::from_json(&json!({"rate_per_second": 0.5}))
                .unwrap()
                .rate_per_second,
            Some(0.5)
        );
    }

    #[test]
    fn a_rate_is_zero_or_between_the_floor_and_the_maximum() {
        for ok in [0.0, 0.05, 1.0, 10_000.0] {
            assert_eq!(
                Change::from_json(&json!({ "rate_per_second": ok }))
                    .unwrap()
                    .rate_per_second,
                Some(ok)
            );
        }
        for bad in [1e-30, 1e-7, 0.049, -0.0001, 10_000.5, 1e300] {
            let errors = Change::from_json(&json!({ "rate_per_second": bad })).unwrap_err();
            assert_eq!(errors[0].field, "rate_per_second", "{bad}");
            assert_eq!(errors[0].message, RATE_RULE);
        }
    }
}
