//! Gives flash-sale units back to Redis once MySQL has them back (an order closed unpaid or was
//! cancelled). Used by the order service; apart from the flash-sale service so neither imports
//! the other.

use crate::repo::redis::flash_sale::EventStore;

/// Returns flash-sale units to Redis and announces them, so every replica clears its sold-out
/// flag.
#[derive(Clone)]
pub struct FlashSaleUnits {
    store: EventStore,
}

impl FlashSaleUnits {
    pub fn new(store: EventStore) -> FlashSaleUnits {
        FlashSaleUnits { store }
    }

    /// Gives `units` of the event back. Never fails its caller: MySQL has committed them. If
    /// Redis cannot be told, they stay unsold until the event is warmed again, and the
    /// reconciler reports the drift.
    pub async fn give_back(&self, event_id: u64, units: u32) {
        match self.store.return_units(event_id, units).await {
            Ok(returned) => {
                tracing::info!(event_id, units, returned, "flash-sale units given back");
            }
            Err(error) => {
                tracing::warn!(event_id, units, %error, "flash-sale units not given back to redis");
            }
        }
    }
}
