//! WhatsApp messages: validated here, stored with their send job, sent by the worker.
//!
//! Follow the names: [`request`] validates, [`render`] renders a send given as a template,
//! [`store`] stores (message + job in one statement),
//! [`job`] runs a send — [`claim`], the gateway call, [`decide`], [`record`] — with the
//! [`context`] its process built; [`withdraw`] cancels, expires and requeues, [`read`] reads,
//! [`receipts`] applies what WhatsApp reported after a send, [`routes`] and [`send_batch`] are
//! the HTTP surface.

pub mod claim;
pub mod cloud_admit;
pub mod cloud_send;
pub mod context;
pub mod decide;
pub mod enqueue;
pub mod idempotency;
pub mod job;
pub mod phone;
pub mod query;
pub mod read;
pub mod receipts;
pub mod record;
pub mod render;
pub mod request;
#[cfg(test)]
mod request_tests;
pub mod routes;
pub mod send_batch;
pub mod send_batches;
pub mod store;
pub mod withdraw;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Where a campaign message comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CampaignRef {
    pub id: Uuid,
    pub step: i32,
    pub variant: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[schema(as = MessageKind)]
pub enum Kind {
    Adhoc,
    Maintenance,
    Manual,
    /// Sent by the service on its own account: the reply that confirms a keyword opt-out (README
    /// "Inbound messages and opt-out keywords"). Not held by the send window.
    System,
    /// To the workshop's own `ADMIN_PHONES` (alerts, the daily summary): not held by the send
    /// window, not stopped by the opt-out list.
    Admin,
    /// One recipient's message of a campaign (SPEC §15): promotional, so it waits for the send
    /// window like a reminder and an opt-out of scope `all` stops it; in the send queue it is
    /// bulk ([`crate::queue::Class::Bulk`]) and yields to every other kind.
    Campaign,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Adhoc,
        Kind::Maintenance,
        Kind::Manual,
        Kind::System,
        Kind::Admin,
        Kind::Campaign,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Adhoc => "adhoc",
            Kind::Maintenance => "maintenance",
            Kind::Manual => "manual",
            Kind::System => "system",
            Kind::Admin => "admin",
            Kind::Campaign => "campaign",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// `adhoc, maintenance, …`, for an error message.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    /// Whether messages of this kind wait for the send window by themselves (an ad-hoc send
    /// only with `respect_window`).
    pub fn keeps_window(self) -> bool {
        matches!(self, Kind::Maintenance | Kind::Manual | Kind::Campaign)
    }

    /// A reminder (the fan-out's or a manual customer's): opt-out scope `reminders` covers it,
    /// and on the Cloud API it always goes as its mapped template.
    pub fn is_reminder(self) -> bool {
        matches!(self, Kind::Maintenance | Kind::Manual)
    }

    /// Its class in the send queue: campaign messages are bulk and yield to every other kind
    /// (README "Delivery policy": campaigns yield).
    pub fn class(self) -> crate::queue::Class {
        match self {
            Kind::Campaign => crate::queue::Class::Bulk,
            _ => crate::queue::Class::Single,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[schema(as = MessageStatus)]
pub enum Status {
    Queued,
    Sending,
    Sent,
    Retrying,
    Failed,
    Cancelled,
    /// Not sent by its deadline (a reminder's business day, an ad-hoc `expires_at`): never sent
    /// late.
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Retrying => "retrying",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Status::Queued,
            Status::Sending,
            Status::Sent,
            Status::Retrying,
            Status::Failed,
            Status::Cancelled,
            Status::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// What WhatsApp reported after the gateway accepted a message (SPEC §12 "Receipts"); `null`
/// on a message: no receipt yet, or a gateway that gives none (StarSender). It only moves
/// forward ([`receipts`]); `status` stays the queue lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[schema(as = DeliveryStatus)]
pub enum DeliveryStatus {
    /// Delivered to the recipient's phone (`delivered_at`).
    Delivered,
    /// Read by the recipient (`read_at`; `delivered_at` is set too).
    Read,
    /// Accepted by the gateway, then reported as not deliverable (`undelivered_reason`,
    /// `undelivered_code`).
    Undelivered,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Undelivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Undelivered => "undelivered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A message that just moved to `status` (sent, failed, cancelled, or queued again by a
/// requeue), handed to the modules whose rows follow their message (`reminders::log::follow`,
/// `manual::repo::follow`) in the same transaction.
#[derive(Debug, Clone)]
pub struct Change {
    pub message_id: Uuid,
    pub status: Status,
    /// Why it failed (the reminder row keeps it as its reason).
    pub error: Option<String>,
    /// The message's kind when the caller read it; `None`: any follower may have a row.
    pub kind: Option<Kind>,
}

impl Change {
    pub fn new(message_id: Uuid, status: Status, error: Option<String>) -> Self {
        Self {
            message_id,
            status,
            error,
            kind: None,
        }
    }

    /// A message of `kind` cancelled because its number opted out.
    pub fn opted_out(message_id: Uuid, kind: Kind) -> Self {
        Self {
            kind: Some(kind),
            ..Self::new(
                message_id,
                Status::Cancelled,
                Some(crate::suppressions::RECIPIENT_OPTED_OUT.to_owned()),
            )
        }
    }

    /// Whether a follower of messages of `kind` may have a row for this one.
    pub fn may_be(&self, kind: Kind) -> bool {
        self.kind.is_none_or(|k| k == kind)
    }
}

/// SQL: the changes bound as `$1..$3` ([`change_columns`]) as `c`, and the rows of `$table`
/// (a follower's table, with `message_id`, `status`, `sent_at`, `reason`) moved to their
/// message's status as `r`, returning `$returning`. A follower writes what follows from `r`.
#[macro_export]
macro_rules! follow_cte {
    ($table:literal, $returning:literal) => {
        concat!(
            "WITH c AS (
                SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(message_id, status, error)
             ), r AS (
                UPDATE ", $table, " SET
                    status = c.status,
                    sent_at = CASE WHEN c.status = 'sent' THEN now() END,
                    reason = CASE WHEN c.status IN ('failed', 'expired') THEN c.error END,
                    updated_at = now()
                FROM c
                WHERE ", $table, ".message_id = c.message_id
                RETURNING ", $returning, "
             ) "
        )
    };
}

/// `changes` as the three arrays a set-wise statement binds: message ids, statuses, errors.
pub fn change_columns(changes: &[Change]) -> (Vec<Uuid>, Vec<&'static str>, Vec<Option<&str>>) {
    (
        changes.iter().map(|c| c.message_id).collect(),
        changes.iter().map(|c| c.status.as_str()).collect(),
        changes.iter().map(|c| c.error.as_deref()).collect(),
    )
}

/// A stored message as clients see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub kind: Kind,
    #[sqlx(rename = "to_phone")]
    pub to: String,
    pub body: String,
    #[sqlx(rename = "file_url")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub status: Status,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// What the gateway answered to the last attempt, as it answered.
    #[schema(value_type = Option<Value>)]
    pub gateway_response: Option<serde_json::Value>,
    pub sent_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Unsent by then: `expired` (README "Delivery policy": deadlines).
    pub expires_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    /// An ad-hoc send that waits for the send window like a reminder.
    pub respect_window: bool,
    /// Held back by the delivery policy until then (no attempt spent); see `held_reason`.
    pub held_until: Option<DateTime<Utc>>,
    pub held_reason: Option<crate::policy::HoldReason>,
    /// The template the body was rendered from (reminders, template sends), and its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_version: Option<i32>,
    /// The template the body was rendered from, with the language of the body used and the
    /// value of every placeholder available then; absent for a message sent with its own text.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(json(nullable))]
    pub template: Option<crate::templates::Recorded>,
    /// The `POST /whatsapp/send-batch` call that stored it (that answer's `batch_id`; list its
    /// messages with `GET /whatsapp/messages?batch=`); null for a message sent any other way.
    pub batch_id: Option<Uuid>,
    /// The item's `client_ref` in that batch; null when it had none, and outside a batch.
    pub client_ref: Option<String>,
    /// A campaign's message (kind `campaign`, SPEC §15): the campaign, its step and the
    /// recipient's variant; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[sqlx(json(nullable))]
    pub campaign: Option<CampaignRef>,
    /// What WhatsApp reported after the gateway accepted it: null (no receipt yet, or a gateway
    /// that gives none — StarSender), `delivered`, `read` or `undelivered`. Only moves forward;
    /// `status` stays `sent`. List by it with `GET /whatsapp/messages?delivery_status=`.
    pub delivery_status: Option<DeliveryStatus>,
    /// When it reached the recipient's phone (set by a `read` receipt too, when none came first).
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the recipient read it.
    pub read_at: Option<DateTime<Utc>>,
    /// Why it could not be delivered, as the gateway said (`delivery_status` `undelivered`).
    pub undelivered_reason: Option<String>,
    /// The gateway's code for that (`delivery_status` `undelivered`).
    pub undelivered_code: Option<String>,
    /// The gateway's own id of the message (the Cloud API's `wamid.…`); null when it gives none.
    pub gateway_message_id: Option<String>,
    pub job_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One gateway call of a message.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: String,
    pub class: String,
    pub error: Option<String>,
}

/// What a `202` answers with (README "Sending").
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    pub status: Status,
    pub kind: Kind,
    #[sqlx(rename = "to_phone")]
    pub to: String,
    pub run_at: DateTime<Utc>,
    /// The message's `last_error`. A new message has one only when it will not be sent:
    /// `recipient opted out` (the number is on the opt-out list for this kind; `status` is
    /// `cancelled`; README "Opt-out"). An `Idempotency-Key` replay shows the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
