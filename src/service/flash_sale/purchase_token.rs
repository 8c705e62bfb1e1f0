//! The anti-bot gate in front of the buy path: a short-lived purchase token bound to one buyer and
//! one event, issued only while the event is active, and required on the buy request when the
//! deployment says so (`SPIKE_FLASH_SALE_REQUIRE_PURCHASE_TOKEN`).
//!
//! A bot that scripts the buy URL ahead of the sale must now also fetch a token after the start,
//! per buyer and per event, from a rate-limited route — and that route is where a human check
//! plugs in ([`HumanCheck`]). Checking a token is an HMAC in the process: no Redis, no MySQL, so
//! the gate costs the hot path a few microseconds and refuses forgeries before any store is asked.
//!
//! A token is `<expiry, unix ms>.<base64url HMAC-SHA256 over "v1:<user>:<event>:<expiry>">`, keyed
//! with a key derived from the JWT secret (so no new secret to deploy, and a token for one
//! purpose cannot be replayed as the other).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a buy request's purchase token was refused (all answer 403/10003; the reason is logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("purchase token missing")]
    Missing,
    #[error("purchase token malformed")]
    Malformed,
    #[error("purchase token expired")]
    Expired,
    /// Forged, or issued to another buyer or for another event.
    #[error("purchase token not valid for this buyer and event")]
    Invalid,
}

/// Issues and checks purchase tokens.
#[derive(Clone)]
pub struct PurchaseTokens {
    key: HmacSha256,
    ttl: Duration,
}

impl PurchaseTokens {
    /// Tokens keyed from `secret` (the JWT secret) that live for `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> PurchaseTokens {
        let mut derive = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        derive.update(b"spike purchase token key v1");
        let key = derive.finalize().into_bytes();
        PurchaseTokens {
            key: HmacSha256::new_from_slice(&key).expect("HMAC takes any key length"),
            ttl,
        }
    }

    /// How long a new token is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user_id` in `event_id`, valid from `now_ms` for the configured time.
    pub fn issue(&self, user_id: u64, event_id: u64, now_ms: u64) -> String {
        let expiry = now_ms.saturating_add(self.ttl.as_millis() as u64);
        let mac = self.mac(user_id, event_id, expiry).finalize().into_bytes();
        format!("{expiry}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// Whether `token` was issued by this deployment to `user_id` for `event_id` and has not
    /// expired at `now_ms`. The MAC is compared in constant time.
    pub fn verify(
        &self,
        token: Option<&str>,
        user_id: u64,
        event_id: u64,
        now_ms: u64,
    ) -> Result<(), TokenRefusal> {
        let token = token.ok_or(TokenRefusal::Missing)?;
        let (expiry, mac) = token
            .trim()
            .split_once('.')
            .ok_or(TokenRefusal::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| TokenRefusal::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenRefusal::Malformed)?;
        self.mac(user_id, event_id, expiry)
            .verify_slice(&mac)
            .map_err(|_| TokenRefusal::Invalid)?;
        if expiry <= now_ms {
            return Err(TokenRefusal::Expired);
        }
        Ok(())
    }

    fn mac(&self, user_id: u64, event_id: u64, expiry: u64) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(format!("v1:{user_id}:{event_id}:{expiry}").as_bytes());
        mac
    }
}

/// Where a human check (a captcha service) plugs in: the purchase-token route asks it before
/// issuing, with the `X-Human-Check` header's value (the captcha widget's answer). The default,
/// [`NoHumanCheck`], lets everyone through; a deployment that wants one implements this trait
/// (typically an HTTP call to the captcha provider's verify endpoint) and hands it to
/// `TokenIssuer::with_human_check`.
pub trait HumanCheck: Send + Sync {
    fn passed<'a>(
        &'a self,
        user_id: u64,
        event_id: u64,
        proof: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// No human check: every signed-in buyer may fetch a token.
pub struct NoHumanCheck;

impl HumanCheck for NoHumanCheck {
    fn passed<'a>(
        &'a self,
        _user_id: u64,
        _event_id: u64,
        _proof: Option<&'a str>,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(std::future::ready(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn tokens() -> PurchaseTokens {
        PurchaseTokens::new(
            b"a-test-secret-of-at-least-32-bytes!!",
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_token_is_good_for_its_buyer_and_event_until_it_expires() {
        let tokens = tokens();
        let token = tokens.issue(7, 3, NOW);
        assert_eq!(tokens.verify(Some(&token), 7, 3, NOW), Ok(()));
        assert_eq!(tokens.verify(Some(&token), 7, 3, NOW + 59_999), Ok(()));
        assert_eq!(
            tokens.verify(Some(&token), 7, 3, NOW + 60_000),
            Err(TokenRefusal::Expired)
        );
    }

    #[test]
    fn another_buyer_event_key_or_expiry_is_refused() {
        let tokens = tokens();
        let token = tokens.issue(7, 3, NOW);
        assert_eq!(
            tokens.verify(Some(&token), 8, 3, NOW),
            Err(TokenRefusal::Invalid)
        );
        assert_eq!(
            tokens.verify(Some(&token), 7, 4, NOW),
            Err(TokenRefusal::Invalid)
        );
        let other = PurchaseTokens::new(
            b"another-secret-of-at-least-32-bytes",
            Duration::from_secs(60),
        );
        assert_eq!(
            other.verify(Some(&token), 7, 3, NOW),
            Err(TokenRefusal::Invalid)
        );
        // Moving the expiry forward breaks the MAC.
        let (_, mac) = token.split_once('.').unwrap();
        let extended = format!("{}.{mac}", NOW + 3_600_000);
        assert_eq!(
            tokens.verify(Some(&extended), 7, 3, NOW),
            Err(TokenRefusal::Invalid)
        );
    }

    #[test]
    fn missing_and_malformed_tokens_are_refused() {
        let tokens = tokens();
        assert_eq!(tokens.verify(None, 7, 3, NOW), Err(TokenRefusal::Missing));
        for bad in ["", "abc", "12.", "x.abc", "12.@@@"] {
            assert_ne!(tokens.verify(Some(bad), 7, 3, NOW), Ok(()), "{bad:?}");
        }
    }
}
