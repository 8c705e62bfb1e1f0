//! The buy path (docs/design.md §5) and the buyer's result. Cheap refusals come first: the per-buyer
//! limit and the sold-out flag cost no Redis call; then one Lua script takes the event's
//! admission token and reserves (one round trip), the reservation is published with those of
//! concurrent requests (one message, one confirm: `publish_groups`), and the buyer gets `queued`.
//! When the deployment requires it, a purchase token is checked first, in the process.

use std::sync::Arc;
use std::time::Duration;

use sqlx::MySqlPool;
use time::OffsetDateTime;

use super::publish_groups::PublishGroups;
use super::purchase_token::{HumanCheck, NoHumanCheck, PurchaseTokens};
use super::sold_out::SoldOutFlags;
use super::user_limit::UserRateLimiter;
use super::{CreateOutcome, Fulfilment, OrderQueue, Warmup, unix_millis};
use crate::config::{FlashSaleMode, FlashSaleSettings, RateLimit};
use crate::domain::flash_sale::{BuyerOutcome, EventStatus, FailureReason};
use crate::repo::mysql::spike_events;
use crate::repo::redis::flash_sale::{EventStore, Reservation};
use crate::service::ServiceError;
use crate::service::messages::ReservationMessage;
use crate::telemetry::metrics::names;
use crate::util::single_flight::SingleFlight;

/// A purchase attempt as the API hands it over.
#[derive(Debug, Clone, Copy)]
pub struct BuyRequest<'a> {
    pub event_id: u64,
    pub user_id: u64,
    /// Makes a retry answer with the first request's ticket.
    pub idempotency_key: Option<&'a str>,
    /// Travels with the message (a header), to join the worker's logs with the API's.
    pub request_id: &'a str,
    /// `X-Purchase-Token`, checked when the deployment requires one.
    pub purchase_token: Option<&'a str>,
}

/// A purchase token handed to a buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: Duration,
}

/// A queued purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub ticket: String,
    /// True when an earlier request with the same `Idempotency-Key` was answered with it.
    pub replayed: bool,
}

/// Where a buyer stands in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyResult {
    Queued,
    Success { order_id: u64 },
    Failed { reason: FailureReason },
    None,
}

#[derive(Clone)]
pub struct Purchase {
    db: MySqlPool,
    store: EventStore,
    /// Publishes each reservation with those of concurrent requests (one message per group).
    publish_groups: PublishGroups<OrderQueue>,
    user_limiter: Arc<UserRateLimiter>,
    event_limit: RateLimit,
    sold_out: Arc<SoldOutFlags>,
    /// `db`: the naive baseline ([`Purchase::buy_in_mysql`]).
    mode: FlashSaleMode,
    /// Re-warms an active event found cold.
    warmup: Warmup,
    /// Runs the order transaction in the request in `db` mode.
    fulfilment: Fulfilment,
    /// Concurrent buyers of a cold event share one lookup (and re-warm) per event.
    cold_flights: Arc<SingleFlight<u64, Option<EventStatus>>>,
    /// The anti-bot gate: purchase tokens, whether a buy needs one, the token route's own
    /// per-buyer limit and the human check it asks.
    tokens: PurchaseTokens,
    require_token: bool,
    token_limiter: Arc<UserRateLimiter>,
    human_check: Arc<dyn HumanCheck>,
    /// Fault injection (dev only): die between the reservation and its publish.
    abort_after_reserve: bool,
}

impl Purchase {
    pub(super) fn new(
        settings: &FlashSaleSettings,
        db: MySqlPool,
        store: EventStore,
        queue: OrderQueue,
        warmup: Warmup,
        fulfilment: Fulfilment,
        tokens: PurchaseTokens,
    ) -> Purchase {
        Purchase {
            db,
            store,
            publish_groups: PublishGroups::new(
                queue,
                usize::from(settings.publish_group_max),
                usize::from(settings.publish_groups_in_flight),
            ),
            user_limiter: Arc::new(UserRateLimiter::new(settings.user_rate_limit)),
            event_limit: settings.event_rate_limit,
            sold_out: warmup.sold_out_flags(),
            mode: settings.mode,
            warmup,
            fulfilment,
            cold_flights: Arc::default(),
            tokens,
            require_token: settings.require_purchase_token,
            token_limiter: Arc::new(UserRateLimiter::new(settings.user_rate_limit)),
            human_check: Arc::new(NoHumanCheck),
            abort_after_reserve: settings.fault_abort_after_reserve,
        }
    }

    /// The same purchase path with `check` asked before each purchase token is issued (a
    /// captcha service; see [`HumanCheck`]).
    pub fn with_human_check(mut self, check: Arc<dyn HumanCheck>) -> Purchase {
        self.human_check = check;
        self
    }

    /// This replica's sold-out flags (the API role listens for their clearing).
    pub fn sold_out_flags(&self) -> Arc<SoldOutFlags> {
        self.sold_out.clone()
    }

    /// The pub/sub channel on which returned stock is announced.
    pub fn stock_returned_channel(&self) -> String {
        self.store.stock_returned_channel()
    }

    /// Forgets the buyers whose per-buyer allowance is full again (the API role runs it every
    /// minute, next to the flags' listener).
    pub fn forget_idle_buyers(&self) {
        self.user_limiter.forget_idle();
        self.token_limiter.forget_idle();
    }

    /// A purchase token for the buyer in an active event (the anti-bot gate, see
    /// [`purchase_token`](super::purchase_token)). Rate limited per buyer like the buy itself;
    /// the human check, when one is plugged in, is asked with `proof` first. The window comes
    /// from Redis (no MySQL at sale start), or from MySQL through the cold-event path.
    pub async fn issue_token(
        &self,
        event_id: u64,
        user_id: u64,
        proof: Option<&str>,
    ) -> Result<IssuedToken, ServiceError> {
        self.token_limiter
            .take(user_id)
            .map_err(|retry_after| ServiceError::RateLimited { retry_after })?;
        let now_ms = unix_millis(OffsetDateTime::now_utc());
        let status = match self.store.window(event_id).await? {
            Some((start_ms, _)) if now_ms < start_ms => EventStatus::Upcoming,
            Some((_, end_ms)) if now_ms >= end_ms => EventStatus::Ended,
            Some(_) => EventStatus::Active,
            None => match self.not_warm(event_id).await {
                ServiceError::Retryable(_) => EventStatus::Active,
                error => return Err(error),
            },
        };
        match status {
            EventStatus::Upcoming => return Err(ServiceError::EventNotStarted),
            EventStatus::Ended => return Err(ServiceError::EventEnded),
            EventStatus::Active => {}
        }
        if !self.human_check.passed(user_id, event_id, proof).await {
            return Err(ServiceError::Forbidden(
                "the human check was not passed".into(),
            ));
        }
        Ok(IssuedToken {
            token: self.tokens.issue(user_id, event_id, now_ms as u64),
            expires_in: self.tokens.ttl(),
        })
    }

    /// Reserves a unit for the buyer and queues its order (docs/design.md §5).
    pub async fn buy(&self, request: BuyRequest<'_>) -> Result<Queued, ServiceError> {
        let BuyRequest {
            event_id,
            user_id,
            idempotency_key,
            request_id,
            purchase_token,
        } = request;
        self.user_limiter
            .take(user_id)
            .map_err(|retry_after| rejected(ServiceError::RateLimited { retry_after }))?;
        if self.require_token {
            let now_ms = unix_millis(OffsetDateTime::now_utc()) as u64;
            if let Err(refusal) = self
                .tokens
                .verify(purchase_token, user_id, event_id, now_ms)
            {
                tracing::info!(event_id, user_id, %refusal, "buy refused at the gate");
                return Err(rejected(ServiceError::Forbidden(refusal.to_string())));
            }
        }
        if self.mode == FlashSaleMode::Db {
            return self.buy_in_mysql(event_id, user_id).await;
        }
        // A retry carrying an Idempotency-Key goes to Redis, which holds its first answer.
        if idempotency_key.is_none() && self.sold_out.is_sold_out(event_id) {
            return Err(rejected(ServiceError::SoldOut));
        }
        let ticket = uuid::Uuid::new_v4().simple().to_string();
        let reservation = self
            .store
            .reserve(
                event_id,
                user_id,
                &ticket,
                idempotency_key,
                self.event_limit,
            )
            .await?;
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
            Reservation::Limited { retry_after } => {
                return Err(rejected(ServiceError::RateLimited { retry_after }));
            }
            Reservation::NotStarted => return Err(rejected(ServiceError::EventNotStarted)),
            Reservation::Ended => return Err(rejected(ServiceError::EventEnded)),
            Reservation::Duplicate => return Err(rejected(ServiceError::AlreadyPurchased)),
            Reservation::NotWarm => return Err(rejected(self.not_warm(event_id).await)),
        };
        if self.abort_after_reserve {
            tracing::error!(
                event_id,
                user_id,
                "fault injection: aborting after the reservation"
            );
            std::process::abort();
        }
        let message = ReservationMessage {
            ticket: ticket.clone(),
            event_id,
            user_id,
            reserved_at_ms,
            request_id: (!request_id.is_empty()).then(|| request_id.to_owned()),
        };
        if let Err(error) = self.publish_groups.publish(message).await {
            tracing::warn!(event_id, user_id, %error, "reservation not queued; undoing it");
            self.store
                .unreserve(event_id, user_id, &ticket, idempotency_key)
                .await?;
            return Err(rejected(ServiceError::Retryable(
                "the order queue cannot take the order now, retry later".into(),
            )));
        }
        if let Some(key) = idempotency_key {
            self.store
                .confirm_idempotency(event_id, user_id, key, &ticket)
                .await?;
        }
        metrics::counter!(names::BUYS, "outcome" => "queued").increment(1);
        Ok(Queued {
            ticket,
            replayed: false,
        })
    }

    /// The naive baseline (`SPIKE_FLASH_SALE_MODE=db`): the request itself runs the worker's
    /// order transaction (conditional `UPDATE … WHERE available_stock > 0`, order rows, close
    /// outbox row), no Redis and no queue, so every buyer queues on the event row's lock. Correct
    /// (the conditional decrement and the unique buyer key guard it) but slow: the load tool
    /// measures how much the queue path gains over it. `Idempotency-Key` is not replayed here: a
    /// repeat answers "already purchased".
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
            reserved_at_ms: unix_millis(now),
            request_id: None,
        };
        match self.fulfilment.create_order_in_mysql(&message).await? {
            CreateOutcome::Created { .. } => {
                metrics::counter!(names::BUYS, "outcome" => "queued").increment(1);
                Ok(Queued {
                    ticket: message.ticket,
                    replayed: false,
                })
            }
            CreateOutcome::AlreadyDone { .. } => Err(rejected(ServiceError::AlreadyPurchased)),
            CreateOutcome::SoldOut => Err(rejected(ServiceError::SoldOut)),
            CreateOutcome::UnknownEvent => Err(rejected(ServiceError::EventNotFound)),
            CreateOutcome::UnknownBuyer => {
                Err(ServiceError::Unauthenticated("user no longer exists"))
            }
        }
    }

    /// The answer when the event's keys are missing: never "sold out" or "available". An
    /// unknown, upcoming or ended event says so; an active one is not warm (Redis lost its
    /// keys): fail closed with a retryable error and re-warm it. A burst of buyers hitting a cold
    /// event shares one lookup and one re-warm.
    async fn not_warm(&self, event_id: u64) -> ServiceError {
        let status = self
            .cold_flights
            .run(event_id, || self.warmup.rewarm_if_active(event_id))
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

    /// Where `user_id` stands: the outcome in Redis, a pending reservation, or MySQL's record;
    /// an unknown event is `EventNotFound`.
    pub async fn result(&self, event_id: u64, user_id: u64) -> Result<BuyResult, ServiceError> {
        match self.store.outcome(event_id, user_id).await? {
            Some(BuyerOutcome::Success { order_id }) => return Ok(BuyResult::Success { order_id }),
            Some(BuyerOutcome::Failed(reason)) => return Ok(BuyResult::Failed { reason }),
            None => {}
        }
        if self.store.has_reservation(event_id, user_id).await? {
            return Ok(BuyResult::Queued);
        }
        if let Some(order_id) = spike_events::order_of(&self.db, event_id, user_id).await? {
            return Ok(BuyResult::Success { order_id });
        }
        // Nothing about this buyer: "none" for an event that exists, 404 for one that does not.
        match spike_events::find(&self.db, event_id).await? {
            Some(_) => Ok(BuyResult::None),
            None => Err(ServiceError::EventNotFound),
        }
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
        ServiceError::Forbidden(_) => "no_purchase_token",
        _ => "unavailable",
    };
    metrics::counter!(names::BUYS, "outcome" => outcome).increment(1);
    error
}
