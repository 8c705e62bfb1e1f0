//! The worker's half of a purchase: reservations become orders in batches (group commit,
//! docs/flash-sale.md). One MySQL transaction per batch locks each event's row once, skips the
//! buyers who already have their order (redeliveries), takes each event's units with one
//! conditional UPDATE (the last guard against overselling), and writes every order, line, link
//! and the batch's one close message with multi-row INSERTs; then one Redis pipeline records
//! every buyer's outcome. A batch the database refuses is split until the reservation at fault
//! stands alone, so it alone goes down the retry path. After its last retry,
//! [`Fulfilment::give_up`] gives a reservation back.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sqlx::MySqlPool;

use super::RESULT_TTL_SECS;
use crate::domain::flash_sale::{BuyerOutcome, FailureReason, FlashSaleEvent};
use crate::domain::order::OrderItem;
use crate::repo::ErrorKind;
use crate::repo::mysql::flash_sale_events::{self, FlashSaleOrderLink};
use crate::repo::mysql::orders::{self, NewFlashSaleOrder};
use crate::repo::mysql::{self, users};
use crate::repo::redis::flash_sale::EventStore;
use crate::service::ServiceError;
use crate::service::messages::ReservationMessage;
use crate::service::order_writer;
use crate::telemetry::metrics::names;

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
    /// The buyer's account no longer exists (its token outlived it); nothing was written and
    /// the unit goes back to Redis.
    UnknownBuyer,
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
            CreateOutcome::UnknownBuyer => BuyerOutcome::Failed(FailureReason::BuyerUnknown),
        }
    }
}

/// The result for one reservation of a batch. A failure may be shared by many reservations (the
/// database was down for the whole batch), hence the `Arc`.
pub type BatchResult = Result<CreateOutcome, Arc<ServiceError>>;

/// How often a batch that lost a deadlock or timed out waiting for a lock is run again at once
/// before its reservations go down the retry path.
const LOCK_CONFLICT_RETRIES: u32 = 3;

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

    /// Creates the orders of `reservations` (or finds them, for redeliveries) and records every
    /// buyer's outcome; one result per reservation, in their order.
    pub async fn create_orders(&self, reservations: &[ReservationMessage]) -> Vec<BatchResult> {
        let mut results = self.write_splitting(reservations).await;
        for (reservation, result) in reservations.iter().zip(results.iter_mut()) {
            if let Ok(CreateOutcome::UnknownBuyer) = result {
                tracing::warn!(
                    user_id = reservation.user_id,
                    ticket = reservation.ticket,
                    "a deleted account's reservation is refused and its unit given back"
                );
                let returned = self.store.unreserve(
                    reservation.event_id,
                    reservation.user_id,
                    &reservation.ticket,
                    None,
                );
                if let Err(error) = returned.await {
                    *result = Err(Arc::new(error.into()));
                }
            }
        }
        let settled: Vec<(u64, u64, BuyerOutcome)> = reservations
            .iter()
            .zip(&results)
            .filter_map(|(reservation, result)| {
                let outcome = result.as_ref().ok()?.buyer_outcome();
                Some((reservation.event_id, reservation.user_id, outcome))
            })
            .collect();
        if let Err(error) = self.store.settle_many(&settled, RESULT_TTL_SECS).await {
            // The orders are committed; a redelivery finds them and settles again.
            let error = Arc::new(ServiceError::from(error));
            for result in results.iter_mut().filter(|result| result.is_ok()) {
                *result = Err(error.clone());
            }
        }
        results
    }

    /// [`Fulfilment::create_orders`] for one reservation.
    pub async fn create_order(
        &self,
        reservation: &ReservationMessage,
    ) -> Result<CreateOutcome, ServiceError> {
        let result = self
            .create_orders(std::slice::from_ref(reservation))
            .await
            .pop()
            .expect("one result per reservation");
        result.map_err(|error| {
            Arc::try_unwrap(error)
                .unwrap_or_else(|shared| ServiceError::internal(shared.to_string()))
        })
    }

    /// Gives up on a reservation whose order could not be created after every retry: the unit
    /// and the buyer's mark go back to Redis (unless MySQL has the order after all) and the
    /// outcome says `failed`.
    pub async fn give_up(&self, message: &ReservationMessage) -> Result<(), ServiceError> {
        let (event_id, user_id) = (message.event_id, message.user_id);
        if let Some(order_id) = flash_sale_events::order_of(&self.db, event_id, user_id).await? {
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
        metrics::counter!(names::DEAD_LETTERED_ORDERS).increment(1);
        Ok(())
    }

    /// The order transaction alone, for one reservation (the naive `db` mode runs it in the
    /// request).
    pub(super) async fn create_order_in_mysql(
        &self,
        reservation: &ReservationMessage,
    ) -> Result<CreateOutcome, ServiceError> {
        let mut outcomes = self
            .write_retrying(std::slice::from_ref(reservation))
            .await?;
        Ok(outcomes.pop().expect("one outcome per reservation"))
    }

    /// Writes `batch` in one transaction. When the database refuses it (a statement error: a
    /// buyer whose account is gone, data it cannot take), the batch is split in halves, again and
    /// again, until the reservation at fault stands alone: it fails, its neighbours commit. When
    /// the database is unreachable, splitting cannot help and the whole batch fails.
    async fn write_splitting(&self, batch: &[ReservationMessage]) -> Vec<BatchResult> {
        let mut results: Vec<Option<BatchResult>> = vec![None; batch.len()];
        // Ranges still to write; the first half is on top, so reservations keep their order.
        let mut ranges = Vec::with_capacity(8);
        ranges.push(0..batch.len());
        while let Some(range) = ranges.pop() {
            match self.write_retrying(&batch[range.clone()]).await {
                Ok(outcomes) => {
                    for (slot, outcome) in results[range].iter_mut().zip(outcomes) {
                        *slot = Some(Ok(outcome));
                    }
                }
                Err(error) if range.len() > 1 && error.repo_kind() == Some(ErrorKind::Refused) => {
                    tracing::warn!(
                        reservations = range.len(),
                        %error,
                        "the database refused a batch of flash-sale orders; splitting it"
                    );
                    let middle = range.start + range.len() / 2;
                    ranges.push(middle..range.end);
                    ranges.push(range.start..middle);
                }
                Err(error) => {
                    let error = Arc::new(error);
                    for slot in &mut results[range] {
                        *slot = Some(Err(error.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|result| result.expect("every range was written or failed"))
            .collect()
    }

    /// [`Fulfilment::write_batch`], run again at once when it lost a deadlock or a lock wait.
    async fn write_retrying(
        &self,
        batch: &[ReservationMessage],
    ) -> Result<Vec<CreateOutcome>, ServiceError> {
        let mut conflicts = 0;
        loop {
            match self.write_batch(batch).await {
                Err(ServiceError::Unavailable(_, error))
                    if error.is_lock_conflict() && conflicts < LOCK_CONFLICT_RETRIES =>
                {
                    conflicts += 1;
                    tracing::debug!(%error, conflicts, "order batch lost a lock conflict; again");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(conflicts))).await;
                }
                result => return result,
            }
        }
    }

    /// The batch's one transaction; one outcome per reservation, in order.
    #[tracing::instrument(level = "debug", name = "mysql.tx create_flash_sale_orders", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    async fn write_batch(
        &self,
        batch: &[ReservationMessage],
    ) -> Result<Vec<CreateOutcome>, ServiceError> {
        // A buyer appears once per event; a second message for the same buyer in this batch (a
        // redelivery next to its original) gets the first one's order.
        let mut first_of: HashMap<(u64, u64), usize> = HashMap::with_capacity(batch.len());
        let mut copies = Vec::new();
        for (index, reservation) in batch.iter().enumerate() {
            match first_of.entry((reservation.event_id, reservation.user_id)) {
                Entry::Vacant(entry) => {
                    entry.insert(index);
                }
                Entry::Occupied(entry) => copies.push((index, *entry.get())),
            }
        }
        let mut event_ids: Vec<u64> = batch.iter().map(|r| r.event_id).collect();
        event_ids.sort_unstable();
        event_ids.dedup();

        let mut tx = self.db.begin().await?;
        // The events' row locks come first: every writer of these events' orders takes them, so
        // the read below (whose snapshot starts after the locks) sees every order committed
        // before, and the inserts' foreign keys find the rows locked already (taking the shared
        // lock first and upgrading it would deadlock two workers).
        let events: HashMap<u64, FlashSaleEvent> =
            flash_sale_events::lock_many(&mut tx, &event_ids)
                .await?
                .into_iter()
                .map(|event| (event.id, event))
                .collect();
        let buyers: Vec<(u64, u64)> = first_of.keys().copied().collect();
        let existing = flash_sale_events::orders_of(&mut *tx, &buyers).await?;
        let user_ids = buyers.iter().map(|&(_, user)| user).collect();
        let accounts = users::existing(&mut *tx, &user_ids).await?;

        let mut outcomes: Vec<Option<CreateOutcome>> = vec![None; batch.len()];
        // Per event (in id order, as locked), the new buyers in the batch's order.
        let mut wanted: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (index, reservation) in batch.iter().enumerate() {
            let buyer = (reservation.event_id, reservation.user_id);
            if first_of[&buyer] != index {
                continue;
            }
            outcomes[index] = if let Some(&order_id) = existing.get(&buyer) {
                Some(CreateOutcome::AlreadyDone { order_id })
            } else if !events.contains_key(&reservation.event_id) {
                Some(CreateOutcome::UnknownEvent)
            } else if !accounts.contains(&reservation.user_id) {
                Some(CreateOutcome::UnknownBuyer)
            } else {
                wanted.entry(reservation.event_id).or_default().push(index);
                None
            };
        }

        let mut winners: Vec<(usize, &FlashSaleEvent)> = Vec::new();
        for (event_id, indices) in &wanted {
            let event = &events[event_id];
            let taken = indices.len().min(event.available_stock as usize);
            if taken > 0 && !flash_sale_events::take_units(&mut tx, *event_id, taken as u32).await?
            {
                return Err(ServiceError::internal(
                    "an event's stock changed under its lock",
                ));
            }
            for &index in &indices[taken..] {
                outcomes[index] = Some(CreateOutcome::SoldOut);
            }
            winners.extend(indices[..taken].iter().map(|&index| (index, event)));
        }

        if !winners.is_empty() {
            let pay_deadline = mysql::now_utc() + self.pay_timeout;
            let new_orders: Vec<NewFlashSaleOrder> = winners
                .iter()
                .map(|&(index, event)| NewFlashSaleOrder {
                    user_id: batch[index].user_id,
                    ticket: &batch[index].ticket,
                    total_amount: event.spike_price,
                    pay_deadline,
                })
                .collect();
            let ids = orders::insert_flash_sale_orders(&mut tx, &new_orders).await?;
            let mut lines = Vec::with_capacity(winners.len());
            let mut links = Vec::with_capacity(winners.len());
            let mut order_ids = Vec::with_capacity(winners.len());
            for &(index, event) in &winners {
                let reservation = &batch[index];
                let order_id = *ids.get(&reservation.ticket).ok_or_else(|| {
                    ServiceError::internal("an inserted order was not found by its ticket")
                })?;
                let item = OrderItem {
                    product_id: event.product_id,
                    quantity: 1,
                    price: event.spike_price,
                };
                lines.push((order_id, item));
                links.push(FlashSaleOrderLink {
                    event_id: event.id,
                    user_id: reservation.user_id,
                    order_id,
                    ticket: &reservation.ticket,
                });
                order_ids.push(order_id);
                outcomes[index] = Some(CreateOutcome::Created { order_id });
            }
            orders::insert_lines(&mut tx, &lines).await?;
            flash_sale_events::insert_order_links(&mut tx, &links).await?;
            order_writer::schedule_close(&mut tx, &order_ids).await?;
        }
        tx.commit().await?;
        if !winners.is_empty() {
            tracing::info!(
                orders = winners.len(),
                reservations = batch.len(),
                events = wanted.len(),
                "flash-sale orders created"
            );
        }

        for (index, first) in copies {
            outcomes[index] = match outcomes[first] {
                Some(
                    CreateOutcome::Created { order_id } | CreateOutcome::AlreadyDone { order_id },
                ) => Some(CreateOutcome::AlreadyDone { order_id }),
                other => other,
            };
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every reservation has an outcome"))
            .collect())
    }
}
