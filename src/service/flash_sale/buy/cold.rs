//! A buyer found an event's Redis keys missing. The answer is never "sold out" or "available":
//! MySQL says whether the event exists and where its window stands, and an active event is
//! re-warmed. A burst of buyers hitting one cold event shares one lookup and one re-warm.

use std::sync::Arc;

use crate::domain::flash_sale::EventStatus;
use crate::service::ServiceError;
use crate::service::flash_sale::Warmup;
use crate::util::single_flight::SingleFlight;

#[derive(Clone)]
pub struct ColdEvents {
    warmup: Warmup,
    flights: Arc<SingleFlight<u64, Option<EventStatus>>>,
}

impl ColdEvents {
    pub fn new(warmup: Warmup) -> ColdEvents {
        ColdEvents {
            warmup,
            flights: Arc::default(),
        }
    }

    /// The status of a cold event (`None`: no such event), re-warming it when active.
    pub async fn status(&self, event_id: u64) -> Result<Option<EventStatus>, ServiceError> {
        self.flights
            .run(event_id, || self.warmup.rewarm_if_active(event_id))
            .await
    }
}
