//! Where a buyer stands in an event, as `GET /spike/events/{id}/result` answers: the outcome the
//! worker recorded in Redis, a reservation still on its way, or MySQL's record once Redis has
//! forgotten.

use sqlx::MySqlPool;

use crate::domain::flash_sale::{BuyerOutcome, FailureReason};
use crate::repo::mysql::flash_sale_events;
use crate::repo::redis::flash_sale::EventStore;
use crate::service::ServiceError;

/// Where a buyer stands in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyResult {
    Queued,
    Success { order_id: u64 },
    Failed { reason: FailureReason },
    None,
}

#[derive(Clone)]
pub struct BuyResults {
    db: MySqlPool,
    store: EventStore,
}

impl BuyResults {
    pub fn new(db: MySqlPool, store: EventStore) -> BuyResults {
        BuyResults { db, store }
    }

    /// Where `user_id` stands in `event_id`; an unknown event is `EventNotFound`.
    pub async fn of(&self, event_id: u64, user_id: u64) -> Result<BuyResult, ServiceError> {
        match self.store.outcome(event_id, user_id).await? {
            Some(BuyerOutcome::Success { order_id }) => return Ok(BuyResult::Success { order_id }),
            Some(BuyerOutcome::Failed(reason)) => return Ok(BuyResult::Failed { reason }),
            None => {}
        }
        if self.store.has_reservation(event_id, user_id).await? {
            return Ok(BuyResult::Queued);
        }
        if let Some(order_id) = flash_sale_events::order_of(&self.db, event_id, user_id).await? {
            return Ok(BuyResult::Success { order_id });
        }
        // Nothing about this buyer: "none" for an event that exists, 404 for one that does not.
        match flash_sale_events::find(&self.db, event_id).await? {
            Some(_) => Ok(BuyResult::None),
            None => Err(ServiceError::EventNotFound),
        }
    }
}
