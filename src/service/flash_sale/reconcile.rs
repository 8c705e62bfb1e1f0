//! The reconciler (DESIGN.md §5), run by the worker next to the warm-up scheduler.
//!
//! A reservation lives in Redis from the script until the worker settles it. One still there
//! after `SPIKE_FLASH_SALE_RECONCILE_AFTER` means its message was lost on the way (the API crashed
//! between the script and the publish) or the worker died between its commit and the settle:
//! with an order in MySQL it is settled, without one its message is published again — the
//! worker is idempotent, so a copy that was merely slow costs nothing.
//!
//! It also keeps each event's ledger: at quiescence `redis_stock + pending + live_orders` must
//! equal the allotted stock; the difference is logged and exported as `spike_reconciler_drift`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sqlx::MySqlPool;
use time::OffsetDateTime;

use super::{OrderQueue, RESULT_TTL_SECS, unix_millis};
use crate::config::FlashSaleSettings;
use crate::domain::flash_sale::{BuyerOutcome, SpikeEvent};
use crate::repo::mysql::spike_events;
use crate::repo::redis::flash_sale::{EventStore, PendingReservation};
use crate::service::ServiceError;
use crate::service::messages::{ReservationGroup, ReservationMessage};

/// Where an event's units are, from both stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ledger {
    pub event_id: u64,
    /// Units allotted to the event.
    pub total_stock: u32,
    /// `spike_events.available_stock`.
    pub mysql_available_stock: u32,
    /// Orders holding a unit (any status but closed or cancelled).
    pub live_orders: u64,
    /// Redis's remaining units; `None` when the event is not warm.
    pub redis_stock: Option<i64>,
    /// Reservations made in Redis and not yet settled by the worker.
    pub pending_reservations: u64,
    /// Buyers marked in Redis (reservations and orders, including closed ones).
    pub redis_buyers: u64,
    /// `total_stock - (redis_stock + pending_reservations + live_orders)`: zero at quiescence;
    /// positive means units stranded outside Redis, negative means Redis over-counts (MySQL's
    /// conditional decrement still prevents an oversell). `None` when not warm.
    pub drift: Option<i64>,
    /// `total_stock - (mysql_available_stock + live_orders)`: always zero (one transaction).
    pub mysql_drift: i64,
}

/// What one reconciler pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub events: usize,
    /// Stale reservations whose message was published again.
    pub republished: usize,
    /// Stale reservations whose order existed already (their settle was lost).
    pub settled: usize,
}

#[derive(Clone)]
pub struct Reconciler {
    db: MySqlPool,
    store: EventStore,
    queue: OrderQueue,
    /// A reservation this old with no order is republished.
    stale_after: Duration,
    /// Events whose keys may still be alive: ended up to this long ago…
    keys_retention: Duration,
    /// …or starting within this lead time.
    warmup_lead: Duration,
    /// Drift seen on the previous pass per event, so only a drift that persists is warned about
    /// (a reservation being settled shows as a drift of one for a moment).
    last_drift: Arc<Mutex<HashMap<u64, i64>>>,
}

impl Reconciler {
    pub(super) fn new(
        settings: &FlashSaleSettings,
        db: MySqlPool,
        store: EventStore,
        queue: OrderQueue,
    ) -> Reconciler {
        Reconciler {
            db,
            store,
            queue,
            stale_after: settings.reconcile_after,
            keys_retention: settings.keys_retention,
            warmup_lead: settings.warmup_lead,
            last_drift: Arc::default(),
        }
    }

    /// The event's ledger (admin endpoint and reconciler).
    pub async fn ledger(&self, event_id: u64) -> Result<Ledger, ServiceError> {
        let event = spike_events::find(&self.db, event_id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        self.ledger_of(&event).await
    }

    async fn ledger_of(&self, event: &SpikeEvent) -> Result<Ledger, ServiceError> {
        let live_orders = spike_events::live_orders(&self.db, event.id).await?;
        let redis_stock = self.store.stock(event.id).await?;
        let pending = self.store.pending_reservations(event.id).await?.len() as u64;
        let redis_buyers = self.store.buyer_count(event.id).await?;
        let total = i64::from(event.total_stock);
        let live = live_orders as i64;
        Ok(Ledger {
            event_id: event.id,
            total_stock: event.total_stock,
            mysql_available_stock: event.available_stock,
            live_orders,
            redis_stock,
            pending_reservations: pending,
            redis_buyers,
            drift: redis_stock.map(|stock| total - (stock + pending as i64 + live)),
            mysql_drift: total - (i64::from(event.available_stock) + live),
        })
    }

    /// One pass over every event whose keys may be alive: stale reservations are republished or
    /// settled, and the ledger's drift is exported.
    pub async fn reconcile(&self) -> Result<ReconcileReport, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let events =
            spike_events::overlapping(&self.db, now - self.keys_retention, now + self.warmup_lead)
                .await?;
        let mut report = ReconcileReport {
            events: events.len(),
            ..ReconcileReport::default()
        };
        let now_ms = unix_millis(now);
        let stale_ms = self.stale_after.as_millis() as i64;
        for event in &events {
            let pending = self.store.pending_reservations(event.id).await?;
            for reservation in pending
                .iter()
                .filter(|r| now_ms - r.reserved_at_ms >= stale_ms)
            {
                if self
                    .reconcile_reservation(event.id, reservation, now_ms)
                    .await?
                {
                    report.republished += 1;
                } else {
                    report.settled += 1;
                }
            }
            self.check_drift(event).await?;
        }
        if report.republished + report.settled > 0 {
            tracing::warn!(
                republished = report.republished,
                settled = report.settled,
                "reconciler repaired stale reservations"
            );
        }
        Ok(report)
    }

    /// Settles (true = republished, false = settled) one stale reservation.
    async fn reconcile_reservation(
        &self,
        event_id: u64,
        reservation: &PendingReservation,
        now_ms: i64,
    ) -> Result<bool, ServiceError> {
        if let Some(order_id) =
            spike_events::order_of(&self.db, event_id, reservation.user_id).await?
        {
            let success = BuyerOutcome::Success { order_id };
            self.store
                .settle(event_id, reservation.user_id, &success, RESULT_TTL_SECS)
                .await?;
            return Ok(false);
        }
        let message = ReservationMessage {
            ticket: reservation.ticket.clone(),
            event_id,
            user_id: reservation.user_id,
            reserved_at_ms: reservation.reserved_at_ms,
            request_id: None,
        };
        let group = ReservationGroup {
            reservations: vec![message],
        };
        self.queue.publish(&group).await?;
        // Not again before another full interval: the copy needs time to be consumed.
        self.store
            .touch_reservation(event_id, reservation, now_ms)
            .await?;
        tracing::warn!(
            event_id,
            user_id = reservation.user_id,
            ticket = reservation.ticket,
            "stale reservation republished"
        );
        metrics::counter!("spike_reconciler_republished_total").increment(1);
        Ok(true)
    }

    async fn check_drift(&self, event: &SpikeEvent) -> Result<(), ServiceError> {
        let ledger = self.ledger_of(event).await?;
        let Some(drift) = ledger.drift else {
            return Ok(());
        };
        metrics::gauge!("spike_reconciler_drift", "event_id" => event.id.to_string())
            .set(drift as f64);
        let previous = self
            .last_drift
            .lock()
            .expect("drift memory poisoned")
            .insert(event.id, drift);
        if drift != 0 && previous == Some(drift) {
            tracing::warn!(
                event_id = event.id,
                drift,
                ?ledger,
                "flash-sale ledger does not balance (redis stock + reservations + live orders != allotted)"
            );
        }
        Ok(())
    }
}
