//! Names and arguments of every exchange and queue (all under `SPIKE_AMQP_PREFIX`), and their
//! declaration. Both roles declare the whole topology at start-up; declarations are idempotent.

use std::time::Duration;

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::{Amqp, ORDER_CLOSE, ORDER_CLOSE_DELAY, ORDER_CREATE};
use crate::config::{AmqpSettings, FlashSaleSettings, QueueType};
use crate::repo::RepoError;

/// Names and arguments of every exchange and queue, with the configured prefix applied.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    queue_type: QueueType,
    pay_timeout: Duration,
    /// Backoff of the order-creation retry queues (docs/design.md §5): retry n waits `retry_delays[n-1]`.
    retry_delays: Vec<Duration>,
    /// Bound of the order-creation queue; a full queue refuses publishes (`reject-publish`).
    order_queue_max_length: u32,
    /// The bound is a policy (applied through the management API), not a declaration argument.
    bound_by_policy: bool,
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
            bound_by_policy: amqp.management_url.is_some(),
        }
    }

    /// The policy that bounds the order queue: its name (under the prefix) and its body for the
    /// management API. Priority 10, above a cluster-wide default an operator may have set.
    pub fn order_queue_bound_policy(&self) -> (String, serde_json::Value) {
        let queue = self.queue(ORDER_CREATE);
        let body = serde_json::json!({
            "pattern": super::policies::exact_pattern(&queue),
            "apply-to": "queues",
            "priority": 10,
            "definition": {
                "max-length": self.order_queue_max_length,
                "overflow": "reject-publish",
            },
        });
        (format!("{queue}.bound"), body)
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

    /// Routing key (and unprefixed queue name) of retry attempt `attempt` (1-based) of the
    /// queue `queue` (only `spike.order.create` has retry queues).
    pub fn retry_routing_key(queue: &str, attempt: usize) -> String {
        format!("{queue}.retry.{attempt}")
    }

    /// How many retries a failed order-creation message gets before it dead-letters.
    pub fn retries(&self) -> usize {
        self.retry_delays.len()
    }

    /// The order-creation queue and its retry queues: where a reservation's message can wait.
    pub fn order_create_queues(&self) -> Vec<String> {
        let mut queues = vec![self.queue(ORDER_CREATE)];
        queues.extend(
            (1..=self.retries()).map(|n| self.queue(&Topology::retry_routing_key(ORDER_CREATE, n))),
        );
        queues
    }

    /// Kept for inspection: messages that failed every attempt.
    pub fn dead_queue(&self) -> String {
        self.name(&format!("{ORDER_CREATE}.dead"))
    }

    /// Every queue with its declaration arguments and the routing key binding it to the exchange
    /// it is fed from.
    fn queues(&self) -> Vec<QueueSpec> {
        let mut order_queue = vec![("x-dead-letter-exchange", text(&self.dead_letter_exchange()))];
        if !self.bound_by_policy {
            // Bounded: an overloaded broker nacks the publish and the buyer's reservation is
            // undone, instead of the backlog growing without limit. (With a management URL the
            // same bound is a policy: `order_queue_bound_policy`.)
            order_queue.push((
                "x-max-length",
                AMQPValue::LongLongInt(i64::from(self.order_queue_max_length)),
            ));
            order_queue.push(("x-overflow", text("reject-publish")));
        }
        let mut queues = vec![QueueSpec {
            name: self.queue(ORDER_CREATE),
            exchange: self.exchange(),
            routing_key: ORDER_CREATE.into(),
            arguments: self.arguments(&order_queue),
        }];
        for (index, delay) in self.retry_delays.iter().enumerate() {
            let routing_key = Topology::retry_routing_key(ORDER_CREATE, index + 1);
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
    ///
    /// With the bound as a policy, an order queue that exists already is left as it is: it may
    /// have been declared with another bound as an argument by an earlier version (the smaller
    /// of argument and policy applies until it is recreated: docs/scale-out.md).
    pub async fn declare(&self, amqp: &Amqp) -> Result<(), RepoError> {
        let channel = amqp.channel().await?;
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
            let keep_existing = self.bound_by_policy && queue.name == self.queue(ORDER_CREATE);
            if !(keep_existing && amqp.queue_depth(&queue.name).await.is_ok()) {
                channel
                    .queue_declare(
                        queue.name.clone().into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..QueueDeclareOptions::default()
                        },
                        queue.arguments,
                    )
                    .await
                    .map_err(|error| explain_mismatch(&queue.name, error))?;
            }
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

    /// Names of every queue, for tests and diagnostics.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues().into_iter().map(|q| q.name).collect()
    }
}

/// Turns RabbitMQ's `PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost
/// '/': received '100000' but current is '200000'` into an error that names the setting behind the
/// argument and the two ways out; any other error stays as it is.
fn explain_mismatch(queue: &str, error: lapin::Error) -> RepoError {
    let text = error.to_string();
    let Some(mismatch) = ArgumentMismatch::parse(&text) else {
        return RepoError::Amqp(error);
    };
    RepoError::QueueMismatch(mismatch.explain(queue))
}

/// What the broker said differs between the queue it holds and the declaration.
#[derive(Debug, PartialEq, Eq)]
struct ArgumentMismatch<'a> {
    argument: &'a str,
    declared: &'a str,
    current: &'a str,
}

impl<'a> ArgumentMismatch<'a> {
    fn parse(text: &'a str) -> Option<ArgumentMismatch<'a>> {
        let quoted_after = |marker: &str| -> Option<&'a str> {
            let rest = &text[text.find(marker)? + marker.len()..];
            let rest = rest.strip_prefix('\'')?;
            Some(&rest[..rest.find('\'')?])
        };
        Some(ArgumentMismatch {
            argument: quoted_after("inequivalent arg ")?,
            declared: quoted_after("received ")?,
            current: quoted_after("current is ")?,
        })
    }

    fn explain(&self, queue: &str) -> String {
        let (setting, by_policy) = match self.argument {
            "x-max-length" | "x-overflow" => ("SPIKE_FLASH_SALE_QUEUE_MAX_LENGTH", true),
            "x-message-ttl" if queue.ends_with(ORDER_CLOSE_DELAY) => {
                ("SPIKE_ORDER_PAY_TIMEOUT (in ms)", false)
            }
            "x-message-ttl" => ("SPIKE_FLASH_SALE_RETRY_DELAYS (in ms)", false),
            "x-queue-type" => ("SPIKE_AMQP_QUEUE_TYPE", false),
            _ => ("the queue's declaration", false),
        };
        let ways_out = if by_policy {
            "Either let the bound be a RabbitMQ policy, which a start updates in place \
             (SPIKE_AMQP_MANAGEMENT_URL, on by default in dev; docs/scale-out.md), or drain the \
             queue, delete it and start again (docs/runbook.md, \"PRECONDITION_FAILED on \
             spike.order.create\")"
        } else {
            "Drain the queue, delete it and start again; it is declared anew with the new value \
             (docs/runbook.md, \"PRECONDITION_FAILED on order.close.delay or a retry queue\")"
        };
        format!(
            "rabbitmq queue {queue} exists with {} = {}, but this configuration declares {} \
             ({setting}). {ways_out}.",
            self.argument, self.current, self.declared
        )
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
            bound_by_policy: false,
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
    fn the_order_queue_is_bounded_by_argument_or_by_a_policy_that_names_it_alone() {
        let arguments = |t: &Topology| {
            t.queues()
                .into_iter()
                .find(|q| q.name == t.queue(ORDER_CREATE))
                .expect("order queue")
                .arguments
        };
        let by_argument = topology("t1.");
        let declared = arguments(&by_argument);
        assert_eq!(
            declared.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(1000))
        );
        let by_policy = Topology {
            bound_by_policy: true,
            ..topology("t1.")
        };
        let declared = arguments(&by_policy);
        assert_eq!(declared.inner().get("x-max-length"), None);
        assert_eq!(declared.inner().get("x-overflow"), None);
        let (name, policy) = by_policy.order_queue_bound_policy();
        assert_eq!(name, "t1.spike.order.create.bound");
        assert_eq!(policy["pattern"], r"^t1\.spike\.order\.create$");
        assert_eq!(policy["definition"]["max-length"], 1000);
        assert_eq!(policy["definition"]["overflow"], "reject-publish");
        assert_eq!(policy["apply-to"], "queues");
    }

    #[test]
    fn a_queue_declared_otherwise_is_explained_with_its_setting_and_the_ways_out() {
        let broker = "AMQP soft error: PRECONDITION-FAILED: PRECONDITION_FAILED - inequivalent arg \
                      'x-max-length' for queue 'bench.spike.order.create' in vhost '/': received \
                      '100000' but current is '200000'";
        let mismatch = ArgumentMismatch::parse(broker).expect("parsed");
        assert_eq!(
            mismatch,
            ArgumentMismatch {
                argument: "x-max-length",
                declared: "100000",
                current: "200000",
            }
        );
        let said = mismatch.explain("bench.spike.order.create");
        for words in [
            "bench.spike.order.create",
            "x-max-length = 200000",
            "declares 100000",
            "SPIKE_FLASH_SALE_QUEUE_MAX_LENGTH",
            "SPIKE_AMQP_MANAGEMENT_URL",
            "docs/runbook.md",
        ] {
            assert!(said.contains(words), "{words}: {said}");
        }
        let ttl = ArgumentMismatch {
            argument: "x-message-ttl",
            declared: "60000",
            current: "900000",
        };
        assert!(
            ttl.explain("order.close.delay")
                .contains("SPIKE_ORDER_PAY_TIMEOUT")
        );
        assert!(!ttl.explain("order.close.delay").contains("MANAGEMENT_URL"));
        assert!(
            ttl.explain("spike.order.create.retry.2")
                .contains("SPIKE_FLASH_SALE_RETRY_DELAYS")
        );
        assert_eq!(ArgumentMismatch::parse("connection refused"), None);
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
