//! Flash-sale state in Redis: per-event stock, window, buyers and reservations, the per-buyer
//! outcome the client polls, and the per-event admission bucket. [`EventStore`] is the one door
//! to them: every operation names the event, the store builds its keys. Keys carry the event's
//! hash tag (`ev:{<id>}:…`) so each script touches a single Redis Cluster slot.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use super::RedisConnection;
use crate::config::RateLimit;
use crate::domain::flash_sale::BuyerOutcome;
use crate::repo::RepoError;

/// The reservation takes the event's admission token in the same script (one round trip per
/// buy): the token bucket's function is loaded in front of it.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/bucket.lua"),
        include_str!("scripts/reserve.lua")
    ))
});
static UNRESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/unreserve.lua")));
static WARM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/warm_event.lua")));
static TOUCH_RESERVATION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/touch_reservation.lua")));
static RETURN_UNIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/return_unit.lua")));
static RELEASE_HELD_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/release_held_back.lua")));

/// The pub/sub channel announcing "stock came back to event <id>" (the message is the id), so
/// every API replica clears its local sold-out flag.
pub fn stock_returned_channel(prefix: &str) -> String {
    format!("{prefix}spike:stock-returned")
}

/// The keys of one event.
#[derive(Debug, Clone)]
pub struct EventKeys {
    base: String,
}

impl EventKeys {
    pub fn new(prefix: &str, event_id: u64) -> EventKeys {
        EventKeys {
            base: format!("{prefix}ev:{{{event_id}}}"),
        }
    }

    pub fn stock(&self) -> String {
        format!("{}:stock", self.base)
    }

    pub fn meta(&self) -> String {
        format!("{}:meta", self.base)
    }

    pub fn buyers(&self) -> String {
        format!("{}:buyers", self.base)
    }

    pub fn reservations(&self) -> String {
        format!("{}:resv", self.base)
    }

    pub fn result(&self, user_id: u64) -> String {
        format!("{}:result:{user_id}", self.base)
    }

    /// The event's cluster-wide admission token bucket.
    pub fn admission(&self) -> String {
        format!("{}:admission", self.base)
    }

    /// The ticket a buyer's `Idempotency-Key` was answered with.
    pub fn idempotency(&self, user_id: u64, key: &str) -> String {
        format!("{}:idem:{user_id}:{key}", self.base)
    }
}

/// Every event's flash-sale keys under one prefix. Cheap to clone (one multiplexed connection).
#[derive(Clone)]
pub struct EventStore {
    redis: RedisConnection,
    prefix: String,
    /// [`stock_returned_channel`], built once rather than per call.
    channel: String,
}

/// What the reservation script answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved at this Redis time (unix ms).
    Reserved {
        at_ms: i64,
    },
    /// The `Idempotency-Key` was answered with this ticket before.
    Replay {
        ticket: String,
    },
    /// The `Idempotency-Key`'s first request is still being published.
    InProgress,
    /// The event's admission bucket is empty; a token comes after this long.
    Limited {
        retry_after: Duration,
    },
    NotWarm,
    NotStarted,
    Ended,
    Duplicate,
    SoldOut,
}

/// The reservation script's reply `{code, now_ms, text}` (see `scripts/reserve.lua`).
fn decode_reservation(code: i64, now: i64, text: String) -> Result<Reservation, RepoError> {
    Ok(match code {
        0 => Reservation::Reserved { at_ms: now },
        1 => Reservation::NotWarm,
        2 => Reservation::NotStarted,
        3 => Reservation::Ended,
        4 => Reservation::Duplicate,
        5 => Reservation::SoldOut,
        6 => Reservation::Replay { ticket: text },
        7 => Reservation::InProgress,
        8 => Reservation::Limited {
            retry_after: Duration::from_millis(text.parse().map_err(|_| {
                RepoError::UnexpectedReply(format!(
                    "reserve.lua: retry-after {text:?} is not milliseconds"
                ))
            })?),
        },
        // A script bug must not pass for a cold event (it would trigger re-warms).
        code => {
            return Err(RepoError::UnexpectedReply(format!(
                "reserve.lua: unknown return code {code}"
            )));
        }
    })
}

/// How warm-up treats existing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum WarmMode {
    /// Leave a warm event alone (idempotent; never raises the stock).
    Keep,
    /// Replace every key: only for an event that has not started.
    Reset,
}

/// What warm-up writes.
#[derive(Debug, Clone)]
pub struct WarmState<'a> {
    pub free: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub expire_at_ms: i64,
    /// Users who hold an order already.
    pub buyers: &'a [u64],
}

/// A reservation not yet settled by the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReservation {
    pub user_id: u64,
    pub ticket: String,
    pub reserved_at_ms: i64,
}

impl EventStore {
    pub fn new(redis: RedisConnection, prefix: impl Into<String>) -> EventStore {
        let prefix = prefix.into();
        EventStore {
            redis,
            channel: stock_returned_channel(&prefix),
            prefix,
        }
    }

    pub fn keys(&self, event_id: u64) -> EventKeys {
        EventKeys::new(&self.prefix, event_id)
    }

    /// See [`stock_returned_channel`].
    pub fn stock_returned_channel(&self) -> String {
        self.channel.clone()
    }

    /// A handle on the shared connection for one command (clones are cheap).
    fn conn(&self) -> RedisConnection {
        self.redis.clone()
    }

    /// Runs the reservation script for `user_id` with a fresh `ticket`, after taking a token
    /// from the event's cluster-wide admission bucket (`admission`); `idempotency_key` makes a
    /// repeated request answer with the first one's ticket.
    #[tracing::instrument(level = "debug", name = "redis.reserve", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn reserve(
        &self,
        event_id: u64,
        user_id: u64,
        ticket: &str,
        idempotency_key: Option<&str>,
        admission: RateLimit,
    ) -> Result<Reservation, RepoError> {
        let keys = self.keys(event_id);
        let mut invocation = RESERVE.key(keys.stock());
        invocation
            .key(keys.meta())
            .key(keys.buyers())
            .key(keys.reservations())
            .key(keys.admission())
            .arg(user_id)
            .arg(ticket)
            .arg(admission.burst)
            .arg(admission.refill_per_second());
        if let Some(key) = idempotency_key {
            invocation.key(keys.idempotency(user_id, key));
        }
        let (code, now, text): (i64, i64, String) =
            invocation.invoke_async(&mut self.conn()).await?;
        decode_reservation(code, now, text)
    }

    /// Marks the `Idempotency-Key`'s reservation as published: later requests with the key
    /// replay it.
    pub async fn confirm_idempotency(
        &self,
        event_id: u64,
        user_id: u64,
        key: &str,
        ticket: &str,
    ) -> Result<(), RepoError> {
        let _: Option<String> = redis::cmd("SET")
            .arg(self.keys(event_id).idempotency(user_id, key))
            .arg(ticket)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Undoes the reservation `ticket` of `user_id` (and forgets its `Idempotency-Key`),
    /// announcing the returned unit; false when there was no such reservation.
    #[tracing::instrument(level = "debug", name = "redis.unreserve", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn unreserve(
        &self,
        event_id: u64,
        user_id: u64,
        ticket: &str,
        idempotency_key: Option<&str>,
    ) -> Result<bool, RepoError> {
        let keys = self.keys(event_id);
        let mut invocation = UNRESERVE.key(keys.stock());
        invocation
            .key(keys.buyers())
            .key(keys.reservations())
            .arg(user_id)
            .arg(ticket)
            .arg(&self.channel)
            .arg(event_id);
        if let Some(key) = idempotency_key {
            invocation.key(keys.idempotency(user_id, key));
        }
        let undone: i64 = invocation.invoke_async(&mut self.conn()).await?;
        Ok(undone == 1)
    }

    /// Gives `units` back to a warm event and announces it; false when the event is not warm
    /// (MySQL, which warm-up reads, already counts them).
    #[tracing::instrument(level = "debug", name = "redis.return_units", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn return_units(&self, event_id: u64, units: u32) -> Result<bool, RepoError> {
        let keys = self.keys(event_id);
        let returned: i64 = RETURN_UNIT
            .key(keys.stock())
            .arg(&self.channel)
            .arg(event_id)
            .arg(units)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(returned == 1)
    }

    /// Sets a warm event's stock to 0 (its unsold units went back to the product after it
    /// ended); a cold event is left alone, and the keys keep their expiry.
    pub async fn clear_stock(&self, event_id: u64) -> Result<(), RepoError> {
        let _: Option<String> = redis::cmd("SET")
            .arg(self.keys(event_id).stock())
            .arg(0)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Adds `units` a re-warm held back, provided the stock is still `expected` and no
    /// reservation is pending (nothing moved since the caller read them); announces it. False
    /// when something moved.
    #[tracing::instrument(level = "debug", name = "redis.release_held_back", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn release_held_back(
        &self,
        event_id: u64,
        expected: i64,
        units: u32,
    ) -> Result<bool, RepoError> {
        let keys = self.keys(event_id);
        let released: i64 = RELEASE_HELD_BACK
            .key(keys.stock())
            .key(keys.reservations())
            .arg(expected)
            .arg(units)
            .arg(&self.channel)
            .arg(event_id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(released == 1)
    }

    /// Sets the event's keys (see [`WarmMode`]); true when the stock was set now.
    #[tracing::instrument(level = "debug", name = "redis.warm_event", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn warm(
        &self,
        event_id: u64,
        state: &WarmState<'_>,
        mode: WarmMode,
    ) -> Result<bool, RepoError> {
        let keys = self.keys(event_id);
        let mut invocation = WARM.key(keys.stock());
        invocation
            .key(keys.meta())
            .key(keys.buyers())
            .key(keys.reservations())
            .arg(state.free)
            .arg(state.start_ms)
            .arg(state.end_ms)
            .arg(state.expire_at_ms)
            .arg(<&str>::from(mode));
        for buyer in state.buyers {
            invocation.arg(*buyer);
        }
        let fresh: i64 = invocation.invoke_async(&mut self.conn()).await?;
        Ok(fresh == 1)
    }

    /// Every reservation of the event not yet settled (entries it cannot parse are skipped).
    pub async fn pending_reservations(
        &self,
        event_id: u64,
    ) -> Result<Vec<PendingReservation>, RepoError> {
        let entries: std::collections::HashMap<String, String> = self
            .conn()
            .hgetall(self.keys(event_id).reservations())
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(user, held)| {
                let (ticket, at) = held.rsplit_once(':')?;
                Some(PendingReservation {
                    user_id: user.parse().ok()?,
                    ticket: ticket.to_owned(),
                    reserved_at_ms: at.parse().ok()?,
                })
            })
            .collect())
    }

    /// Moves a pending reservation's timestamp to `now_ms` unless it changed meanwhile.
    #[tracing::instrument(level = "debug", name = "redis.touch_reservation", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn touch_reservation(
        &self,
        event_id: u64,
        reservation: &PendingReservation,
        now_ms: i64,
    ) -> Result<bool, RepoError> {
        let moved: i64 = TOUCH_RESERVATION
            .key(self.keys(event_id).reservations())
            .arg(reservation.user_id)
            .arg(format!(
                "{}:{}",
                reservation.ticket, reservation.reserved_at_ms
            ))
            .arg(format!("{}:{now_ms}", reservation.ticket))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(moved == 1)
    }

    /// How many buyers are marked in Redis.
    pub async fn buyer_count(&self, event_id: u64) -> Result<u64, RepoError> {
        Ok(self.conn().scard(self.keys(event_id).buyers()).await?)
    }

    /// The event's sale window `(start_ms, end_ms)` as warmed into Redis; `None` when cold.
    pub async fn window(&self, event_id: u64) -> Result<Option<(i64, i64)>, RepoError> {
        let (start, end): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.keys(event_id).meta())
            .arg("start_ms")
            .arg("end_ms")
            .query_async(&mut self.conn())
            .await?;
        Ok(start.zip(end))
    }

    /// Remaining units, when the event is warm.
    pub async fn stock(&self, event_id: u64) -> Result<Option<i64>, RepoError> {
        Ok(self.conn().get(self.keys(event_id).stock()).await?)
    }

    /// How many reservations of the event are not yet settled (without reading them).
    pub async fn pending_count(&self, event_id: u64) -> Result<u64, RepoError> {
        Ok(self.conn().hlen(self.keys(event_id).reservations()).await?)
    }

    /// Whether `user_id` holds a reservation not yet confirmed by MySQL.
    pub async fn has_reservation(&self, event_id: u64, user_id: u64) -> Result<bool, RepoError> {
        Ok(self
            .conn()
            .hexists(self.keys(event_id).reservations(), user_id)
            .await?)
    }

    /// Records the buyer's outcome for polling and drops the reservation (it is settled now).
    pub async fn settle(
        &self,
        event_id: u64,
        user_id: u64,
        outcome: &BuyerOutcome,
        ttl_secs: u64,
    ) -> Result<(), RepoError> {
        self.settle_many(&[(event_id, user_id, *outcome)], ttl_secs)
            .await
    }

    /// [`EventStore::settle`] for a whole batch of buyers, `(event_id, user_id, outcome)`: one
    /// pipeline per event, so each stays in its event's cluster slot (a batch is nearly always
    /// one event). Each buyer's result is written before their reservation is dropped (a
    /// pipeline keeps the order), so a reader never finds neither: `result` looks at the outcome
    /// first, then the reservation.
    pub async fn settle_many(
        &self,
        settled: &[(u64, u64, BuyerOutcome)],
        ttl_secs: u64,
    ) -> Result<(), RepoError> {
        let mut pipelines: BTreeMap<u64, redis::Pipeline> = BTreeMap::new();
        for (event_id, user_id, outcome) in settled {
            let pipe = pipelines.entry(*event_id).or_insert_with(redis::pipe);
            let keys = self.keys(*event_id);
            pipe.set_ex(keys.result(*user_id), outcome.to_string(), ttl_secs)
                .ignore()
                .hdel(keys.reservations(), *user_id)
                .ignore();
        }
        let sent = pipelines
            .values()
            .map(|pipe| async move { pipe.query_async::<()>(&mut self.conn()).await });
        for result in futures_util::future::join_all(sent).await {
            result?;
        }
        Ok(())
    }

    /// The buyer's recorded outcome; `None` when there is none (or it cannot be read).
    pub async fn outcome(
        &self,
        event_id: u64,
        user_id: u64,
    ) -> Result<Option<BuyerOutcome>, RepoError> {
        let raw: Option<String> = self.conn().get(self.keys(event_id).result(user_id)).await?;
        Ok(raw.and_then(|raw| raw.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_the_script_returns_is_decoded() {
        let decoded = |code, text: &str| decode_reservation(code, 42, text.to_owned()).unwrap();
        assert_eq!(decoded(0, "t"), Reservation::Reserved { at_ms: 42 });
        assert_eq!(decoded(1, ""), Reservation::NotWarm);
        assert_eq!(decoded(2, ""), Reservation::NotStarted);
        assert_eq!(decoded(3, ""), Reservation::Ended);
        assert_eq!(decoded(4, ""), Reservation::Duplicate);
        assert_eq!(decoded(5, ""), Reservation::SoldOut);
        assert_eq!(
            decoded(6, "first"),
            Reservation::Replay {
                ticket: "first".into()
            }
        );
        assert_eq!(decoded(7, "first"), Reservation::InProgress);
        assert_eq!(
            decoded(8, "250"),
            Reservation::Limited {
                retry_after: Duration::from_millis(250)
            }
        );
    }

    #[test]
    fn an_unknown_reply_is_a_protocol_error_not_a_cold_event() {
        for (code, text) in [(9, ""), (-1, ""), (8, "soon")] {
            let error = decode_reservation(code, 42, text.to_owned()).unwrap_err();
            assert!(
                matches!(error, RepoError::UnexpectedReply(_)),
                "{code}: {error}"
            );
            assert_eq!(
                error.unavailable_dependency(),
                None,
                "not retried as an outage"
            );
        }
    }
}
