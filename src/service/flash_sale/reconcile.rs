//! The reconciler (docs/design.md §5), run by the worker next to the warm-up scheduler.
//!
//! A reservation lives in Redis from the script until the worker settles it. One still there
//! after `SPIKE_FLASH_SALE_RECONCILE_AFTER` means its message was lost on the way (the API crashed
//! between the script and the publish) or the worker died between its commit and the settle:
//! with an order in MySQL it is settled, without one its message is published again — the
//! worker is idempotent, so a copy that was merely slow costs nothing.
//!
//! It also keeps each event's ledger: at quiescence `redis_stock + pending + live_orders` must
//! equal the allotted stock; the difference is logged and exported as `spike_reconciler_drift`.
//!
//! And it gives back units a re-warm held back. After Redis lost an active event's keys, the
//! re-warm cannot see the reservations still travelling through the queues, so it holds back as
//! many units as could be in flight; once those messages are through, the units left over are
//! free but stranded (a positive drift: MySQL has them, Redis does not). They go back to Redis
//! only when nothing can be in flight, proven on two passes in a row: no ready message in the
//! order queue or its retry queues, every consumer of the order queue (as many as the broker
//! counts) reporting nothing in hand, and none having settled anything between the two passes
//! (so no delivery was on the wire during the first). The release itself is one script that
//! adds the drift only if the stock is still what the ledger read and no reservation is pending,
//! so a concurrent buy makes it wait for the next pass instead of counting a unit twice; and
//! only a drift seen on two passes is released, as a unit being returned by a close (MySQL
//! first, Redis a moment later) shows as a drift for that moment. The same release heals a unit
//! stranded when Redis failed between a close's commit and its return. The other way round, a
//! Redis failover may lose writes the old master acknowledged and never replicated: a
//! reservation whose message went out (its order is made) while the promoted replica still
//! counts its unit. Such phantom units (a negative drift) are taken away by the same proof and
//! script; until then MySQL's conditional UPDATE refuses what they would oversell.
//!
//! Last, it gives an ended event's unsold units back to the product's inventory, exactly once
//! ([`Reconciler::return_unsold_units`]): once nothing can bring a unit back to the event or take
//! one from it any more — the event ended long enough ago for any reservation's message to have
//! been republished and retried, no reservation is pending in Redis, and no order of it is still
//! unpaid (an unpaid one may close and return its unit to the event). One transaction locks the
//! event row (a close and an order creation lock it too), checks again, moves the units and
//! marks the event done; a second worker finds it done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sqlx::MySqlPool;
use time::OffsetDateTime;

use super::{HOUSEKEEPING_TASK, OrderQueue, RESULT_TTL_SECS, to_time, unix_millis};
use crate::background::UnitFailures;
use crate::config::FlashSaleSettings;
use crate::domain::flash_sale::EventStatus;
use crate::domain::flash_sale::{BuyerOutcome, FlashSaleEvent};
use crate::repo::mysql::{self, flash_sale_events, inventory};
use crate::repo::redis::consumer_reports::ConsumerReports;
use crate::repo::redis::flash_sale::{EventStore, PendingReservation};
use crate::service::ServiceError;
use crate::service::catalog::CatalogService;
use crate::service::messages::{ReservationGroup, ReservationMessage};
use crate::telemetry::metrics::names;

/// Where an event's units are, from both stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ledger {
    pub event_id: u64,
    /// Units allotted to the event.
    pub total_stock: u32,
    /// `spike_events.available_stock`.
    pub mysql_available_stock: u32,
    /// Unsold units given back to the product after the event ended.
    pub returned_stock: u32,
    /// Orders holding a unit (any status but closed or cancelled).
    pub live_orders: u64,
    /// Redis's remaining units; `None` when the event is not warm.
    pub redis_stock: Option<i64>,
    /// Reservations made in Redis and not yet settled by the worker.
    pub pending_reservations: u64,
    /// Buyers marked in Redis (reservations and orders, including closed ones).
    pub redis_buyers: u64,
    /// `total_stock - (redis_stock + pending_reservations + live_orders + returned_stock)`:
    /// zero at quiescence; positive means units stranded outside Redis, negative means Redis
    /// over-counts (MySQL's conditional decrement still prevents an oversell). `None` when not
    /// warm.
    pub drift: Option<i64>,
    /// `total_stock - (mysql_available_stock + live_orders + returned_stock)`: always zero
    /// (one transaction).
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
    /// Units a re-warm held back, given back to Redis once proven free.
    pub released: u32,
}

/// What one event of a reconciler pass did.
#[derive(Debug, Default)]
struct EventReconciled {
    republished: usize,
    settled: usize,
    /// Its ledger, when its stranded units may go back once the queue is proven quiet.
    releasable: Option<Ledger>,
}

/// Ended events looked at per pass for unsold units to give back (the rest wait for the next).
const UNSOLD_EVENTS_PER_PASS: u32 = 100;

/// A moment at which nothing was in flight on the order queue, as far as the broker and the
/// consumers' reports tell (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct QuietQueue {
    at_ms: i64,
    /// Each consumer's settled count then.
    settled: HashMap<String, u64>,
    /// The oldest of those reports.
    oldest_report_ms: i64,
}

impl QuietQueue {
    /// Quiet now and at `earlier`, with every consumer having reported since `earlier` and
    /// settled nothing in between.
    fn confirms(&self, earlier: &QuietQueue) -> bool {
        self.settled == earlier.settled && self.oldest_report_ms > earlier.at_ms
    }
}

#[derive(Clone)]
pub struct Reconciler {
    db: MySqlPool,
    store: EventStore,
    queue: OrderQueue,
    /// Product details show their stock: changed when unsold units go back.
    catalog: CatalogService,
    /// How long after its end an event may still gain or lose a unit through a reservation in
    /// flight: the republish bound plus every retry delay.
    unsold_grace: Duration,
    /// A reservation this old with no order is republished.
    stale_after: Duration,
    /// Events whose keys may still be alive: ended up to this long ago…
    keys_retention: Duration,
    /// …or starting within this lead time.
    warmup_lead: Duration,
    /// Drift seen on the previous pass per event, so only a drift that persists is warned about
    /// (a reservation being settled shows as a drift of one for a moment).
    last_drift: Arc<Mutex<HashMap<u64, i64>>>,
    /// What the order queue's consumers report holding.
    consumer_reports: ConsumerReports,
    /// A report older than this is stale: its consumer may hold anything.
    report_fresh_for: Duration,
    /// The previous pass's quiet observation, if it was quiet.
    last_quiet: Arc<Mutex<Option<QuietQueue>>>,
    /// Events a reconciler pass could not handle, reported once each.
    failures: UnitFailures,
    /// Ended events whose unsold units could not be given back, reported once each.
    unsold_failures: UnitFailures,
}

/// Reports of consumers gone this long are dropped.
const FORGET_REPORTS_AFTER: Duration = Duration::from_secs(60);

impl Reconciler {
    pub(super) fn new(
        settings: &FlashSaleSettings,
        db: MySqlPool,
        store: EventStore,
        queue: OrderQueue,
        catalog: CatalogService,
        consumer_reports: ConsumerReports,
    ) -> Reconciler {
        Reconciler {
            db,
            store,
            queue,
            catalog,
            unsold_grace: settings
                .retry_delays
                .iter()
                .fold(settings.reconcile_after, |sum, delay| {
                    sum.saturating_add(*delay)
                }),
            stale_after: settings.reconcile_after,
            keys_retention: settings.keys_retention,
            warmup_lead: settings.warmup_lead,
            last_drift: Arc::default(),
            consumer_reports,
            // Consumers report every half interval; three intervals of silence is a dead one.
            report_fresh_for: settings
                .scheduler_interval
                .saturating_mul(3)
                .max(Duration::from_secs(2)),
            last_quiet: Arc::default(),
            failures: UnitFailures::new(HOUSEKEEPING_TASK, "event"),
            unsold_failures: UnitFailures::new(HOUSEKEEPING_TASK, "ended event"),
        }
    }

    /// The event's ledger (admin endpoint and reconciler).
    pub async fn ledger(&self, event_id: u64) -> Result<Ledger, ServiceError> {
        let event = flash_sale_events::find(&self.db, event_id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        self.ledger_of(&event).await
    }

    async fn ledger_of(&self, event: &FlashSaleEvent) -> Result<Ledger, ServiceError> {
        let live_orders = flash_sale_events::live_orders(&self.db, event.id).await?;
        let redis_stock = self.store.stock(event.id).await?;
        let pending = self.store.pending_count(event.id).await?;
        let redis_buyers = self.store.buyer_count(event.id).await?;
        let total = i64::from(event.total_stock);
        let settled = live_orders as i64 + i64::from(event.returned_stock);
        Ok(Ledger {
            event_id: event.id,
            total_stock: event.total_stock,
            mysql_available_stock: event.available_stock,
            returned_stock: event.returned_stock,
            live_orders,
            redis_stock,
            pending_reservations: pending,
            redis_buyers,
            drift: redis_stock.map(|stock| total - (stock + pending as i64 + settled)),
            mysql_drift: total - (i64::from(event.available_stock) + settled),
        })
    }

    /// One pass over every event whose keys may be alive: stale reservations are republished or
    /// settled, and the ledger's drift is exported. An event that fails (an unreadable row, a
    /// store error, a panic) is skipped and reported; the pass goes on with the others.
    pub async fn reconcile(&self) -> Result<ReconcileReport, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let retention = to_time(self.keys_retention);
        let events = flash_sale_events::overlapping(
            &self.db,
            now.saturating_sub(retention),
            now.saturating_add(to_time(self.warmup_lead)),
        )
        .await?;
        let mut report = ReconcileReport {
            events: events.len(),
            ..ReconcileReport::default()
        };
        let now_ms = unix_millis(now);
        // Ledgers whose stranded units may go back to Redis once the queue is proven quiet.
        let mut releasable = Vec::new();
        for (id, event) in events {
            let reconciled = async {
                let event = event?;
                self.reconcile_event(&event, now, now_ms).await
            };
            if let Some(reconciled) = self.failures.isolate(id, reconciled).await {
                report.republished += reconciled.republished;
                report.settled += reconciled.settled;
                releasable.extend(reconciled.releasable);
            }
        }
        // The proof costs a passive declare per order queue and a read of the consumers'
        // reports: it is only taken while some event has units to give back.
        if releasable.is_empty() {
            *self.last_quiet.lock().expect("quiet memory poisoned") = None;
        } else if self.queue_proven_quiet(now_ms).await? {
            for ledger in &releasable {
                let released = self
                    .failures
                    .isolate(ledger.event_id, self.correct_stock(ledger))
                    .await;
                report.released += released.unwrap_or(0);
            }
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

    /// One event of a [`Reconciler::reconcile`] pass.
    async fn reconcile_event(
        &self,
        event: &FlashSaleEvent,
        now: OffsetDateTime,
        now_ms: i64,
    ) -> Result<EventReconciled, ServiceError> {
        let stale_ms = i64::try_from(self.stale_after.as_millis()).unwrap_or(i64::MAX);
        let mut reconciled = EventReconciled::default();
        let pending = self.store.pending_reservations(event.id).await?;
        for reservation in pending
            .iter()
            .filter(|r| now_ms.saturating_sub(r.reserved_at_ms) >= stale_ms)
        {
            if self
                .reconcile_reservation(event.id, reservation, now_ms)
                .await?
            {
                reconciled.republished += 1;
            } else {
                reconciled.settled += 1;
            }
        }
        let (ledger, previous_drift) = self.check_drift(event).await?;
        if ledger.returned_stock > 0 && ledger.redis_stock.is_some_and(|n| n > 0) {
            // Its unsold units went to the product, but Redis was not told (it failed
            // right after the commit): Redis must not count them too. The ledger read the
            // stock already; the next pass sees it balance.
            self.store.clear_stock(event.id).await?;
        }
        // The same drift on the last pass too: a unit being returned right now (a close
        // commits in MySQL, then gives the unit to Redis) shows as a drift for a moment.
        let settled_drift = previous_drift.is_some() && previous_drift == ledger.drift;
        // Stranded units (a positive drift), or phantom ones (negative: writes a Redis failover
        // lost), with nothing pending to explain them.
        let off = ledger.drift.is_some_and(|drift| drift != 0) && ledger.pending_reservations == 0;
        if settled_drift && off && event.window.status_at(now) == EventStatus::Active {
            reconciled.releasable = Some(ledger);
        }
        Ok(reconciled)
    }

    /// The events a reconciler pass skipped, with the reasons.
    pub fn unreconciled_events(&self) -> HashMap<u64, String> {
        self.failures.failing()
    }

    /// Gives the unsold units of events that ended at least the grace period ago back to their
    /// products, exactly once each (see the module docs); returns how many events were done now.
    /// An event that cannot be done yet, or fails, is left for a later pass; the others go on.
    pub async fn return_unsold_units(&self) -> Result<usize, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let ended_before = now.checked_sub(to_time(self.unsold_grace)).unwrap_or(now);
        let candidates =
            flash_sale_events::ended_with_unsold(&self.db, ended_before, UNSOLD_EVENTS_PER_PASS)
                .await?;
        let mut done = 0;
        for event_id in candidates {
            let returned = self
                .unsold_failures
                .isolate(event_id, self.return_unsold_of(event_id))
                .await;
            if returned == Some(true) {
                done += 1;
            }
        }
        Ok(done)
    }

    /// One event of [`Reconciler::return_unsold_units`]: true when its units went back now.
    async fn return_unsold_of(&self, event_id: u64) -> Result<bool, ServiceError> {
        // A reservation still pending in Redis may yet become an order (or give its unit
        // back): not before it is settled.
        if self.store.pending_count(event_id).await? > 0 {
            return Ok(false);
        }
        let mut tx = self.db.begin().await?;
        let Some(event) = flash_sale_events::lock(&mut tx, event_id).await? else {
            return Ok(false);
        };
        if flash_sale_events::unpaid_orders(&mut *tx, event_id).await? > 0 {
            return Ok(false);
        }
        let units = event.available_stock;
        let now = mysql::now_utc();
        if !flash_sale_events::mark_unsold_returned(&mut tx, event_id, units, now).await? {
            return Ok(false);
        }
        inventory::return_stock(&mut tx, event.product_id, units).await?;
        tx.commit().await?;
        self.catalog.invalidate(event.product_id).await;
        if let Err(error) = self.store.clear_stock(event_id).await {
            // The reconciler's pass clears it while the keys live.
            tracing::warn!(event_id, %error, "could not clear an ended event's stock in redis");
        }
        tracing::info!(
            event_id,
            product_id = event.product_id,
            units,
            "an ended event's unsold units went back to the product"
        );
        metrics::counter!(names::UNSOLD_RETURNED_UNITS).increment(u64::from(units));
        Ok(true)
    }

    /// Settles (true = republished, false = settled) one stale reservation.
    async fn reconcile_reservation(
        &self,
        event_id: u64,
        reservation: &PendingReservation,
        now_ms: i64,
    ) -> Result<bool, ServiceError> {
        if let Some(order_id) =
            flash_sale_events::order_of(&self.db, event_id, reservation.user_id).await?
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
        metrics::counter!(names::REPUBLISHED).increment(1);
        Ok(true)
    }

    /// Whether this pass and the previous one both found the order queue quiet, with nothing
    /// settled in between (see the module docs); remembers this pass's look for the next.
    async fn queue_proven_quiet(&self, now_ms: i64) -> Result<bool, ServiceError> {
        let quiet = self.observe_quiet_queue(now_ms).await?;
        let mut last = self.last_quiet.lock().expect("quiet memory poisoned");
        let proven =
            matches!((&quiet, last.as_ref()), (Some(now), Some(before)) if now.confirms(before));
        *last = quiet;
        Ok(proven)
    }

    /// Whether the order queue is quiet now: no ready message in it or its retry queues, and
    /// every consumer the broker counts reporting (freshly) nothing in hand. Stale reports of
    /// consumers long gone are dropped on the way.
    async fn observe_quiet_queue(&self, now_ms: i64) -> Result<Option<QuietQueue>, ServiceError> {
        let (ready, consumers) = self.queue.ready_and_consumers().await?;
        if ready > 0 {
            return Ok(None);
        }
        let reports = self.consumer_reports.read().await?;
        let fresh_ms = self.report_fresh_for.as_millis() as i64;
        let forget_ms = FORGET_REPORTS_AFTER.as_millis() as i64;
        let gone: Vec<String> = reports
            .iter()
            .filter(|(_, report)| now_ms.saturating_sub(report.at_ms) > forget_ms)
            .map(|(consumer, _)| consumer.clone())
            .collect();
        self.consumer_reports.forget(&gone).await?;
        let fresh: Vec<_> = reports
            .into_iter()
            .filter(|(_, report)| now_ms.saturating_sub(report.at_ms) <= fresh_ms)
            .collect();
        if fresh.len() < consumers as usize || fresh.iter().any(|(_, report)| report.held > 0) {
            return Ok(None);
        }
        Ok(Some(QuietQueue {
            at_ms: now_ms,
            oldest_report_ms: fresh
                .iter()
                .map(|(_, report)| report.at_ms)
                .min()
                .unwrap_or(now_ms),
            settled: fresh
                .into_iter()
                .map(|(consumer, report)| (consumer, report.settled))
                .collect(),
        }))
    }

    /// Corrects a warm event's Redis stock by its drift (nothing pending; the queue has been
    /// proven quiet): stranded units (a positive drift) go back on sale, phantom units (a
    /// negative drift: Redis counts units MySQL does not have) are taken away. Returns how many
    /// went back.
    async fn correct_stock(&self, ledger: &Ledger) -> Result<u32, ServiceError> {
        let (Some(drift), Some(stock)) = (ledger.drift, ledger.redis_stock) else {
            return Ok(0);
        };
        if !self
            .store
            .correct_stock(ledger.event_id, stock, drift)
            .await?
        {
            return Ok(0);
        }
        self.last_drift
            .lock()
            .expect("drift memory poisoned")
            .insert(ledger.event_id, 0);
        metrics::gauge!(names::DRIFT, "event_id" => ledger.event_id.to_string()).set(0.0);
        let units = drift.unsigned_abs();
        if drift > 0 {
            metrics::counter!(names::RELEASED_UNITS).increment(units);
            tracing::warn!(
                event_id = ledger.event_id,
                units,
                "units a re-warm held back are proven free and back on sale"
            );
            Ok(u32::try_from(units).unwrap_or(u32::MAX))
        } else {
            metrics::counter!(names::TRIMMED_UNITS).increment(units);
            tracing::warn!(
                event_id = ledger.event_id,
                units,
                "Redis counted units MySQL does not have (writes lost in a Redis failover): taken away"
            );
            Ok(0)
        }
    }

    /// The event's ledger, with the drift the previous pass saw.
    async fn check_drift(
        &self,
        event: &FlashSaleEvent,
    ) -> Result<(Ledger, Option<i64>), ServiceError> {
        let ledger = self.ledger_of(event).await?;
        let Some(drift) = ledger.drift else {
            return Ok((ledger, None));
        };
        metrics::gauge!(names::DRIFT, "event_id" => event.id.to_string()).set(drift as f64);
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
        Ok((ledger, previous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(at_ms: i64, oldest_report_ms: i64, settled: &[(&str, u64)]) -> QuietQueue {
        QuietQueue {
            at_ms,
            oldest_report_ms,
            settled: settled.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn a_quiet_queue_is_proven_only_by_fresh_reports_of_the_same_idle_consumers() {
        let before = quiet(1_000, 900, &[("a", 5), ("b", 7)]);
        assert!(quiet(2_000, 1_500, &[("a", 5), ("b", 7)]).confirms(&before));
        // A consumer settled something in between: a delivery was in flight at the first look.
        assert!(!quiet(2_000, 1_500, &[("a", 6), ("b", 7)]).confirms(&before));
        // A report written before the first look says nothing about the time since.
        assert!(!quiet(2_000, 950, &[("a", 5), ("b", 7)]).confirms(&before));
        // Another set of consumers (one joined or left).
        assert!(!quiet(2_000, 1_500, &[("a", 5)]).confirms(&before));
        assert!(!quiet(2_000, 1_500, &[("a", 5), ("b", 7), ("c", 0)]).confirms(&before));
    }
}
