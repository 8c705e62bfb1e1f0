//! Announcements between processes over Redis pub/sub: "stock came back to event <id>", so
//! every API replica clears its local sold-out flag; and "these buyers' standing in event <id>
//! changed", so the replica holding their `/result?wait=N` requests answers them
//! ([`ChannelFeed`], one connection whose channels come and go with the events being watched).
//!
//! The scripts announce with a plain `PUBLISH` in both modes. In a Redis Cluster a plain
//! `PUBLISH` reaches every node over the cluster bus, so a subscriber on any node hears it.
//! Sharded pub/sub (`SPUBLISH`) would keep a message on one shard, but a script may only publish
//! to a shard channel in the slot of its own keys: one channel per event, which each replica
//! would have to join and leave as events sell out. A unit coming back is rare (an order closed
//! unpaid, a reservation undone), so the bus's fan-out costs nothing that matters here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{Stream, StreamExt};

use crate::config::RedisSettings;
use crate::repo::RepoError;

/// Where announcements are heard: the standalone server, or each seed node of a cluster in turn.
#[derive(Clone)]
pub struct Announcements {
    nodes: Arc<Vec<redis::Client>>,
    /// The node the next subscription tries, so a node that is down is not tried again and
    /// again while the others are up. Starts at a random one, spreading the replicas'
    /// subscriptions over the nodes.
    next: Arc<AtomicUsize>,
}

impl Announcements {
    pub fn new(settings: &RedisSettings) -> Result<Announcements, RepoError> {
        let nodes = settings
            .urls()
            .into_iter()
            .map(redis::Client::open)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Announcements {
            next: Arc::new(AtomicUsize::new(fastrand::usize(..nodes.len()))),
            nodes: Arc::new(nodes),
        })
    }

    /// Subscribes to `channel` on the next node; the stream yields each announced event id and
    /// ends when the subscription is lost. Unreadable messages are logged and skipped.
    pub async fn stock_returned(
        &self,
        channel: &str,
    ) -> Result<impl Stream<Item = u64> + Send + Unpin + use<>, RepoError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        let mut pubsub = self.nodes[index].get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub.into_on_message().filter_map(|message| {
            let event_id = message
                .get_payload::<String>()
                .ok()
                .and_then(|payload| payload.parse().ok());
            if event_id.is_none() {
                tracing::warn!("unreadable stock announcement ignored");
            }
            std::future::ready(event_id)
        }))
    }
}

/// One pub/sub connection whose channels change while it runs: [`ChannelFeed::subscribe`] and
/// [`ChannelFeed::unsubscribe`] return once the server confirmed them, while the stream from
/// [`Announcements::channel_feed`] keeps yielding `(channel, payload)`.
#[derive(Clone)]
pub struct ChannelFeed {
    sink: redis::aio::PubSubSink,
}

impl ChannelFeed {
    pub async fn subscribe(&self, channels: &[String]) -> Result<(), RepoError> {
        if !channels.is_empty() {
            self.sink.clone().subscribe(channels).await?;
        }
        Ok(())
    }

    pub async fn unsubscribe(&self, channels: &[String]) -> Result<(), RepoError> {
        if !channels.is_empty() {
            self.sink.clone().unsubscribe(channels).await?;
        }
        Ok(())
    }
}

impl Announcements {
    /// A connection to the next node, subscribed to nothing yet; the stream ends when the
    /// connection is lost. Messages whose payload is not text are logged and skipped.
    pub async fn channel_feed(
        &self,
    ) -> Result<
        (
            ChannelFeed,
            impl Stream<Item = (String, String)> + Send + Unpin + use<>,
        ),
        RepoError,
    > {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        let (sink, stream) = self.nodes[index].get_async_pubsub().await?.split();
        let messages = stream.filter_map(|message| {
            let payload = message.get_payload::<String>().ok();
            if payload.is_none() {
                tracing::warn!(
                    channel = message.get_channel_name(),
                    "unreadable announcement ignored"
                );
            }
            std::future::ready(
                payload.map(|payload| (message.get_channel_name().to_owned(), payload)),
            )
        });
        Ok((ChannelFeed { sink }, messages))
    }
}
