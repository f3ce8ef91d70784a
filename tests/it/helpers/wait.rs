//! Waiting for what a test can observe, never for a guessed stretch of time: a test that sleeps
//! is slow where the machine is fast and flaky where it is slow.

use std::{
    fmt::Display,
    time::{Duration, Instant},
};

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(25);

/// Looks at `check` until it answers `Ok` (whose value is returned), at least once and for at
/// most `within`; then panics with what the last look answered (`Err`: why not yet).
pub async fn wait_until<T, E: Display>(
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(why) => assert!(Instant::now() < deadline, "not within {within:?}: {why}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Ok` when `done`, else why not (for [`wait_until`] on a plain condition).
pub fn ready(done: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if done { Ok(()) } else { Err(why()) }
}
