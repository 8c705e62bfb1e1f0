//! The local sold-out flag (DESIGN.md §5 step 2): once Redis says an event is sold out, this
//! replica answers "sold out" without calling Redis. A unit that comes back (an order closed
//! unpaid, a reservation undone) is announced on a Redis pub/sub channel and every replica clears
//! its flag. A flag also expires by itself after [`FLAG_TTL`], so a missed announcement (the
//! subscription was down) costs at most that long of wrong "sold out" answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long a flag holds without a fresh "sold out" from Redis.
pub const FLAG_TTL: Duration = Duration::from_secs(5);
/// Pause before resubscribing after the subscription failed.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);

/// Events this replica believes sold out, with when the belief expires.
#[derive(Debug, Default)]
pub struct SoldOutFlags {
    until: Mutex<HashMap<u64, Instant>>,
    /// Whether the subscription is up (announcements are being received).
    listening: AtomicBool,
}

impl SoldOutFlags {
    pub fn is_sold_out(&self, event_id: u64, now: Instant) -> bool {
        let mut until = self.until.lock().expect("sold-out flags poisoned");
        match until.get(&event_id) {
            Some(expiry) if *expiry > now => true,
            Some(_) => {
                until.remove(&event_id);
                false
            }
            None => false,
        }
    }

    pub fn mark(&self, event_id: u64, now: Instant) {
        self.until
            .lock()
            .expect("sold-out flags poisoned")
            .insert(event_id, now + FLAG_TTL);
    }

    pub fn clear(&self, event_id: u64) {
        self.until
            .lock()
            .expect("sold-out flags poisoned")
            .remove(&event_id);
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    pub fn clear_all(&self) {
        self.until.lock().expect("sold-out flags poisoned").clear();
    }

    /// Listens on `channel` until `shutdown`, clearing the flag of every announced event. After a
    /// lost subscription every flag is cleared: announcements may have been missed meanwhile.
    pub async fn listen(
        &self,
        client: redis::Client,
        channel: String,
        shutdown: CancellationToken,
    ) {
        while !shutdown.is_cancelled() {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match subscribed.await {
                Ok(mut pubsub) => {
                    tracing::debug!(channel, "listening for returned flash-sale stock");
                    self.clear_all();
                    self.listening.store(true, Ordering::Release);
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            message = messages.next() => match message {
                                Some(message) => self.on_announcement(&message),
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

    fn on_announcement(&self, message: &redis::Msg) {
        let event_id = message
            .get_payload::<String>()
            .ok()
            .and_then(|payload| payload.parse().ok());
        match event_id {
            Some(event_id) => self.clear(event_id),
            None => tracing::warn!("unreadable stock announcement ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_holds_until_cleared_or_expired() {
        let flags = SoldOutFlags::default();
        let now = Instant::now();
        assert!(!flags.is_sold_out(7, now));
        flags.mark(7, now);
        assert!(flags.is_sold_out(7, now + Duration::from_secs(1)));
        assert!(!flags.is_sold_out(8, now), "flags are per event");
        assert!(!flags.is_sold_out(7, now + FLAG_TTL), "expired");
        flags.mark(7, now);
        flags.clear(7);
        assert!(!flags.is_sold_out(7, now));
        flags.mark(7, now);
        flags.mark(9, now);
        flags.clear_all();
        assert!(!flags.is_sold_out(7, now) && !flags.is_sold_out(9, now));
    }
}
