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

    /// Never fails its caller: MySQL has committed the unit. If Redis cannot be told, the unit
    /// stays unsold until the event is warmed again, and the reconciler reports the drift.
    pub async fn give_back(&self, event_id: u64) {
        match self.store.return_unit(event_id).await {
            Ok(returned) => tracing::info!(event_id, returned, "flash-sale unit given back"),
            Err(error) => {
                tracing::warn!(event_id, %error, "flash-sale unit not given back to redis");
            }
        }
    }
}
