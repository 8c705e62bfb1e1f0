//! The local sold-out flag (docs/design.md §5 step 2): once Redis says an event is sold out, this
//! replica answers "sold out" without calling Redis. A unit that comes back (an order closed
//! unpaid, a reservation undone) is announced on a Redis pub/sub channel and every replica clears
//! its flag. A flag also expires by itself after [`FLAG_TTL`], so a missed announcement (the
//! subscription was down) costs at most that long of wrong "sold out" answers. The flags live in
//! a `moka` cache with that TTL, which also evicts the flags of events nobody asks about again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::repo::redis::announcements::Announcements;

/// How long a flag holds without a fresh "sold out" from Redis.
pub const FLAG_TTL: Duration = Duration::from_secs(5);
/// Pause before resubscribing after the subscription failed.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);
/// Events flagged at once, at most (far more than run at the same time).
const MAX_FLAGS: u64 = 100_000;

/// Events this replica believes sold out.
pub struct SoldOutFlags {
    flags: moka::sync::Cache<u64, ()>,
    /// Whether the subscription is up (announcements are being received).
    listening: AtomicBool,
}

impl Default for SoldOutFlags {
    fn default() -> SoldOutFlags {
        SoldOutFlags::with_ttl(FLAG_TTL)
    }
}

impl SoldOutFlags {
    pub fn with_ttl(ttl: Duration) -> SoldOutFlags {
        SoldOutFlags {
            flags: moka::sync::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(MAX_FLAGS)
                .build(),
            listening: AtomicBool::new(false),
        }
    }

    pub fn is_sold_out(&self, event_id: u64) -> bool {
        self.flags.contains_key(&event_id)
    }

    pub fn mark(&self, event_id: u64) {
        self.flags.insert(event_id, ());
    }

    pub fn clear(&self, event_id: u64) {
        self.flags.invalidate(&event_id);
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    pub fn clear_all(&self) {
        self.flags.invalidate_all();
    }

    /// Listens on `channel` until `shutdown`, clearing the flag of every announced event. After a
    /// lost subscription every flag is cleared: announcements may have been missed meanwhile.
    pub async fn listen(
        &self,
        announcements: Announcements,
        channel: String,
        shutdown: CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            match announcements.stock_returned(&channel).await {
                Ok(mut returned) => {
                    tracing::debug!(channel, "listening for returned flash-sale stock");
                    self.clear_all();
                    self.listening.store(true, Ordering::Release);
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            event_id = returned.next() => match event_id {
                                Some(event_id) => self.clear(event_id),
                                None => break,
                            },
                        }
                    }
                    self.listening.store(false, Ordering::Release);
                    tracing::warn!(channel, "stock announcements subscription lost");
                }
                Err(error) => {
                    tracing::warn!(channel, %error, "subscribing to stock announcements failed")
                }
            }
            self.clear_all();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_holds_until_cleared() {
        let flags = SoldOutFlags::default();
        assert!(!flags.is_sold_out(7));
        flags.mark(7);
        assert!(flags.is_sold_out(7));
        assert!(!flags.is_sold_out(8), "flags are per event");
        flags.clear(7);
        assert!(!flags.is_sold_out(7));
        flags.mark(7);
        flags.mark(9);
        flags.clear_all();
        assert!(!flags.is_sold_out(7) && !flags.is_sold_out(9));
    }

    #[test]
    fn a_flag_expires_by_itself() {
        let flags = SoldOutFlags::with_ttl(Duration::from_millis(50));
        flags.mark(7);
        assert!(flags.is_sold_out(7));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while flags.is_sold_out(7) {
            assert!(
                std::time::Instant::now() < deadline,
                "the flag never expired"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
