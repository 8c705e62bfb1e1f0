//! Start-up retries: keep trying a dependency with exponential backoff until a deadline.
//!
//! Containers start in any order; a service that exits the moment MySQL is not yet up turns a
//! slow database start into a crash loop. Each failed attempt logs one line naming the dependency.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use super::Dependency;

const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds or `deadline` has passed, returning the last error then.
pub async fn with_backoff<T, E, F, Fut>(
    dependency: Dependency,
    target: &str,
    deadline: Duration,
    mut attempt: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut delay = FIRST_DELAY;
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(%dependency, target, failures, "dependency is up");
                }
                return Ok(value);
            }
            Err(error) if started.elapsed() + delay < deadline => {
                failures += 1;
                tracing::warn!(
                    %dependency,
                    target,
                    %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "dependency unavailable, retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
            Err(error) => {
                tracing::error!(
                    %dependency,
                    target,
                    %error,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "dependency unavailable, giving up"
                );
                return Err(error);
            }
        }
    }
}
