//! Warm-up: an event's free units, window and existing buyers copied from MySQL into Redis, so
//! the buy path never reads MySQL. Done when an event is created or changed (from scratch), on
//! the worker's schedule for events about to start, and when a buyer finds an active event cold
//! (Redis lost its keys).

use std::sync::Arc;
use std::time::Duration;

use sqlx::MySqlPool;
use time::OffsetDateTime;

use super::sold_out::SoldOutFlags;
use super::{OrderQueue, to_time, unix_millis};
use crate::background::UnitFailures;
use crate::config::FlashSaleSettings;
use crate::domain::flash_sale::{EventStatus, FlashSaleEvent};
use crate::repo::mysql::flash_sale_events;
use crate::repo::redis::flash_sale::{EventStore, WarmMode, WarmState};
use crate::service::ServiceError;

#[derive(Clone)]
pub struct Warmup {
    db: MySqlPool,
    store: EventStore,
    queue: OrderQueue,
    /// This replica's sold-out flags: a fresh warm-up clears the event's.
    sold_out: Arc<SoldOutFlags>,
    prefetch: u16,
    /// Reservations one message may carry (a publish group).
    publish_group_max: u16,
    lead: Duration,
    /// How long an event's Redis keys outlive the event.
    keys_retention: Duration,
    /// The events the scheduler could not warm, reported once each.
    failures: UnitFailures,
}

impl Warmup {
    pub(super) fn new(
        settings: &FlashSaleSettings,
        prefetch: u16,
        db: MySqlPool,
        store: EventStore,
        queue: OrderQueue,
        sold_out: Arc<SoldOutFlags>,
    ) -> Warmup {
        Warmup {
            db,
            store,
            queue,
            sold_out,
            prefetch,
            publish_group_max: settings.publish_group_max,
            lead: settings.warmup_lead,
            keys_retention: settings.keys_retention,
            failures: UnitFailures::new(super::HOUSEKEEPING_TASK, "event"),
        }
    }

    /// Copies the event's free units, window and existing buyers into Redis unless already
    /// warm; true when it was warmed now. Never raises a warm event's stock.
    pub async fn warm_up(&self, id: u64) -> Result<bool, ServiceError> {
        let event = flash_sale_events::find(&self.db, id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        refuse_unsellable(&event)?;
        self.warm(&event, WarmMode::Keep).await
    }

    /// Warms every event starting within the lead time that is not warm yet (the worker's
    /// scheduler); returns how many it warmed. An event that cannot be read or warmed (a bad
    /// row, a window out of range, an error) is skipped and reported; the others are warmed.
    pub async fn warm_due_events(&self) -> Result<usize, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let due =
            flash_sale_events::overlapping(&self.db, now, now.saturating_add(to_time(self.lead)))
                .await?;
        let mut warmed = 0;
        for (id, event) in due {
            let warm = async {
                let event = event?;
                refuse_unsellable(&event)?;
                self.warm(&event, WarmMode::Keep).await
            };
            if self.failures.isolate(id, warm).await == Some(true) {
                warmed += 1;
            }
        }
        Ok(warmed)
    }

    /// The events the scheduler skipped on its passes, with the reasons.
    pub fn unwarmable_events(&self) -> std::collections::HashMap<u64, String> {
        self.failures.failing()
    }

    /// Warms a created or changed event from scratch (it has not started: nothing can be
    /// reserved yet). A failure is only logged: the scheduler and the buy path warm it later.
    pub(super) async fn warm_new_event(&self, event: &FlashSaleEvent) {
        if let Err(error) = self.warm(event, WarmMode::Reset).await {
            tracing::warn!(event_id = event.id, %error, "warming the event failed; the scheduler will retry");
        }
    }

    /// The status of an event a buyer found cold (`None`: no such event), re-warming it when
    /// active.
    pub(super) async fn rewarm_if_active(
        &self,
        event_id: u64,
    ) -> Result<Option<EventStatus>, ServiceError> {
        let Some(event) = flash_sale_events::find(&self.db, event_id).await? else {
            return Ok(None);
        };
        let status = event.window.status_at(OffsetDateTime::now_utc());
        if status == EventStatus::Active {
            refuse_unsellable(&event)?;
            tracing::warn!(
                event_id,
                "active event not warm: refusing to sell, re-warming"
            );
            if let Err(error) = self.warm(&event, WarmMode::Keep).await {
                tracing::warn!(event_id, %error, "re-warming the event failed");
            }
        }
        Ok(Some(status))
    }

    async fn warm(&self, event: &FlashSaleEvent, mode: WarmMode) -> Result<bool, ServiceError> {
        if mode == WarmMode::Keep && self.store.stock(event.id).await?.is_some() {
            return Ok(false);
        }
        let now = OffsetDateTime::now_utc();
        let mut free = event.available_stock;
        if mode == WarmMode::Keep && event.window.status_at(now) != EventStatus::Upcoming {
            // Re-warming a started event (Redis lost its keys): reservations still travelling
            // through the queues are not in MySQL yet, so hold back as many units as messages
            // could be in flight. MySQL's conditional decrement stays the last guard.
            let in_flight = self
                .queue
                .in_flight_bound(self.prefetch, self.publish_group_max)
                .await?;
            free = free.saturating_sub(u32::try_from(in_flight).unwrap_or(u32::MAX));
        }
        let buyers = flash_sale_events::buyers(&self.db, event.id).await?;
        let state = WarmState {
            free,
            start_ms: unix_millis(event.window.start_at()),
            end_ms: unix_millis(event.window.end_at()),
            expire_at_ms: unix_millis(keys_expire_at(event, self.keys_retention)),
            buyers: &buyers,
        };
        let fresh = self.store.warm(event.id, &state, mode).await?;
        if fresh {
            self.sold_out.clear(event.id);
            tracing::info!(event_id = event.id, stock = free, ?mode, "event warmed");
        }
        Ok(fresh)
    }
}

/// A stored event whose window breaks the scheduling rules (see
/// [`EventWindow::sale_problem`](crate::domain::flash_sale::EventWindow::sale_problem)) is not
/// warmed, so not sold: a buyer gets a clear 409 naming the problem instead of a sale that never
/// ends (and whose unsold units never go back to the product).
fn refuse_unsellable(event: &FlashSaleEvent) -> Result<(), ServiceError> {
    match event.window.sale_problem() {
        None => Ok(()),
        Some(problem) => Err(ServiceError::Conflict(format!(
            "flash-sale event {} cannot be sold: {problem}; an operator must correct its schedule",
            event.id
        ))),
    }
}

/// When an event's keys may go: `keys_retention` after its end. Saturating, because a stored
/// end may lie anywhere up to the last representable time (a row from an older release or a
/// manual fix), and adding to it must not panic the task that warms every event.
fn keys_expire_at(event: &FlashSaleEvent, keys_retention: Duration) -> OffsetDateTime {
    event
        .window
        .end_at()
        .saturating_add(to_time(keys_retention))
}
