//! One inbound message, whatever gateway brought it: [`accept`] stores it, moves its number's
//! `last_inbound_at`, emits `message.received`, and applies its keyword — the opt-out (with its
//! confirmation reply) or the opt-in — all on the caller's transaction, so that a re-run after a
//! crash finds either everything or nothing done.

use std::collections::BTreeMap;

use std::borrow::Cow;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{BY, Gateway, InboundResult, Keyword, Keywords, OPTOUT_CONFIRMATION, store};
use crate::{
    config::Config,
    messages::{
        Kind, Status,
        phone::{PhoneError, PhoneNumber},
        request::NewMessage,
        store::{Item, Stored},
    },
    suppressions::{
        Source, count_optout,
        repo::{self as suppressions, KeywordOptOut},
    },
    templates::{self, Workshop},
    webhooks::{EventType, outbox},
};

/// The longest text a `message.received` event carries (events stay under 20 KB).
const EVENT_TEXT_CHARS: usize = 4096;
/// The confirmation reply is worth sending within a day of the opt-out (the Cloud API's
/// customer-service window is 24 hours); unsent by then, it expires.
const CONFIRMATION_TTL: TimeDelta = TimeDelta::hours(24);

/// What accepting a message needs from the configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `OPTOUT_KEYWORDS`, `OPTIN_KEYWORDS`.
    pub keywords: Keywords,
    /// `WORKSHOP_NAME`, `SERVICE_PHONE` (the confirmation's placeholders).
    pub workshop: Workshop,
    /// `SEND_MAX_ATTEMPTS` of the confirmation.
    pub max_attempts: u32,
    /// Our Cloud API number (`CLOUD_API_PHONE_NUMBER_ID`, the sandbox's without one): a
    /// notification for another is ignored and counted.
    pub cloud_phone_number_id: String,
}

impl Rules {
    pub fn from_config(config: &Config) -> Self {
        Self {
            keywords: config.inbound.keywords.clone(),
            workshop: Workshop {
                service_phone: config.service_phone.clone(),
                name: config.workshop_name.clone(),
            },
            max_attempts: config.send_max_attempts,
            cloud_phone_number_id: config
                .gateway
                .cloud
                .phone_number_id
                .clone()
                .unwrap_or_else(|| crate::gateway::SANDBOX_PHONE_NUMBER_ID.to_owned()),
        }
    }
}

/// A message a gateway delivered to us.
#[derive(Debug, Clone)]
pub struct NewInbound {
    pub gateway: Gateway,
    /// The gateway's id of the message (the Cloud API's `wamid`): a second one with the same id
    /// is a duplicate. StarSender gives none.
    pub external_id: Option<String>,
    /// The sender, any spelling `PhoneNumber::parse` accepts (a Cloud API `wa_id` is one).
    pub from: String,
    pub text: Option<String>,
    /// The gateway's time of the message.
    pub sent_at: Option<DateTime<Utc>>,
    /// The stored payload it came in (its `received_at` is the message's).
    pub payload_id: Uuid,
}

/// What the keyword did to the opt-out list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordAction {
    /// No keyword.
    None,
    /// Opted out: put on the list (or a `reminders` entry widened to `all`), `cancelled` unsent
    /// messages; the entry's source (`api` when an operator's entry was widened).
    OptedOut { source: Source, cancelled: u64 },
    /// An opt-out keyword from a number opted out of everything already (by `source`).
    AlreadyOptedOut { source: Source },
    /// An opt-in keyword lifted a keyword's opt-out.
    OptedIn,
    /// An opt-in keyword with nothing it may lift (no entry, or an operator's).
    NothingToLift,
}

/// What [`accept`] did.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// `Ok`, or `Duplicate` (seen before: nothing else happened).
    pub result: InboundResult,
    pub gateway: Gateway,
    /// The stored message (`None` for a duplicate).
    pub id: Option<Uuid>,
    pub from: String,
    pub keyword: Option<Keyword>,
    pub action: KeywordAction,
    /// The confirmation reply queued (kind `system`), if one was.
    pub confirmation: Option<Uuid>,
    /// Messages cancelled by the opt-out, per kind (for the metrics).
    cancelled: BTreeMap<&'static str, u64>,
}

impl Accepted {
    /// Counts it — `bengkel_inbound_total`, `bengkel_optouts_total`, the messages its opt-out
    /// cancelled and its reply — once its transaction committed.
    pub fn count(&self) {
        super::count(self.gateway, self.result);
        // The customer opted out, also when the entry they widened stays an operator's.
        if matches!(self.action, KeywordAction::OptedOut { .. }) {
            count_optout(Source::Inbound);
        }
        for (kind, n) in &self.cancelled {
            metrics::counter!("bengkel_messages_suppressed_total", "kind" => *kind).increment(*n);
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// `from` is no phone number (counted `malformed` or `unknown_number` by the caller).
    #[error("from: {0}")]
    Phone(#[from] PhoneError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Accepts one inbound message on the caller's transaction (see the module comment). A message
/// whose `(gateway, external_id)` was accepted before is a `duplicate`: nothing else happens.
pub async fn accept(
    tx: &mut sqlx::PgConnection,
    rules: &Rules,
    m: &NewInbound,
) -> Result<Accepted, AcceptError> {
    let from = PhoneNumber::parse(&m.from)?;
    let phone = from.as_str();
    let keyword = m.text.as_deref().and_then(|t| rules.keywords.matches(t));
    let mut accepted = Accepted {
        result: InboundResult::Duplicate,
        gateway: m.gateway,
        id: None,
        from: phone.to_owned(),
        keyword,
        action: KeywordAction::None,
        confirmation: None,
        cancelled: BTreeMap::new(),
    };
    let stored: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO inbound_messages (id, gateway, external_id, from_phone, text, sent_at,
                                       received_at, payload_id, keyword)
         SELECT $1, $2, $3, $4, $5, $6, p.received_at, p.id, $8
         FROM inbound_payloads p WHERE p.id = $7
         ON CONFLICT (gateway, external_id) DO NOTHING
         RETURNING id, received_at",
    )
    .bind(Uuid::now_v7())
    .bind(m.gateway)
    .bind(m.external_id.as_deref())
    .bind(phone)
    .bind(m.text.as_deref())
    .bind(m.sent_at)
    .bind(m.payload_id)
    .bind(keyword)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, received_at)) = stored else {
        // A duplicate — or a payload that does not exist, which the caller's lock rules out.
        return Ok(accepted);
    };
    accepted.result = InboundResult::Ok;
    accepted.id = Some(id);
    // When the customer wrote: the gateway's time, never later than its arrival.
    let wrote_at = m.sent_at.map_or(received_at, |s| s.min(received_at));
    store::touch_contact(tx, phone, wrote_at).await?;
    received_event(tx, id, phone, m.text.as_deref(), received_at).await?;
    match keyword {
        None => {}
        Some(Keyword::Optout) => match suppressions::opt_out_by_keyword(tx, phone).await? {
            KeywordOptOut::Opted(added) => {
                accepted.action = KeywordAction::OptedOut {
                    source: added.entry.source,
                    cancelled: added.cancelled_total(),
                };
                accepted.cancelled = added.cancelled;
                if added.created && added.entry.source == Source::Inbound {
                    accepted.confirmation = confirm(tx, rules, &from, wrote_at).await?;
                }
            }
            KeywordOptOut::Already(source) => {
                accepted.action = KeywordAction::AlreadyOptedOut { source }
            }
        },
        Some(Keyword::Optin) => {
            accepted.action = match suppressions::lift_keyword_opt_out(tx, phone).await? {
                Some(_) => KeywordAction::OptedIn,
                None => KeywordAction::NothingToLift,
            }
        }
    }
    Ok(accepted)
}

/// `message.received` (SPEC §12): `message_id` is the inbound message's id; `to` (our number)
/// is not known with StarSender.
async fn received_event(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    from: &str,
    text: Option<&str>,
    received_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    let text: Option<String> = text.map(|t| t.chars().take(EVENT_TEXT_CHARS).collect());
    let event = outbox::Event {
        kind: EventType::MessageReceived,
        message_id: None,
        data: outbox::without_message(serde_json::json!({
            "message_id": id,
            "from": from,
            "text": text,
            "received_at": received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        })),
    };
    outbox::emit(tx, &[event]).await?;
    Ok(())
}

/// Queues the reply to an opt-out when template [`OPTOUT_CONFIRMATION`] has a body: kind
/// `system` (not held by the send window, and sendable to a number whose only opt-out is the
/// customer's keyword), due now, expiring a day after the customer wrote. Returns its id.
async fn confirm(
    tx: &mut sqlx::PgConnection,
    rules: &Rules,
    to: &PhoneNumber,
    wrote_at: DateTime<Utc>,
) -> sqlx::Result<Option<Uuid>> {
    // Far in the past already (a late duplicate of a gateway): not worth sending.
    let deadline = wrote_at + CONFIRMATION_TTL;
    if deadline <= Utc::now() {
        return Ok(None);
    }
    let Some(template) = templates::repo::current(&mut *tx, OPTOUT_CONFIRMATION).await? else {
        return Ok(None);
    };
    let optin = rules.keywords.optin_example();
    let body = templates::render_with(template.bodies.for_language(Default::default()), |name| {
        Some(std::borrow::Cow::Borrowed(match name {
            "workshop_name" => rules.workshop.name.as_str(),
            "service_phone" => rules.workshop.service_phone.as_str(),
            "optin_keyword" => optin,
            _ => return None,
        }))
    });
    let body = body.trim();
    if body.is_empty() || templates::check_text(body).is_err() {
        tracing::warn!(
            version = template.version,
            "the opt-out confirmation renders empty or too long: not sent"
        );
        return Ok(None);
    }
    let values = [
        ("workshop_name", Cow::Borrowed(rules.workshop.name.as_str())),
        (
            "service_phone",
            Cow::Borrowed(rules.workshop.service_phone.as_str()),
        ),
        ("optin_keyword", Cow::Borrowed(optin)),
    ];
    let origin = templates::Origin {
        key: template.key.clone(),
        version: template.version,
        language: templates::Language::Id,
        values: templates::ValuesJson::from_pairs(&values),
    };
    let mut message =
        NewMessage::internal(Kind::System, to.clone(), body.to_owned(), None).with_template(origin);
    message.expires_at = Some(deadline);
    let stored =
        crate::messages::store::store(tx, &[Item::new(&message, BY)], None, rules.max_attempts)
            .await?;
    Ok(match stored.first() {
        Some(Stored::Created(m)) if m.status == Status::Queued => Some(m.id),
        _ => None,
    })
}
