//! The payload job (queue [`super::QUEUE`], its own workers): one stored webhook request per run.
//!
//! [`execute`] → [`process_payload`] → (StarSender: [`starsender::parse`] → [`accept`]; Cloud
//! API: [`cloud_api::process`]) — in one transaction with the payload's `processed_at`/`result`
//! and the job's verdict. A run that finds its payload processed already changes nothing, so a
//! second run (a crash after the commit, a requeue) is harmless; a crash before the commit
//! leaves nothing behind. A database error is retried with the send backoff; a payload that
//! cannot be processed fails at once (`result` says why; a requeue tries again).

use std::sync::Arc;

use apalis::prelude::{Attempt, BoxDynError, Data, TaskId, WorkerContext};
use chrono::{TimeDelta, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    Gateway, InboundResult, Rules,
    accept::{AcceptError, Accepted, NewInbound, accept},
    cloud_api, starsender,
    store::{self, JOB_MAX_ATTEMPTS, Payload, PayloadJob},
};
use crate::queue::{self, Run, Verdict, backoff::Backoff, rescue::Process};

/// What the inbound workers share.
pub struct InboundContext {
    pub pool: PgPool,
    pub rules: Rules,
    /// A failed processing is tried again after this backoff (`SEND_BACKOFF_*`).
    pub backoff: Backoff,
    pub process: Process,
}

/// What processing a payload concluded.
#[derive(Debug, Clone)]
pub struct Processed {
    pub gateway: Gateway,
    /// The payload's `result`: `ok`, `duplicate`, `malformed: …`, or a summary of several.
    pub result: String,
    /// The messages it held, as [`accept`] took them.
    pub accepted: Vec<Accepted>,
    /// What it held that was not a message (each counted in `bengkel_inbound_total`).
    pub rejected: Vec<InboundResult>,
    /// It had been processed before: nothing was done now.
    pub already: bool,
    /// Cloud API statuses: what was done with them.
    pub statuses: Option<crate::gateway::cloud_api::statuses::Recorded>,
    /// Not finished: some of its statuses wait for their message; run again then.
    pub later: Option<chrono::DateTime<Utc>>,
}

impl Processed {
    /// A payload that produced `accepted` and `rejected`; `result` summarizes them.
    pub fn of(gateway: Gateway, accepted: Vec<Accepted>, rejected: Vec<InboundResult>) -> Self {
        let results: Vec<&str> = accepted
            .iter()
            .map(|a| a.result)
            .chain(rejected.iter().copied())
            .map(InboundResult::as_str)
            .collect();
        let result = match results.as_slice() {
            [] => "empty".to_owned(),
            [one] => (*one).to_owned(),
            many => many.join(","),
        };
        Self {
            gateway,
            result,
            accepted,
            rejected,
            already: false,
            statuses: None,
            later: None,
        }
    }

    /// Counts what it did, once its transaction committed.
    pub fn count(&self) {
        for a in &self.accepted {
            a.count();
        }
        for r in &self.rejected {
            super::count(self.gateway, *r);
        }
        if let Some(statuses) = &self.statuses {
            statuses.count();
        }
    }
}

/// Why a payload was not processed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// It cannot be processed (no retry; the payload's `result` says why).
    #[error("{0}")]
    Rejected(String),
    /// The payload row does not exist.
    #[error("no inbound payload {0}")]
    Missing(Uuid),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Processes payload `id` on the caller's transaction (see the module comment): locked, parsed
/// for its gateway, its messages accepted, marked `processed_at` with its `result`. Processed
/// before → nothing happens (`already`). Public so that a test can run it directly.
pub async fn process_payload(
    tx: &mut PgConnection,
    rules: &Rules,
    id: Uuid,
) -> Result<Processed, ProcessError> {
    let payload = store::lock_payload(tx, id)
        .await?
        .ok_or(ProcessError::Missing(id))?;
    if payload.processed_at.is_some() {
        return Ok(Processed {
            gateway: payload.gateway,
            result: payload.result.unwrap_or_default(),
            accepted: Vec::new(),
            rejected: Vec::new(),
            already: true,
            statuses: None,
            later: None,
        });
    }
    let outcome = match payload.gateway {
        Gateway::StarSender => from_starsender(tx, rules, &payload).await,
        Gateway::CloudApi => cloud_api::process(tx, rules, &payload).await,
    };
    match outcome {
        Ok(processed) => {
            store::mark(tx, id, &processed.result, processed.later.is_none()).await?;
            Ok(processed)
        }
        Err(ProcessError::Rejected(why)) => {
            store::mark(tx, id, &format!("failed: {why}"), false).await?;
            Err(ProcessError::Rejected(why))
        }
        Err(e) => Err(e),
    }
}

/// A StarSender payload: one message.
async fn from_starsender(
    tx: &mut PgConnection,
    rules: &Rules,
    payload: &Payload,
) -> Result<Processed, ProcessError> {
    let gateway = Gateway::StarSender;
    let parsed = match starsender::parse(payload.content_type.as_deref(), &payload.body) {
        Ok(parsed) => parsed,
        Err(malformed) => {
            let mut p = Processed::of(gateway, Vec::new(), vec![InboundResult::Malformed]);
            p.result = format!("malformed: {}", malformed.describe());
            return Ok(p);
        }
    };
    let message = NewInbound {
        gateway,
        external_id: None,
        from: parsed.from.as_str().to_owned(),
        text: Some(parsed.text),
        sent_at: parsed.sent_at,
        payload_id: payload.id,
    };
    match accept(tx, rules, &message).await {
        Ok(accepted) => Ok(Processed::of(gateway, vec![accepted], Vec::new())),
        Err(AcceptError::Phone(e)) => {
            let mut p = Processed::of(gateway, Vec::new(), vec![InboundResult::Malformed]);
            p.result = format!("malformed: from: {e}");
            Ok(p)
        }
        Err(AcceptError::Db(e)) => Err(e.into()),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InboundError(String);

impl From<sqlx::Error> for InboundError {
    fn from(e: sqlx::Error) -> Self {
        InboundError(format!("database: {e}"))
    }
}

/// The apalis handler: the run is its own task, in flight in this process until its verdict is
/// written (so that the orphan rescue never takes it from a live process).
pub async fn handle(
    payload: Value,
    task_id: TaskId,
    attempt: Attempt,
    worker: WorkerContext,
    ctx: Data<Arc<InboundContext>>,
) -> Result<(), BoxDynError> {
    let run = Run::of(&task_id, &attempt, &worker);
    let ctx: Arc<InboundContext> = (*ctx).clone();
    let work = {
        let (ctx, run) = (ctx.clone(), run.clone());
        async move { execute(&ctx, run, payload).await }
    };
    queue::run_guarded(&ctx.pool, &ctx.process, run, "inbound", work).await
}

/// One run: process the payload and settle the job in one transaction.
pub async fn execute(ctx: &InboundContext, run: Run, payload: Value) -> Result<(), InboundError> {
    let job: PayloadJob = match serde_json::from_value(payload) {
        Ok(job) => job,
        Err(e) => {
            let verdict = Verdict::Fail {
                attempts: run.attempt(),
                reason: format!("unreadable inbound job: {e}"),
            };
            return settle_alone(&ctx.pool, run, verdict).await;
        }
    };
    let mut tx = ctx.pool.begin().await?;
    let (verdict, processed) = match process_payload(&mut tx, &ctx.rules, job.payload_id).await {
        Ok(processed) => (
            match processed.later {
                // Statuses wait for their messages: again then, no attempt spent.
                Some(at) => queue::snooze(at, "statuses waiting for their message"),
                None => Verdict::Complete {
                    attempts: run.attempt(),
                },
            },
            Some(processed),
        ),
        // Its `result` is written on this transaction.
        Err(ProcessError::Rejected(why)) => (
            Verdict::Fail {
                attempts: run.attempt(),
                reason: why,
            },
            None,
        ),
        Err(e) => {
            tx.rollback().await?;
            let reason = e.to_string();
            let verdict = match e {
                ProcessError::Db(_) if run.attempt() < JOB_MAX_ATTEMPTS => {
                    let delay = ctx.backoff.delay(run.attempt().max(1) as u32);
                    let at = Utc::now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
                    tracing::warn!(payload_id = %job.payload_id, "inbound payload: {reason}; retrying");
                    queue::retry_at(at, run.attempt(), reason)
                }
                _ => Verdict::Fail {
                    attempts: run.attempt(),
                    reason,
                },
            };
            return settle_alone(&ctx.pool, run, verdict).await;
        }
    };
    queue::settle(&mut tx, &[(run, verdict)]).await?;
    tx.commit().await?;
    if let Some(p) = processed {
        p.count();
        if !p.already {
            tracing::info!(
                payload_id = %job.payload_id,
                gateway = p.gateway.as_str(),
                result = p.result,
                "inbound payload processed"
            );
        }
    }
    Ok(())
}

async fn settle_alone(pool: &PgPool, run: Run, verdict: Verdict) -> Result<(), InboundError> {
    Ok(queue::settle_alone(pool, run, verdict).await?)
}
