//! The background role (`spike worker`, or inside `spike all`): the outbox relay, the
//! `order.close` consumer, the `spike.order.create` consumer, and the flash-sale housekeeping
//! loop (warm-up scheduler and reconciler). Every handler is idempotent, so any number of
//! workers may run.

use lapin::message::Delivery;
use lapin::types::AMQPValue;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::repo::amqp::{
    ATTEMPT_HEADER, ORDER_CLOSE, ORDER_CLOSE_DELAY, ORDER_CREATE, Topology, consumer,
};
use crate::repo::{Infra, RepoError};
use crate::service::orders::{CloseOutcome, OrderCloseMessage, OrderService};
use crate::service::outbox::OutboxRelay;
use crate::service::spike::{REQUEST_ID_HEADER, ReservationMessage, SpikeService};
use crate::startup::Services;
use consumer::Outcome;
use tracing::Instrument;

/// Runs the background tasks with `services` (the same ones the HTTP API uses in `spike all`)
/// until `shutdown` is cancelled; returns when all have stopped.
pub async fn run(
    config: &Config,
    infra: Infra,
    services: Services,
    shutdown: CancellationToken,
) -> Result<(), RepoError> {
    let Services {
        orders,
        flash_sale: spike,
        ..
    } = services;
    let relay = OutboxRelay::new(
        infra.db.clone(),
        infra.amqp.clone(),
        infra.topology.exchange(),
        config.orders.outbox_poll_interval,
    );
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let housekeeping = tokio::spawn(run_housekeeping(
        spike.clone(),
        config.flash_sale.scheduler_interval,
        shutdown.clone(),
    ));

    let close_queue = infra.topology.queue(ORDER_CLOSE);
    let closer = consumer::run(
        infra.amqp.create_channel().await?,
        &close_queue,
        config.amqp.prefetch,
        shutdown.clone(),
        |delivery| handle_order_close(&orders, &infra, delivery),
    );
    let create_queue = infra.topology.queue(ORDER_CREATE);
    let creator = consumer::run(
        infra.amqp.create_channel().await?,
        &create_queue,
        config.amqp.prefetch,
        shutdown.clone(),
        |delivery| handle_order_create(&spike, &infra, delivery),
    );
    // The first consumer to stop (shutdown, or a failure) stops the others.
    let closed = tokio::select! {
        result = closer => result,
        result = creator => result,
    };
    shutdown.cancel();
    if relay.await.is_err() {
        tracing::error!("outbox relay task panicked");
    }
    if housekeeping.await.is_err() {
        tracing::error!("flash-sale housekeeping task panicked");
    }
    closed
}

/// Every `interval` until `shutdown`: warm the events about to start (or running cold), then
/// reconcile stale reservations and the ledgers. A failed pass is logged and tried next time.
async fn run_housekeeping(
    spike: SpikeService,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(error) = spike.warm_due_events().await {
            tracing::warn!(%error, "warm-up scheduler pass failed");
        }
        if let Err(error) = spike.reconcile().await {
            tracing::warn!(%error, "reconciler pass failed");
        }
    }
}

/// One `spike.order.create` message: turn the reservation into an order. A failure goes to the
/// next retry queue (its TTL is the backoff); after the last retry the reservation is
/// compensated and the message dead-letters to `spike.order.create.dead`.
async fn handle_order_create(
    spike: &SpikeService,
    infra: &Infra,
    delivery: Delivery,
) -> (Delivery, Outcome) {
    let message: ReservationMessage = match serde_json::from_slice(&delivery.data) {
        Ok(message) => message,
        Err(error) => {
            tracing::error!(%error, "malformed spike.order.create message dead-lettered");
            return (delivery, Outcome::Reject);
        }
    };
    let request_id = header_text(&delivery, REQUEST_ID_HEADER).unwrap_or_default();
    let span = tracing::info_span!("spike.order.create", ticket = message.ticket, request_id);
    let error = match spike.create_order(&message).instrument(span).await {
        Ok(_) => return (delivery, Outcome::Ack),
        Err(error) => error,
    };
    let attempt = attempt_of(&delivery);
    if attempt < infra.topology.retries() {
        tracing::warn!(ticket = message.ticket, attempt, %error, "creating a flash-sale order failed; retrying later");
        // The other headers (the request id) travel on with the retry.
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongUInt(attempt as u32 + 1),
        );
        let routing_key = Topology::retry_routing_key(attempt + 1);
        let sent = infra
            .amqp
            .publish_with_headers(
                &infra.topology.exchange(),
                &routing_key,
                &delivery.data,
                None,
                headers,
            )
            .await;
        return match sent {
            Ok(()) => (delivery, Outcome::Ack),
            Err(_) => (delivery, Outcome::Retry),
        };
    }
    tracing::error!(ticket = message.ticket, attempt, %error, "creating a flash-sale order failed for good");
    match spike.give_up(&message).await {
        Ok(()) => (delivery, Outcome::Reject),
        Err(_) => (delivery, Outcome::Retry),
    }
}

/// A text header of the message.
fn header_text(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// Retries a message has been through (the header the retry path sets).
fn attempt_of(delivery: &Delivery) -> usize {
    let value = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(ATTEMPT_HEADER).cloned());
    match value {
        Some(AMQPValue::LongUInt(n)) => n as usize,
        Some(AMQPValue::LongInt(n)) => n.max(0) as usize,
        Some(AMQPValue::LongLongInt(n)) => n.max(0) as usize,
        _ => 0,
    }
}

/// One `order.close` message: close the order if it is still unpaid and due.
async fn handle_order_close(
    orders: &OrderService,
    infra: &Infra,
    delivery: Delivery,
) -> (Delivery, Outcome) {
    let message: OrderCloseMessage = match serde_json::from_slice(&delivery.data) {
        Ok(message) => message,
        Err(error) => {
            tracing::error!(%error, "malformed order.close message dropped");
            return (delivery, Outcome::Reject);
        }
    };
    let outcome = match orders.close_expired(message.order_id).await {
        Ok(CloseOutcome::Closed | CloseOutcome::AlreadySettled) => Outcome::Ack,
        Ok(CloseOutcome::Unknown) => {
            tracing::warn!(
                order_id = message.order_id,
                "order.close for an unknown order"
            );
            Outcome::Ack
        }
        Ok(CloseOutcome::NotDue(remaining)) => {
            // Wait out the rest in the delay queue, with a per-message TTL for the remainder.
            let republished = infra
                .amqp
                .publish(
                    &infra.topology.exchange(),
                    ORDER_CLOSE_DELAY,
                    &delivery.data,
                    Some(remaining),
                )
                .await;
            match republished {
                Ok(()) => Outcome::Ack,
                Err(_) => Outcome::Retry,
            }
        }
        Err(error) => {
            tracing::warn!(order_id = message.order_id, %error, "closing an order failed; will retry");
            Outcome::Retry
        }
    };
    (delivery, outcome)
}
