//! Held result requests (`GET /spike/events/{id}/result?wait=N`): this process's waiters, woken
//! when Redis announces that their standing changed.
//!
//! Whatever changes a buyer's standing — the worker settling an order, a drainer admitting
//! buyers from the line or failing them at sell-out — publishes the buyers' ids on the event's
//! changes channel. A process subscribes to an event's channel once, on one pub/sub connection
//! ([`ChannelFeed`]), when its first waiter for that event arrives, and leaves it once nobody
//! waits there any more; a message wakes exactly the buyers it names. No request subscribes
//! and nothing polls: a held request costs a map entry until it is woken or times out.
//!
//! Bounded (`SPIKE_FLASH_SALE_RESULT_WAITERS_MAX`): beyond it, and whenever the subscription is
//! down, a request is answered at once — a client that asked to wait gets an answer, never an
//! error, and asks again. Losing the subscription and shutting down both wake every waiter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::repo::redis::announcements::{Announcements, ChannelFeed};
use crate::repo::redis::flash_sale::EventStore;
use crate::telemetry::metrics::names;

/// Pause before reconnecting after the subscription was lost.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(1);
/// How often the channels of events nobody waits on any more are left.
const IDLE_SWEEP: Duration = Duration::from_secs(10);

/// Why a held request stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The buyer's standing was announced as changed: read it again.
    Changed,
    /// The deadline passed.
    TimedOut,
    /// The subscription was lost or the process is shutting down: answer now.
    Closed,
}

/// This process's held result requests, and the one subscription that wakes them.
pub struct ResultWatch {
    store: EventStore,
    max_waiters: usize,
    waiters: AtomicUsize,
    state: Mutex<WatchState>,
    /// The connection while it is up. Held across every subscribe and unsubscribe, so the two
    /// never cross for one channel.
    feed: tokio::sync::Mutex<Option<ChannelFeed>>,
    /// Cancelled at shutdown: every held request answers.
    closing: CancellationToken,
}

#[derive(Default)]
struct WatchState {
    listening: bool,
    events: HashMap<u64, EventWaiters>,
    /// Channel name → event id, for the messages.
    channels: HashMap<String, u64>,
}

struct EventWaiters {
    channel: String,
    /// Whether the server confirmed the subscription on the current connection.
    subscribed: bool,
    /// One sender per buyer waited on; each held request of that buyer holds a receiver.
    users: HashMap<u64, watch::Sender<()>>,
}

/// One held request's place in the watch; leaving it (drop) frees the place.
pub struct Waiter<'a> {
    watch: &'a ResultWatch,
    event_id: u64,
    user_id: u64,
    changes: watch::Receiver<()>,
}

impl ResultWatch {
    pub fn new(store: EventStore, max_waiters: u32) -> ResultWatch {
        ResultWatch {
            store,
            max_waiters: max_waiters as usize,
            waiters: AtomicUsize::new(0),
            state: Mutex::default(),
            feed: tokio::sync::Mutex::new(None),
            closing: CancellationToken::new(),
        }
    }

    /// A place for a request about to wait on `user_id`'s standing in `event_id`, subscribed
    /// before it returns, so a change announced after this call wakes it. `None` when the
    /// request must be answered at once: too many held already, or no subscription.
    pub async fn register(&self, event_id: u64, user_id: u64) -> Option<Waiter<'_>> {
        if self.closing.is_cancelled() {
            return None;
        }
        if self.waiters.fetch_add(1, Ordering::AcqRel) >= self.max_waiters {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        metrics::gauge!(names::RESULT_WAITERS).increment(1.0);
        let (changes, subscribed) = {
            let mut state = self.lock();
            let state = &mut *state;
            if !state.listening {
                self.leave_count();
                return None;
            }
            let event = state.events.entry(event_id).or_insert_with(|| {
                let channel = self.store.keys(event_id).changes_channel();
                state.channels.insert(channel.clone(), event_id);
                EventWaiters {
                    channel,
                    subscribed: false,
                    users: HashMap::new(),
                }
            });
            let sender = event
                .users
                .entry(user_id)
                .or_insert_with(|| watch::channel(()).0);
            (sender.subscribe(), event.subscribed)
        };
        let waiter = Waiter {
            watch: self,
            event_id,
            user_id,
            changes,
        };
        if !subscribed && !self.subscribe(event_id).await {
            return None;
        }
        Some(waiter)
    }

    /// Subscribes to the event's channel unless that happened meanwhile; false when it failed.
    async fn subscribe(&self, event_id: u64) -> bool {
        let feed = self.feed.lock().await;
        let channel = match self.lock().events.get(&event_id) {
            Some(event) if event.subscribed => return true,
            Some(event) => event.channel.clone(),
            None => return false,
        };
        let Some(feed) = feed.as_ref() else {
            return false;
        };
        if let Err(error) = feed.subscribe(std::slice::from_ref(&channel)).await {
            tracing::warn!(channel, %error, "subscribing to an event's result changes failed");
            return false;
        }
        if let Some(event) = self.lock().events.get_mut(&event_id) {
            event.subscribed = true;
        }
        true
    }

    /// Keeps the subscription up until `shutdown`, then wakes every held request.
    pub async fn listen(&self, announcements: Announcements, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self.connect(&announcements).await {
                Ok(messages) => {
                    tracing::debug!("listening for flash-sale result changes");
                    let lost = self.serve(messages, &shutdown).await;
                    self.disconnect().await;
                    if !lost {
                        break;
                    }
                    tracing::warn!("result changes subscription lost; held requests answered");
                }
                Err(error) => {
                    tracing::warn!(%error, "subscribing to flash-sale result changes failed")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
            }
        }
        self.closing.cancel();
        self.disconnect().await;
    }

    /// Opens the connection and subscribes to the events already waited on.
    async fn connect(
        &self,
        announcements: &Announcements,
    ) -> Result<
        impl futures_util::Stream<Item = (String, String)> + Unpin + use<>,
        crate::repo::RepoError,
    > {
        let (feed, messages) = announcements.channel_feed().await?;
        let mut current = self.feed.lock().await;
        let channels: Vec<String> = self
            .lock()
            .events
            .values()
            .map(|event| event.channel.clone())
            .collect();
        feed.subscribe(&channels).await?;
        let mut state = self.lock();
        for event in state.events.values_mut() {
            event.subscribed = channels.contains(&event.channel);
        }
        state.listening = true;
        *current = Some(feed);
        Ok(messages)
    }

    /// Wakes the buyers each message names until the connection is lost (true) or `shutdown`
    /// (false); leaves idle channels now and then.
    async fn serve(
        &self,
        mut messages: impl futures_util::Stream<Item = (String, String)> + Unpin,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut sweep = tokio::time::interval(IDLE_SWEEP);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                _ = sweep.tick() => self.leave_idle_channels().await,
                message = messages.next() => match message {
                    Some((channel, users)) => self.wake(&channel, &users),
                    None => return true,
                },
            }
        }
    }

    fn wake(&self, channel: &str, users: &str) {
        let state = self.lock();
        let Some(event) = state
            .channels
            .get(channel)
            .and_then(|event_id| state.events.get(event_id))
        else {
            return;
        };
        for user_id in users.split(' ').filter_map(|user| user.parse::<u64>().ok()) {
            if let Some(sender) = event.users.get(&user_id) {
                sender.send_replace(());
            }
        }
    }

    /// Unsubscribes from the events nobody waits on; the feed lock keeps a waiter from
    /// subscribing to one of them in between.
    async fn leave_idle_channels(&self) {
        let feed = self.feed.lock().await;
        let idle: Vec<String> = {
            let mut state = self.lock();
            let idle: Vec<(u64, String)> = state
                .events
                .iter()
                .filter(|(_, event)| event.users.is_empty())
                .map(|(id, event)| (*id, event.channel.clone()))
                .collect();
            for (id, channel) in &idle {
                state.events.remove(id);
                state.channels.remove(channel);
            }
            idle.into_iter().map(|(_, channel)| channel).collect()
        };
        if let Some(feed) = feed.as_ref()
            && let Err(error) = feed.unsubscribe(&idle).await
        {
            // The connection is going; the next one subscribes to the waited-on events only.
            tracing::debug!(%error, "leaving idle result channels failed");
        }
    }

    /// Forgets the connection and every subscription; dropping the senders wakes every held
    /// request with [`Wake::Closed`].
    async fn disconnect(&self) {
        {
            let mut state = self.lock();
            state.listening = false;
            state.events.clear();
            state.channels.clear();
        }
        *self.feed.lock().await = None;
    }

    fn leave_count(&self) {
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(names::RESULT_WAITERS).decrement(1.0);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().expect("result watch poisoned")
    }
}

impl Waiter<'_> {
    /// Waits for an announcement about this buyer, at most until `deadline`.
    pub async fn next_change(&mut self, deadline: Instant) -> Wake {
        tokio::select! {
            changed = self.changes.changed() => match changed {
                Ok(()) => Wake::Changed,
                Err(_) => Wake::Closed,
            },
            () = tokio::time::sleep_until(deadline) => Wake::TimedOut,
            () = self.watch.closing.cancelled() => Wake::Closed,
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.watch.leave_count();
        let mut state = self.watch.lock();
        if let Some(event) = state.events.get_mut(&self.event_id)
            && event
                .users
                .get(&self.user_id)
                // This waiter's own receiver is still alive here.
                .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            event.users.remove(&self.user_id);
        }
    }
}
