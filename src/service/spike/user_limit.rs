//! The in-process per-user token bucket in front of the flash-sale endpoint (DESIGN.md §5
//! step 1): a buyer hammering the button is refused here, before any Redis call. Each API replica
//! has its own buckets; the cluster-wide limit per event lives in Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// Buckets kept before idle (full) ones are swept out.
const SWEEP_ABOVE: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One token bucket per user id.
#[derive(Debug)]
pub struct UserRateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl UserRateLimiter {
    pub fn new(limit: RateLimit) -> UserRateLimiter {
        UserRateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `user_id`; `Err(retry_after)` when the bucket is empty.
    pub fn take(&self, user_id: u64, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.limit.burst);
        let rate = self.limit.refill_per_second();
        let mut buckets = self.buckets.lock().expect("rate-limit buckets poisoned");
        if buckets.len() >= SWEEP_ABOVE {
            // A bucket refilled to the brim is the same as no bucket.
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(user_id).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32, per: Duration) -> UserRateLimiter {
        UserRateLimiter::new(RateLimit { burst, per })
    }

    #[test]
    fn a_burst_passes_then_the_bucket_refills_at_the_rate() {
        let limiter = limiter(3, Duration::from_secs(3));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take(1, t0).is_ok());
        }
        let wait = limiter.take(1, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.take(1, t0 + Duration::from_millis(500)).is_err());
        assert!(limiter.take(1, t0 + Duration::from_secs(1)).is_ok());
        assert!(limiter.take(1, t0 + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn users_have_their_own_buckets() {
        let limiter = limiter(1, Duration::from_secs(60));
        let now = Instant::now();
        assert!(limiter.take(1, now).is_ok());
        assert!(limiter.take(1, now).is_err());
        assert!(limiter.take(2, now).is_ok());
    }

    #[test]
    fn a_long_pause_never_banks_more_than_the_burst() {
        let limiter = limiter(2, Duration::from_secs(1));
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3600);
        assert!(limiter.take(1, later).is_ok());
        assert!(limiter.take(1, later).is_ok());
        assert!(limiter.take(1, later).is_err());
    }
}
