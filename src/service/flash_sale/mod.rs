//! Flash sales (docs/design.md §5), one struct per job, each holding only what it needs:
//!
//! - [`EventAdmin`] (`admin`): creating an event moves its stock out of the product's inventory
//!   in the same transaction; an event can be changed only before it starts.
//! - [`Warmup`] (`warmup`): copies an event's free units, window and buyers into Redis — when it
//!   is created or changed, on the worker's schedule, and when a buyer finds it cold.
//! - [`buy`]: the buyer's side. A [`BuyerGate`] (per-buyer limit [`user_limit`], purchase
//!   token [`purchase_token`], sold-out flag [`sold_out`]) in front of the [`BuyPath`]: one Lua
//!   script (the event's cluster-wide admission bucket, window, duplicate buyer, stock →
//!   reserve), the reservation published with those of concurrent requests, one message and one
//!   confirm per group (`publish_groups`), and the buyer gets `queued`. Also the purchase tokens
//!   ([`TokenIssuer`]) and the buyer's result ([`BuyResults`]).
//! - [`Fulfilment`] (`fulfilment`): the worker's half — one MySQL transaction per batch of
//!   reservations (group commit), guarded by the unique `(user_id, spike_event_id)` key and one
//!   conditional decrement per event; a batch the database refuses is split until the bad
//!   reservation stands alone; after its last retry, [`Fulfilment::give_up`] compensates it.
//! - [`Reconciler`] (`reconcile`): republishes reservations whose message was lost and keeps
//!   each event's ledger.
//! - [`LineDrainer`] (`waiting_line`): admits the buyers waiting in each event's line, in
//!   turn, at the admission rate; fails them all at once when the event sells out or ends.
//!
//! [`FlashSale`] builds them once per process and hands them to the API and the worker.

mod admin;
pub mod buy;
mod fulfilment;
mod publish_groups;
pub mod purchase_token;
mod reconcile;
pub mod sold_out;
pub mod user_limit;
mod waiting_line;
mod warmup;

use std::sync::Arc;
use std::time::Duration;

pub use admin::{EventAdmin, EventChanges};
pub use buy::{
    Accepted, Buy, BuyPath, BuyRequest, BuyResult, BuyResults, BuyerGate, IssuedToken,
    MAX_RESULT_WAIT, Refusal, ResultWatch, TokenIssuer,
};
pub use fulfilment::{CreateOutcome, Fulfilment};
use publish_groups::GroupSink;
pub use reconcile::{Ledger, ReconcileReport, Reconciler};
pub use waiting_line::{LINE_DRAIN_TASK, LINE_DRAIN_TICK, LineDrainReport, LineDrainer};
pub use warmup::Warmup;

use super::ServiceError;
use super::catalog::CatalogService;
use super::messages::ReservationGroup;
use crate::background::Supervisor;
use crate::config::{FlashSaleMode, FlashSaleSettings};
use crate::repo::amqp::ORDER_CREATE;
use crate::repo::redis::announcements::Announcements;
use crate::repo::redis::consumer_reports::ConsumerReports;
use crate::repo::redis::flash_sale::EventStore;
use crate::repo::{Amqp, Infra, Topology};
use purchase_token::PurchaseTokens;
use sold_out::SoldOutFlags;
use tokio_util::sync::CancellationToken;

/// The background task (`crate::background`) that runs the warm-up scheduler, the reconciler
/// and the return of unsold units, one after the other on each pass.
pub const HOUSEKEEPING_TASK: &str = "flash_sale_housekeeping";

/// How often the API role forgets buyers whose rate limit has recovered.
const IDLE_BUYER_SWEEP: Duration = Duration::from_secs(60);

/// How long a buyer's result stays in Redis (MySQL answers after that).
const RESULT_TTL_SECS: u64 = 24 * 3600;

/// Every part of the flash sale, built once per process; cheap to clone.
#[derive(Clone)]
pub struct FlashSale {
    pub admin: EventAdmin,
    pub warmup: Warmup,
    pub buy: Buy,
    pub purchase_tokens: TokenIssuer,
    pub results: BuyResults,
    pub fulfilment: Fulfilment,
    pub reconciler: Reconciler,
    pub line_drainer: Arc<LineDrainer>,
    /// What the order queue's consumers report holding: the worker writes, the reconciler reads.
    pub consumer_reports: ConsumerReports,
    /// How many deliveries each consumer of the order queue may hold unacknowledged.
    pub order_create_prefetch: u16,
    /// The gate's per-buyer state, swept by [`FlashSale::start_buyer_tasks`].
    gate: Arc<BuyerGate>,
    /// This replica's sold-out flags: the queue path sets them, the gate reads them, a fresh
    /// warm-up and an announcement of returned stock clear them.
    sold_out: Arc<SoldOutFlags>,
    /// Where returned stock is announced (see [`sold_out`]).
    stock_returned_channel: String,
    /// This replica's held result requests.
    result_watch: Arc<ResultWatch>,
}

/// What the flash sale takes from the rest of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Surroundings {
    /// Orders must be paid within this.
    pub pay_timeout: Duration,
    /// Messages each consumer of the order queue holds (a re-warm's backlog estimate counts them).
    pub prefetch: u16,
    /// The longest an API request runs (`http_request_timeout`): a buy's `Idempotency-Key` still
    /// pending after it belongs to a request that is over.
    pub request_timeout: Duration,
}

impl FlashSale {
    /// Keys go under `redis_prefix`.
    pub fn new(
        settings: &FlashSaleSettings,
        redis_prefix: &str,
        surroundings: Surroundings,
        infra: &Infra,
        catalog: CatalogService,
        purchase_tokens: PurchaseTokens,
    ) -> FlashSale {
        let store = EventStore::new(infra.redis.clone(), redis_prefix);
        let queue = OrderQueue {
            amqp: infra.amqp.clone(),
            topology: infra.topology.clone(),
        };
        let sold_out = Arc::new(SoldOutFlags::default());
        let warmup = Warmup::new(
            settings,
            surroundings.prefetch,
            infra.db.clone(),
            store.clone(),
            queue.clone(),
            sold_out.clone(),
        );
        let fulfilment = Fulfilment::new(infra.db.clone(), store.clone(), surroundings.pay_timeout);
        let consumer_reports =
            ConsumerReports::new(infra.redis.clone(), redis_prefix, ORDER_CREATE);
        let gate = Arc::new(BuyerGate::new(settings, purchase_tokens, sold_out.clone()));
        let cold = buy::ColdEvents::new(warmup.clone());
        let result_watch = Arc::new(ResultWatch::new(store.clone(), settings.result_waiters_max));
        let path = match settings.mode {
            FlashSaleMode::Queue => BuyPath::Queue(buy::QueueBuy::new(
                settings,
                surroundings.request_timeout,
                store.clone(),
                queue.clone(),
                sold_out.clone(),
                cold.clone(),
            )),
            FlashSaleMode::Db => BuyPath::Db(buy::DbBuy::new(infra.db.clone(), fulfilment.clone())),
        };
        FlashSale {
            admin: EventAdmin::new(
                infra.db.clone(),
                store.clone(),
                catalog.clone(),
                warmup.clone(),
            ),
            buy: Buy::new(gate.clone(), path),
            purchase_tokens: TokenIssuer::new(gate.clone(), store.clone(), cold),
            results: BuyResults::new(infra.db.clone(), store.clone(), result_watch.clone()),
            line_drainer: Arc::new(LineDrainer::new(
                settings,
                infra.db.clone(),
                store.clone(),
                queue.clone(),
            )),
            stock_returned_channel: store.stock_returned_channel(),
            reconciler: Reconciler::new(
                settings,
                infra.db.clone(),
                store,
                queue,
                catalog.clone(),
                consumer_reports.clone(),
            ),
            warmup,
            fulfilment,
            consumer_reports,
            order_create_prefetch: surroundings.prefetch,
            gate,
            sold_out,
            result_watch,
        }
    }

    /// This replica's sold-out flags.
    pub fn sold_out_flags(&self) -> Arc<SoldOutFlags> {
        self.sold_out.clone()
    }

    /// The buyer side's background tasks (the API role): the listener that clears this
    /// replica's sold-out flags when another process announces returned stock, the one that
    /// wakes held result requests, and the sweep of buyers whose rate limit has recovered.
    pub fn start_buyer_tasks(
        &self,
        supervisor: &Supervisor,
        announcements: &Announcements,
        shutdown: &CancellationToken,
    ) {
        let (flags, channel) = (self.sold_out.clone(), self.stock_returned_channel.clone());
        let stock_announcements = announcements.clone();
        supervisor.long_running("sold_out_listener", shutdown, move |shutdown| {
            let (flags, announcements, channel) =
                (flags.clone(), stock_announcements.clone(), channel.clone());
            async move {
                flags.listen(announcements, channel, shutdown).await;
                Ok::<(), std::convert::Infallible>(())
            }
        });
        let (watch, announcements) = (self.result_watch.clone(), announcements.clone());
        supervisor.long_running("result_watch", shutdown, move |shutdown| {
            let (watch, announcements) = (watch.clone(), announcements.clone());
            async move {
                watch.listen(announcements, shutdown).await;
                Ok::<(), std::convert::Infallible>(())
            }
        });
        let gate = self.gate.clone();
        supervisor.periodic("idle_buyer_sweep", IDLE_BUYER_SWEEP, shutdown, move || {
            gate.forget_idle_buyers();
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        });
    }
}

/// The `spike.order.create` queue as the services see it: where reservations are published
/// (persistent, confirmed), and how many may be waiting in it.
#[derive(Clone)]
struct OrderQueue {
    amqp: Arc<Amqp>,
    topology: Arc<Topology>,
}

impl GroupSink for OrderQueue {
    async fn publish(&self, group: ReservationGroup) -> Result<(), ServiceError> {
        OrderQueue::publish(self, &group).await
    }
}

impl OrderQueue {
    /// Publishes a group of reservations as one message.
    async fn publish(&self, group: &ReservationGroup) -> Result<(), ServiceError> {
        let payload = serde_json::to_vec(group).map_err(ServiceError::internal)?;
        self.amqp
            .publish(&self.topology.exchange(), ORDER_CREATE, &payload, None)
            .await?;
        Ok(())
    }

    /// Ready messages in the order queue and its retry queues together, and the order queue's
    /// consumers (the broker does not count what they hold: see `consumer_reports`).
    async fn ready_and_consumers(&self) -> Result<(u64, u32), ServiceError> {
        let mut ready = 0;
        let mut consumers = 0;
        for queue in self.topology.order_create_queues() {
            let depth = self.amqp.queue_depth(&queue).await?;
            ready += u64::from(depth.messages);
            if queue == self.topology.queue(ORDER_CREATE) {
                consumers = depth.consumers;
            }
        }
        Ok((ready, consumers))
    }

    /// Reservations MySQL may not have seen yet: every message waiting in the order queue and
    /// its retry queues, plus what `prefetch`-bounded consumers may hold, each message counted
    /// as a full group of `per_message` reservations.
    async fn in_flight_bound(&self, prefetch: u16, per_message: u16) -> Result<u64, ServiceError> {
        let mut messages = 0;
        for queue in self.topology.order_create_queues() {
            let depth = self.amqp.queue_depth(&queue).await?;
            messages +=
                u64::from(depth.messages) + u64::from(depth.consumers) * u64::from(prefetch);
        }
        Ok(messages * u64::from(per_message))
    }
}

/// Unix milliseconds, as Redis and the messages carry time (every representable time fits).
fn unix_millis(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A `std` duration (a setting) as a `time` one, saturating: the time arithmetic of background
/// passes must never panic, whatever a setting or a stored row holds.
fn to_time(duration: std::time::Duration) -> time::Duration {
    time::Duration::try_from(duration).unwrap_or(time::Duration::MAX)
}
