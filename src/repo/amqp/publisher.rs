//! Confirmed publishing: a message counts as sent only once the broker has confirmed it, stored
//! and routed to at least one queue.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};

use super::Amqp;
use crate::repo::{Dependency, RepoError};

/// How long a publish may wait for the broker's confirm before it counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// [`Amqp::publish`] with text headers (`name`, `value`).
    pub async fn publish_with_text_headers(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        text_headers: &[(&str, &str)],
    ) -> Result<(), RepoError> {
        let mut headers = FieldTable::default();
        for (name, value) in text_headers {
            headers.insert((*name).into(), AMQPValue::LongString((*value).into()));
        }
        self.publish_with_headers(exchange, routing_key, payload, None, headers)
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
}
