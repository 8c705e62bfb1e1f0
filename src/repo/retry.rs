//! Start-up retries: keep trying a dependency with exponential backoff until a deadline.
//!
//! Containers start in any order; a service that exits the moment MySQL is not yet up turns a
//! slow database start into a crash loop. Each failed attempt logs one line naming the
//! dependency. The backoff itself is `backon`'s; the deadline counts the attempts' own time too.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

use super::Dependency;

const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Runs `attempt` until it succeeds or `deadline` has passed, returning the last error then.
pub async fn with_backoff<T, E, F, Fut>(
    dependency: Dependency,
    target: &str,
    deadline: Duration,
    attempt: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut failures = 0u32;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(FIRST_DELAY)
        .with_max_delay(MAX_DELAY)
        .without_max_times();
    let result = attempt
        .retry(backoff)
        // No sleep that would end past the deadline: give up instead.
        .adjust(|_, delay| delay.filter(|delay| started.elapsed() + *delay < deadline))
        .notify(|error, delay| {
            failures += 1;
            tracing::warn!(
                %dependency,
                target,
                %error,
                retry_in_ms = delay.as_millis() as u64,
                "dependency unavailable, retrying"
            );
        })
        .await;
    match &result {
        Ok(_) if failures > 0 => {
            tracing::info!(%dependency, target, failures, "dependency is up");
        }
        Ok(_) => {}
        Err(error) => tracing::error!(
            %dependency,
            target,
            %error,
            waited_ms = started.elapsed().as_millis() as u64,
            "dependency unavailable, giving up"
        ),
    }
    result
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test]
    async fn a_dependency_that_comes_up_is_retried_until_it_answers() {
        let calls = Cell::new(0);
        let result = with_backoff(Dependency::Redis, "test", Duration::from_secs(5), || {
            calls.set(calls.get() + 1);
            let call = calls.get();
            async move { if call < 3 { Err("down") } else { Ok(call) } }
        })
        .await;
        assert_eq!(result, Ok(3));
    }

    #[tokio::test]
    async fn a_dependency_that_stays_down_fails_at_the_deadline() {
        let started = Instant::now();
        let result: Result<(), &str> = with_backoff(
            Dependency::Mysql,
            "test",
            Duration::from_millis(500),
            || async { Err("down") },
        )
        .await;
        assert_eq!(result, Err("down"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
