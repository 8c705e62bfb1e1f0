//! The handlers of the worker's two consumers: what to do with each message. The consuming loop
//! (`repo::amqp::consumer`) acknowledges, retries and dead-letters as they decide.

use tracing::Instrument;

use crate::repo::amqp::consumer::{Handler, Message, Verdict};
use crate::service::flash_sale::Fulfilment;
use crate::service::messages::{OrderCloseMessage, REQUEST_ID_HEADER, ReservationGroup};
use crate::service::orders::OrderService;

/// `spike.order.create`: turns a batch of messages, each a group of reservations, into orders
/// (one transaction, see `Fulfilment::create_orders`). A reservation that fails goes through the retry queues (their
/// TTLs are the backoff); after the last one it is compensated and dead-letters to
/// `spike.order.create.dead`.
pub(super) struct OrderCreator {
    pub(super) fulfilment: Fulfilment,
}

impl Handler for OrderCreator {
    async fn handle(&self, messages: &[Message<'_>]) -> Vec<Verdict> {
        let mut decisions = vec![Verdict::Done; messages.len()];
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
                    decisions[position] = Verdict::Poison;
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
                decisions[position] = Verdict::RetryLater;
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
pub(super) struct OrderCloser {
    pub(super) orders: OrderService,
}

impl Handler for OrderCloser {
    async fn handle(&self, messages: &[Message<'_>]) -> Vec<Verdict> {
        futures_util::future::join_all(messages.iter().map(|message| self.close(message))).await
    }
}

impl OrderCloser {
    async fn close(&self, message: &Message<'_>) -> Verdict {
        let close: OrderCloseMessage = match serde_json::from_slice(message.body) {
            Ok(close) => close,
            Err(error) => {
                tracing::error!(%error, "malformed order.close message dropped");
                return Verdict::Poison;
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
                    Some(remaining) => Verdict::Defer(remaining),
                    None => Verdict::Done,
                }
            }
            Err(error) => {
                tracing::warn!(order_ids = ?close.order_ids, %error, "closing orders failed; will retry");
                Verdict::RetryLater
            }
        }
    }
}
