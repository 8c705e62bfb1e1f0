//! The background role (`spike worker`, or inside `spike all`).
//!
//! It will run the RabbitMQ consumers (order creation, order close), the outbox relay, the
//! warm-up scheduler and the reconciler as the issues that need them land. Today it holds the
//! connections, whose start-up already declared the RabbitMQ topology, and waits for shutdown.

use tokio_util::sync::CancellationToken;

use crate::repo::Infra;

/// Runs the background tasks until `shutdown` is cancelled.
pub async fn run(infra: Infra, shutdown: CancellationToken) {
    let queues = infra.topology.queue_names();
    tracing::info!(
        ?queues,
        "worker started; topology declared, no consumers registered yet"
    );
    shutdown.cancelled().await;
    tracing::info!("worker stopped");
}
