//! Redis: the shared connection (a single node or a cluster), the liveness check, key naming,
//! and one module per use (flash sales, consumer reports, the product cache, rate limits,
//! announcements). Lua scripts live in `scripts/`, each with a header listing its KEYS, ARGV and
//! return values.
//!
//! One [`RedisConnection`] per process multiplexes every command and reconnects by itself after
//! a failure; it is cheap to clone into each task. Services do not know which mode runs: every
//! multi-key operation touches one event's keys, which share a cluster slot (`ev:{<id>}:…`).

pub mod announcements;
pub mod consumer_reports;
pub mod flash_sale;
pub mod product_cache;
pub mod rate_limit;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{Dependency, RepoError, retry};
use crate::config::{RedisMode, RedisSettings};

/// Bounds every command, so a hung Redis fails a request instead of stalling it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The process's Redis connection, standalone or cluster (`SPIKE_REDIS_MODE`). Both kinds
/// multiplex and reconnect by themselves; the cluster one also follows slot moves, and is built
/// afresh when its commands time out ([`ClusterLink`]).
#[derive(Clone)]
pub enum RedisConnection {
    Standalone(ConnectionManager),
    Cluster(Arc<ClusterLink>),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Standalone(conn) => conn.req_packed_command(cmd),
            RedisConnection::Cluster(link) => {
                let (link, mut conn) = (link.clone(), link.connection());
                Box::pin(async move { link.watch(conn.req_packed_command(cmd).await) })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(link) => {
                let (link, mut conn) = (link.clone(), link.connection());
                Box::pin(async move {
                    link.watch(conn.req_packed_commands(pipeline, offset, count).await)
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Standalone(conn) => conn.get_db(),
            RedisConnection::Cluster(link) => link.connection().get_db(),
        }
    }
}

/// A cluster connection that is replaced by a new one when a command times out.
///
/// After a master was killed and its replica promoted, redis-rs 1.8's cluster connection was
/// seen to recover in most runs but, on a loaded box, to time out every command for good (the
/// cluster itself healthy again: `failover_redis`). A connection built afresh reads the slot map
/// from the seed nodes and works at once; so a timeout starts one rebuild in the background
/// (at most one at a time, at most one a second), and commands go on the old connection
/// meanwhile.
pub struct ClusterLink {
    client: redis::cluster::ClusterClient,
    current: RwLock<ClusterConnection>,
    rebuilding: AtomicBool,
}

/// Least time between two rebuilds.
const REBUILD_PAUSE: Duration = Duration::from_secs(1);

impl ClusterLink {
    fn connection(&self) -> ClusterConnection {
        self.current.read().expect("cluster link poisoned").clone()
    }

    /// Passes `result` through; a timeout starts a rebuild.
    fn watch<T>(self: Arc<Self>, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(error) = &result
            && error.is_timeout()
            && !self.rebuilding.swap(true, Ordering::AcqRel)
        {
            tokio::spawn(async move {
                match tokio::time::timeout(RESPONSE_TIMEOUT, self.client.get_async_connection())
                    .await
                {
                    Ok(Ok(fresh)) => {
                        *self.current.write().expect("cluster link poisoned") = fresh;
                        tracing::warn!("redis cluster connection rebuilt after a timeout");
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "rebuilding the redis cluster connection failed")
                    }
                    Err(_) => tracing::warn!("rebuilding the redis cluster connection timed out"),
                }
                tokio::time::sleep(REBUILD_PAUSE).await;
                self.rebuilding.store(false, Ordering::Release);
            });
        }
        result
    }
}

/// How often a cluster command is retried on a redirection or a cluster in transition.
const CLUSTER_RETRIES: u32 = 4;

/// Connects, retrying until `startup_timeout`.
pub async fn connect(config: &RedisSettings) -> Result<RedisConnection, RepoError> {
    let target = config.redacted();
    match config.mode {
        RedisMode::Standalone => {
            let client = redis::Client::open(config.url.expose())?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            let manager =
                retry::with_backoff(Dependency::Redis, &target, config.startup_timeout, || {
                    ConnectionManager::new_with_config(client.clone(), manager_config.clone())
                })
                .await?;
            Ok(RedisConnection::Standalone(manager))
        }
        RedisMode::Cluster => {
            // A failover (a replica promoted after the node timeout) answers MOVED, TRYAGAIN or
            // CLUSTERDOWN for a moment: retried a few times within ~1 s (waits of 50 ms up to
            // 400 ms, doubling), then the caller sees an outage (`503`), never a server error.
            let client = ClusterClientBuilder::new(config.urls())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(50)
                .max_retry_wait(400)
                .retry_wait_formula(50, 2)
                .build()?;
            let connection =
                retry::with_backoff(Dependency::Redis, &target, config.startup_timeout, || {
                    client.get_async_connection()
                })
                .await?;
            Ok(RedisConnection::Cluster(Arc::new(ClusterLink {
                client,
                current: RwLock::new(connection),
                rebuilding: AtomicBool::new(false),
            })))
        }
    }
}

/// `PING` → `PONG`; on a cluster also its own verdict, `cluster_state:ok`. A cluster that lost a
/// master with no replica to take over still answers `PING` on the other nodes but refuses every
/// command (`CLUSTERDOWN`) once its nodes agree the master is gone (the node timeout): it is as
/// unusable as a single Redis that is down, and readiness must say so.
pub async fn ping(conn: &mut RedisConnection) -> Result<(), RepoError> {
    let _: String = redis::cmd("PING").query_async(conn).await?;
    if let RedisConnection::Cluster(_) = conn {
        let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(conn).await?;
        if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
            let down = (
                redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                "cluster_state is not ok",
            );
            return Err(redis::RedisError::from(down).into());
        }
    }
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
