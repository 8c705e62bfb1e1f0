//! The connection: opened with retries at start-up, one channel for declarations, one in
//! confirm mode for publishing, more on demand (consumers, passive declares) — and moved to the
//! next node of `SPIKE_AMQP_URL` (a comma-separated list: the nodes of a cluster) when its node
//! goes away.
//!
//! Failover is ours, not lapin's: lapin's recovery only ever goes back to the URL it started
//! with, and gives up for good in some outages (docs/reliability.md). Whoever next needs the
//! broker — a publish, a consumer being started again by the supervisor, the readiness probe —
//! finds the connection down and opens a new one, trying each node in turn from the one after
//! the node that failed. Publisher confirms still decide every publish: one in flight when the
//! node dies fails (a buy answers `503`), the next goes to the new node.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::config::{AmqpSettings, redact_url};
use crate::repo::{Dependency, RepoError, retry};

/// How long one connection attempt may take before it counts as failed.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker as the services see it: the nodes it may use and the live connection to one.
pub struct Amqp {
    /// Every node's URL, in the configured order.
    urls: Vec<String>,
    link: RwLock<Arc<Link>>,
    /// One reconnection at a time; the others wait for its result.
    reconnecting: tokio::sync::Mutex<()>,
}

/// A connection to one node, with one channel for declarations and one, in confirm mode, for
/// publishing (see `publisher`).
pub(super) struct Link {
    connection: Connection,
    channel: Channel,
    /// Replaced after a nack (see [`Amqp::renew_publisher`]).
    publisher: RwLock<Channel>,
    /// Which of `urls` it is connected to.
    node: usize,
}

impl Link {
    async fn open(url: &str, node: usize) -> Result<Link, RepoError> {
        let properties = ConnectionProperties::default().with_connection_name("spike".into());
        let connection = match tokio::time::timeout(
            CONNECT_ATTEMPT_TIMEOUT,
            Connection::connect(url, properties),
        )
        .await
        {
            Ok(result) => result?,
            Err(_) => {
                return Err(RepoError::Timeout(
                    Dependency::Rabbitmq,
                    CONNECT_ATTEMPT_TIMEOUT,
                ));
            }
        };
        let channel = connection.create_channel().await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Link {
            connection,
            channel,
            publisher: RwLock::new(publisher),
            node,
        })
    }

    /// The channel, in confirm mode, that publishes.
    pub(super) fn publisher(&self) -> Channel {
        self.publisher.read().expect("publisher poisoned").clone()
    }

    fn is_up(&self) -> bool {
        self.connection.status().connected()
            && self.channel.status().connected()
            && self.publisher().status().connected()
    }
}

impl Amqp {
    /// Connects to the first node that answers, trying them all until `startup_timeout`.
    pub async fn connect(config: &AmqpSettings) -> Result<Amqp, RepoError> {
        let urls: Vec<String> = config.urls().into_iter().map(str::to_owned).collect();
        let link = retry::with_backoff(
            Dependency::Rabbitmq,
            &config.redacted(),
            config.startup_timeout,
            || open_first(&urls, 0),
        )
        .await?;
        Ok(Amqp {
            urls,
            link: RwLock::new(Arc::new(link)),
            reconnecting: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> Arc<Link> {
        self.link.read().expect("amqp link poisoned").clone()
    }

    /// The connection if it is up, else a new one to the next node that answers.
    pub(super) async fn live_link(&self) -> Result<Arc<Link>, RepoError> {
        let link = self.current();
        if link.is_up() {
            return Ok(link);
        }
        let _one_at_a_time = self.reconnecting.lock().await;
        let link = self.current();
        if link.is_up() {
            // Another caller reconnected meanwhile.
            return Ok(link);
        }
        let fresh = Arc::new(open_first(&self.urls, link.node + 1).await?);
        if fresh.node != link.node {
            tracing::warn!(
                from = %redact_url(&self.urls[link.node]),
                to = %redact_url(&self.urls[fresh.node]),
                "rabbitmq connection moved to another node"
            );
        } else {
            tracing::info!(node = %redact_url(&self.urls[fresh.node]), "rabbitmq connection reopened");
        }
        *self.link.write().expect("amqp link poisoned") = fresh.clone();
        Ok(fresh)
    }

    /// Replaces the publishing channel `nacked` (unless that happened meanwhile) with a fresh
    /// one. A RabbitMQ 3.10 channel that was refused by a quorum queue whose leader had just
    /// died goes on refusing every message for that queue after a new leader is elected
    /// (measured: 60 s of nacks and counting); a new channel publishes at once. A nack for a
    /// full queue costs one channel more, which is cheap.
    pub(super) async fn renew_publisher(&self, nacked: &Channel) {
        let link = self.current();
        if link.publisher().id() != nacked.id() {
            return;
        }
        let fresh = async {
            let channel = link.connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<Channel, lapin::Error>(channel)
        };
        match fresh.await {
            Ok(channel) => {
                let old = {
                    let mut publisher = link.publisher.write().expect("publisher poisoned");
                    if publisher.id() != nacked.id() {
                        return;
                    }
                    std::mem::replace(&mut *publisher, channel)
                };
                // Closed once the confirms still in flight on it have come (or timed out):
                // closing it now would fail publishes the broker may yet have taken.
                tokio::spawn(async move {
                    tokio::time::sleep(super::publisher::CONFIRM_TIMEOUT).await;
                    let _ = old.close(200, "renewed after a nack".into()).await;
                });
            }
            Err(error) => tracing::warn!(%error, "opening a new publishing channel failed"),
        }
    }

    /// Messages ready in `queue` and consumers attached to it (a passive declare on a channel of
    /// its own: a missing queue closes that channel, not a shared one).
    pub async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, RepoError> {
        let channel = self.create_channel().await?;
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

    /// The channel for declarations.
    pub async fn channel(&self) -> Result<Channel, RepoError> {
        Ok(self.live_link().await?.channel.clone())
    }

    /// Opens another channel on the live connection (consumers use one each).
    pub async fn create_channel(&self) -> Result<Channel, RepoError> {
        Ok(self.live_link().await?.connection.create_channel().await?)
    }

    /// Ready when the connection and both channels are open — reopened on another node first
    /// if need be, so a process nobody sends work to finds its way back too.
    pub async fn ping(&self) -> Result<(), RepoError> {
        self.live_link().await.map(drop)
    }

    /// Closes the connection politely so the broker requeues nothing it should not.
    pub async fn close(&self) {
        let link = self.current();
        if link.connection.status().connected()
            && let Err(error) = link.connection.close(200, "shutting down".into()).await
        {
            tracing::warn!(%error, "closing the rabbitmq connection failed");
        }
    }
}

/// A link to the first node that answers, trying each once from `from` (wrapping around).
async fn open_first(urls: &[String], from: usize) -> Result<Link, RepoError> {
    let mut failure = RepoError::Disconnected(Dependency::Rabbitmq);
    for offset in 0..urls.len() {
        let node = (from + offset) % urls.len();
        match Link::open(&urls[node], node).await {
            Ok(link) => return Ok(link),
            Err(error) => {
                tracing::debug!(node = %redact_url(&urls[node]), %error, "rabbitmq node did not answer");
                failure = error;
            }
        }
    }
    Err(failure)
}

/// What a passive declare tells about a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready messages (not those delivered and unacknowledged).
    pub messages: u32,
    pub consumers: u32,
}
