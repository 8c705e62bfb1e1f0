//! The naive baseline (`SPIKE_FLASH_SALE_MODE=db`): the request itself runs the worker's order
//! transaction (conditional `UPDATE … WHERE available_stock > 0`, order rows, close outbox row),
//! no Redis and no queue, so every buyer queues on the event row's lock. Correct (the
//! conditional decrement and the unique buyer key guard it) but slow: the load tool measures how
//! much the queue path gains over it. `Idempotency-Key` is not replayed here: a repeat answers
//! "already purchased".

use sqlx::MySqlPool;
use time::OffsetDateTime;

use super::{Accepted, BuyRequest, Refusal};
use crate::repo::mysql::flash_sale_events;
use crate::service::ServiceError;
use crate::service::flash_sale::{CreateOutcome, Fulfilment, unix_millis};
use crate::service::messages::ReservationMessage;

pub struct DbBuy {
    db: MySqlPool,
    /// The worker's order transaction, run in the request.
    fulfilment: Fulfilment,
}

impl DbBuy {
    pub fn new(db: MySqlPool, fulfilment: Fulfilment) -> DbBuy {
        DbBuy { db, fulfilment }
    }

    pub async fn buy(&self, request: BuyRequest<'_>) -> Result<Accepted, ServiceError> {
        let BuyRequest {
            event_id, user_id, ..
        } = request;
        let event = flash_sale_events::find(&self.db, event_id)
            .await?
            .ok_or(Refusal::UnknownEvent)?;
        let now = OffsetDateTime::now_utc();
        if let Some(refusal) = Refusal::by_window(Some(event.window.status_at(now))) {
            return Err(refusal.into());
        }
        let message = ReservationMessage {
            ticket: uuid::Uuid::new_v4().simple().to_string(),
            event_id,
            user_id,
            reserved_at_ms: unix_millis(now),
            request_id: None,
        };
        match self.fulfilment.create_order_in_mysql(&message).await? {
            CreateOutcome::Created { .. } => Ok(Accepted::Queued {
                ticket: message.ticket,
                replayed: false,
            }),
            CreateOutcome::AlreadyDone { .. } => Err(Refusal::AlreadyPurchased.into()),
            CreateOutcome::SoldOut => Err(Refusal::SoldOut.into()),
            CreateOutcome::UnknownEvent => Err(Refusal::UnknownEvent.into()),
            CreateOutcome::UnknownBuyer => {
                Err(ServiceError::Unauthenticated("user no longer exists"))
            }
        }
    }
}
