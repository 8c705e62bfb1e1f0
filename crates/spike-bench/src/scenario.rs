//! The scenarios: what each one sets up before the clock starts and which request it sends as
//! request number `i`.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, Uri};

use super::BenchError;
use super::client::{Call, parse_path};
use super::load::RequestSource;
use super::seed::Buyer;

/// `GET /healthz` (the HTTP ceiling of the server).
pub struct Healthz;

impl RequestSource for Healthz {
    fn call(&self, _: u64) -> Option<Call> {
        Some(Call::get(Uri::from_static("/healthz")))
    }
}

/// `GET /api/v1/products/{id}` of one product: the cache-hit path.
pub struct ProductDetail {
    pub path: Uri,
}

impl RequestSource for ProductDetail {
    fn call(&self, _: u64) -> Option<Call> {
        Some(Call::get(self.path.clone()))
    }
}

/// Flash-sale buys: request `i` comes from buyer `order(i)`.
pub struct Buys {
    path: Uri,
    authorizations: Vec<HeaderValue>,
    /// One per buyer, when the run passes the anti-bot gate (`--purchase-token`).
    purchase_tokens: Option<Vec<HeaderValue>>,
    order: BuyerOrder,
}

/// Which buyer sends request `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyerOrder {
    /// Buyer `i`, each once (`reserve`); ends when the buyers run out.
    EachOnce,
    /// Buyer `i mod n`, for `attempts` rounds (`sale`): every buyer tries once before anybody
    /// tries again, as a crowd pressing "buy" repeatedly would.
    Rounds { attempts: u32 },
    /// Buyer `skip + i mod (n - skip)`, without end (`sold-out`).
    Cycle { skip: usize },
}

impl Buys {
    pub fn new(event_id: u64, buyers: &[Buyer], order: BuyerOrder) -> Result<Buys, BenchError> {
        Ok(Buys {
            path: parse_path(&format!("/api/v1/spike/events/{event_id}/orders"))?,
            authorizations: buyers.iter().map(|b| b.authorization.clone()).collect(),
            purchase_tokens: None,
            order,
        })
    }

    /// Sends `tokens[b]` as buyer `b`'s `X-Purchase-Token`.
    pub fn with_purchase_tokens(mut self, tokens: Vec<HeaderValue>) -> Buys {
        self.purchase_tokens = Some(tokens);
        self
    }

    /// The buyer (index into the seeded buyers) of request `i`.
    pub fn buyer_of(&self, i: u64) -> Option<usize> {
        let n = self.authorizations.len() as u64;
        match self.order {
            BuyerOrder::EachOnce => (i < n).then_some(i as usize),
            BuyerOrder::Rounds { attempts } => {
                (n > 0 && i < n * u64::from(attempts)).then(|| (i % n) as usize)
            }
            BuyerOrder::Cycle { skip } => {
                let pool = n.checked_sub(skip as u64).filter(|p| *p > 0)?;
                Some(skip + (i % pool) as usize)
            }
        }
    }
}

impl RequestSource for Buys {
    fn call(&self, i: u64) -> Option<Call> {
        let buyer = self.buyer_of(i)?;
        Some(Call {
            method: Method::POST,
            path: self.path.clone(),
            authorization: Some(self.authorizations[buyer].clone()),
            purchase_token: self
                .purchase_tokens
                .as_ref()
                .map(|tokens| tokens[buyer].clone()),
            idempotency_key: None,
            body: None,
        })
    }
}

/// Regular orders of one unit of one product, buyers taking turns.
pub struct RegularOrders {
    body: Bytes,
    authorizations: Vec<HeaderValue>,
}

impl RegularOrders {
    pub fn new(product_id: u64, buyers: &[Buyer]) -> RegularOrders {
        let body = serde_json::json!({"items": [{"product_id": product_id, "quantity": 1}]});
        RegularOrders {
            body: Bytes::from(body.to_string()),
            authorizations: buyers.iter().map(|b| b.authorization.clone()).collect(),
        }
    }
}

impl RequestSource for RegularOrders {
    fn call(&self, i: u64) -> Option<Call> {
        let n = self.authorizations.len() as u64;
        (n > 0).then(|| Call {
            method: Method::POST,
            path: Uri::from_static("/api/v1/orders"),
            authorization: Some(self.authorizations[(i % n) as usize].clone()),
            purchase_token: None,
            idempotency_key: None,
            body: Some(self.body.clone()),
        })
    }
}

/// Shares a source with the load loop.
pub fn shared<S: RequestSource + 'static>(source: S) -> Arc<dyn RequestSource> {
    Arc::new(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buys(n: usize, order: BuyerOrder) -> Buys {
        Buys {
            path: Uri::from_static("/"),
            authorizations: vec![HeaderValue::from_static("Bearer x"); n],
            purchase_tokens: None,
            order,
        }
    }

    #[test]
    fn each_buyer_once_then_nothing() {
        let b = buys(3, BuyerOrder::EachOnce);
        let order: Vec<_> = (0..4).map(|i| b.buyer_of(i)).collect();
        assert_eq!(order, [Some(0), Some(1), Some(2), None]);
    }

    #[test]
    fn rounds_let_everybody_try_before_anybody_retries() {
        let b = buys(3, BuyerOrder::Rounds { attempts: 2 });
        let order: Vec<_> = (0..7).map(|i| b.buyer_of(i)).collect();
        assert_eq!(
            order,
            [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2), None]
        );
    }

    #[test]
    fn cycles_skip_the_buyers_of_the_set_up() {
        let b = buys(4, BuyerOrder::Cycle { skip: 1 });
        let order: Vec<_> = (0..5).map(|i| b.buyer_of(i)).collect();
        assert_eq!(order, [Some(1), Some(2), Some(3), Some(1), Some(2)]);
        assert_eq!(buys(1, BuyerOrder::Cycle { skip: 1 }).buyer_of(0), None);
    }
}
