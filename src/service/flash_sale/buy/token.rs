//! Issuing purchase tokens (the anti-bot gate, see
//! [`purchase_token`](crate::service::flash_sale::purchase_token)): only while the event is
//! active, rate limited per buyer like the buy itself, after the human check when one is
//! plugged in. The window comes from Redis (no MySQL at sale start), or from MySQL through the
//! cold-event path.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::{BuyerGate, ColdEvents, Refusal};
use crate::domain::flash_sale::EventStatus;
use crate::repo::redis::flash_sale::EventStore;
use crate::service::ServiceError;
use crate::service::flash_sale::purchase_token::{HumanCheck, NoHumanCheck};
use crate::service::flash_sale::unix_millis;

/// A purchase token handed to a buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: Duration,
}

#[derive(Clone)]
pub struct TokenIssuer {
    gate: Arc<BuyerGate>,
    store: EventStore,
    cold: ColdEvents,
    human_check: Arc<dyn HumanCheck>,
}

impl TokenIssuer {
    pub(in crate::service::flash_sale) fn new(
        gate: Arc<BuyerGate>,
        store: EventStore,
        cold: ColdEvents,
    ) -> TokenIssuer {
        TokenIssuer {
            gate,
            store,
            cold,
            human_check: Arc::new(NoHumanCheck),
        }
    }

    /// The same issuer with `check` asked before each token (a captcha service; see
    /// [`HumanCheck`]).
    pub fn with_human_check(mut self, check: Arc<dyn HumanCheck>) -> TokenIssuer {
        self.human_check = check;
        self
    }

    /// A token for the buyer in an active event; the human check is asked with `proof`.
    pub async fn issue(
        &self,
        event_id: u64,
        user_id: u64,
        proof: Option<&str>,
    ) -> Result<IssuedToken, ServiceError> {
        self.gate.admit_token_request(user_id)?;
        let now_ms = unix_millis(OffsetDateTime::now_utc());
        let status = match self.store.window(event_id).await? {
            Some((start_ms, _)) if now_ms < start_ms => Some(EventStatus::Upcoming),
            Some((_, end_ms)) if now_ms >= end_ms => Some(EventStatus::Ended),
            Some(_) => Some(EventStatus::Active),
            // A cold active event gets its token: the buy that follows finds it re-warmed.
            None => self.cold.status(event_id).await?,
        };
        if let Some(refusal) = Refusal::by_window(status) {
            return Err(refusal.into());
        }
        if !self.human_check.passed(user_id, event_id, proof).await {
            return Err(Refusal::HumanCheckFailed.into());
        }
        let tokens = self.gate.tokens();
        Ok(IssuedToken {
            token: tokens.issue(user_id, event_id, now_ms as u64),
            expires_in: tokens.ttl(),
        })
    }
}
