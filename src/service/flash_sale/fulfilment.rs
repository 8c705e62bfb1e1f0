//! The worker's half of a purchase: one MySQL transaction turns a reservation into an order
//! (the unique keys make a redelivery a no-op, the conditional decrement makes an oversell
//! impossible), then the buyer's outcome is recorded in Redis. After the last retry,
//! [`Fulfilment::give_up`] gives the reservation back.

use std::time::Duration;

use sqlx::MySqlPool;

use super::RESULT_TTL_SECS;
use crate::domain::flash_sale::{BuyerOutcome, FailureReason};
use crate::domain::order::{OrderItem, OrderKind};
use crate::repo::mysql::{self, orders, spike_events};
use crate::repo::redis::flash_sale::EventStore;
use crate::service::ServiceError;
use crate::service::messages::ReservationMessage;
use crate::service::order_writer::{self, WriteError};

/// What the worker did with one reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created {
        order_id: u64,
    },
    /// A redelivery: the order exists already.
    AlreadyDone {
        order_id: u64,
    },
    /// MySQL had no unit left although Redis had reserved one.
    SoldOut,
    /// The event no longer exists.
    UnknownEvent,
}

impl CreateOutcome {
    /// What the buyer polling for a result is told.
    fn buyer_outcome(self) -> BuyerOutcome {
        match self {
            CreateOutcome::Created { order_id } | CreateOutcome::AlreadyDone { order_id } => {
                BuyerOutcome::Success { order_id }
            }
            CreateOutcome::SoldOut => BuyerOutcome::Failed(FailureReason::SoldOut),
            CreateOutcome::UnknownEvent => BuyerOutcome::Failed(FailureReason::UnknownEvent),
        }
    }
}

#[derive(Clone)]
pub struct Fulfilment {
    db: MySqlPool,
    store: EventStore,
    pay_timeout: Duration,
}

impl Fulfilment {
    pub(super) fn new(db: MySqlPool, store: EventStore, pay_timeout: Duration) -> Fulfilment {
        Fulfilment {
            db,
            store,
            pay_timeout,
        }
    }

    /// Creates the reservation's order (or finds it, on a redelivery) and records the outcome
    /// for the buyer.
    pub async fn create_order(
        &self,
        message: &ReservationMessage,
    ) -> Result<CreateOutcome, ServiceError> {
        let outcome = self.create_order_in_mysql(message).await?;
        self.store
            .settle(
                message.event_id,
                message.user_id,
                &outcome.buyer_outcome(),
                RESULT_TTL_SECS,
            )
            .await?;
        Ok(outcome)
    }

    /// Gives up on a reservation whose order could not be created after every retry: the unit
    /// and the buyer's mark go back to Redis (unless MySQL has the order after all) and the
    /// outcome says `failed`.
    pub async fn give_up(&self, message: &ReservationMessage) -> Result<(), ServiceError> {
        let (event_id, user_id) = (message.event_id, message.user_id);
        if let Some(order_id) = spike_events::order_of(&self.db, event_id, user_id).await? {
            let success = BuyerOutcome::Success { order_id };
            self.store
                .settle(event_id, user_id, &success, RESULT_TTL_SECS)
                .await?;
            return Ok(());
        }
        let returned = self
            .store
            .unreserve(event_id, user_id, &message.ticket, None)
            .await?;
        let failed = BuyerOutcome::Failed(FailureReason::OrderCreationFailed);
        self.store
            .settle(event_id, user_id, &failed, RESULT_TTL_SECS)
            .await?;
        tracing::error!(
            ticket = message.ticket,
            event_id,
            user_id,
            stock_returned = returned,
            "flash-sale order could not be created; reservation compensated and dead-lettered"
        );
        metrics::counter!("spike_order_create_dead_lettered_total").increment(1);
        Ok(())
    }

    /// The order transaction alone (the naive `db` mode runs it in the request).
    pub(super) async fn create_order_in_mysql(
        &self,
        message: &ReservationMessage,
    ) -> Result<CreateOutcome, ServiceError> {
        // A redelivery of a message already turned into an order: nothing to do.
        if let Some(order_id) =
            spike_events::order_of(&self.db, message.event_id, message.user_id).await?
        {
            return Ok(CreateOutcome::AlreadyDone { order_id });
        }
        let mut tx = self.db.begin().await?;
        let Some(event) = spike_events::find(&mut *tx, message.event_id).await? else {
            return Ok(CreateOutcome::UnknownEvent);
        };
        // The conditional decrement comes first: it takes the event row's exclusive lock before
        // the `spike_orders` insert takes a shared one through its foreign key. The other way
        // round, two workers each holding the shared lock deadlock when both try to upgrade.
        if !spike_events::take_unit(&mut tx, message.event_id).await? {
            drop(tx);
            return Ok(
                match spike_events::order_of(&self.db, message.event_id, message.user_id).await? {
                    Some(order_id) => CreateOutcome::AlreadyDone { order_id },
                    None => CreateOutcome::SoldOut,
                },
            );
        }
        let new_order = orders::NewOrder {
            user_id: message.user_id,
            kind: OrderKind::Spike,
            total_amount: event.spike_price,
            idempotency_key: None,
            request_hash: None,
            pay_deadline: mysql::now_utc() + self.pay_timeout,
        };
        let item = OrderItem {
            product_id: event.product_id,
            quantity: 1,
            price: event.spike_price,
        };
        let order_id = match order_writer::write(&mut tx, &new_order, &[item]).await {
            Ok(order_id) => order_id,
            Err(WriteError::Order(error)) => return Err(error.into()),
            Err(WriteError::Other(error)) => return Err(error),
        };
        let linked = spike_events::insert_spike_order(
            &mut tx,
            message.event_id,
            message.user_id,
            order_id,
            &message.ticket,
        )
        .await;
        if let Err(error) = linked {
            if mysql::is_unique_violation(&error, spike_events::ONE_PER_BUYER_KEY)
                || mysql::is_unique_violation(&error, spike_events::TICKET_KEY)
            {
                // A concurrent delivery of the same reservation won; this one rolls back.
                drop(tx);
                let existing = spike_events::order_of(&self.db, message.event_id, message.user_id)
                    .await?
                    .ok_or_else(|| ServiceError::internal("duplicate spike order not found"))?;
                return Ok(CreateOutcome::AlreadyDone { order_id: existing });
            }
            return Err(error.into());
        }
        tx.commit().await?;
        tracing::info!(
            order_id,
            event_id = message.event_id,
            user_id = message.user_id,
            "flash-sale order created"
        );
        Ok(CreateOutcome::Created { order_id })
    }
}
