//! The background role (`spike worker`, or inside `spike all`): the outbox relay, the
//! `order.close` consumer, the `spike.order.create` consumer, and the flash-sale housekeeping
//! loop (warm-up scheduler and reconciler). Every handler is idempotent, so any number of
//! workers may run. The handlers here decide; `repo::amqp::consumer` acknowledges, retries and
//! dead-letters.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::repo::amqp::consumer::{
    self, Activity, Batching, Decision, Handler, Message, RetryPolicy, Route,
};
use crate::repo::amqp::{ORDER_CLOSE, ORDER_CLOSE_DELAY, ORDER_CREATE};
use crate::repo::redis::consumer_reports::{ConsumerReport, ConsumerReports};
use crate::repo::{Infra, RepoError};
use crate::service::flash_sale::{FlashSale, Fulfilment};
use crate::service::messages::{OrderCloseMessage, REQUEST_ID_HEADER, ReservationGroup};
use crate::service::orders::OrderService;
use crate::service::outbox::OutboxRelay;
use crate::service::store_gauges::{self, Sampled};
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
    let gauges = tokio::spawn(store_gauges::sample_every(
        infra.clone(),
        Sampled::PoolQueuesAndOutbox,
        config.telemetry.metrics_sample_interval,
        shutdown.clone(),
    ));
    let housekeeping = tokio::spawn(run_housekeeping(
        flash_sale.clone(),
        config.flash_sale.scheduler_interval,
        shutdown.clone(),
    ));

    let prefetch = config.amqp.prefetch;
    let batching = Batching {
        max: usize::from(config.flash_sale.batch_max),
        wait: config.flash_sale.batch_wait,
    };
    // What the order consumer holds, reported for the reconciler (it proves a quiet queue
    // before releasing units a re-warm held back).
    let creator_activity = Arc::new(Activity::default());
    let reporter = tokio::spawn(report_activity(
        ConsumerReports::new(infra.redis.clone(), &config.redis.prefix, ORDER_CREATE),
        creator_activity.clone(),
        (config.flash_sale.scheduler_interval / 2).max(Duration::from_millis(50)),
        shutdown.clone(),
    ));
    let closer_activity = Activity::default();
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
        // Close messages are handled side by side, as many as are delivered.
        Batching {
            max: usize::from(prefetch),
            wait: std::time::Duration::ZERO,
        },
        prefetch,
        shutdown.clone(),
        &closer_handler,
        &closer_activity,
    );
    let creator = consumer::run(
        &infra.amqp,
        &infra.topology,
        Route {
            queue: ORDER_CREATE,
            retry: RetryPolicy::RetryQueues,
            defer_to: None,
        },
        batching,
        config.flash_sale.order_create_prefetch(prefetch),
        shutdown.clone(),
        &creator_handler,
        &creator_activity,
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
    if gauges.await.is_err() {
        tracing::error!("store gauge sampler panicked");
    }
    if reporter.await.is_err() {
        tracing::error!("consumer activity reporter panicked");
    }
    closed
}

/// Every `every` until `shutdown`: writes what this worker's order consumer holds and has
/// settled (see `repo::redis::consumer_reports`). A failed write is logged; the report goes
/// stale and the reconciler releases nothing until it is fresh again.
async fn report_activity(
    reports: ConsumerReports,
    activity: Arc<Activity>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let consumer = uuid::Uuid::new_v4().simple().to_string();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let (held, settled) = activity.snapshot();
        let at_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let report = ConsumerReport {
            held,
            settled,
            at_ms,
        };
        if let Err(error) = reports.write(&consumer, report).await {
            tracing::warn!(%error, "could not report the order consumer's activity");
        }
    }
    // A stopped consumer holds nothing: its report goes now. (A killed worker's report is
    // ignored once stale and dropped by the reconciler after a minute.)
    let _ = reports.forget(&[consumer]).await;
}

/// Every `interval` until `shutdown`: warm the events about to start (or running cold), then
/// reconcile stale reservations and the ledgers, then give ended events' unsold units back to
/// their products. A failed pass is logged and tried next time.
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
        if let Err(error) = flash_sale.reconciler.return_unsold_units().await {
            tracing::warn!(%error, "unsold units pass failed");
        }
    }
}

/// `spike.order.create`: turns a batch of messages, each a group of reservations, into orders
/// (one transaction, see `Fulfilment::create_orders`). A reservation that fails goes through the retry queues (their
/// TTLs are the backoff); after the last one it is compensated and dead-letters to
/// `spike.order.create.dead`.
struct OrderCreator {
    fulfilment: Fulfilment,
}

impl Handler for OrderCreator {
    async fn handle(&self, messages: &[Message<'_>]) -> Vec<Decision> {
        let mut decisions = vec![Decision::Done; messages.len()];
        // Every reservation of every message in one batch; `owners[i]` is the message that
        // carried reservation `i`.
        let mut reservations = Vec::with_capacity(messages.len());
        let mut owners = Vec::with_capacity(messages.len());
        for (position, message) in messages.iter().enumerate() {
            match serde_json::from_slice::<ReservationGroup>(message.body) {
                Ok(group) => {
                    owners.extend(std::iter::repeat_n(position, group.reservations.len()));
                    reservations.extend(group.reservations);
                }
                Err(error) => {
                    tracing::error!(%error, "malformed spike.order.create message dead-lettered");
                    decisions[position] = Decision::Poison;
                }
            }
        }
        let span = tracing::info_span!("spike.order.create", reservations = reservations.len());
        let results = self
            .fulfilment
            .create_orders(&reservations)
            .instrument(span)
            .await;
        // A message with any failed reservation is retried whole: the others are done by then,
        // and a redelivery finds their orders.
        for ((reservation, result), position) in reservations.iter().zip(results).zip(owners) {
            if let Err(error) = result {
                let message = &messages[position];
                tracing::warn!(
                    ticket = reservation.ticket,
                    request_id = reservation
                        .request_id
                        .clone()
                        .or_else(|| message.header(REQUEST_ID_HEADER))
                        .unwrap_or_default(),
                    attempt = message.attempt,
                    %error,
                    "creating a flash-sale order failed"
                );
                decisions[position] = Decision::RetryLater;
            }
        }
        decisions
    }

    async fn exhausted(&self, message: &Message<'_>) -> bool {
        // `handle` has parsed it already: only well-formed messages reach here.
        let Ok(group) = serde_json::from_slice::<ReservationGroup>(message.body) else {
            return true;
        };
        let mut compensated = true;
        for reservation in &group.reservations {
            tracing::error!(
                ticket = reservation.ticket,
                attempt = message.attempt,
                "creating a flash-sale order failed for good; giving the reservation back"
            );
            // A reservation of the group that did become an order is only settled as success.
            compensated &= self.fulfilment.give_up(reservation).await.is_ok();
        }
        compensated
    }
}

/// `order.close`: closes the orders of each message that are still unpaid and due, one
/// transaction per message (a batch of flash-sale orders, or one regular order).
struct OrderCloser {
    orders: OrderService,
}

impl Handler for OrderCloser {
    async fn handle(&self, messages: &[Message<'_>]) -> Vec<Decision> {
        futures_util::future::join_all(messages.iter().map(|message| self.close(message))).await
    }
}

impl OrderCloser {
    async fn close(&self, message: &Message<'_>) -> Decision {
        let close: OrderCloseMessage = match serde_json::from_slice(message.body) {
            Ok(close) => close,
            Err(error) => {
                tracing::error!(%error, "malformed order.close message dropped");
                return Decision::Poison;
            }
        };
        match self.orders.close_expired_many(&close.order_ids).await {
            Ok(report) => {
                if !report.unknown.is_empty() {
                    tracing::warn!(order_ids = ?report.unknown, "order.close for unknown orders");
                }
                // Orders still ahead of their deadline (it was raised): the message waits out
                // the rest in the delay queue; the ones closed now are skipped next time.
                match report.not_due {
                    Some(remaining) => Decision::Defer(remaining),
                    None => Decision::Done,
                }
            }
            Err(error) => {
                tracing::warn!(order_ids = ?close.order_ids, %error, "closing orders failed; will retry");
                Decision::RetryLater
            }
        }
    }
}
