//! Where a buyer stands in an event, as `GET /spike/events/{id}/result` answers: a place in the
//! waiting line, a reservation on its way, the outcome the worker recorded in Redis, or MySQL's
//! record once Redis has forgotten — and, with `?wait=N`, the same answer held until it changes
//! (see `watch`).

use std::sync::Arc;
use std::time::Duration;

use sqlx::MySqlPool;
use tokio::time::Instant;

use super::watch::{ResultWatch, Wake};
use crate::domain::flash_sale::{BuyerOutcome, FailureReason};
use crate::repo::mysql::flash_sale_events;
use crate::repo::redis::flash_sale::{EventStore, Standing};
use crate::service::ServiceError;

/// The longest a result request may be held.
pub const MAX_RESULT_WAIT: Duration = Duration::from_secs(30);

/// Where a buyer stands in an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuyResult {
    /// In the waiting line; `position` 1 is next.
    Waiting {
        ticket: String,
        position: u64,
    },
    /// Reserved; the worker is creating the order.
    Queued {
        ticket: String,
    },
    Success {
        order_id: u64,
    },
    Failed {
        reason: FailureReason,
    },
    None,
}

impl BuyResult {
    /// Whether `self`, read after `asked`, is news to a buyer who asked when it was `asked`:
    /// another status, or the front of the line reached.
    fn moved_on_from(&self, asked: &BuyResult) -> bool {
        match (asked, self) {
            (
                BuyResult::Waiting {
                    position: before, ..
                },
                BuyResult::Waiting { position: now, .. },
            ) => *before > 1 && *now == 1,
            _ => std::mem::discriminant(asked) != std::mem::discriminant(self),
        }
    }

    /// Whether the standing can still change by itself (a held request is worth holding).
    fn is_pending(&self) -> bool {
        matches!(self, BuyResult::Waiting { .. } | BuyResult::Queued { .. })
    }
}

#[derive(Clone)]
pub struct BuyResults {
    db: MySqlPool,
    store: EventStore,
    watch: Arc<ResultWatch>,
}

impl BuyResults {
    pub fn new(db: MySqlPool, store: EventStore, watch: Arc<ResultWatch>) -> BuyResults {
        BuyResults { db, store, watch }
    }

    /// Where `user_id` stands in `event_id`; an unknown event is `EventNotFound`.
    pub async fn of(&self, event_id: u64, user_id: u64) -> Result<BuyResult, ServiceError> {
        match self.store.standing(event_id, user_id).await? {
            Standing::Settled(BuyerOutcome::Success { order_id }) => {
                return Ok(BuyResult::Success { order_id });
            }
            Standing::Settled(BuyerOutcome::Failed(reason)) => {
                return Ok(BuyResult::Failed { reason });
            }
            Standing::Reserved { ticket } => return Ok(BuyResult::Queued { ticket }),
            Standing::Waiting { ticket, position } => {
                return Ok(BuyResult::Waiting { ticket, position });
            }
            Standing::None => {}
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

    /// [`BuyResults::of`], held up to `wait` (at most [`MAX_RESULT_WAIT`]) until it moves on
    /// from what it was at the time of asking: another status, or the front of the line. A
    /// settled or unknown buyer, a full watch, a lost subscription or a shutdown answer at once.
    pub async fn wait(
        &self,
        event_id: u64,
        user_id: u64,
        wait: Duration,
    ) -> Result<BuyResult, ServiceError> {
        if wait.is_zero() {
            return self.of(event_id, user_id).await;
        }
        let deadline = Instant::now() + wait.min(MAX_RESULT_WAIT);
        // Registered before the first read: a change announced after it wakes the request.
        let waiter = self.watch.register(event_id, user_id).await;
        let asked = self.of(event_id, user_id).await?;
        let Some(mut waiter) = waiter.filter(|_| asked.is_pending()) else {
            return Ok(asked);
        };
        let mut latest = asked.clone();
        loop {
            match waiter.next_change(deadline).await {
                Wake::Changed => {
                    latest = self.of(event_id, user_id).await?;
                    if latest.moved_on_from(&asked) {
                        return Ok(latest);
                    }
                }
                Wake::TimedOut => return Ok(latest),
                Wake::Closed => return self.of(event_id, user_id).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(position: u64) -> BuyResult {
        BuyResult::Waiting {
            ticket: "t".into(),
            position,
        }
    }

    #[test]
    fn a_held_request_answers_on_another_status_or_the_front_of_the_line() {
        let queued = BuyResult::Queued { ticket: "t".into() };
        let success = BuyResult::Success { order_id: 1 };
        assert!(queued.moved_on_from(&waiting(3)));
        assert!(success.moved_on_from(&queued));
        assert!(waiting(1).moved_on_from(&waiting(5)), "the front reached");
        assert!(
            !waiting(4).moved_on_from(&waiting(5)),
            "moving up is not news"
        );
        assert!(
            !waiting(1).moved_on_from(&waiting(1)),
            "already at the front"
        );
        assert!(!queued.moved_on_from(&BuyResult::Queued { ticket: "t".into() }));
    }

    #[test]
    fn only_the_line_and_a_reservation_are_worth_holding() {
        assert!(waiting(2).is_pending());
        assert!(BuyResult::Queued { ticket: "t".into() }.is_pending());
        assert!(!BuyResult::Success { order_id: 1 }.is_pending());
        assert!(
            !BuyResult::Failed {
                reason: FailureReason::SoldOut
            }
            .is_pending()
        );
        assert!(!BuyResult::None.is_pending());
    }
}
