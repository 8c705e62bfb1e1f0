//! The consuming loop shared by every queue: bounded prefetch, manual acknowledgements, and a
//! handler that decides per message whether it is done, should come back, or is poison.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::repo::RepoError;

/// What to do with a message once its handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (including "already done"): remove it from the queue.
    Ack,
    /// A transient failure: put it back for another attempt (after a short pause, so a broken
    /// dependency is not hammered in a tight loop).
    Retry,
    /// It can never succeed (malformed): drop it, or dead-letter it where the queue has a DLX.
    Reject,
}

/// Pause before a message handed back with [`Outcome::Retry`] is requeued.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Consumes `queue` until `shutdown`, running up to `prefetch` handlers at once. Messages in
/// flight at shutdown finish and are acknowledged; unacknowledged ones return to the queue when
/// the channel closes, so nothing is lost.
pub async fn run<H, Fut>(
    channel: Channel,
    queue: &str,
    prefetch: u16,
    shutdown: CancellationToken,
    handler: H,
) -> Result<(), RepoError>
where
    H: Fn(Delivery) -> Fut,
    Fut: Future<Output = (Delivery, Outcome)>,
{
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            format!("spike-{}", uuid::Uuid::new_v4().simple()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue, prefetch, "consuming");
    consumer
        .take_until(shutdown.cancelled())
        .for_each_concurrent(usize::from(prefetch), |delivery| async {
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err(error) => {
                    tracing::warn!(queue, %error, "consumer error");
                    return;
                }
            };
            let (delivery, outcome) = handler(delivery).await;
            let settled = match outcome {
                Outcome::Ack => delivery.ack(BasicAckOptions::default()).await,
                Outcome::Retry => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    let requeue = BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    };
                    delivery.nack(requeue).await
                }
                Outcome::Reject => delivery.reject(BasicRejectOptions { requeue: false }).await,
            };
            if let Err(error) = settled {
                // The broker redelivers it after the channel recovers; handlers are idempotent.
                tracing::warn!(queue, %error, ?outcome, "could not settle a message");
            }
        })
        .await;
    if !shutdown.is_cancelled() {
        // The broker cancelled the consumer or the channel died for good: let the process fail
        // (and be restarted) rather than run on without consuming.
        tracing::error!(queue, "consumer ended unexpectedly");
        return Err(RepoError::Disconnected(crate::repo::Dependency::Rabbitmq));
    }
    tracing::info!(queue, "consumer stopped");
    Ok(())
}
