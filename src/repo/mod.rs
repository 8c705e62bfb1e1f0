//! Data access: MySQL through sqlx, Redis, and RabbitMQ through lapin.
//!
//! Nothing here knows about HTTP. Each store has its own module; [`Infra`] bundles the live
//! connections one process holds, and [`RepoError`] is the one error type this layer returns.

pub mod amqp;
pub mod mysql;
pub mod redis;
mod retry;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{AmqpSettings, DatabaseSettings, RedisSettings};

pub use amqp::{Amqp, Topology};

/// Errors from the stores. Display strings never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("mysql: {0}")]
    Mysql(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("{0} did not answer within {1:?}")]
    Timeout(Dependency, Duration),
    #[error("{0} is disconnected")]
    Disconnected(Dependency),
    /// The broker did not take a published message.
    #[error("rabbitmq did not confirm the message: {0}")]
    NotConfirmed(amqp::Refusal),
    /// RabbitMQ's management API refused or did not answer (start-up only: policies).
    #[error("rabbitmq management api: {0}")]
    Management(String),
    /// A queue exists with other arguments than this configuration declares (RabbitMQ's
    /// PRECONDITION_FAILED at start-up): the message names the setting, the queue, both values
    /// and the ways out.
    #[error("{0}")]
    QueueMismatch(String),
    /// A store answered something this code does not understand (a script's unknown return
    /// code): a bug on one side, never retried as if the store were down.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
}

impl RepoError {
    /// MySQL chose this transaction as a deadlock victim (1213) or it waited too long for a lock
    /// (1205): it was rolled back whole, and running it again will most likely succeed.
    pub fn is_lock_conflict(&self) -> bool {
        match self {
            RepoError::Mysql(sqlx::Error::Database(e)) => e
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| matches!(e.number(), 1205 | 1213)),
            _ => false,
        }
    }

    /// What this error means for the caller: retry later, give up on this statement, or a bug.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RepoError::Mysql(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_),
            ) => ErrorKind::Unavailable(Dependency::Mysql),
            // Deadlock victim (1213) or lock wait timeout (1205): the transaction was rolled back
            // whole and the same request may simply be retried.
            RepoError::Mysql(_) if self.is_lock_conflict() => {
                ErrorKind::Unavailable(Dependency::Mysql)
            }
            // The server answered and said no: a constraint, a trigger, a value it cannot store.
            RepoError::Mysql(sqlx::Error::Database(_)) => ErrorKind::Refused,
            RepoError::Mysql(_) | RepoError::Migrate(_) => ErrorKind::Other,
            RepoError::Redis(e)
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || redis_in_transition(e) =>
            {
                ErrorKind::Unavailable(Dependency::Redis)
            }
            RepoError::Redis(_) => ErrorKind::Other,
            // lapin reports broker trouble (closed channel or connection, I/O) through one type.
            RepoError::Amqp(_) => ErrorKind::Unavailable(Dependency::Rabbitmq),
            RepoError::Timeout(dependency, _) | RepoError::Disconnected(dependency) => {
                ErrorKind::Unavailable(*dependency)
            }
            // A nack or an overflowing queue: the broker cannot take it now.
            RepoError::NotConfirmed(_) | RepoError::Management(_) => {
                ErrorKind::Unavailable(Dependency::Rabbitmq)
            }
            // A setting that disagrees with the broker, or a reply nobody expected: waiting will
            // not fix it.
            RepoError::QueueMismatch(_) | RepoError::UnexpectedReply(_) => ErrorKind::Other,
        }
    }

    /// The dependency to blame when this error means "a store is unreachable or overloaded,
    /// retry later" rather than a bug or bad data; `None` for the latter.
    pub fn unavailable_dependency(&self) -> Option<Dependency> {
        match self.kind() {
            ErrorKind::Unavailable(dependency) => Some(dependency),
            ErrorKind::Refused | ErrorKind::Other => None,
        }
    }
}

/// What a [`RepoError`] means for the caller ([`RepoError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The store is unreachable or overloaded, or the statement lost a lock conflict: the same
    /// call may work later.
    Unavailable(Dependency),
    /// The database answered and refused this statement (a constraint, a trigger, data it
    /// cannot take): the same statement fails again, one without the offending row may not.
    Refused,
    /// Anything else: a bug on one side, or a setting that disagrees with a store.
    Other,
}

/// A cluster failing over or down (`CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN`, `MOVED`/`ASK` the
/// retries did not settle, a replica promoted under a write) or a server still loading its
/// data: the same command will work later.
fn redis_in_transition(error: &::redis::RedisError) -> bool {
    use ::redis::RetryMethod::{
        AskRedirect, MovedRedirect, ReconnectFromInitialConnections, RefreshSlotsAndRetry,
        WaitAndRetry,
    };
    // A redirection still standing after the client's retries is a failover in progress (the
    // nodes do not agree yet on who owns the slot), not a fault of the request.
    matches!(
        error.retry_method(),
        WaitAndRetry
            | RefreshSlotsAndRetry
            | ReconnectFromInitialConnections
            | MovedRedirect
            | AskRedirect
    )
}

/// The external services the process depends on (`Dependency::iter()` lists them in this order).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::Display,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[strum(serialize_all = "lowercase")]
pub enum Dependency {
    Mysql,
    Redis,
    Rabbitmq,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// The live connections of one process; cheap to clone.
#[derive(Clone)]
pub struct Infra {
    /// The primary: every write and every read that decides something.
    pub db: sqlx::MySqlPool,
    /// The replica for catalog reads, when `database_read_url` names one.
    pub db_replica: Option<sqlx::MySqlPool>,
    pub redis: redis::RedisConnection,
    /// Subscriptions of their own (pub/sub), on a node of their choosing.
    pub announcements: redis::announcements::Announcements,
    pub amqp: Arc<Amqp>,
    pub topology: Arc<Topology>,
}

impl Infra {
    /// Connects to MySQL, Redis and RabbitMQ, retrying each with backoff for up to its
    /// `startup_timeout`, then declares the RabbitMQ `topology`.
    pub async fn connect(
        database: &DatabaseSettings,
        redis_settings: &RedisSettings,
        amqp_settings: &AmqpSettings,
        topology: Topology,
    ) -> Result<Infra, RepoError> {
        let db = mysql::connect(database).await?;
        let db_replica = match &database.read_url {
            Some(url) => Some(mysql::connect_to(url.expose(), database).await?),
            None => None,
        };
        let redis = redis::connect(redis_settings).await?;
        let announcements = redis::announcements::Announcements::new(redis_settings)?;
        let amqp = Amqp::connect(amqp_settings).await?;
        topology.declare(&amqp).await?;
        if let Some(url) = &amqp_settings.management_url {
            let management = amqp::policies::Management::parse(url.expose()).ok_or_else(|| {
                RepoError::Management(
                    "SPIKE_AMQP_MANAGEMENT_URL is not http://user:password@host:port".into(),
                )
            })?;
            management
                .apply_order_queue_bound(&amqp_settings.vhost(), &topology)
                .await?;
        }
        Ok(Infra {
            db,
            db_replica,
            redis,
            announcements,
            amqp: Arc::new(amqp),
            topology: Arc::new(topology),
        })
    }

    /// Where catalog reads go: the replica when there is one, else the primary.
    pub fn catalog_reads(&self) -> &sqlx::MySqlPool {
        self.db_replica.as_ref().unwrap_or(&self.db)
    }

    /// Checks one dependency with a bounded wait.
    pub async fn ping(&self, dependency: Dependency, timeout: Duration) -> Result<(), RepoError> {
        let check = async {
            match dependency {
                // The primary only: a replica that is down costs the catalog its reads (503),
                // not the shop its buying, so it must not take the pods out of service.
                Dependency::Mysql => mysql::ping(&self.db).await,
                Dependency::Redis => redis::ping(&mut self.redis.clone()).await,
                Dependency::Rabbitmq => self.amqp.ping().await,
            }
        };
        tokio::time::timeout(timeout, check)
            .await
            .map_err(|_| RepoError::Timeout(dependency, timeout))?
    }

    /// Closes the AMQP connection and the MySQL pool after in-flight work has finished.
    pub async fn close(&self) {
        self.amqp.close().await;
        self.db.close().await;
        if let Some(replica) = &self.db_replica {
            replica.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_told_apart_from_bugs() {
        let pool_timeout = RepoError::Mysql(sqlx::Error::PoolTimedOut);
        assert_eq!(
            pool_timeout.unavailable_dependency(),
            Some(Dependency::Mysql)
        );
        let missing_row = RepoError::Mysql(sqlx::Error::RowNotFound);
        assert_eq!(missing_row.unavailable_dependency(), None);
        let refused = RepoError::Redis(::redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(refused.unavailable_dependency(), Some(Dependency::Redis));
        let bad_type = RepoError::Redis(::redis::RedisError::from((
            ::redis::ErrorKind::UnexpectedReturnType,
            "not an integer",
        )));
        assert_eq!(bad_type.unavailable_dependency(), None);
        let cluster_down = RepoError::Redis(::redis::RedisError::from((
            ::redis::ErrorKind::Server(::redis::ServerErrorKind::ClusterDown),
            "the cluster is down",
        )));
        assert_eq!(
            cluster_down.unavailable_dependency(),
            Some(Dependency::Redis)
        );
        let moved = RepoError::Redis(::redis::RedisError::from((
            ::redis::ErrorKind::Server(::redis::ServerErrorKind::Moved),
            "9842 127.0.0.1:7121",
        )));
        assert_eq!(
            moved.unavailable_dependency(),
            Some(Dependency::Redis),
            "a failover in progress"
        );
        let cross_slot = RepoError::Redis(::redis::RedisError::from((
            ::redis::ErrorKind::Server(::redis::ServerErrorKind::CrossSlot),
            "keys in several slots",
        )));
        assert_eq!(
            cross_slot.unavailable_dependency(),
            None,
            "a bug, not an outage"
        );
        let slow = RepoError::Timeout(Dependency::Rabbitmq, Duration::from_secs(1));
        assert_eq!(slow.unavailable_dependency(), Some(Dependency::Rabbitmq));
    }
}
