//! The background role (`spike worker`, or inside `spike all`): the outbox relay, the
//! `order.close` consumer, the `spike.order.create` consumer, and the flash-sale housekeeping
//! loop (warm-up scheduler and reconciler). Every handler is idempotent, so any number of
//! workers may run. The handlers here decide; `repo::amqp::consumer` acknowledges, retries and
//! dead-letters.

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::repo::amqp::consumer::{self, Decision, Handler, Message, RetryPolicy, Route};
use crate::repo::amqp::{ORDER_CLOSE, ORDER_CLOSE_DELAY, ORDER_CREATE};
use crate::repo::{Infra, RepoError};
use crate::service::flash_sale::{FlashSale, Fulfilment};
use crate::service::messages::{OrderCloseMessage, REQUEST_ID_HEADER, ReservationMessage};
use crate::service::orders::{CloseOutcome, OrderService};
use crate::service::outbox::OutboxRelay;
use crate::startup::Services;

/// Runs the background tasks with `services` (the same ones the HTTP API uses in `spike all`)
/// until `shutdown` is cancelled; returns when all have stopped.
pub async fn run(
    config: &Config,
    infra: Infra,
    services: Services,
    shutdown: CancellationToken,
) -> Result<(), RepoError> {
    let Services {
        orders, flash_sale, ..
    } = services;
    let relay = OutboxRelay::new(
        infra.db.clone(),
        infra.amqp.clone(),
        infra.topology.exchange(),
        config.orders.outbox_poll_interval,
    );
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let housekeeping = tokio::spawn(run_housekeeping(
        flash_sale.clone(),
        config.flash_sale.scheduler_interval,
        shutdown.clone(),
    ));

    let prefetch = config.amqp.prefetch;
    let closer_handler = OrderCloser { orders };
    let creator_handler = OrderCreator {
        fulfilment: flash_sale.fulfilment,
    };
    let closer = consumer::run(
        &infra.amqp,
        &infra.topology,
        Route {
            queue: ORDER_CLOSE,
            retry: RetryPolicy::Requeue,
            defer_to: Some(ORDER_CLOSE_DELAY),
        },
        prefetch,
        shutdown.clone(),
        &closer_handler,
    );
    let creator = consumer::run(
        &infra.amqp,
        &infra.topology,
        Route {
            queue: ORDER_CREATE,
            retry: RetryPolicy::RetryQueues,
            defer_to: None,
        },
        prefetch,
        shutdown.clone(),
        &creator_handler,
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
    flash_sale: FlashSale,
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
        if let Err(error) = flash_sale.warmup.warm_due_events().await {
            tracing::warn!(%error, "warm-up scheduler pass failed");
        }
        if let Err(error) = flash_sale.reconciler.reconcile().await {
            tracing::warn!(%error, "reconciler pass failed");
        }
    }
}

/// `spike.order.create`: turns a reservation into an order. A failure goes through the retry
/// queues (their TTLs are the backoff); after the last one the reservation is compensated and
/// the message dead-letters to `spike.order.create.dead`.
struct OrderCreator {
    fulfilment: Fulfilment,
}

impl Handler for OrderCreator {
    async fn handle(&self, message: &Message<'_>) -> Decision {
        let reservation: ReservationMessage = match serde_json::from_slice(message.body) {
            Ok(reservation) => reservation,
            Err(error) => {
                tracing::error!(%error, "malformed spike.order.create message dead-lettered");
                return Decision::Poison;
            }
        };
        let request_id = message.header(REQUEST_ID_HEADER).unwrap_or_default();
        let span = tracing::info_span!(
            "spike.order.create",
            ticket = reservation.ticket,
            request_id
        );
        match self
            .fulfilment
            .create_order(&reservation)
            .instrument(span)
            .await
        {
            Ok(_) => Decision::Done,
            Err(error) => {
                tracing::warn!(
                    ticket = reservation.ticket,
                    attempt = message.attempt,
                    %error,
                    "creating a flash-sale order failed"
                );
                Decision::RetryLater
            }
        }
    }

    async fn exhausted(&self, message: &Message<'_>) -> bool {
        // `handle` has parsed it already: only well-formed messages reach here.
        let Ok(reservation) = serde_json::from_slice::<ReservationMessage>(message.body) else {
            return true;
        };
        tracing::error!(
            ticket = reservation.ticket,
            attempt = message.attempt,
            "creating a flash-sale order failed for good; giving the reservation back"
        );
        self.fulfilment.give_up(&reservation).await.is_ok()
    }
}

/// `order.close`: closes the order if it is still unpaid and due.
struct OrderCloser {
    orders: OrderService,
}

impl Handler for OrderCloser {
    async fn handle(&self, message: &Message<'_>) -> Decision {
        let close: OrderCloseMessage = match serde_json::from_slice(message.body) {
            Ok(close) => close,
            Err(error) => {
                tracing::error!(%error, "malformed order.close message dropped");
                return Decision::Poison;
            }
        };
        match self.orders.close_expired(close.order_id).await {
            Ok(CloseOutcome::Closed | CloseOutcome::AlreadySettled) => Decision::Done,
            Ok(CloseOutcome::Unknown) => {
                tracing::warn!(
                    order_id = close.order_id,
                    "order.close for an unknown order"
                );
                Decision::Done
            }
            // Wait out the rest in the delay queue, with a per-message TTL for the remainder.
            Ok(CloseOutcome::NotDue(remaining)) => Decision::Defer(remaining),
            Err(error) => {
                tracing::warn!(order_id = close.order_id, %error, "closing an order failed; will retry");
                Decision::RetryLater
            }
        }
    }
}
