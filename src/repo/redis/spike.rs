//! Flash-sale state in Redis: per-event stock, window, buyers and reservations, and the
//! per-buyer result the client polls. Keys carry the event's hash tag (`ev:{<id>}:…`) so each
//! script touches a single Redis Cluster slot.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::repo::RepoError;

static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/reserve.lua")));
static UNRESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/unreserve.lua")));
static WARM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/warm_event.lua")));

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
}

/// What the reservation script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved at this Redis time (unix ms).
    Reserved {
        at_ms: i64,
    },
    NotWarm,
    NotStarted,
    Ended,
    Duplicate,
    SoldOut,
}

pub async fn reserve(
    redis: &mut ConnectionManager,
    keys: &EventKeys,
    user_id: u64,
    ticket: &str,
) -> Result<Reservation, RepoError> {
    let (code, now): (i64, i64) = RESERVE
        .key(keys.stock())
        .key(keys.meta())
        .key(keys.buyers())
        .key(keys.reservations())
        .arg(user_id)
        .arg(ticket)
        .invoke_async(redis)
        .await?;
    Ok(match code {
        0 => Reservation::Reserved { at_ms: now },
        2 => Reservation::NotStarted,
        3 => Reservation::Ended,
        4 => Reservation::Duplicate,
        5 => Reservation::SoldOut,
        _ => Reservation::NotWarm,
    })
}

/// Undoes the reservation `ticket` of `user_id`; false when there was none.
pub async fn unreserve(
    redis: &mut ConnectionManager,
    keys: &EventKeys,
    user_id: u64,
    ticket: &str,
) -> Result<bool, RepoError> {
    let undone: i64 = UNRESERVE
        .key(keys.stock())
        .key(keys.buyers())
        .key(keys.reservations())
        .arg(user_id)
        .arg(ticket)
        .invoke_async(redis)
        .await?;
    Ok(undone == 1)
}

/// Sets the event's keys unless already warm; true when the stock was set now.
pub async fn warm(
    redis: &mut ConnectionManager,
    keys: &EventKeys,
    free: u32,
    start_ms: i64,
    end_ms: i64,
    expire_at_ms: i64,
    buyers: &[u64],
) -> Result<bool, RepoError> {
    let mut invocation = WARM.key(keys.stock());
    invocation
        .key(keys.meta())
        .key(keys.buyers())
        .arg(free)
        .arg(start_ms)
        .arg(end_ms)
        .arg(expire_at_ms);
    for buyer in buyers {
        invocation.arg(*buyer);
    }
    let fresh: i64 = invocation.invoke_async(redis).await?;
    Ok(fresh == 1)
}

/// Remaining units, when the event is warm.
pub async fn stock(
    redis: &mut ConnectionManager,
    keys: &EventKeys,
) -> Result<Option<i64>, RepoError> {
    Ok(redis.get(keys.stock()).await?)
}

/// Whether `user_id` holds a reservation not yet confirmed by MySQL.
pub async fn has_reservation(
    redis: &mut ConnectionManager,
    keys: &EventKeys,
    user_id: u64,
) -> Result<bool, RepoError> {
    Ok(redis.hexists(keys.reservations(), user_id).await?)
}

/// Records the outcome for polling and drops the reservation (it is settled now).
pub async fn settle(
    redis: &mut ConnectionManager,
    keys: &EventKeys,
    user_id: u64,
    outcome: &str,
    ttl_secs: u64,
) -> Result<(), RepoError> {
    let _: () = redis::pipe()
        .atomic()
        .set_ex(keys.result(user_id), outcome, ttl_secs)
        .hdel(keys.reservations(), user_id)
        .query_async(redis)
        .await?;
    Ok(())
}

pub async fn result(
    redis: &mut ConnectionManager,
    keys: &EventKeys,
    user_id: u64,
) -> Result<Option<String>, RepoError> {
    Ok(redis.get(keys.result(user_id)).await?)
}
