//! RabbitMQ: the connection, one channel, and the exchange/queue topology of DESIGN.md §6.
//!
//! Both `serve` and `worker` declare the whole topology at start-up; declarations are idempotent,
//! so whichever role starts first creates it. Every name carries `SPIKE_AMQP_PREFIX`, which lets
//! tests (and tenants) share one broker without seeing each other's messages.
//!
//! ```text
//! spike.direct ──spike.order.create──────────▶ spike.order.create ──(reject)──▶ spike.dlx ─▶ spike.order.create.dead
//!      │  ▲                                                   
//!      │  └──(TTL expiry)── spike.order.create.retry.<n> ◀──spike.order.create.retry.<n>──┘ (consumer republishes)
//!      ├──order.close.delay──▶ order.close.delay ──(TTL = pay timeout)──▶ spike.direct/order.close
//!      └──order.close────────▶ order.close
//! ```

use std::time::Duration;

pub mod consumer;

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::{Dependency, RepoError, retry};
use crate::config::{AmqpSettings, FlashSaleSettings, QueueType, redact_url};

/// Routing key (and unprefixed queue name) of flash-sale order creation.
pub const ORDER_CREATE: &str = "spike.order.create";
/// Routing key (and unprefixed queue name) of the pay-timeout delay queue.
pub const ORDER_CLOSE_DELAY: &str = "order.close.delay";
/// Routing key (and unprefixed queue name) of order closing.
pub const ORDER_CLOSE: &str = "order.close";

/// Header counting how many retries a flash-sale order message has been through.
pub const ATTEMPT_HEADER: &str = "x-spike-attempt";

/// How long one connection attempt may take before it counts as failed.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish may wait for the broker's confirm before it counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with one channel for declarations and one, in confirm mode, for publishing.
pub struct Amqp {
    connection: Connection,
    channel: Channel,
    publisher: Channel,
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

    /// Publishes a persistent JSON message and waits for the broker's confirm: `Ok` means the
    /// broker has taken responsibility for it (stored, and routed to at least one queue —
    /// `mandatory` turns "no queue bound" into an error). `expiration` sets a per-message TTL.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        expiration: Option<Duration>,
    ) -> Result<(), RepoError> {
        self.publish_with_headers(
            exchange,
            routing_key,
            payload,
            expiration,
            FieldTable::default(),
        )
        .await
    }

    /// [`Amqp::publish`] with message headers.
    pub async fn publish_with_headers(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        expiration: Option<Duration>,
        headers: FieldTable,
    ) -> Result<(), RepoError> {
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2) // persistent
            .with_headers(headers);
        if let Some(ttl) = expiration {
            properties = properties.with_expiration(ttl.as_millis().to_string().into());
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = async {
            self.publisher
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    options,
                    payload,
                    properties,
                )
                .await?
                .await
        };
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| RepoError::Timeout(Dependency::Rabbitmq, CONFIRM_TIMEOUT))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => {
                Err(RepoError::NotConfirmed("unroutable (no queue bound)"))
            }
            Confirmation::Nack(_) => Err(RepoError::NotConfirmed("nacked by the broker")),
            Confirmation::NotRequested => Err(RepoError::NotConfirmed("confirms not enabled")),
        }
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

/// Names and arguments of every exchange and queue, with the configured prefix applied.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
    pay_timeout: Duration,
    /// Backoff of the order-creation retry queues (DESIGN.md §5): retry n waits `retry_delays[n-1]`.
    retry_delays: Vec<Duration>,
    /// Bound of the order-creation queue; a full queue refuses publishes (`reject-publish`).
    order_queue_max_length: u32,
}

impl Topology {
    /// The names and arguments for these settings; `pay_timeout` is the delay queue's TTL.
    pub fn new(
        amqp: &AmqpSettings,
        pay_timeout: Duration,
        flash_sale: &FlashSaleSettings,
    ) -> Topology {
        Topology {
            prefix: amqp.prefix.clone(),
            queue_type: amqp.queue_type,
            pay_timeout,
            retry_delays: flash_sale.retry_delays.clone(),
            order_queue_max_length: flash_sale.queue_max_length,
        }
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// The direct exchange every message is published to.
    pub fn exchange(&self) -> String {
        self.name("spike.direct")
    }

    /// Where order-creation messages go after their last failed attempt.
    pub fn dead_letter_exchange(&self) -> String {
        self.name("spike.dlx")
    }

    /// Full queue name for a routing key of [`Topology::exchange`].
    pub fn queue(&self, routing_key: &str) -> String {
        self.name(routing_key)
    }

    /// Routing key (and unprefixed queue name) of retry attempt `attempt` (1-based).
    pub fn retry_routing_key(attempt: usize) -> String {
        format!("{ORDER_CREATE}.retry.{attempt}")
    }

    /// How many retries a failed order-creation message gets before it dead-letters.
    pub fn retries(&self) -> usize {
        self.retry_delays.len()
    }

    /// The order-creation queue and its retry queues: where a reservation's message can wait.
    pub fn order_create_queues(&self) -> Vec<String> {
        let mut queues = vec![self.queue(ORDER_CREATE)];
        queues.extend((1..=self.retries()).map(|n| self.queue(&Topology::retry_routing_key(n))));
        queues
    }

    /// Kept for inspection: messages that failed every attempt.
    pub fn dead_queue(&self) -> String {
        self.name(&format!("{ORDER_CREATE}.dead"))
    }

    /// Every queue with its declaration arguments and the routing key binding it to the exchange
    /// it is fed from.
    fn queues(&self) -> Vec<QueueSpec> {
        let mut queues = vec![QueueSpec {
            name: self.queue(ORDER_CREATE),
            exchange: self.exchange(),
            routing_key: ORDER_CREATE.into(),
            arguments: self.arguments(&[
                ("x-dead-letter-exchange", text(&self.dead_letter_exchange())),
                // Bounded: an overloaded broker nacks the publish and the buyer's reservation is
                // undone, instead of the backlog growing without limit.
                (
                    "x-max-length",
                    AMQPValue::LongLongInt(i64::from(self.order_queue_max_length)),
                ),
                ("x-overflow", text("reject-publish")),
            ]),
        }];
        for (index, delay) in self.retry_delays.iter().enumerate() {
            let routing_key = Topology::retry_routing_key(index + 1);
            queues.push(QueueSpec {
                name: self.queue(&routing_key),
                exchange: self.exchange(),
                routing_key,
                arguments: self.arguments(&[
                    ("x-message-ttl", millis(*delay)),
                    ("x-dead-letter-exchange", text(&self.exchange())),
                    ("x-dead-letter-routing-key", text(ORDER_CREATE)),
                ]),
            });
        }
        queues.push(QueueSpec {
            name: self.dead_queue(),
            exchange: self.dead_letter_exchange(),
            routing_key: ORDER_CREATE.into(),
            arguments: self.arguments(&[]),
        });
        queues.push(QueueSpec {
            name: self.queue(ORDER_CLOSE_DELAY),
            exchange: self.exchange(),
            routing_key: ORDER_CLOSE_DELAY.into(),
            arguments: self.arguments(&[
                ("x-message-ttl", millis(self.pay_timeout)),
                ("x-dead-letter-exchange", text(&self.exchange())),
                ("x-dead-letter-routing-key", text(ORDER_CLOSE)),
            ]),
        });
        queues.push(QueueSpec {
            name: self.queue(ORDER_CLOSE),
            exchange: self.exchange(),
            routing_key: ORDER_CLOSE.into(),
            arguments: self.arguments(&[]),
        });
        queues
    }

    fn arguments(&self, extra: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        table.insert("x-queue-type".into(), text(self.queue_type.into()));
        for (key, value) in extra {
            table.insert(ShortString::from(*key), value.clone());
        }
        table
    }

    /// Declares exchanges, queues and bindings. Idempotent; fails with PRECONDITION_FAILED when a
    /// queue exists with other arguments (e.g. the pay timeout changed: see docs/runbook.md).
    pub async fn declare(&self, channel: &Channel) -> Result<(), RepoError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [self.exchange(), self.dead_letter_exchange()] {
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Direct,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        for queue in self.queues() {
            channel
                .queue_declare(
                    queue.name.clone().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    queue.arguments,
                )
                .await?;
            channel
                .queue_bind(
                    queue.name.into(),
                    queue.exchange.into(),
                    queue.routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange of this prefix (test teardown; never called by the service).
    pub async fn delete(&self, channel: &Channel) -> Result<(), RepoError> {
        for queue in self.queues() {
            channel
                .queue_delete(queue.name.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [self.exchange(), self.dead_letter_exchange()] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Names of every queue, for tests and diagnostics.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues().into_iter().map(|q| q.name).collect()
    }
}

struct QueueSpec {
    name: String,
    exchange: String,
    routing_key: String,
    arguments: FieldTable,
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn millis(duration: Duration) -> AMQPValue {
    AMQPValue::LongLongInt(duration.as_millis().min(i64::MAX as u128) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(prefix: &str) -> Topology {
        Topology {
            prefix: prefix.into(),
            queue_type: QueueType::Quorum,
            pay_timeout: Duration::from_secs(900),
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            order_queue_max_length: 1000,
        }
    }

    #[test]
    fn every_name_carries_the_prefix() {
        let t = topology("t1.");
        assert_eq!(t.exchange(), "t1.spike.direct");
        assert_eq!(t.dead_letter_exchange(), "t1.spike.dlx");
        assert!(t.queue_names().iter().all(|q| q.starts_with("t1.")));
        assert_eq!(
            t.queue_names(),
            vec![
                "t1.spike.order.create",
                "t1.spike.order.create.retry.1",
                "t1.spike.order.create.retry.2",
                "t1.spike.order.create.retry.3",
                "t1.spike.order.create.dead",
                "t1.order.close.delay",
                "t1.order.close",
            ]
        );
    }

    #[test]
    fn delay_queue_expires_into_order_close_after_the_pay_timeout() {
        let t = topology("");
        let delay = t
            .queues()
            .into_iter()
            .find(|q| q.name == ORDER_CLOSE_DELAY)
            .expect("delay queue");
        let args = delay.arguments.inner();
        assert_eq!(
            args.get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(900_000))
        );
        assert_eq!(
            args.get("x-dead-letter-routing-key"),
            Some(&text(ORDER_CLOSE))
        );
    }
}
