//! Redis: the shared multiplexed connection and the liveness check.
//!
//! One `ConnectionManager` per process multiplexes every command over a single connection and
//! reconnects by itself after a failure; it is cheap to clone into each task.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Dependency, RepoError, retry};
use crate::config::{Config, redact_url};

/// Bounds every command, so a hung Redis fails a request instead of stalling it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects, retrying until `startup_timeout`.
pub async fn connect(config: &Config) -> Result<ConnectionManager, RepoError> {
    let client = redis::Client::open(config.redis_url.expose())?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let target = redact_url(config.redis_url.expose());
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
