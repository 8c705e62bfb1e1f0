//! Flash-sale state in Redis: per-event stock, window, buyers and reservations, the waiting line,
//! the per-buyer outcome the client asks for, and the per-event admission bucket. [`EventStore`]
//! is the one door to them: every operation names the event, the store builds its keys. Keys
//! carry the event's hash tag (`ev:{<id>}:…`) so each script touches a single Redis Cluster slot.
//! A change of a buyer's standing is announced on the event's channel
//! ([`EventKeys::changes_channel`]: the user ids, space-separated) for held result requests.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use super::RedisConnection;
use crate::config::RateLimit;
use crate::domain::flash_sale::{BuyerOutcome, FailureReason};
use crate::repo::RepoError;

/// The reservation takes the event's admission token in the same script (one round trip per
/// buy): the token bucket's function is loaded in front of it.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/bucket.lua"),
        include_str!("scripts/reservation.lua"),
        include_str!("scripts/reserve.lua")
    ))
});
/// The waiting line's drain: the same bucket and the same reservation as [`RESERVE`].
static ADMIT_WAITING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/bucket.lua"),
        include_str!("scripts/reservation.lua"),
        include_str!("scripts/admit_waiting.lua")
    ))
});
static BUYER_STANDING: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/buyer_standing.lua")));
static UNRESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/unreserve.lua")));
static WARM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/warm_event.lua")));
static TOUCH_RESERVATION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/touch_reservation.lua")));
static RETURN_UNIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/return_unit.lua")));
static CORRECT_STOCK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/correct_stock.lua")));

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
        format!("{}{user_id}", self.result_prefix())
    }

    /// [`EventKeys::result`] without the user id (the line's drain builds the keys itself).
    fn result_prefix(&self) -> String {
        format!("{}:result:", self.base)
    }

    /// The waiting line: user ids scored by arrival number.
    pub fn line(&self) -> String {
        format!("{}:line", self.base)
    }

    /// Each waiting user's ticket.
    pub fn line_tickets(&self) -> String {
        format!("{}:line:tickets", self.base)
    }

    /// The last arrival number given out.
    pub fn line_seq(&self) -> String {
        format!("{}:line:seq", self.base)
    }

    /// The pub/sub channel naming the buyers whose standing changed.
    pub fn changes_channel(&self) -> String {
        format!("{}:changes", self.base)
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

/// The rules a reservation is taken under.
#[derive(Debug, Clone, Copy)]
pub struct ReserveRules {
    /// The event's cluster-wide admission bucket.
    pub admission: RateLimit,
    /// The longest the event's waiting line grows (0: no line, an empty bucket refuses).
    pub line_max: u32,
    /// A buy's `Idempotency-Key` still pending after this was left by a request that is over
    /// (the longest a request runs): a repeat is answered with its ticket.
    pub pending_key_limit: Duration,
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
    /// The event's admission bucket is empty (no waiting line), or the line is full; try again
    /// after this long.
    Limited {
        retry_after: Duration,
    },
    /// The buyer holds a place in the waiting line (`position` 1 is next).
    Waiting {
        ticket: String,
        position: u64,
    },
    NotWarm,
    NotStarted,
    Ended,
    Duplicate,
    SoldOut,
}

/// The reservation script's reply `{code, now_ms, text, position}` (see `scripts/reserve.lua`).
fn decode_reservation(
    code: i64,
    now: i64,
    text: String,
    position: u64,
) -> Result<Reservation, RepoError> {
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
        9 => Reservation::Waiting {
            ticket: text,
            position,
        },
        // A script bug must not pass for a cold event (it would trigger re-warms).
        code => {
            return Err(RepoError::UnexpectedReply(format!(
                "reserve.lua: unknown return code {code}"
            )));
        }
    })
}

/// What one call of the waiting line's drain did (see `scripts/admit_waiting.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineDrain {
    /// The event's keys are missing (warm-up restores them; the line went with them).
    NotWarm,
    Done {
        /// The buyers admitted, each with their ticket, reserved at `at_ms` (Redis time).
        admitted: Vec<(u64, String)>,
        at_ms: i64,
        /// Buyers still in line.
        still_waiting: u64,
        /// Why the line was closed and how many buyers that failed in this call.
        closed: Option<(FailureReason, u64)>,
    },
}

/// The drain script's reply `{code, now_ms, still_waiting, closed_reason, closed, user, ticket,
/// ...}`.
fn decode_line_drain(reply: Vec<redis::Value>) -> Result<LineDrain, RepoError> {
    let unexpected = |what: &str| RepoError::UnexpectedReply(format!("admit_waiting.lua: {what}"));
    let mut fields = reply.into_iter();
    let mut next = |what: &str| fields.next().ok_or_else(|| unexpected(what));
    let code: i64 = redis::from_redis_value(next("code")?).map_err(|_| unexpected("code"))?;
    let at_ms: i64 = redis::from_redis_value(next("now")?).map_err(|_| unexpected("now"))?;
    let still_waiting: u64 =
        redis::from_redis_value(next("waiting")?).map_err(|_| unexpected("waiting"))?;
    let reason: String =
        redis::from_redis_value(next("reason")?).map_err(|_| unexpected("reason"))?;
    let closed: u64 = redis::from_redis_value(next("closed")?).map_err(|_| unexpected("closed"))?;
    match code {
        0 => {}
        1 => return Ok(LineDrain::NotWarm),
        code => return Err(unexpected(&format!("unknown return code {code}"))),
    }
    let closed = match reason.as_str() {
        "" => None,
        reason => Some((
            reason
                .parse()
                .map_err(|_| unexpected(&format!("unknown reason {reason:?}")))?,
            closed,
        )),
    };
    let rest: Vec<String> = fields
        .map(redis::from_redis_value)
        .collect::<Result<_, _>>()
        .map_err(|_| unexpected("admitted"))?;
    let admitted = rest
        .chunks(2)
        .map(|pair| match pair {
            [user, ticket] => Ok((
                user.parse().map_err(|_| unexpected("user id"))?,
                ticket.clone(),
            )),
            _ => Err(unexpected("a user without a ticket")),
        })
        .collect::<Result<_, _>>()?;
    Ok(LineDrain::Done {
        admitted,
        at_ms,
        still_waiting,
        closed,
    })
}

/// Where a buyer stands in an event, as Redis knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The worker recorded the outcome.
    Settled(BuyerOutcome),
    /// A reservation not yet settled.
    Reserved {
        ticket: String,
    },
    /// A place in the waiting line (`position` 1 is next).
    Waiting {
        ticket: String,
        position: u64,
    },
    None,
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

    /// Runs the reservation script for `user_id` with a fresh `ticket`: reserved when a token of
    /// the event's admission bucket is free and nobody waits, else a place in the waiting line
    /// (see [`ReserveRules`]). `idempotency_key` makes a repeated request answer with the first
    /// one's ticket.
    #[tracing::instrument(level = "debug", name = "redis.reserve", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn reserve(
        &self,
        event_id: u64,
        user_id: u64,
        ticket: &str,
        idempotency_key: Option<&str>,
        rules: ReserveRules,
    ) -> Result<Reservation, RepoError> {
        let keys = self.keys(event_id);
        let mut invocation = RESERVE.key(keys.stock());
        invocation
            .key(keys.meta())
            .key(keys.buyers())
            .key(keys.reservations())
            .key(keys.admission())
            .key(keys.line())
            .key(keys.line_tickets())
            .key(keys.line_seq())
            .arg(user_id)
            .arg(ticket)
            .arg(rules.admission.burst)
            .arg(rules.admission.refill_per_second())
            .arg(rules.line_max)
            .arg(u64::try_from(rules.pending_key_limit.as_millis()).unwrap_or(u64::MAX));
        if let Some(key) = idempotency_key {
            invocation.key(keys.idempotency(user_id, key));
        }
        let (code, now, text, position): (i64, i64, String, u64) =
            invocation.invoke_async(&mut self.conn()).await?;
        decode_reservation(code, now, text, position)
    }

    /// Admits up to `most` buyers from the head of the event's waiting line, as many as the
    /// admission bucket has tokens for, each with the reservation a buyer admitted at once gets;
    /// or, once the event has sold out or ended, fails up to `most` of those still waiting
    /// (their results kept `result_ttl_secs`). Announces who changed.
    #[tracing::instrument(level = "debug", name = "redis.admit_waiting", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn admit_waiting(
        &self,
        event_id: u64,
        admission: RateLimit,
        most: u32,
        result_ttl_secs: u64,
    ) -> Result<LineDrain, RepoError> {
        let keys = self.keys(event_id);
        let reply: Vec<redis::Value> = ADMIT_WAITING
            .key(keys.stock())
            .key(keys.meta())
            .key(keys.buyers())
            .key(keys.reservations())
            .key(keys.admission())
            .key(keys.line())
            .key(keys.line_tickets())
            .arg(admission.burst)
            .arg(admission.refill_per_second())
            .arg(most)
            .arg(keys.result_prefix())
            .arg(result_ttl_secs)
            .arg(keys.changes_channel())
            .invoke_async(&mut self.conn())
            .await?;
        decode_line_drain(reply)
    }

    /// Where `user_id` stands in the event, read at one instant.
    pub async fn standing(&self, event_id: u64, user_id: u64) -> Result<Standing, RepoError> {
        let keys = self.keys(event_id);
        let (kind, text, position): (String, String, u64) = BUYER_STANDING
            .key(keys.result(user_id))
            .key(keys.reservations())
            .key(keys.line())
            .key(keys.line_tickets())
            .arg(user_id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match kind.as_str() {
            // An unreadable outcome reads as none, as it always has (MySQL answers then).
            "result" => match text.parse() {
                Ok(outcome) => Standing::Settled(outcome),
                Err(_) => Standing::None,
            },
            "reserved" => Standing::Reserved { ticket: text },
            "waiting" => Standing::Waiting {
                ticket: text,
                position,
            },
            "none" => Standing::None,
            other => {
                return Err(RepoError::UnexpectedReply(format!(
                    "buyer_standing.lua: unknown kind {other:?}"
                )));
            }
        })
    }

    /// How many buyers wait in the event's line.
    pub async fn line_length(&self, event_id: u64) -> Result<u64, RepoError> {
        Ok(self.conn().zcard(self.keys(event_id).line()).await?)
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

    /// Adds `units` to the stock (units a re-warm held back; negative: units Redis counts that
    /// MySQL does not have, never below 0), provided the stock is still `expected` and no
    /// reservation is pending (nothing moved since the caller read them); announces a rise.
    /// False when something moved.
    #[tracing::instrument(level = "debug", name = "redis.correct_stock", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn correct_stock(
        &self,
        event_id: u64,
        expected: i64,
        units: i64,
    ) -> Result<bool, RepoError> {
        let keys = self.keys(event_id);
        let released: i64 = CORRECT_STOCK
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
    /// one event), ending with one announcement of the event's settled buyers. Each buyer's
    /// result is written before their reservation is dropped (a pipeline keeps the order), so
    /// even a reader that does not read both at once never finds neither.
    pub async fn settle_many(
        &self,
        settled: &[(u64, u64, BuyerOutcome)],
        ttl_secs: u64,
    ) -> Result<(), RepoError> {
        let mut pipelines: BTreeMap<u64, (redis::Pipeline, Vec<String>)> = BTreeMap::new();
        for (event_id, user_id, outcome) in settled {
            let (pipe, users) = pipelines
                .entry(*event_id)
                .or_insert_with(|| (redis::pipe(), Vec::new()));
            let keys = self.keys(*event_id);
            pipe.set_ex(keys.result(*user_id), outcome.to_string(), ttl_secs)
                .ignore()
                .hdel(keys.reservations(), *user_id)
                .ignore();
            users.push(user_id.to_string());
        }
        for (event_id, (pipe, users)) in &mut pipelines {
            pipe.publish(self.keys(*event_id).changes_channel(), users.join(" "))
                .ignore();
        }
        let sent = pipelines
            .values()
            .map(|(pipe, _)| async move { pipe.query_async::<()>(&mut self.conn()).await });
        for result in futures_util::future::join_all(sent).await {
            result?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_the_script_returns_is_decoded() {
        let decoded = |code, text: &str| decode_reservation(code, 42, text.to_owned(), 0).unwrap();
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
        assert_eq!(
            decode_reservation(9, 42, "mine".into(), 3).unwrap(),
            Reservation::Waiting {
                ticket: "mine".into(),
                position: 3
            }
        );
    }

    #[test]
    fn an_unknown_reply_is_a_protocol_error_not_a_cold_event() {
        for (code, text) in [(10, ""), (-1, ""), (8, "soon")] {
            let error = decode_reservation(code, 42, text.to_owned(), 0).unwrap_err();
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

    #[test]
    fn a_drain_reply_is_decoded_and_a_bad_one_refused() {
        use redis::Value::{BulkString, Int};
        let text = |s: &str| BulkString(s.as_bytes().to_vec());
        let admitted = decode_line_drain(vec![
            Int(0),
            Int(42),
            Int(7),
            text("sold_out"),
            Int(7),
            text("11"),
            text("t11"),
            Int(12),
            text("t12"),
        ])
        .unwrap();
        assert_eq!(
            admitted,
            LineDrain::Done {
                admitted: vec![(11, "t11".into()), (12, "t12".into())],
                at_ms: 42,
                still_waiting: 7,
                closed: Some((FailureReason::SoldOut, 7)),
            }
        );
        let cold = decode_line_drain(vec![Int(1), Int(42), Int(3), text(""), Int(0)]);
        assert_eq!(cold.unwrap(), LineDrain::NotWarm);
        for bad in [
            vec![Int(0), Int(42)],
            vec![Int(2), Int(42), Int(0), text(""), Int(0)],
            vec![Int(0), Int(42), Int(0), text("bored"), Int(1)],
            vec![Int(0), Int(42), Int(0), text(""), Int(0), text("11")],
            vec![
                Int(0),
                Int(42),
                Int(0),
                text(""),
                Int(0),
                text("x"),
                text("t"),
            ],
        ] {
            let error = decode_line_drain(bad.clone()).unwrap_err();
            assert!(
                matches!(error, RepoError::UnexpectedReply(_)),
                "{bad:?}: {error}"
            );
        }
    }
}
