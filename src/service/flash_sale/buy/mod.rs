//! The buyer's side of a flash sale (docs/design.md §5), in small units:
//!
//! - [`BuyerGate`] (`gate`): the per-buyer limit, the purchase token and the sold-out flag, all
//!   in memory, in front of everything else.
//! - [`BuyPath`]: where an admitted buy goes, chosen once at start-up —
//!   [`QueueBuy`] (`queue_path`: Redis reservation, queued order) or the naive [`DbBuy`]
//!   (`db_path`: the order transaction in the request, `SPIKE_FLASH_SALE_MODE=db`).
//! - [`Buy`]: the gate, then the path; every attempt counted once by its outcome.
//! - [`TokenIssuer`] (`token`): purchase tokens for active events.
//! - [`BuyResults`] (`result`): where a buyer stands, answered at once or held until it changes
//!   ([`ResultWatch`], `watch`).
//! - [`ColdEvents`] (`cold`): what an event whose Redis keys are missing is, shared by the
//!   buy and the token route.
//!
//! Refusals are one type, [`Refusal`], carried as `ServiceError::Refused`.

mod cold;
mod db_path;
mod gate;
mod queue_path;
mod refusal;
mod result;
mod token;
mod watch;

use std::sync::Arc;

pub use cold::ColdEvents;
pub use db_path::DbBuy;
pub use gate::BuyerGate;
pub use queue_path::QueueBuy;
pub use refusal::Refusal;
pub use result::{BuyResult, BuyResults, MAX_RESULT_WAIT};
pub use token::{IssuedToken, TokenIssuer};
pub use watch::ResultWatch;

use crate::service::ServiceError;
use crate::telemetry::metrics::names;

/// A purchase attempt as the API hands it over.
#[derive(Debug, Clone, Copy)]
pub struct BuyRequest<'a> {
    pub event_id: u64,
    pub user_id: u64,
    /// Makes a retry answer with the first request's ticket.
    pub idempotency_key: Option<&'a str>,
    /// Travels with the message (a header), to join the worker's logs with the API's.
    pub request_id: &'a str,
    /// `X-Purchase-Token`, checked when the deployment requires one.
    pub purchase_token: Option<&'a str>,
}

/// A purchase the sale accepted: `ticket` identifies it from now on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A unit is reserved and the order is on its way.
    Queued {
        ticket: String,
        /// True when an earlier request with the same `Idempotency-Key` was answered with it.
        replayed: bool,
    },
    /// The event's admission rate is used up: the buyer holds a place in its waiting line
    /// (`position` 1 is next) and is admitted in turn without asking again.
    Waiting { ticket: String, position: u64 },
}

/// Where an admitted buy goes (`SPIKE_FLASH_SALE_MODE`).
#[expect(
    clippy::large_enum_variant,
    reason = "built once per process and held in an Arc"
)]
pub enum BuyPath {
    Queue(QueueBuy),
    Db(DbBuy),
}

/// Buying one unit: the gate, then the path.
#[derive(Clone)]
pub struct Buy {
    gate: Arc<BuyerGate>,
    path: Arc<BuyPath>,
}

impl Buy {
    pub fn new(gate: Arc<BuyerGate>, path: BuyPath) -> Buy {
        Buy {
            gate,
            path: Arc::new(path),
        }
    }

    /// Reserves a unit for the buyer and queues its order, or says why not.
    pub async fn buy(&self, request: BuyRequest<'_>) -> Result<Accepted, ServiceError> {
        let result = self.attempt(request).await;
        metrics::counter!(names::BUYS, "outcome" => outcome(&result)).increment(1);
        result
    }

    async fn attempt(&self, request: BuyRequest<'_>) -> Result<Accepted, ServiceError> {
        self.gate.admit_buy(
            request.event_id,
            request.user_id,
            request.purchase_token,
            request.idempotency_key.is_some(),
        )?;
        // Boxed: a path's future is large (a Redis script, a publish group, a re-warm) and every
        // layer of the router moves the handler's future, copying it whole each time; boxed, a
        // buy refused at the gate (the common answer in a sale) never builds it.
        match &*self.path {
            BuyPath::Queue(path) => Box::pin(path.buy(request)).await,
            BuyPath::Db(path) => Box::pin(path.buy(request)).await,
        }
    }
}

/// The `outcome` label an attempt is counted under (`names::BUY_OUTCOMES`).
fn outcome(result: &Result<Accepted, ServiceError>) -> &'static str {
    match result {
        Ok(Accepted::Queued {
            replayed: false, ..
        }) => "queued",
        Ok(Accepted::Queued { replayed: true, .. }) => "replayed",
        Ok(Accepted::Waiting { .. }) => "waiting",
        Err(ServiceError::Refused(refusal)) => refusal.label(),
        Err(ServiceError::Unavailable(..)) => "unavailable",
        Err(_) => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_a_listed_label() {
        let results = [
            Ok(Accepted::Queued {
                ticket: "t".into(),
                replayed: false,
            }),
            Ok(Accepted::Queued {
                ticket: "t".into(),
                replayed: true,
            }),
            Ok(Accepted::Waiting {
                ticket: "t".into(),
                position: 3,
            }),
            Err(Refusal::SoldOut.into()),
            Err(ServiceError::Unavailable(
                crate::repo::Dependency::Redis,
                crate::repo::RepoError::Disconnected(crate::repo::Dependency::Redis),
            )),
            Err(ServiceError::internal("a bug")),
        ];
        let labels: Vec<_> = results.iter().map(outcome).collect();
        assert_eq!(
            labels,
            [
                "queued",
                "replayed",
                "waiting",
                "sold_out",
                "unavailable",
                "error"
            ]
        );
        for label in labels {
            assert!(names::BUY_OUTCOMES.contains(&label), "{label} not listed");
        }
    }
}
