//! The outbox relay: publishes the messages that transactions wrote to the `outbox` table, a page
//! at a time with pipelined publisher confirms, and stamps the page published with one UPDATE. Runs in the worker; any number of relays may
//! run at once (rows are claimed with `FOR UPDATE SKIP LOCKED`).
//!
//! Delivery is at least once: a crash between the broker's confirm and the commit publishes the
//! message again later, so every consumer is idempotent.

use std::sync::Arc;

use sqlx::MySqlPool;
use tracing::Instrument;

use crate::telemetry::traces;

use super::ServiceError;
use crate::repo::Amqp;
use crate::repo::mysql::outbox::{self, OutboxMessage};

/// Rows claimed per round.
const BATCH: u32 = 100;

#[derive(Clone)]
pub struct OutboxRelay {
    db: MySqlPool,
    amqp: Arc<Amqp>,
    exchange: String,
}

impl OutboxRelay {
    pub fn new(db: MySqlPool, amqp: Arc<Amqp>, exchange: String) -> OutboxRelay {
        OutboxRelay { db, amqp, exchange }
    }

    /// Publishes batches until one comes back short (the outbox held no more then); returns how
    /// many messages went out. The worker runs it every `SPIKE_OUTBOX_POLL_INTERVAL`.
    pub async fn relay_all(&self) -> Result<usize, ServiceError> {
        let mut sent = 0;
        loop {
            let batch = self.relay_batch().await?;
            sent += batch;
            if batch < BATCH as usize {
                return Ok(sent);
            }
        }
    }

    /// Publishes one batch; returns how many messages went out.
    async fn relay_batch(&self) -> Result<usize, ServiceError> {
        let mut tx = outbox::begin_relay(&self.db).await?;
        let batch = outbox::claim(&mut tx, BATCH).await?;
        if batch.is_empty() {
            // An idle poll (several a second) is no trace of its own.
            tx.commit().await?;
            return Ok(0);
        }
        // A page is traced at the sample ratio, as a new trace.
        traces::in_scope(traces::decide(|_| None), async {
            let span = tracing::debug_span!(
                "mysql.tx relay_outbox",
                "otel.kind" = "client",
                "db.system" = "mysql",
                messages = batch.len()
            );
            self.publish_claimed(tx, batch).instrument(span).await
        })
        .await
    }

    /// Publishes the claimed page and marks it in the claiming transaction.
    async fn publish_claimed(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::MySql>,
        batch: Vec<OutboxMessage>,
    ) -> Result<usize, ServiceError> {
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
