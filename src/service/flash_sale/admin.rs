//! The admin side of flash-sale events: creating one moves its stock out of the product's
//! inventory in the same transaction; an event can be changed only before it starts. Readers
//! see Redis's live stock while the event is warm.

use sqlx::MySqlPool;
use time::OffsetDateTime;

use super::Warmup;
use crate::domain::flash_sale::{EventStatus, EventWindow, FlashSaleEvent, NewEvent};
use crate::domain::money::Money;
use crate::domain::product::Page;
use crate::repo::mysql::flash_sale_events;
use crate::repo::mysql::{inventory, products};
use crate::repo::redis::flash_sale::EventStore;
use crate::service::ServiceError;
use crate::service::catalog::CatalogService;

/// A partial change; `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct EventChanges {
    pub title: Option<String>,
    pub spike_price: Option<Money>,
    pub stock: Option<u32>,
    pub start_at: Option<OffsetDateTime>,
    pub end_at: Option<OffsetDateTime>,
}

impl EventChanges {
    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.spike_price.is_none()
            && self.stock.is_none()
            && self.start_at.is_none()
            && self.end_at.is_none()
    }
}

#[derive(Clone)]
pub struct EventAdmin {
    db: MySqlPool,
    store: EventStore,
    /// Product details show their stock: changed when an event takes or returns units.
    catalog: CatalogService,
    warmup: Warmup,
}

impl EventAdmin {
    pub(super) fn new(
        db: MySqlPool,
        store: EventStore,
        catalog: CatalogService,
        warmup: Warmup,
    ) -> EventAdmin {
        EventAdmin {
            db,
            store,
            catalog,
            warmup,
        }
    }

    #[tracing::instrument(level = "debug", name = "mysql.tx create_event", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn create(&self, event: NewEvent) -> Result<FlashSaleEvent, ServiceError> {
        let mut tx = self.db.begin().await?;
        if !products::lock_active(&mut tx, event.product_id).await? {
            return Err(ServiceError::ProductNotFound(event.product_id));
        }
        if !inventory::take_stock(&mut tx, event.product_id, event.stock).await? {
            return Err(ServiceError::InsufficientStock {
                product_id: event.product_id,
            });
        }
        let id = flash_sale_events::insert(&mut tx, &event).await?;
        let created = flash_sale_events::find(&mut *tx, id)
            .await?
            .ok_or_else(|| ServiceError::internal("event vanished inside its own transaction"))?;
        tx.commit().await?;
        self.catalog.invalidate(event.product_id).await;
        tracing::info!(
            event_id = id,
            product_id = event.product_id,
            stock = event.stock,
            "flash-sale event created"
        );
        self.warmup.warm_new_event(&created).await;
        Ok(created)
    }

    /// Changes an event that has not started; a changed stock takes from or returns to the
    /// product's inventory.
    #[tracing::instrument(level = "debug", name = "mysql.tx update_event", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn update(
        &self,
        id: u64,
        changes: EventChanges,
    ) -> Result<FlashSaleEvent, ServiceError> {
        let mut tx = self.db.begin().await?;
        let event = flash_sale_events::lock(&mut tx, id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        let now = OffsetDateTime::now_utc();
        if event.window.status_at(now) != EventStatus::Upcoming {
            return Err(ServiceError::Conflict(
                "the event has started: it can no longer be changed".into(),
            ));
        }
        // A new time is checked with the one it keeps, before anything is written; a change
        // that leaves both times alone keeps the stored window as it is.
        let window = if changes.start_at.is_none() && changes.end_at.is_none() {
            event.window
        } else {
            EventWindow::schedule(
                changes.start_at.unwrap_or(event.window.start_at()),
                changes.end_at.unwrap_or(event.window.end_at()),
                now,
            )
            .map_err(|refused| ServiceError::InvalidField {
                field: refused.field,
                problem: refused.problem,
            })?
        };
        let stock = changes.stock.unwrap_or(event.total_stock);
        if stock > event.total_stock {
            let more = stock - event.total_stock;
            if !inventory::take_stock(&mut tx, event.product_id, more).await? {
                return Err(ServiceError::InsufficientStock {
                    product_id: event.product_id,
                });
            }
        } else if stock < event.total_stock {
            inventory::return_stock(&mut tx, event.product_id, event.total_stock - stock).await?;
        }
        let fields = NewEvent {
            product_id: event.product_id,
            title: changes.title.unwrap_or(event.title),
            spike_price: changes.spike_price.unwrap_or(event.spike_price),
            stock,
            window,
        };
        flash_sale_events::update(&mut tx, id, &fields).await?;
        let updated = flash_sale_events::find(&mut *tx, id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        tx.commit().await?;
        self.catalog.invalidate(event.product_id).await;
        self.warmup.warm_new_event(&updated).await;
        Ok(updated)
    }

    /// One event; `available_stock` is Redis's count when the event is warm, until its unsold
    /// units have gone back to the product (then MySQL's 0).
    pub async fn get(&self, id: u64) -> Result<FlashSaleEvent, ServiceError> {
        let mut event = flash_sale_events::find(&self.db, id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        if event.returned_stock > 0 {
            return Ok(event);
        }
        if let Ok(Some(stock)) = self.store.stock(id).await {
            event.available_stock = stock.clamp(0, i64::from(u32::MAX)) as u32;
        }
        Ok(event)
    }

    pub async fn list(
        &self,
        status: Option<EventStatus>,
        page: Page,
    ) -> Result<(Vec<FlashSaleEvent>, u64), ServiceError> {
        Ok(flash_sale_events::list(&self.db, status, OffsetDateTime::now_utc(), page).await?)
    }
}
