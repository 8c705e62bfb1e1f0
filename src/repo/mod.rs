//! Data access: MySQL through sqlx, Redis, and RabbitMQ through lapin.
//!
//! Nothing here knows about HTTP. Each store has its own module; [`Infra`] bundles the live
//! connections one process holds, and [`RepoError`] is the one error type this layer returns.

pub mod amqp;
pub mod mysql;
pub mod redis;
mod retry;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;

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
}

/// The external services the process depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dependency {
    Mysql,
    Redis,
    Rabbitmq,
}

impl Dependency {
    pub const ALL: [Dependency; 3] = [Dependency::Mysql, Dependency::Redis, Dependency::Rabbitmq];

    pub fn name(self) -> &'static str {
        match self {
            Dependency::Mysql => "mysql",
            Dependency::Redis => "redis",
            Dependency::Rabbitmq => "rabbitmq",
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The live connections of one process; cheap to clone.
#[derive(Clone)]
pub struct Infra {
    pub db: sqlx::MySqlPool,
    pub redis: ::redis::aio::ConnectionManager,
    pub amqp: Arc<Amqp>,
    pub topology: Arc<Topology>,
}

impl Infra {
    /// Connects to MySQL, Redis and RabbitMQ, retrying each with backoff for up to
    /// `config.startup_timeout`, then declares the RabbitMQ topology.
    pub async fn connect(config: &Config) -> Result<Infra, RepoError> {
        let db = mysql::connect(config).await?;
        let redis = redis::connect(config).await?;
        let amqp = Amqp::connect(config).await?;
        let topology = Topology::from_config(config);
        topology.declare(amqp.channel()).await?;
        Ok(Infra {
            db,
            redis,
            amqp: Arc::new(amqp),
            topology: Arc::new(topology),
        })
    }

    /// Checks one dependency with a bounded wait.
    pub async fn ping(&self, dependency: Dependency, timeout: Duration) -> Result<(), RepoError> {
        let check = async {
            match dependency {
                Dependency::Mysql => mysql::ping(&self.db).await,
                Dependency::Redis => redis::ping(&mut self.redis.clone()).await,
                Dependency::Rabbitmq => self.amqp.ping(),
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
    }
}
