//! The connection: opened with retries at start-up, one channel for declarations, one in
//! confirm mode for publishing, more on demand (consumers, passive declares).

use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::config::{AmqpSettings, redact_url};
use crate::repo::{Dependency, RepoError, retry};

/// How long one connection attempt may take before it counts as failed.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with one channel for declarations and one, in confirm mode, for publishing.
pub struct Amqp {
    connection: Connection,
    channel: Channel,
    /// In confirm mode; see `publisher`.
    pub(super) publisher: Channel,
}

impl Amqp {
    /// Connects, retrying until `startup_timeout`. Auto-recovery is on: after a broker restart
    /// lapin reconnects and replays the declared topology.
    pub async fn connect(config: &AmqpSettings) -> Result<Amqp, RepoError> {
        let url = config.url.expose();
        let target = redact_url(url);
        let connection = retry::with_backoff(
            Dependency::Rabbitmq,
            &target,
            config.startup_timeout,
            || async {
                let properties = ConnectionProperties::default()
                    .with_connection_name("spike".into())
                    .enable_auto_recover();
                match tokio::time::timeout(
                    CONNECT_ATTEMPT_TIMEOUT,
                    Connection::connect(url, properties),
                )
                .await
                {
                    Ok(result) => result.map_err(RepoError::from),
                    Err(_) => Err(RepoError::Timeout(
                        Dependency::Rabbitmq,
                        CONNECT_ATTEMPT_TIMEOUT,
                    )),
                }
            },
        )
        .await?;
        let channel = connection.create_channel().await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Amqp {
            connection,
            channel,
            publisher,
        })
    }

    /// Messages ready in `queue` and consumers attached to it (a passive declare on a channel of
    /// its own: a missing queue closes that channel, not a shared one).
    pub async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, RepoError> {
        let channel = self.connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        if channel.status().connected() {
            let _ = channel.close(200, "done".into()).await;
        }
        let queue = declared?;
        Ok(QueueDepth {
            messages: queue.message_count(),
            consumers: queue.consumer_count(),
        })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Opens another channel on the same connection (consumers use one each).
    pub async fn create_channel(&self) -> Result<Channel, RepoError> {
        Ok(self.connection.create_channel().await?)
    }

    /// Ready when the connection and both channels are open.
    pub fn ping(&self) -> Result<(), RepoError> {
        if self.connection.status().connected()
            && self.channel.status().connected()
            && self.publisher.status().connected()
        {
            Ok(())
        } else {
            Err(RepoError::Disconnected(Dependency::Rabbitmq))
        }
    }

    /// Closes the connection politely so the broker requeues nothing it should not.
    pub async fn close(&self) {
        if self.connection.status().connected()
            && let Err(error) = self.connection.close(200, "shutting down".into()).await
        {
            tracing::warn!(%error, "closing the rabbitmq connection failed");
        }
    }
}

/// What a passive declare tells about a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready messages (not those delivered and unacknowledged).
    pub messages: u32,
    pub consumers: u32,
}
