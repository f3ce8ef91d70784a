//! What a send run needs, one per process and shared by all its workers: the pools, the two
//! group-commit writers (claims and outcomes), the gateway, the delivery policy.

use std::sync::Arc;

use sqlx::PgPool;

use super::{
    claim::{self, Claim, Claimed},
    decide::{RETRY_AFTER_CAP, RetryPolicy},
    record::{self, Recorded},
};
use crate::{
    config::Config,
    db::group_commit::GroupCommit,
    gateway::Gateway,
    policy::Policy,
    queue::{Workers, pause::Pauses, rescue::Process, wakeup::Wakeups},
};

/// Claims in flight at once, and the most claims in one statement.
const CLAIM_WRITERS: usize = 2;
const CLAIMS_PER_GROUP: usize = 256;
/// Outcome writes in flight at once, and the most runs recorded in one transaction.
const OUTCOME_WRITERS: usize = 3;
const OUTCOMES_PER_GROUP: usize = 500;

pub struct SendContext {
    pub pool: PgPool,
    /// Marks messages `sending` in groups, on the relaxed pool (asynchronous commit: a claim
    /// lost in a crash is a run that never called the gateway; see `db::relaxed`).
    pub claims: GroupCommit<Claim, Claimed>,
    /// Writes outcomes and verdicts in groups, durably.
    pub outcomes: GroupCommit<Recorded, ()>,
    pub gateway: Gateway,
    /// The delivery policy: this process' view of it and its share of the cluster's rate.
    pub policy: Policy,
    pub retry: RetryPolicy,
    /// `AMBIGUOUS_RECEIPT_WAIT_SECS`: on the Cloud API, how long after an attempt that may have
    /// sent a status of it is waited for before calling again.
    pub ambiguous_wait: std::time::Duration,
    /// This process' view of paused queues.
    pub pauses: Pauses,
    /// This process' runs in flight (for orphan rescue).
    pub process: Process,
    /// This process' wake-ups of idle workers: a bulk run that settled wakes the send workers
    /// (see `queue::Class`).
    pub wakeups: Wakeups,
}

impl SendContext {
    /// Claims go through `workers.pool`, the relaxed pool apalis' bookkeeping runs on; the
    /// runs register with `workers.process` and wake `workers.wakeups`.
    pub fn new(
        pool: PgPool,
        workers: &Workers,
        config: &Config,
        gateway: Gateway,
        pauses: Pauses,
        policy: Policy,
    ) -> Arc<Self> {
        let claim_pool = workers.pool.clone();
        let (process, wakeups) = (workers.process.clone(), workers.wakeups.clone());
        let take_interrupted = config.send_retry_ambiguous;
        let claim_policy = policy.clone();
        let claims = GroupCommit::spawn(
            CLAIM_WRITERS,
            CLAIMS_PER_GROUP,
            move |group: Arc<Vec<Claim>>| {
                let pool = claim_pool.clone();
                // The policy as it stands now, for the whole group.
                let rules = claim_policy.claim_rules(take_interrupted, chrono::Utc::now());
                async move { claim::claim_many(&pool, &group, rules).await }
            },
        );
        let outcome_pool = pool.clone();
        let outcomes = GroupCommit::spawn(
            OUTCOME_WRITERS,
            OUTCOMES_PER_GROUP,
            move |group: Arc<Vec<Recorded>>| {
                let pool = outcome_pool.clone();
                async move { record::record_runs(&pool, &group).await }
            },
        );
        Arc::new(Self {
            claims,
            outcomes,
            pool,
            gateway,
            policy,
            retry: RetryPolicy {
                backoff: config.backoff(),
                retry_ambiguous: config.send_retry_ambiguous,
                retry_after_cap: RETRY_AFTER_CAP,
            },
            ambiguous_wait: config.gateway.ambiguous_receipt_wait,
            pauses,
            process,
            wakeups,
        })
    }
}
