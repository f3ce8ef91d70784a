//! The periodic services of a process (STYLE "maintenance"): small, named, one per file, each
//! with its own interval. [`sampler`] refreshes the queue gauges (every role); with workers,
//! [`retention`] deletes old finished jobs, [`expiry`] expires messages past their deadline and
//! [`rescue`] beats this process' liveness and rescues dead processes' jobs, and
//! `admin::summary` sends the day's summary when it is due. [`start`] starts
//! them all. The SQL they run belongs to the tables' owners (`queue`, `messages::withdraw`).

pub mod expiry;
pub mod rescue;
pub mod retention;
pub mod sampler;

use std::sync::Arc;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{config::Config, queue::rescue::Process};

/// Starts the periodic services of a process: the queue sampler in every role, and for a
/// process with workers (`workers`: it, and the token cancelled once its workers have stopped)
/// retention, the expiry sweep and the liveness beat. Each stops at `shutdown`, except the beat:
/// it outlives the workers, keeping this process alive in others' eyes while in-flight sends
/// finish, and is returned to be awaited after them (it then releases what is left).
pub fn start(
    pool: &PgPool,
    config: &Arc<Config>,
    shutdown: &CancellationToken,
    workers: Option<(&Process, CancellationToken)>,
) -> Option<JoinHandle<()>> {
    tokio::spawn(sampler::run(pool.clone(), config.clone(), shutdown.clone()));
    let (process, workers_stopped) = workers?;
    tokio::spawn(retention::run(
        pool.clone(),
        config.job_retention_days,
        shutdown.clone(),
    ));
    tokio::spawn(expiry::run(pool.clone(), shutdown.clone()));
    tokio::spawn(crate::campaigns::driver::run(
        pool.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::admin::summary::run(
        pool.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    Some(rescue::spawn(process, pool.clone(), workers_stopped))
}
