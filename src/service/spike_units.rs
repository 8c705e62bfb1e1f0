//! Gives flash-sale units back to Redis once MySQL has them back (an order closed unpaid or was
//! cancelled). Used by the order service; apart from the flash-sale service so neither imports
//! the other.

use redis::aio::ConnectionManager;

use crate::repo::redis::spike::{self as redis_spike, EventKeys};

/// Returns flash-sale units to Redis once MySQL has them back (an order closed unpaid or was
/// cancelled), and announces them so every replica clears its sold-out flag.
#[derive(Clone)]
pub struct SpikeUnits {
    redis: ConnectionManager,
    prefix: String,
}

impl SpikeUnits {
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>) -> SpikeUnits {
        SpikeUnits {
            redis,
            prefix: prefix.into(),
        }
    }

    /// Never fails its caller: MySQL has committed the unit. If Redis cannot be told, the unit
    /// stays unsold until the event is warmed again, and the reconciler reports the drift.
    pub async fn give_back(&self, event_id: u64) {
        let keys = EventKeys::new(&self.prefix, event_id);
        match redis_spike::return_unit(&mut self.redis.clone(), &keys).await {
            Ok(returned) => tracing::info!(event_id, returned, "flash-sale unit given back"),
            Err(error) => {
                tracing::warn!(event_id, %error, "flash-sale unit not given back to redis");
            }
        }
    }
}
