//! Outbound webhooks (README "Webhooks", SPEC §12): subscriptions, events written in the
//! transaction of the change they report (`outbox`), and their deliveries — signed with
//! Standard Webhooks 1.0 (`sign`), sent by their own workers on queue [`QUEUE`] (`deliver`),
//! retried on a schedule (`retry`), never to a private address (`net`).

pub mod deliver;
pub mod net;
pub mod outbox;
mod post;
pub mod repo;
mod request;
pub mod retry;
pub mod routes;
pub mod sign;
mod waiters;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The queue of delivery jobs (one job per delivery).
pub const QUEUE: &str = "webhooks";
/// Subscriptions at most (deleted ones do not count).
pub const MAX_SUBSCRIPTIONS: i64 = 50;
/// Deliveries of one subscription being sent at once, across every process.
pub const MAX_IN_FLIGHT: i64 = 4;
/// A URL longer than this is refused.
pub const MAX_URL_CHARS: usize = 2048;
/// A description longer than this is refused.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// How long the old secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// `POST /webhooks/{id}/replay` replays at most this many deliveries.
pub const MAX_REPLAY: i64 = 10_000;

/// What `WEBHOOK_*` configures.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `WEBHOOK_TIMEOUT_SECS`: one attempt, connect to last byte.
    pub timeout: Duration,
    /// `WEBHOOK_RETRY_SCHEDULE`: the delay before each retry (its length + 1 = attempts).
    pub schedule: retry::Schedule,
    /// `WEBHOOK_DISABLE_AFTER`: failing this long without a success disables a subscription.
    pub disable_after: Duration,
    /// `WEBHOOK_ALLOW_PRIVATE`: `http` URLs and private/loopback receivers allowed.
    pub allow_private: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            schedule: retry::Schedule::default(),
            disable_after: Duration::from_secs(5 * 86_400),
            allow_private: false,
        }
    }
}

macro_rules! event_types {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The event types of SPEC §12.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
        #[schema(as = WebhookEventType)]
        pub enum EventType {
            $(#[serde(rename = $name)] #[schema(rename = $name)] $variant,)*
        }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }
        }
    };
}

event_types! {
    MessageSent => "message.sent",
    MessageDelivered => "message.delivered",
    MessageRead => "message.read",
    MessageUndelivered => "message.undelivered",
    MessageFailed => "message.failed",
    MessageCancelled => "message.cancelled",
    MessageExpired => "message.expired",
    MessageReceived => "message.received",
    OptoutCreated => "optout.created",
    OptoutRemoved => "optout.removed",
    ReminderSent => "reminder.sent",
    BatchFinished => "batch.finished",
    WebhookTest => "webhook.test",
}

impl EventType {
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == raw)
    }

    /// `message.sent, message.delivered, …`, for an error message.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a subscription is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[schema(as = WebhookDisabledReason)]
pub enum DisabledReason {
    /// The receiver answered `410 Gone`.
    Gone,
    /// No success for `WEBHOOK_DISABLE_AFTER`.
    Failing,
    /// `PATCH … {"enabled": false}`.
    Manual,
}

/// A subscription as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = WebhookSubscription)]
pub struct Subscription {
    pub id: Uuid,
    /// Where events are posted.
    pub url: String,
    /// The event types it receives.
    #[schema(value_type = Vec<EventType>)]
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<DisabledReason>,
    /// Failing without a success since then (cleared by a success or by enabling it).
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[schema(as = WebhookDeliveryStatus)]
pub enum DeliveryStatus {
    /// Not yet delivered: due now or later (a retry).
    Pending,
    /// A `2xx` answer.
    Succeeded,
    /// Every attempt failed.
    Failed,
    /// Its subscription was deleted or disabled first.
    Cancelled,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Failed,
        DeliveryStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// The class of one delivery attempt (the label of `bengkel_webhook_attempts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
#[schema(as = WebhookAttemptClass)]
pub enum AttemptClass {
    /// `2xx`.
    Ok,
    /// `4xx` other than `410` and `429`.
    ClientError,
    /// `5xx`.
    ServerError,
    /// `429`.
    RateLimited,
    /// No answer within `WEBHOOK_TIMEOUT_SECS`.
    Timeout,
    /// The connection failed (refused, reset, TLS, DNS).
    Connect,
    /// The address is private or loopback (SSRF guard): nothing was sent.
    Blocked,
    /// `410`: the subscription is disabled.
    Gone,
    /// `3xx`: not followed.
    Redirect,
}

impl AttemptClass {
    pub const ALL: [AttemptClass; 9] = [
        AttemptClass::Ok,
        AttemptClass::ClientError,
        AttemptClass::ServerError,
        AttemptClass::RateLimited,
        AttemptClass::Timeout,
        AttemptClass::Connect,
        AttemptClass::Blocked,
        AttemptClass::Gone,
        AttemptClass::Redirect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptClass::Ok => "ok",
            AttemptClass::ClientError => "client_error",
            AttemptClass::ServerError => "server_error",
            AttemptClass::RateLimited => "rate_limited",
            AttemptClass::Timeout => "timeout",
            AttemptClass::Connect => "connect",
            AttemptClass::Blocked => "blocked",
            AttemptClass::Gone => "gone",
            AttemptClass::Redirect => "redirect",
        }
    }

    /// The class of an HTTP answer.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => AttemptClass::Ok,
            300..=399 => AttemptClass::Redirect,
            410 => AttemptClass::Gone,
            429 => AttemptClass::RateLimited,
            500..=599 => AttemptClass::ServerError,
            _ => AttemptClass::ClientError,
        }
    }
}
