//! Test helpers. `spawn_app()` gives each test a fresh, isolated instance of the application:
//! a new database `spike_test_<pid>_<id>` (migrated), a Redis prefix `spike_test_<pid>_<id>:` and an AMQP
//! prefix `spike_test_<pid>_<id>.`, listening on `127.0.0.1:0`. Dropping the [`TestApp`] stops the
//! server and deletes the database, the Redis keys and the queues and exchanges, also when the
//! test panicked. Set `SPIKE_TEST_LOG=debug` to see the app's logs.
//!
//! - `app`: [`TestApp`], [`TestOptions`], [`spawn_app`], the worker beside it;
//! - `client`: HTTP requests and the envelope checks;
//! - `flash_sale`: events, buyers, buys and results as [`TestApp`] methods;
//! - `resources`: the per-test database, prefixes and their removal;
//! - `logs`: log capture; `proxy`: a cuttable TCP proxy; `mysql_pair`: a replicated MariaDB
//!   pair of the test's own; `scripted`: any service one of `scripts/` runs for a test.

mod app;
mod client;
mod flash_sale;
mod logs;
mod mysql_pair;
mod proxy;
mod resources;
mod scripted;

pub use app::*;
pub use client::*;
pub use flash_sale::*;
pub use logs::*;
pub use mysql_pair::*;
pub use proxy::*;
pub use resources::*;
pub use scripted::*;

/// Polls `check` every 100 ms until it holds; fails the test after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
