//! The Cloud API's inbound webhook payloads (SPEC §13): `statuses[]` (receipts) and
//! `messages[]` (inbound messages, each through [`super::accept`]). Stored by the Cloud API's
//! webhook route with [`super::store_payload`] and processed here by the same job as
//! StarSender's.

use super::{Rules, job::ProcessError, job::Processed, store::Payload};

/// Processes one Cloud API payload on the job's transaction: what it returns is written as the
/// payload's `result` (and counted once the transaction committed); an error is `failed`
/// ([`ProcessError::Rejected`]: no retry) or retried ([`ProcessError::Db`]).
pub async fn process(
    _tx: &mut sqlx::PgConnection,
    _rules: &Rules,
    _payload: &Payload,
) -> Result<Processed, ProcessError> {
    Err(ProcessError::Rejected(
        "cloud_api inbound not built yet".into(),
    ))
}
