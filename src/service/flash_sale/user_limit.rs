//! The in-process per-buyer rate limit in front of the flash-sale endpoint (docs/design.md §5 step 1):
//! a buyer hammering the button is refused here, before any Redis call. Each API replica has its
//! own limits; the cluster-wide limit per event lives in Redis.
//!
//! `governor`'s keyed GCRA limiter does the bookkeeping (one compare-and-swap on a sharded map,
//! no lock held across buyers); [`UserRateLimiter::forget_idle`] drops buyers whose limit has
//! fully recovered, on a timer rather than on the hot path.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateLimit;

/// `burst` requests at once per buyer, refilled at `burst` per `per`.
pub struct UserRateLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<u64, DashMapStateStore<u64>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl UserRateLimiter {
    pub fn new(limit: RateLimit) -> UserRateLimiter {
        UserRateLimiter::with_clock(limit, DefaultClock::default())
    }
}

impl<C: Clock + Clone> UserRateLimiter<C> {
    /// With a clock of the caller's (tests use a fake one).
    pub fn with_clock(limit: RateLimit, clock: C) -> UserRateLimiter<C> {
        // `burst` and `per` are validated non-zero; a sub-nanosecond period rounds up.
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let period = (limit.per / burst.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("the period is at least a nanosecond")
            .allow_burst(burst);
        UserRateLimiter {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// Takes one request of `user_id`'s allowance; `Err(retry_after)` when it is used up.
    pub fn take(&self, user_id: u64) -> Result<(), Duration> {
        self.limiter
            .check_key(&user_id)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets buyers whose allowance is full again (they are indistinguishable from new ones).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Buyers currently remembered.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(
        burst: u32,
        per: Duration,
    ) -> (UserRateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limiter = UserRateLimiter::with_clock(RateLimit::new(burst, per), clock.clone());
        (limiter, clock)
    }

    #[test]
    fn a_burst_passes_then_the_allowance_refills_at_the_rate() {
        let (limiter, clock) = limiter(3, Duration::from_secs(3));
        for _ in 0..3 {
            assert!(limiter.take(1).is_ok());
        }
        let wait = limiter.take(1).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        clock.advance(Duration::from_millis(500));
        assert!(limiter.take(1).is_err());
        clock.advance(Duration::from_millis(500));
        assert!(limiter.take(1).is_ok());
        assert!(limiter.take(1).is_err());
    }

    #[test]
    fn users_have_their_own_allowance() {
        let (limiter, _) = limiter(1, Duration::from_secs(60));
        assert!(limiter.take(1).is_ok());
        assert!(limiter.take(1).is_err());
        assert!(limiter.take(2).is_ok());
    }

    #[test]
    fn a_long_pause_never_banks_more_than_the_burst() {
        let (limiter, clock) = limiter(2, Duration::from_secs(1));
        clock.advance(Duration::from_secs(3600));
        assert!(limiter.take(1).is_ok());
        assert!(limiter.take(1).is_ok());
        assert!(limiter.take(1).is_err());
    }

    #[test]
    fn buyers_with_a_full_allowance_are_forgotten() {
        let (limiter, clock) = limiter(2, Duration::from_secs(1));
        limiter.take(1).unwrap();
        limiter.take(2).unwrap();
        limiter.take(2).unwrap();
        assert_eq!(limiter.len(), 2);
        // governor keeps a key one emission interval (here 500 ms) past its full recovery.
        clock.advance(Duration::from_secs(1));
        limiter.forget_idle();
        assert_eq!(limiter.len(), 1, "buyer 1 has recovered, buyer 2 not yet");
        clock.advance(Duration::from_millis(500));
        limiter.forget_idle();
        assert!(limiter.is_empty());
    }
}
