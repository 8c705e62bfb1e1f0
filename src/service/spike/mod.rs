//! Flash-sale events and buying (DESIGN.md §5).
//!
//! Admin side: creating an event moves its stock out of the product's inventory in the same
//! transaction; an event can be changed only before it starts.
//!
//! Buying: warm-up copies the event's free units into Redis; a purchase runs one Lua script
//! (window, duplicate buyer, stock → reserve) and publishes the reservation with publisher
//! confirms, answering `queued`; the worker turns it into an order in one MySQL transaction
//! guarded by the unique `(user_id, spike_event_id)` key and a conditional decrement.
//!
//! A failing order creation is retried through the retry queues and, after the last, dead-
//! lettered with its reservation compensated ([`SpikeService::give_up`]).
//!
//! In front of the script: an in-process per-buyer token bucket ([`user_limit`]), the local
//! sold-out flag ([`sold_out`]) and the cluster-wide per-event admission limit in Redis. Behind
//! the queue: the worker's warm-up scheduler and reconciler ([`reconcile`]).

mod reconcile;
pub mod sold_out;
pub mod user_limit;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use redis::aio::ConnectionManager;
use sqlx::MySqlPool;
use time::OffsetDateTime;

use super::ServiceError;
use super::catalog::CatalogService;
use super::messages::{REQUEST_ID_HEADER, ReservationMessage};
use super::order_writer::{self, WriteError};
use crate::config::{FlashSaleMode, FlashSaleSettings, RateLimit};
use crate::domain::money::Money;
use crate::domain::order::{OrderItem, OrderKind};
use crate::domain::product::Page;
use crate::domain::spike::{EventStatus, EventWindow, SpikeEvent};
use crate::repo::amqp::ORDER_CREATE;
use crate::repo::mysql::spike_events::{self, EventFields};
use crate::repo::mysql::{self, orders, products};
use crate::repo::redis::rate_limit::{self, Decision};
use crate::repo::redis::spike::{self as redis_spike, EventKeys, Reservation, WarmMode, WarmState};
use crate::repo::{Amqp, Topology};
use crate::util::single_flight::SingleFlight;
pub use reconcile::{Ledger, ReconcileReport};
use sold_out::SoldOutFlags;
use user_limit::UserRateLimiter;

/// How long a buyer's result stays in Redis (MySQL answers after that).
const RESULT_TTL_SECS: u64 = 24 * 3600;

/// A purchase attempt as the API hands it over.
#[derive(Debug, Clone, Copy)]
pub struct BuyRequest<'a> {
    pub event_id: u64,
    pub user_id: u64,
    /// Makes a retry answer with the first request's ticket.
    pub idempotency_key: Option<&'a str>,
    /// Travels with the message (header [`REQUEST_ID_HEADER`]).
    pub request_id: &'a str,
}

/// A queued purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub ticket: String,
    /// True when an earlier request with the same `Idempotency-Key` was answered with it.
    pub replayed: bool,
}

/// Where a buyer stands in an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuyResult {
    Queued,
    Success { order_id: u64 },
    Failed { reason: String },
    None,
}

/// What the worker did with one reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created {
        order_id: u64,
    },
    /// A redelivery: the order exists already.
    AlreadyDone {
        order_id: u64,
    },
    /// MySQL had no unit left although Redis had reserved one.
    SoldOut,
    /// The event no longer exists.
    UnknownEvent,
}

/// A new event, validated.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub product_id: u64,
    pub title: String,
    pub spike_price: Money,
    pub stock: u32,
    pub window: EventWindow,
}

/// A partial change; `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct EventChanges {
    pub title: Option<String>,
    pub spike_price: Option<Money>,
    pub stock: Option<u32>,
    pub start_at: Option<OffsetDateTime>,
    pub end_at: Option<OffsetDateTime>,
}

#[derive(Clone)]
pub struct SpikeService {
    db: MySqlPool,
    redis: ConnectionManager,
    amqp: Arc<Amqp>,
    topology: Arc<Topology>,
    redis_prefix: String,
    catalog: CatalogService,
    pay_timeout: Duration,
    user_limiter: Arc<UserRateLimiter>,
    event_limit: RateLimit,
    sold_out: Arc<SoldOutFlags>,
    warmup_lead: Duration,
    reconcile_after: Duration,
    /// How long an event's Redis keys outlive the event.
    keys_retention: Duration,
    prefetch: u16,
    /// `db`: the naive baseline ([`SpikeService::buy_in_mysql`]).
    mode: FlashSaleMode,
    drift_memory: Arc<reconcile::DriftMemory>,
    /// Concurrent buyers of a cold event share one lookup (and re-warm) per event.
    cold_flights: Arc<SingleFlight<u64, Option<EventStatus>>>,
}

impl SpikeService {
    /// Keys go under `redis_prefix`; orders must be paid within `pay_timeout`; each consumer
    /// holds up to `prefetch` messages (the queue's backlog estimate counts them).
    pub fn new(
        config: &FlashSaleSettings,
        redis_prefix: &str,
        pay_timeout: Duration,
        prefetch: u16,
        infra: &crate::repo::Infra,
        catalog: CatalogService,
    ) -> SpikeService {
        SpikeService {
            db: infra.db.clone(),
            redis: infra.redis.clone(),
            amqp: infra.amqp.clone(),
            topology: infra.topology.clone(),
            redis_prefix: redis_prefix.to_owned(),
            catalog,
            pay_timeout,
            user_limiter: Arc::new(UserRateLimiter::new(config.user_rate_limit)),
            event_limit: config.event_rate_limit,
            sold_out: Arc::new(SoldOutFlags::default()),
            warmup_lead: config.warmup_lead,
            reconcile_after: config.reconcile_after,
            keys_retention: config.keys_retention,
            prefetch,
            mode: config.mode,
            drift_memory: Arc::default(),
            cold_flights: Arc::default(),
        }
    }

    /// Forgets, every `interval` until `shutdown`, the buyers whose per-buyer allowance is full
    /// again (run by the API role, next to the flags' listener).
    pub async fn forget_idle_buyers_every(&self, interval: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => self.user_limiter.forget_idle(),
            }
        }
    }

    /// This replica's sold-out flags (the API role listens for their clearing).
    pub fn sold_out_flags(&self) -> Arc<SoldOutFlags> {
        self.sold_out.clone()
    }

    /// The pub/sub channel on which returned stock is announced.
    pub fn stock_returned_channel(&self) -> String {
        redis_spike::stock_returned_channel(&self.redis_prefix)
    }

    fn keys(&self, event_id: u64) -> EventKeys {
        EventKeys::new(&self.redis_prefix, event_id)
    }

    pub async fn create(&self, event: NewEvent) -> Result<SpikeEvent, ServiceError> {
        let mut tx = self.db.begin().await?;
        if !products::lock_active(&mut tx, event.product_id).await? {
            return Err(ServiceError::ProductNotFound(event.product_id));
        }
        if !orders::take_stock(&mut tx, event.product_id, event.stock).await? {
            return Err(ServiceError::InsufficientStock {
                product_id: event.product_id,
            });
        }
        let fields = EventFields {
            product_id: event.product_id,
            title: &event.title,
            spike_price: event.spike_price,
            stock: event.stock,
            per_user_limit: 1,
            window: event.window,
        };
        let id = spike_events::insert(&mut tx, &fields).await?;
        let created = spike_events::find(&mut *tx, id)
            .await?
            .ok_or_else(|| ServiceError::internal("event vanished inside its own transaction"))?;
        tx.commit().await?;
        self.catalog.invalidate(event.product_id).await;
        tracing::info!(
            event_id = id,
            product_id = event.product_id,
            stock = event.stock,
            "flash-sale event created"
        );
        self.warm_new_event(&created).await;
        Ok(created)
    }

    /// Changes an event that has not started; a changed stock takes from or returns to the
    /// product's inventory.
    pub async fn update(&self, id: u64, changes: EventChanges) -> Result<SpikeEvent, ServiceError> {
        let mut tx = self.db.begin().await?;
        let event = spike_events::lock(&mut tx, id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        if event.window.status_at(OffsetDateTime::now_utc()) != EventStatus::Upcoming {
            return Err(ServiceError::Conflict(
                "the event has started: it can no longer be changed".into(),
            ));
        }
        let window = EventWindow::new(
            changes.start_at.unwrap_or(event.window.start_at()),
            changes.end_at.unwrap_or(event.window.end_at()),
        )
        .map_err(ServiceError::InvalidArgument)?;
        let stock = changes.stock.unwrap_or(event.total_stock);
        if stock > event.total_stock {
            let more = stock - event.total_stock;
            if !orders::take_stock(&mut tx, event.product_id, more).await? {
                return Err(ServiceError::InsufficientStock {
                    product_id: event.product_id,
                });
            }
        } else if stock < event.total_stock {
            orders::return_stock(&mut tx, event.product_id, event.total_stock - stock).await?;
        }
        let title = changes.title.unwrap_or(event.title);
        let fields = EventFields {
            product_id: event.product_id,
            title: &title,
            spike_price: changes.spike_price.unwrap_or(event.spike_price),
            stock,
            per_user_limit: event.per_user_limit,
            window,
        };
        spike_events::update(&mut tx, id, &fields).await?;
        let updated = spike_events::find(&mut *tx, id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        tx.commit().await?;
        self.catalog.invalidate(event.product_id).await;
        self.warm_new_event(&updated).await;
        Ok(updated)
    }

    /// One event; `available_stock` is Redis's count when the event is warm.
    pub async fn get(&self, id: u64) -> Result<SpikeEvent, ServiceError> {
        let mut event = spike_events::find(&self.db, id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        if let Ok(Some(stock)) = redis_spike::stock(&mut self.redis.clone(), &self.keys(id)).await {
            event.available_stock = stock.clamp(0, i64::from(u32::MAX)) as u32;
        }
        Ok(event)
    }

    /// Warms a created or changed event from scratch (it has not started: nothing can be
    /// reserved yet). A failure is only logged: the scheduler and the buy path warm it later.
    async fn warm_new_event(&self, event: &SpikeEvent) {
        if let Err(error) = self.warm(event, WarmMode::Reset).await {
            tracing::warn!(event_id = event.id, %error, "warming the event failed; the scheduler will retry");
        }
    }

    /// Copies the event's free units, window and existing buyers into Redis unless already
    /// warm; true when it was warmed now. Never raises a warm event's stock.
    pub async fn warm_up(&self, id: u64) -> Result<bool, ServiceError> {
        let event = spike_events::find(&self.db, id)
            .await?
            .ok_or(ServiceError::EventNotFound)?;
        self.warm(&event, WarmMode::Keep).await
    }

    async fn warm(&self, event: &SpikeEvent, mode: WarmMode) -> Result<bool, ServiceError> {
        let keys = self.keys(event.id);
        let mut redis = self.redis.clone();
        if mode == WarmMode::Keep && redis_spike::stock(&mut redis, &keys).await?.is_some() {
            return Ok(false);
        }
        let now = OffsetDateTime::now_utc();
        let mut free = event.available_stock;
        if mode == WarmMode::Keep && event.window.status_at(now) != EventStatus::Upcoming {
            // Re-warming a started event (Redis lost its keys): reservations still travelling
            // through the queues are not in MySQL yet, so hold back as many units as messages
            // could be in flight. MySQL's conditional decrement stays the last guard.
            let in_flight = self.in_flight_bound().await?;
            free = free.saturating_sub(u32::try_from(in_flight).unwrap_or(u32::MAX));
        }
        let buyers = spike_events::buyers(&self.db, event.id).await?;
        let millis = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        let state = WarmState {
            free,
            start_ms: millis(event.window.start_at()),
            end_ms: millis(event.window.end_at()),
            expire_at_ms: millis(event.window.end_at() + self.keys_retention),
            buyers: &buyers,
        };
        let fresh = redis_spike::warm(&mut redis, &keys, &state, mode).await?;
        if fresh {
            self.sold_out.clear(event.id);
            tracing::info!(event_id = event.id, stock = free, ?mode, "event warmed");
        }
        Ok(fresh)
    }

    /// Messages that may carry a reservation MySQL has not seen: everything waiting in the order
    /// queue and its retry queues, plus what consumers may hold unacknowledged.
    async fn in_flight_bound(&self) -> Result<u64, ServiceError> {
        let mut bound = 0;
        for queue in self.topology.order_create_queues() {
            let depth = self.amqp.queue_depth(&queue).await?;
            bound +=
                u64::from(depth.messages) + u64::from(depth.consumers) * u64::from(self.prefetch);
        }
        Ok(bound)
    }

    /// Warms every event starting within the lead time that is not warm yet (the worker's
    /// scheduler); returns how many it warmed.
    pub async fn warm_due_events(&self) -> Result<usize, ServiceError> {
        let now = OffsetDateTime::now_utc();
        let due = spike_events::overlapping(&self.db, now, now + self.warmup_lead).await?;
        let mut warmed = 0;
        for event in &due {
            if self.warm(event, WarmMode::Keep).await? {
                warmed += 1;
            }
        }
        Ok(warmed)
    }

    /// Reserves a unit for the buyer and queues its order (DESIGN.md §5).
    pub async fn buy(&self, request: BuyRequest<'_>) -> Result<Queued, ServiceError> {
        let BuyRequest {
            event_id,
            user_id,
            idempotency_key,
            request_id,
        } = request;
        self.user_limiter
            .take(user_id)
            .map_err(|retry_after| rejected(ServiceError::RateLimited { retry_after }))?;
        if self.mode == FlashSaleMode::Db {
            return self.buy_in_mysql(event_id, user_id).await;
        }
        // A retry carrying an Idempotency-Key goes to Redis, which holds its first answer.
        if idempotency_key.is_none() && self.sold_out.is_sold_out(event_id) {
            return Err(rejected(ServiceError::SoldOut));
        }
        let keys = self.keys(event_id);
        let mut redis = self.redis.clone();
        if let Decision::Limited { retry_after } =
            rate_limit::take(&mut redis, &keys.admission(), self.event_limit).await?
        {
            return Err(rejected(ServiceError::RateLimited { retry_after }));
        }
        let ticket = uuid::Uuid::new_v4().simple().to_string();
        let reservation =
            redis_spike::reserve(&mut redis, &keys, user_id, &ticket, idempotency_key).await?;
        let reserved_at_ms = match reservation {
            Reservation::Reserved { at_ms } => at_ms,
            Reservation::Replay { ticket } => {
                return Ok(Queued {
                    ticket,
                    replayed: true,
                });
            }
            Reservation::InProgress => {
                return Err(ServiceError::Conflict(
                    "a request with this Idempotency-Key is still in progress".into(),
                ));
            }
            Reservation::SoldOut => {
                self.sold_out.mark(event_id);
                return Err(rejected(ServiceError::SoldOut));
            }
            Reservation::NotStarted => return Err(rejected(ServiceError::EventNotStarted)),
            Reservation::Ended => return Err(rejected(ServiceError::EventEnded)),
            Reservation::Duplicate => return Err(rejected(ServiceError::AlreadyPurchased)),
            Reservation::NotWarm => return Err(rejected(self.not_warm(event_id).await)),
        };
        let message = ReservationMessage {
            ticket: ticket.clone(),
            event_id,
            user_id,
            reserved_at_ms,
        };
        if let Err(error) = self.publish_reservation(&message, request_id).await {
            tracing::warn!(event_id, user_id, %error, "reservation not queued; undoing it");
            redis_spike::unreserve(&mut redis, &keys, user_id, &ticket, idempotency_key).await?;
            return Err(rejected(ServiceError::Retryable(
                "the order queue cannot take the order now, retry later".into(),
            )));
        }
        if let Some(key) = idempotency_key {
            redis_spike::confirm_idempotency(&mut redis, &keys, user_id, key, &ticket).await?;
        }
        metrics::counter!("spike_buy_total", "outcome" => "queued").increment(1);
        Ok(Queued {
            ticket,
            replayed: false,
        })
    }

    /// The naive baseline (`SPIKE_FLASH_SALE_MODE=db`): the request itself runs the worker's order
    /// transaction (conditional `UPDATE … WHERE available_stock > 0`, order rows, close outbox
    /// row), no Redis and no queue, so every buyer queues on the event row's lock. Correct (the
    /// conditional decrement and the unique buyer key guard it) but slow: the load tool measures
    /// how much the queue path gains over it. `Idempotency-Key` is not replayed here: a repeat
    /// answers "already purchased".
    async fn buy_in_mysql(&self, event_id: u64, user_id: u64) -> Result<Queued, ServiceError> {
        let event = spike_events::find(&self.db, event_id)
            .await?
            .ok_or_else(|| rejected(ServiceError::EventNotFound))?;
        let now = OffsetDateTime::now_utc();
        match event.window.status_at(now) {
            EventStatus::Upcoming => return Err(rejected(ServiceError::EventNotStarted)),
            EventStatus::Ended => return Err(rejected(ServiceError::EventEnded)),
            EventStatus::Active => {}
        }
        let message = ReservationMessage {
            ticket: uuid::Uuid::new_v4().simple().to_string(),
            event_id,
            user_id,
            reserved_at_ms: (now.unix_timestamp_nanos() / 1_000_000) as i64,
        };
        match self.create_order_in_mysql(&message).await? {
            CreateOutcome::Created { .. } => {
                metrics::counter!("spike_buy_total", "outcome" => "queued").increment(1);
                Ok(Queued {
                    ticket: message.ticket,
                    replayed: false,
                })
            }
            CreateOutcome::AlreadyDone { .. } => Err(rejected(ServiceError::AlreadyPurchased)),
            CreateOutcome::SoldOut => Err(rejected(ServiceError::SoldOut)),
            CreateOutcome::UnknownEvent => Err(rejected(ServiceError::EventNotFound)),
        }
    }

    /// Publishes a reservation to `spike.order.create` (persistent, confirmed).
    async fn publish_reservation(
        &self,
        message: &ReservationMessage,
        request_id: &str,
    ) -> Result<(), ServiceError> {
        let payload = serde_json::to_vec(message).map_err(ServiceError::internal)?;
        let mut headers = lapin::types::FieldTable::default();
        if !request_id.is_empty() {
            headers.insert(
                REQUEST_ID_HEADER.into(),
                lapin::types::AMQPValue::LongString(request_id.into()),
            );
        }
        self.amqp
            .publish_with_headers(
                &self.topology.exchange(),
                ORDER_CREATE,
                &payload,
                None,
                headers,
            )
            .await?;
        Ok(())
    }

    /// The answer when the event's keys are missing: never "sold out" or "available". An
    /// unknown, upcoming or ended event says so; an active one is not warm (Redis lost its
    /// keys): fail closed with a retryable error and re-warm it. A burst of buyers hitting a cold
    /// event shares one lookup and one re-warm.
    async fn not_warm(&self, event_id: u64) -> ServiceError {
        let status = self
            .cold_flights
            .run(event_id, || self.rewarm_if_active(event_id))
            .await;
        match status {
            Ok(None) => ServiceError::EventNotFound,
            Ok(Some(EventStatus::Upcoming)) => ServiceError::EventNotStarted,
            Ok(Some(EventStatus::Ended)) => ServiceError::EventEnded,
            Ok(Some(EventStatus::Active)) => {
                ServiceError::Retryable("the sale is not ready, retry shortly".into())
            }
            Err(error) => error,
        }
    }

    /// The status of an event found cold (`None`: no such event), re-warming it when active.
    async fn rewarm_if_active(&self, event_id: u64) -> Result<Option<EventStatus>, ServiceError> {
        let Some(event) = spike_events::find(&self.db, event_id).await? else {
            return Ok(None);
        };
        let status = event.window.status_at(OffsetDateTime::now_utc());
        if status == EventStatus::Active {
            tracing::warn!(
                event_id,
                "active event not warm: refusing to sell, re-warming"
            );
            if let Err(error) = self.warm(&event, WarmMode::Keep).await {
                tracing::warn!(event_id, %error, "re-warming the event failed");
            }
        }
        Ok(Some(status))
    }

    /// Where `user_id` stands: the Redis result, a pending reservation, or MySQL's record.
    pub async fn result(&self, event_id: u64, user_id: u64) -> Result<BuyResult, ServiceError> {
        let keys = self.keys(event_id);
        let mut redis = self.redis.clone();
        if let Some(outcome) = redis_spike::result(&mut redis, &keys, user_id).await? {
            if let Some(id) = outcome
                .strip_prefix("success:")
                .and_then(|id| id.parse().ok())
            {
                return Ok(BuyResult::Success { order_id: id });
            }
            if let Some(reason) = outcome.strip_prefix("failed:") {
                return Ok(BuyResult::Failed {
                    reason: reason.to_owned(),
                });
            }
        }
        if redis_spike::has_reservation(&mut redis, &keys, user_id).await? {
            return Ok(BuyResult::Queued);
        }
        Ok(
            match spike_events::order_of(&self.db, event_id, user_id).await? {
                Some(order_id) => BuyResult::Success { order_id },
                None => BuyResult::None,
            },
        )
    }

    /// The worker's half: one transaction creates the order, links it to the event (the unique
    /// keys make a redelivery a no-op), takes the unit in MySQL and writes the close message;
    /// then the result is recorded in Redis.
    pub async fn create_order(
        &self,
        message: &ReservationMessage,
    ) -> Result<CreateOutcome, ServiceError> {
        let outcome = self.create_order_in_mysql(message).await?;
        let keys = self.keys(message.event_id);
        let result = match outcome {
            CreateOutcome::Created { order_id } | CreateOutcome::AlreadyDone { order_id } => {
                format!("success:{order_id}")
            }
            CreateOutcome::SoldOut => "failed:sold_out".to_owned(),
            CreateOutcome::UnknownEvent => "failed:unknown_event".to_owned(),
        };
        redis_spike::settle(
            &mut self.redis.clone(),
            &keys,
            message.user_id,
            &result,
            RESULT_TTL_SECS,
        )
        .await?;
        Ok(outcome)
    }

    /// Gives up on a reservation whose order could not be created after every retry: the unit
    /// and the buyer's mark go back to Redis (unless MySQL has the order after all) and the
    /// result says `failed`.
    pub async fn give_up(&self, message: &ReservationMessage) -> Result<(), ServiceError> {
        let keys = self.keys(message.event_id);
        let mut redis = self.redis.clone();
        if let Some(order_id) =
            spike_events::order_of(&self.db, message.event_id, message.user_id).await?
        {
            let outcome = format!("success:{order_id}");
            redis_spike::settle(
                &mut redis,
                &keys,
                message.user_id,
                &outcome,
                RESULT_TTL_SECS,
            )
            .await?;
            return Ok(());
        }
        let returned =
            redis_spike::unreserve(&mut redis, &keys, message.user_id, &message.ticket, None)
                .await?;
        redis_spike::settle(
            &mut redis,
            &keys,
            message.user_id,
            "failed:order_creation_failed",
            RESULT_TTL_SECS,
        )
        .await?;
        tracing::error!(
            ticket = message.ticket,
            event_id = message.event_id,
            user_id = message.user_id,
            stock_returned = returned,
            "flash-sale order could not be created; reservation compensated and dead-lettered"
        );
        metrics::counter!("spike_order_create_dead_lettered_total").increment(1);
        Ok(())
    }

    async fn create_order_in_mysql(
        &self,
        message: &ReservationMessage,
    ) -> Result<CreateOutcome, ServiceError> {
        // A redelivery of a message already turned into an order: nothing to do.
        if let Some(order_id) =
            spike_events::order_of(&self.db, message.event_id, message.user_id).await?
        {
            return Ok(CreateOutcome::AlreadyDone { order_id });
        }
        let mut tx = self.db.begin().await?;
        let Some(event) = spike_events::find(&mut *tx, message.event_id).await? else {
            return Ok(CreateOutcome::UnknownEvent);
        };
        // The conditional decrement comes first: it takes the event row's exclusive lock before
        // the `spike_orders` insert takes a shared one through its foreign key. The other way
        // round, two workers each holding the shared lock deadlock when both try to upgrade.
        if !spike_events::take_unit(&mut tx, message.event_id).await? {
            drop(tx);
            return Ok(
                match spike_events::order_of(&self.db, message.event_id, message.user_id).await? {
                    Some(order_id) => CreateOutcome::AlreadyDone { order_id },
                    None => CreateOutcome::SoldOut,
                },
            );
        }
        let new_order = orders::NewOrder {
            user_id: message.user_id,
            kind: OrderKind::Spike,
            total_amount: event.spike_price,
            idempotency_key: None,
            request_hash: None,
            pay_deadline: mysql::now_utc() + self.pay_timeout,
        };
        let item = OrderItem {
            product_id: event.product_id,
            quantity: 1,
            price: event.spike_price,
        };
        let order_id = match order_writer::write(&mut tx, &new_order, &[item]).await {
            Ok(order_id) => order_id,
            Err(WriteError::Order(error)) => return Err(error.into()),
            Err(WriteError::Other(error)) => return Err(error),
        };
        let linked = spike_events::insert_spike_order(
            &mut tx,
            message.event_id,
            message.user_id,
            order_id,
            &message.ticket,
        )
        .await;
        if let Err(error) = linked {
            if mysql::is_unique_violation(&error, spike_events::ONE_PER_BUYER_KEY)
                || mysql::is_unique_violation(&error, spike_events::TICKET_KEY)
            {
                // A concurrent delivery of the same reservation won; this one rolls back.
                drop(tx);
                let existing = spike_events::order_of(&self.db, message.event_id, message.user_id)
                    .await?
                    .ok_or_else(|| ServiceError::internal("duplicate spike order not found"))?;
                return Ok(CreateOutcome::AlreadyDone { order_id: existing });
            }
            return Err(error.into());
        }
        tx.commit().await?;
        tracing::info!(
            order_id,
            event_id = message.event_id,
            user_id = message.user_id,
            "flash-sale order created"
        );
        Ok(CreateOutcome::Created { order_id })
    }

    pub async fn list(
        &self,
        status: Option<EventStatus>,
        page: Page,
    ) -> Result<(Vec<SpikeEvent>, u64), ServiceError> {
        Ok(spike_events::list(&self.db, status, OffsetDateTime::now_utc(), page).await?)
    }
}

/// Counts a refused purchase by its reason, then hands the error on.
fn rejected(error: ServiceError) -> ServiceError {
    let outcome = match &error {
        ServiceError::RateLimited { .. } => "rate_limited",
        ServiceError::SoldOut => "sold_out",
        ServiceError::AlreadyPurchased => "duplicate",
        ServiceError::EventNotStarted => "not_started",
        ServiceError::EventEnded => "ended",
        ServiceError::EventNotFound => "unknown_event",
        _ => "unavailable",
    };
    metrics::counter!("spike_buy_total", "outcome" => outcome).increment(1);
    error
}
