//! Redis: the shared multiplexed connection, the liveness check, key naming, and one module per
//! use (flash sales, consumer reports, the product cache, rate limits). Lua scripts live in `scripts/`, each with a header listing its KEYS,
//! ARGV and return values.
//!
//! One `ConnectionManager` per process multiplexes every command over a single connection and
//! reconnects by itself after a failure; it is cheap to clone into each task.

pub mod consumer_reports;
pub mod flash_sale;
pub mod product_cache;
pub mod rate_limit;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Dependency, RepoError, retry};
use crate::config::{RedisSettings, redact_url};

/// Bounds every command, so a hung Redis fails a request instead of stalling it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects, retrying until `startup_timeout`.
pub async fn connect(config: &RedisSettings) -> Result<ConnectionManager, RepoError> {
    let client = redis::Client::open(config.url.expose())?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let target = redact_url(config.url.expose());
    retry::with_backoff(Dependency::Redis, &target, config.startup_timeout, || {
        ConnectionManager::new_with_config(client.clone(), manager_config.clone())
    })
    .await
    .map_err(RepoError::from)
}

/// `PING` → `PONG`.
pub async fn ping(conn: &mut ConnectionManager) -> Result<(), RepoError> {
    let _: String = redis::cmd("PING").query_async(conn).await?;
    Ok(())
}

/// Builds keys under the configured prefix (`SPIKE_REDIS_PREFIX`), so tests and tenants can
/// share one Redis.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// Cached product detail.
    pub fn product(&self, id: u64) -> String {
        format!("{}product:{id}", self.prefix)
    }

    /// The rate-limit bucket of one subject (a client IP, a lower-cased email) in one scope
    /// (`login:ip`, `login:email`, `register:ip`, `refresh:ip`).
    pub fn rate_limit(&self, scope: &str, subject: &str) -> String {
        format!("{}rl:{scope}:{subject}", self.prefix)
    }
}
