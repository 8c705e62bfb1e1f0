//! Confirmed publishing: a message counts as sent only once the broker has confirmed it, stored
//! and routed to at least one queue.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use tracing::{Instrument, Span};

use super::Amqp;
use crate::repo::{Dependency, RepoError};
use crate::telemetry::metrics::names;
use crate::telemetry::traces;

/// How long a publish may wait for the broker's confirm before it counts as failed.
pub(super) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

impl Amqp {
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
        let span = publish_span(routing_key, 1);
        // Pinned where it is made: the send future is large, and handing it over by value would
        // copy it at every layer (measured: 1.3–1.4× the instructions of a whole buy).
        let publisher = self.live_link().await?.publisher();
        let sent = std::pin::pin!(send(
            &publisher,
            exchange,
            routing_key,
            payload,
            expiration,
            headers
        ));
        let published = confirmed_within(sent).instrument(span).await;
        if matches!(published, Err(RepoError::NotConfirmed(Refusal::Nacked))) {
            self.renew_publisher(&publisher).await;
        }
        published
    }

    /// Publishes persistent JSON messages `(routing_key, payload)` one after the other without
    /// waiting in between, then waits for all their confirms at once: one round trip to the
    /// broker for the lot instead of one each. One result per message, in order.
    pub async fn publish_many(
        &self,
        exchange: &str,
        messages: &[(&str, &[u8])],
    ) -> Vec<Result<(), RepoError>> {
        let span = publish_span(
            messages.first().map_or("", |(routing_key, _)| *routing_key),
            messages.len(),
        );
        let publisher = match self.live_link().await {
            Ok(link) => link.publisher(),
            Err(error) => {
                tracing::debug!(%error, "no rabbitmq connection to publish on");
                return messages
                    .iter()
                    .map(|_| Err(RepoError::Disconnected(Dependency::Rabbitmq)))
                    .collect();
            }
        };
        let mut confirms = Vec::with_capacity(messages.len());
        for (routing_key, payload) in messages {
            confirms.push(
                send(
                    &publisher,
                    exchange,
                    routing_key,
                    payload,
                    None,
                    FieldTable::default(),
                )
                .instrument(span.clone())
                .await,
            );
        }
        let waits = confirms
            .into_iter()
            .map(|sent| confirmed_within(std::future::ready(sent)));
        let published = futures_util::future::join_all(waits).instrument(span).await;
        if published
            .iter()
            .any(|result| matches!(result, Err(RepoError::NotConfirmed(Refusal::Nacked))))
        {
            self.renew_publisher(&publisher).await;
        }
        published
    }
}

/// Sends one message on the confirm channel `publisher`; the returned future resolves with the
/// broker's confirm.
async fn send(
    publisher: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    expiration: Option<Duration>,
    headers: FieldTable,
) -> Result<PublisherConfirm, RepoError> {
    // The trace context travels with the message; a retry replaces the one it carried.
    let mut headers = headers;
    for (name, value) in traces::context_headers(&Span::current()) {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
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
    Ok(publisher
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload,
            properties,
        )
        .await?)
}

/// Why the broker did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unroutable (no queue bound)")]
    Unroutable,
    #[error("nacked by the broker")]
    Nacked,
    #[error("confirms not enabled")]
    ConfirmsOff,
}

/// Waits for the broker's confirm of a message being `sent`, sending included, for at most
/// [`CONFIRM_TIMEOUT`]; counts how the publish ended.
async fn confirmed_within(
    sent: impl Future<Output = Result<PublisherConfirm, RepoError>>,
) -> Result<(), RepoError> {
    let confirm = async { sent.await?.await.map_err(RepoError::from) };
    let published = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Ok(confirmation) => confirmation.and_then(confirmed),
        Err(_) => Err(RepoError::Timeout(Dependency::Rabbitmq, CONFIRM_TIMEOUT)),
    };
    count(&published);
    published
}

/// What a confirm means: `Ok` only for a plain ack (stored, and routed to at least one queue:
/// `mandatory` turns "no queue bound" into a returned message).
fn confirmed(confirmation: Confirmation) -> Result<(), RepoError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(RepoError::NotConfirmed(Refusal::Unroutable)),
        Confirmation::Nack(_) => Err(RepoError::NotConfirmed(Refusal::Nacked)),
        Confirmation::NotRequested => Err(RepoError::NotConfirmed(Refusal::ConfirmsOff)),
    }
}

/// The span of one publish (or of `count` published together and confirmed at once).
fn publish_span(routing_key: &str, count: usize) -> Span {
    tracing::debug_span!(
        "amqp.publish",
        "otel.kind" = "producer",
        "otel.name" = format!("publish {routing_key}"),
        "messaging.system" = "rabbitmq",
        "messaging.destination.name" = routing_key,
        "messaging.batch.message_count" = count,
    )
}

/// Counts a publish in `spike_amqp_publishes_total` by how it ended.
fn count(published: &Result<(), RepoError>) {
    let result = match published {
        Ok(()) => "confirmed",
        Err(RepoError::NotConfirmed(Refusal::Nacked)) => "nacked",
        Err(RepoError::NotConfirmed(Refusal::Unroutable)) => "unroutable",
        Err(RepoError::Timeout(..)) => "timed_out",
        Err(_) => "failed",
    };
    metrics::counter!(names::PUBLISHES, "result" => result).increment(1);
}
