//! The buyer gate: what a buy request must pass before any store is asked — the per-buyer limit
//! ([`user_limit`](crate::service::flash_sale::user_limit)), the purchase token when the
//! deployment requires one ([`purchase_token`](crate::service::flash_sale::purchase_token)), and
//! this replica's sold-out flag ([`sold_out`](crate::service::flash_sale::sold_out)). All three
//! are in memory: a refusal here costs no round trip.

use std::sync::Arc;

use time::OffsetDateTime;

use super::Refusal;
use crate::config::FlashSaleSettings;
use crate::service::flash_sale::purchase_token::PurchaseTokens;
use crate::service::flash_sale::sold_out::SoldOutFlags;
use crate::service::flash_sale::unix_millis;
use crate::service::flash_sale::user_limit::UserRateLimiter;

pub struct BuyerGate {
    buys: UserRateLimiter,
    /// The purchase-token route's own allowance per buyer (fetching tokens is not buying).
    token_requests: UserRateLimiter,
    tokens: PurchaseTokens,
    require_token: bool,
    sold_out: Arc<SoldOutFlags>,
}

impl BuyerGate {
    pub fn new(
        settings: &FlashSaleSettings,
        tokens: PurchaseTokens,
        sold_out: Arc<SoldOutFlags>,
    ) -> BuyerGate {
        BuyerGate {
            buys: UserRateLimiter::new(settings.user_rate_limit),
            token_requests: UserRateLimiter::new(settings.user_rate_limit),
            tokens,
            require_token: settings.require_purchase_token,
            sold_out,
        }
    }

    /// Lets a buy through or says why not. A request carrying an `Idempotency-Key` passes a
    /// sold-out flag: it may be the retry of a request that was queued, and Redis holds its
    /// first answer.
    pub fn admit_buy(
        &self,
        event_id: u64,
        user_id: u64,
        purchase_token: Option<&str>,
        has_idempotency_key: bool,
    ) -> Result<(), Refusal> {
        self.buys
            .take(user_id)
            .map_err(|retry_after| Refusal::RateLimited { retry_after })?;
        if self.require_token {
            let now_ms = unix_millis(OffsetDateTime::now_utc()) as u64;
            self.tokens
                .verify(purchase_token, user_id, event_id, now_ms)
                .map_err(|refusal| {
                    tracing::info!(event_id, user_id, %refusal, "buy refused at the gate");
                    Refusal::PurchaseToken(refusal)
                })?;
        }
        if !has_idempotency_key && self.sold_out.is_sold_out(event_id) {
            return Err(Refusal::SoldOut);
        }
        Ok(())
    }

    /// Takes one purchase-token request from the buyer's allowance for them.
    pub fn admit_token_request(&self, user_id: u64) -> Result<(), Refusal> {
        self.token_requests
            .take(user_id)
            .map_err(|retry_after| Refusal::RateLimited { retry_after })
    }

    pub fn tokens(&self) -> &PurchaseTokens {
        &self.tokens
    }

    /// Forgets the buyers whose allowances are full again (the API role runs it every minute).
    pub fn forget_idle_buyers(&self) {
        self.buys.forget_idle();
        self.token_requests.forget_idle();
    }
}
