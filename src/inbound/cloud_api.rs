//! The Cloud API's inbound webhook payloads (SPEC §13): `statuses[]` (receipts, through
//! `gateway::cloud_api::statuses`) and `messages[]` (inbound messages, each through
//! [`super::accept`]). Stored by `POST /inbound/cloud-api` with [`super::store_payload`] and
//! processed here by the same job as StarSender's. A notification for another
//! `phone_number_id` is ignored and counted; statuses whose message is not known yet keep the
//! payload unfinished (its job runs again shortly, for up to 10 minutes).

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    Gateway, InboundResult, Rules,
    accept::{AcceptError, NewInbound, accept},
    job::{ProcessError, Processed},
    store::Payload,
};
use crate::gateway::cloud_api::{
    payload::{Notification, Status},
    statuses,
};

/// How soon a payload with waiting statuses is processed again.
const AGAIN_AFTER: TimeDelta = TimeDelta::seconds(15);

/// Processes one Cloud API payload on the job's transaction.
pub async fn process(
    tx: &mut sqlx::PgConnection,
    rules: &Rules,
    payload: &Payload,
) -> Result<Processed, ProcessError> {
    let gateway = Gateway::CloudApi;
    let notification: Notification = match serde_json::from_slice(&payload.body) {
        Ok(n) => n,
        Err(e) => {
            let mut p = Processed::of(gateway, Vec::new(), vec![InboundResult::Malformed]);
            p.result = format!("malformed: {e}");
            return Ok(p);
        }
    };
    // A payload run again (statuses were waiting) had its messages taken the first time.
    let first_run = !payload
        .result
        .as_deref()
        .is_some_and(|r| r.starts_with(WAITING));
    let mut found: Vec<Status> = Vec::new();
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for change in notification.entry.iter().flat_map(|e| &e.changes) {
        let value = &change.value;
        let number = value
            .metadata
            .as_ref()
            .and_then(|m| m.phone_number_id.as_deref());
        if number != Some(rules.cloud_phone_number_id.as_str()) {
            if first_run {
                rejected.push(InboundResult::UnknownNumber);
            }
            continue;
        }
        found.extend(value.statuses.iter().cloned());
        if !first_run {
            continue;
        }
        for message in &value.messages {
            let Some(from) = message.from.clone() else {
                // A user known only by a username: no number to answer or to opt out.
                rejected.push(InboundResult::UnknownNumber);
                continue;
            };
            let inbound = NewInbound {
                gateway,
                external_id: Some(message.id.clone()),
                from,
                text: message.body().map(str::to_owned),
                sent_at: message
                    .timestamp
                    .as_deref()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .and_then(|secs| DateTime::from_timestamp(secs, 0)),
                payload_id: payload.id,
            };
            match accept(tx, rules, &inbound).await {
                Ok(a) => accepted.push(a),
                Err(AcceptError::Phone(_)) => rejected.push(InboundResult::Malformed),
                Err(AcceptError::Db(e)) => return Err(e.into()),
            }
        }
    }
    let recorded = statuses::record(tx, payload.id, payload.received_at, &found).await?;
    let mut processed = Processed::of(gateway, accepted, rejected);
    if !found.is_empty() {
        processed.result = format!(
            "{}; statuses: {} new, {} applied, {} duplicate, {} waiting, {} dropped",
            processed.result,
            recorded.new,
            recorded.applied,
            recorded.duplicates,
            recorded.waiting,
            recorded.dropped
        );
    }
    if recorded.waiting > 0 {
        processed.result = format!("{WAITING}{}", processed.result);
        processed.later = Some(Utc::now() + AGAIN_AFTER);
    }
    processed.statuses = Some(recorded);
    Ok(processed)
}

/// The start of the `result` of a payload whose statuses wait for their messages.
const WAITING: &str = "waiting: ";
