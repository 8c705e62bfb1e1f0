//! The buy path of a flash sale (docs/design.md §5 steps 3–5): one Lua script takes the event's
//! admission token and reserves (one round trip), the reservation is published with those of
//! concurrent requests (one message, one confirm: `publish_groups`), and the buyer gets
//! `queued`. The worker turns it into an order. When the admission rate is used up the same
//! script gives the buyer a place in the event's waiting line instead (`waiting`); the worker's
//! [`LineDrainer`](crate::service::flash_sale::LineDrainer) admits them in turn.

use std::sync::Arc;
use std::time::Duration;

use super::{Accepted, BuyRequest, ColdEvents, Refusal};
use crate::config::FlashSaleSettings;
use crate::repo::redis::flash_sale::{EventStore, Reservation, ReserveRules};
use crate::service::ServiceError;
use crate::service::flash_sale::OrderQueue;
use crate::service::flash_sale::publish_groups::PublishGroups;
use crate::service::flash_sale::sold_out::SoldOutFlags;
use crate::service::messages::ReservationMessage;

pub struct QueueBuy {
    store: EventStore,
    /// Publishes each reservation with those of concurrent requests (one message per group).
    publish_groups: PublishGroups<OrderQueue>,
    /// The admission bucket, the waiting line's bound and how long a key may be pending.
    rules: ReserveRules,
    /// Set when Redis answers "sold out", so the gate refuses the next buyers without asking.
    sold_out: Arc<SoldOutFlags>,
    cold: ColdEvents,
    /// Fault injection (dev only): die between the reservation and its publish.
    abort_after_reserve: bool,
}

impl QueueBuy {
    pub(in crate::service::flash_sale) fn new(
        settings: &FlashSaleSettings,
        request_timeout: Duration,
        store: EventStore,
        queue: OrderQueue,
        sold_out: Arc<SoldOutFlags>,
        cold: ColdEvents,
    ) -> QueueBuy {
        QueueBuy {
            store,
            publish_groups: PublishGroups::new(
                queue,
                usize::from(settings.publish_group_max),
                usize::from(settings.publish_groups_in_flight),
            ),
            rules: ReserveRules {
                admission: settings.event_rate_limit,
                line_max: settings.waiting_line_max,
                pending_key_limit: request_timeout,
            },
            sold_out,
            cold,
            abort_after_reserve: settings.fault_abort_after_reserve,
        }
    }

    /// Reserves a unit for the buyer and queues its order.
    pub async fn buy(&self, request: BuyRequest<'_>) -> Result<Accepted, ServiceError> {
        let BuyRequest {
            event_id,
            user_id,
            idempotency_key,
            request_id,
            ..
        } = request;
        let ticket = uuid::Uuid::new_v4().simple().to_string();
        let reservation = self
            .store
            .reserve(event_id, user_id, &ticket, idempotency_key, self.rules)
            .await?;
        let reserved_at_ms = match reservation {
            Reservation::Reserved { at_ms } => at_ms,
            Reservation::Replay { ticket } => {
                return Ok(Accepted::Queued {
                    ticket,
                    replayed: true,
                });
            }
            Reservation::Waiting { ticket, position } => {
                return Ok(Accepted::Waiting { ticket, position });
            }
            Reservation::InProgress => return Err(Refusal::IdempotencyKeyInProgress.into()),
            Reservation::SoldOut => {
                self.sold_out.mark(event_id);
                return Err(Refusal::SoldOut.into());
            }
            Reservation::Limited { retry_after } => {
                return Err(Refusal::RateLimited { retry_after }.into());
            }
            Reservation::NotStarted => return Err(Refusal::NotStarted.into()),
            Reservation::Ended => return Err(Refusal::Ended.into()),
            Reservation::Duplicate => return Err(Refusal::AlreadyPurchased.into()),
            Reservation::NotWarm => {
                let status = self.cold.status(event_id).await?;
                return Err(Refusal::by_window(status)
                    .unwrap_or(Refusal::NotReady)
                    .into());
            }
        };
        if self.abort_after_reserve {
            tracing::error!(
                event_id,
                user_id,
                "fault injection: aborting after the reservation"
            );
            std::process::abort();
        }
        let message = ReservationMessage {
            ticket: ticket.clone(),
            event_id,
            user_id,
            reserved_at_ms,
            request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
        };
        if let Err(error) = self.publish_groups.publish(message).await {
            tracing::warn!(event_id, user_id, %error, "reservation not queued; undoing it");
            self.store
                .unreserve(event_id, user_id, &ticket, idempotency_key)
                .await?;
            return Err(Refusal::QueueUnavailable.into());
        }
        // The reservation is queued: the buyer is answered 202 whatever the confirmation of the
        // key does. Unconfirmed, the key stays pending; a retry after the rules' `pending_key_limit` gets
        // this ticket (a 503 here would tell the buyer nothing was held while an order is coming).
        if let Some(key) = idempotency_key
            && let Err(error) = self
                .store
                .confirm_idempotency(event_id, user_id, key, &ticket)
                .await
        {
            tracing::warn!(event_id, user_id, %error, "idempotency key not confirmed; it stays pending");
        }
        Ok(Accepted::Queued {
            ticket,
            replayed: false,
        })
    }
}
