//! Why a buy (or a purchase-token request) was turned away: the one list of refusals, each with
//! the label `spike_buy_total` counts it under. The API maps each to its envelope in one table
//! (`api::error`); nothing here knows HTTP.

use std::time::Duration;

use crate::domain::flash_sale::EventStatus;
use crate::service::flash_sale::purchase_token::TokenRefusal;

/// A buyer turned away. Nothing was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The buyer's own limit (in the process) or the event's admission bucket (in Redis).
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// The deployment requires a purchase token and this one is missing or not valid.
    #[error("{0}")]
    PurchaseToken(TokenRefusal),
    /// The purchase-token route's human check said no.
    #[error("the human check was not passed")]
    HumanCheckFailed,
    #[error("flash-sale event not found")]
    UnknownEvent,
    #[error("event not started")]
    NotStarted,
    #[error("event ended")]
    Ended,
    #[error("sold out")]
    SoldOut,
    /// The buyer holds a reservation or an order in this event already.
    #[error("already purchased or queued in this event")]
    AlreadyPurchased,
    /// The `Idempotency-Key`'s first request is still being published.
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyKeyInProgress,
    /// An active event whose Redis keys are missing: refused (never "sold out", never sold
    /// blind) while it is re-warmed.
    #[error("the sale is not ready, retry shortly")]
    NotReady,
    /// The broker did not confirm the reservation's message; the reservation was undone.
    #[error("the order queue cannot take the order now, retry later")]
    QueueUnavailable,
}

impl Refusal {
    /// The `outcome` label of `spike_buy_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::PurchaseToken(_) => "no_purchase_token",
            Refusal::HumanCheckFailed => "human_check_failed",
            Refusal::UnknownEvent => "unknown_event",
            Refusal::NotStarted => "not_started",
            Refusal::Ended => "ended",
            Refusal::SoldOut => "sold_out",
            Refusal::AlreadyPurchased => "duplicate",
            Refusal::IdempotencyKeyInProgress => "in_progress",
            Refusal::NotReady | Refusal::QueueUnavailable => "unavailable",
        }
    }

    /// The refusal an event's window gives (`None`: no such event); `None` while it is active.
    pub fn by_window(status: Option<EventStatus>) -> Option<Refusal> {
        match status {
            None => Some(Refusal::UnknownEvent),
            Some(EventStatus::Upcoming) => Some(Refusal::NotStarted),
            Some(EventStatus::Ended) => Some(Refusal::Ended),
            Some(EventStatus::Active) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::names;

    #[test]
    fn every_label_is_listed_for_the_zeroed_counters() {
        let every = [
            Refusal::RateLimited {
                retry_after: Duration::ZERO,
            },
            Refusal::PurchaseToken(TokenRefusal::Missing),
            Refusal::HumanCheckFailed,
            Refusal::UnknownEvent,
            Refusal::NotStarted,
            Refusal::Ended,
            Refusal::SoldOut,
            Refusal::AlreadyPurchased,
            Refusal::IdempotencyKeyInProgress,
            Refusal::NotReady,
            Refusal::QueueUnavailable,
        ];
        for refusal in every {
            assert!(
                names::BUY_OUTCOMES.contains(&refusal.label()),
                "{refusal:?} is counted under a label not in names::BUY_OUTCOMES"
            );
        }
    }

    #[test]
    fn only_an_active_window_lets_a_buyer_through() {
        assert_eq!(Refusal::by_window(None), Some(Refusal::UnknownEvent));
        assert_eq!(
            Refusal::by_window(Some(EventStatus::Upcoming)),
            Some(Refusal::NotStarted)
        );
        assert_eq!(
            Refusal::by_window(Some(EventStatus::Ended)),
            Some(Refusal::Ended)
        );
        assert_eq!(Refusal::by_window(Some(EventStatus::Active)), None);
    }
}
