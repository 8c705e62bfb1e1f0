//! The outbox relay: publishes the messages that transactions wrote to the `outbox` table, a page
//! at a time with pipelined publisher confirms, and stamps the page published with one UPDATE. Runs in the worker; any number of relays may
//! run at once (rows are claimed with `FOR UPDATE SKIP LOCKED`).
//!
//! Delivery is at least once: a crash between the broker's confirm and the commit publishes the
//! message again later, so every consumer is idempotent.

use std::sync::Arc;
use std::time::Duration;

use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

use super::ServiceError;
use crate::repo::Amqp;
use crate::repo::mysql::outbox;

/// Rows claimed per round.
const BATCH: u32 = 100;

#[derive(Clone)]
pub struct OutboxRelay {
    db: MySqlPool,
    amqp: Arc<Amqp>,
    exchange: String,
    idle_wait: Duration,
}

impl OutboxRelay {
    pub fn new(
        db: MySqlPool,
        amqp: Arc<Amqp>,
        exchange: String,
        idle_wait: Duration,
    ) -> OutboxRelay {
        OutboxRelay {
            db,
            amqp,
            exchange,
            idle_wait,
        }
    }

    /// Relays until `shutdown`, polling every `idle_wait` while there is nothing to send.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("outbox relay started");
        while !shutdown.is_cancelled() {
            let sent = self.relay_batch().await.unwrap_or_else(|error| {
                tracing::warn!(%error, "outbox relay round failed");
                0
            });
            if sent < BATCH as usize {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(self.idle_wait) => {}
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Publishes one batch; returns how many messages went out.
    pub async fn relay_batch(&self) -> Result<usize, ServiceError> {
        let mut tx = outbox::begin_relay(&self.db).await?;
        let batch = outbox::claim(&mut tx, BATCH).await?;
        // The whole page goes out at once and its confirms are awaited together.
        let messages: Vec<(&str, &[u8])> = batch
            .iter()
            .map(|message| (message.topic.as_str(), message.payload.as_bytes()))
            .collect();
        let results = self.amqp.publish_many(&self.exchange, &messages).await;
        let mut published = Vec::with_capacity(batch.len());
        for (message, result) in batch.iter().zip(results) {
            match result {
                Ok(()) => published.push(message.id),
                Err(error) => {
                    // Sent again next round (consumers are idempotent).
                    tracing::warn!(outbox_id = message.id, %error, "outbox publish failed; will retry");
                    outbox::record_failure(&mut tx, message.id, &error.to_string()).await?;
                }
            }
        }
        outbox::mark_published(&mut tx, &published).await?;
        tx.commit().await?;
        if !published.is_empty() {
            tracing::debug!(count = published.len(), "outbox messages published");
        }
        Ok(published.len())
    }
}
