//! The consuming loop shared by every queue. It owns everything AMQP about a delivery: bounded
//! prefetch, gathering deliveries into batches, acknowledgements, the attempt header, routing a
//! failed message to its retry queue or back onto its queue, deferring one to a delay queue,
//! dead-lettering poison. Handlers see a batch of [`Message`]s and answer with one [`Verdict`]
//! each; they know no lapin types.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::{ATTEMPT_HEADER, Amqp, Topology};
use crate::repo::{Dependency, RepoError};
use crate::telemetry::metrics::names;
use crate::telemetry::traces;

/// A delivered message as a handler sees it.
#[derive(Debug)]
pub struct Message<'a> {
    pub body: &'a [u8],
    /// Retries it has been through (0 on the first delivery).
    pub attempt: usize,
    headers: Option<&'a FieldTable>,
}

impl Message<'_> {
    /// A text header, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.headers?.inner().get(name)? {
            AMQPValue::LongString(text) => Some(text.to_string()),
            AMQPValue::ShortString(text) => Some(text.to_string()),
            _ => None,
        }
    }
}

/// What a handler decided about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done (including "already done"): remove it from the queue.
    Done,
    /// A transient failure: try again later, as the queue's [`RetryPolicy`] says.
    RetryLater,
    /// Not yet: deliver it again after this long (through the consumer's delay route).
    Defer(Duration),
    /// It can never succeed (malformed): drop it, or dead-letter it where the queue has a DLX.
    Poison,
}

/// How a queue retries a message its handler could not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Back onto the same queue after a short pause, as often as it takes.
    Requeue,
    /// Through the queue's retry queues (`<queue>.retry.1`…`.retry.n`, each with its backoff TTL,
    /// expiring back into the queue; the topology declares them for `spike.order.create`),
    /// counting attempts in a header; after the last, the handler's [`Handler::exhausted`]
    /// undoes what the message holds and it dead-letters.
    RetryQueues,
}

/// Handles the messages of a queue, a batch at a time.
pub trait Handler: Send + Sync {
    /// One decision per message, in their order.
    fn handle(&self, messages: &[Message<'_>]) -> impl Future<Output = Vec<Verdict>> + Send;

    /// The message failed its last retry and is about to dead-letter: compensate. `false` means
    /// the compensation could not be done now; the message is put back and tried again.
    fn exhausted(&self, _message: &Message<'_>) -> impl Future<Output = bool> + Send {
        async { true }
    }
}

/// How deliveries are gathered into batches: up to `max` of them, waiting at most `wait` after
/// the first for the rest (whatever the broker has delivered already joins at once). While a
/// batch is handled, the next one gathers, up to the prefetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max: usize,
    pub wait: Duration,
}

/// Which queue to consume and how.
#[derive(Debug, Clone)]
pub struct Route {
    /// Routing key (and unprefixed name) of the queue.
    pub queue: &'static str,
    pub retry: RetryPolicy,
    /// Where [`Verdict::Defer`] sends a message (a queue that expires into this one).
    pub defer_to: Option<&'static str>,
}

/// One consumer: which queue and how, how deliveries are batched, and how many may be
/// unacknowledged at once.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub route: Route,
    pub batching: Batching,
    pub prefetch: u16,
}

/// What became of a consumed message (`spike_consumer_messages_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    Processed,
    Retried,
    Requeued,
    Deferred,
    DeadLettered,
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Processed,
        Outcome::Retried,
        Outcome::Requeued,
        Outcome::Deferred,
        Outcome::DeadLettered,
        Outcome::Rejected,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        self.into()
    }

    /// What the handler decided, before the delivery is settled.
    fn decided(decision: Verdict) -> Outcome {
        match decision {
            Verdict::Done => Outcome::Processed,
            Verdict::Poison => Outcome::Rejected,
            Verdict::Defer(_) => Outcome::Deferred,
            Verdict::RetryLater => Outcome::Retried,
        }
    }

    /// What happened, from what was decided and how the delivery was settled.
    fn settled(self, settle: Settle) -> Outcome {
        match (self, settle) {
            // The retry could not be published, or the retries are spent and the handler could
            // not compensate: the message goes back onto its queue.
            (_, Settle::Requeue) => Outcome::Requeued,
            (Outcome::Retried, Settle::Reject) => Outcome::DeadLettered,
            (decided, _) => decided,
        }
    }
}

/// What a consumer has in hand, for proving a queue quiet (the reconciler's release of held-back
/// units): the broker's queue depth counts ready messages only, not those delivered to a
/// consumer and not yet settled.
#[derive(Debug, Default)]
pub struct Activity {
    held: AtomicU64,
    settled: AtomicU64,
}

impl Activity {
    /// Deliveries taken from the channel and not yet settled, and deliveries settled so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.held.load(Ordering::Acquire),
            self.settled.load(Ordering::Acquire),
        )
    }
}

/// Pause before a message handed back with [`RetryPolicy::Requeue`] is requeued, so a broken
/// dependency is not hammered in a tight loop.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// What happens to the delivery once the decision has been carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    Requeue,
    Reject,
}

/// Consumes the spec's queue until `shutdown`, handing the handler batches as the spec says,
/// and counting in `activity` what it holds. The batch in hand at shutdown finishes and is
/// settled; unacknowledged deliveries return to the queue when the channel closes, so nothing
/// is lost. A consumer the broker cancels (or whose channel dies) returns an error: the
/// supervisor starts it again.
pub async fn run<H: Handler>(
    amqp: &Amqp,
    topology: &Topology,
    spec: &ConsumerSpec,
    handler: &H,
    activity: &Activity,
    shutdown: CancellationToken,
) -> Result<(), RepoError> {
    let ConsumerSpec {
        route,
        batching,
        prefetch,
    } = spec;
    let (batching, prefetch) = (*batching, *prefetch);
    let queue = topology.queue(route.queue);
    let channel = amqp.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            format!("spike-{}", uuid::Uuid::new_v4().simple()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue, prefetch, batch_max = batching.max, "consuming");
    for outcome in Outcome::ALL {
        metrics::counter!(names::CONSUMED, "queue" => route.queue, "outcome" => outcome.label())
            .increment(0);
    }
    let queue = queue.as_str();
    let deliveries = consumer
        .take_until(shutdown.cancelled())
        .filter_map(|delivery| async move {
            delivery
                .inspect_err(|error| tracing::warn!(queue, %error, "consumer error"))
                .ok()
        });
    let mut deliveries = std::pin::pin!(deliveries);
    while let Some(first) = deliveries.next().await {
        activity.held.fetch_add(1, Ordering::AcqRel);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + batching.wait;
        while batch.len() < batching.max {
            match tokio::time::timeout_at(deadline, deliveries.next()).await {
                Ok(Some(delivery)) => {
                    activity.held.fetch_add(1, Ordering::AcqRel);
                    batch.push(delivery);
                }
                Ok(None) | Err(_) => break,
            }
        }
        consume_batch(amqp, topology, route, handler, &batch).await;
        let n = batch.len() as u64;
        activity.settled.fetch_add(n, Ordering::AcqRel);
        activity.held.fetch_sub(n, Ordering::AcqRel);
    }
    if !shutdown.is_cancelled() {
        // The broker cancelled the consumer or the channel died for good: let the process fail
        // (and be restarted) rather than run on without consuming.
        tracing::error!(queue, "consumer ended unexpectedly");
        return Err(RepoError::Disconnected(Dependency::Rabbitmq));
    }
    tracing::info!(queue, "consumer stopped");
    Ok(())
}

/// Handles what the spec's queue holds now, a batch (of up to `batching.max`) at a time, until it
/// is empty; returns how many messages were handled. The step a test drives instead of a live
/// consumer: settling, retries and dead letters are [`run`]'s, and a message sent to a retry
/// queue comes back after its delay, to a later drain.
pub async fn drain<H: Handler>(
    amqp: &Amqp,
    topology: &Topology,
    spec: &ConsumerSpec,
    handler: &H,
) -> Result<usize, RepoError> {
    let queue = topology.queue(spec.route.queue);
    let channel = amqp.create_channel().await?;
    let mut handled = 0;
    loop {
        let mut batch = Vec::new();
        while batch.len() < spec.batching.max.max(1) {
            let got = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await?;
            match got {
                Some(message) => batch.push(message.delivery),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        consume_batch(amqp, topology, &spec.route, handler, &batch).await;
        handled += batch.len();
    }
    let _ = channel.close(200, "drained".into()).await;
    Ok(handled)
}

/// Runs the handler on a batch, carries out its decisions and settles every delivery. When all
/// are acknowledged, one `basic.ack` with `multiple` settles the batch: batches are handled one
/// at a time, so every earlier delivery of this channel is settled already.
async fn consume_batch<H: Handler>(
    amqp: &Amqp,
    topology: &Topology,
    route: &Route,
    handler: &H,
    batch: &[Delivery],
) {
    let messages: Vec<Message<'_>> = batch
        .iter()
        .map(|delivery| {
            let headers = delivery.properties.headers().as_ref();
            Message {
                body: &delivery.data,
                attempt: attempt_of(headers),
                headers,
            }
        })
        .collect();
    // Traced as the first message's trace was (or at the sample ratio when it carries none).
    let decision = messages
        .first()
        .map(|first| traces::decide(|name| first.header(name)))
        .unwrap_or_default();
    let settles = traces::in_scope(decision, async {
        let span = consume_span(route.queue, &messages);
        async {
            let decisions = handler.handle(&messages).await;
            debug_assert_eq!(decisions.len(), messages.len(), "one decision per message");
            futures_util::future::join_all(messages.iter().zip(decisions).map(
                |(message, decision)| async move {
                    let decided = Outcome::decided(decision);
                    let settle = carry_out(amqp, topology, route, handler, message, decision).await;
                    let outcome = decided.settled(settle);
                    metrics::counter!(names::CONSUMED, "queue" => route.queue, "outcome" => outcome.label())
                        .increment(1);
                    settle
                },
            ))
            .await
        }
        .instrument(span)
        .await
    })
    .await;
    if let Some(last) = batch.last()
        && settles.iter().all(|settle| *settle == Settle::Ack)
    {
        let all = BasicAckOptions { multiple: true };
        if let Err(error) = last.ack(all).await {
            tracing::warn!(queue = route.queue, %error, "could not acknowledge a batch");
        }
        return;
    }
    futures_util::future::join_all(
        batch
            .iter()
            .zip(settles)
            .map(|(delivery, how)| settle(route, delivery, how)),
    )
    .await;
}

/// The span of handling a batch: the child of the first message's trace (one buyer's request, in
/// a batch of one), linked to the traces of the others. What the handler does (the MySQL
/// transaction) and the retries it publishes happen inside it, so they join that trace. At
/// `info`, so the worker's log lines about the batch name its queue and trace id.
fn consume_span(queue: &str, messages: &[Message<'_>]) -> Span {
    let span = tracing::info_span!(
        "amqp.consume",
        queue,
        messages = messages.len(),
        trace_id = Empty,
        "otel.name" = Empty,
        "otel.kind" = Empty,
    );
    if traces::traced() {
        span.record("otel.name", format!("consume {queue}"));
        span.record("otel.kind", "consumer");
        // The first message decided the batch; the others' traces are linked.
        traces::continue_trace(&span);
        for message in messages.iter().skip(1) {
            traces::link_from(&span, |name| message.header(name));
        }
        if let Some(trace_id) = traces::trace_id(&span) {
            span.record("trace_id", trace_id);
        }
    }
    span
}

/// Settles one delivery.
async fn settle(route: &Route, delivery: &Delivery, how: Settle) {
    let settled = match how {
        Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
        Settle::Requeue => {
            tokio::time::sleep(REQUEUE_PAUSE).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            delivery.nack(requeue).await
        }
        Settle::Reject => delivery.reject(BasicRejectOptions { requeue: false }).await,
    };
    if let Err(error) = settled {
        // The broker redelivers it after the channel recovers; handlers are idempotent.
        tracing::warn!(queue = route.queue, %error, ?how, "could not settle a message");
    }
}

/// Carries out the handler's decision about one message; says how to settle its delivery.
async fn carry_out<H: Handler>(
    amqp: &Amqp,
    topology: &Topology,
    route: &Route,
    handler: &H,
    message: &Message<'_>,
    decision: Verdict,
) -> Settle {
    match decision {
        Verdict::Done => Settle::Ack,
        Verdict::Poison => Settle::Reject,
        Verdict::Defer(delay) => {
            let Some(delay_route) = route.defer_to else {
                tracing::error!(
                    queue = route.queue,
                    "a handler deferred a message on a queue without a delay route"
                );
                return Settle::Requeue;
            };
            let published = amqp
                .publish(&topology.exchange(), delay_route, message.body, Some(delay))
                .await;
            if published.is_ok() {
                Settle::Ack
            } else {
                Settle::Requeue
            }
        }
        Verdict::RetryLater => match route.retry {
            RetryPolicy::Requeue => Settle::Requeue,
            RetryPolicy::RetryQueues if message.attempt < topology.retries() => {
                // The other headers (the request id) travel on with the retry.
                let mut headers = message.headers.cloned().unwrap_or_default();
                let next = message.attempt + 1;
                headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(next as u32));
                let published = amqp
                    .publish_with_headers(
                        &topology.exchange(),
                        &Topology::retry_routing_key(route.queue, next),
                        message.body,
                        None,
                        headers,
                    )
                    .await;
                if published.is_ok() {
                    Settle::Ack
                } else {
                    Settle::Requeue
                }
            }
            RetryPolicy::RetryQueues => {
                if handler.exhausted(message).await {
                    Settle::Reject
                } else {
                    Settle::Requeue
                }
            }
        },
    }
}

/// Retries a message has been through (the header the retry path sets).
fn attempt_of(headers: Option<&FieldTable>) -> usize {
    match headers.and_then(|headers| headers.inner().get(ATTEMPT_HEADER)) {
        Some(AMQPValue::LongUInt(n)) => *n as usize,
        Some(AMQPValue::LongInt(n)) => (*n).max(0) as usize,
        Some(AMQPValue::LongLongInt(n)) => (*n).max(0) as usize,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_settled_message_counts_as_exactly_one_known_outcome() {
        let retried = Outcome::decided(Verdict::RetryLater);
        assert_eq!(retried.settled(Settle::Ack), Outcome::Retried);
        assert_eq!(retried.settled(Settle::Reject), Outcome::DeadLettered);
        assert_eq!(retried.settled(Settle::Requeue), Outcome::Requeued);
        assert_eq!(
            Outcome::decided(Verdict::Done).settled(Settle::Ack),
            Outcome::Processed
        );
        assert_eq!(
            Outcome::decided(Verdict::Poison).settled(Settle::Reject),
            Outcome::Rejected
        );
        let deferred = Outcome::decided(Verdict::Defer(Duration::from_secs(1)));
        assert_eq!(deferred.settled(Settle::Ack), Outcome::Deferred);
        assert_eq!(deferred.settled(Settle::Requeue), Outcome::Requeued);
        let labels: Vec<&str> = Outcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(
            labels,
            [
                "processed",
                "retried",
                "requeued",
                "deferred",
                "dead_lettered",
                "rejected"
            ]
        );
    }

    #[test]
    fn the_attempt_header_reads_any_integer_width_and_defaults_to_zero() {
        let mut headers = FieldTable::default();
        assert_eq!(attempt_of(None), 0);
        assert_eq!(attempt_of(Some(&headers)), 0);
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(2));
        assert_eq!(attempt_of(Some(&headers)), 2);
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(-1));
        assert_eq!(attempt_of(Some(&headers)), 0);
    }

    #[test]
    fn text_headers_are_read_whatever_their_amqp_string_type() {
        let mut headers = FieldTable::default();
        headers.insert("x-request-id".into(), AMQPValue::LongString("abc".into()));
        let message = Message {
            body: b"{}",
            attempt: 0,
            headers: Some(&headers),
        };
        assert_eq!(message.header("x-request-id").as_deref(), Some("abc"));
        assert_eq!(message.header("missing"), None);
    }
}
