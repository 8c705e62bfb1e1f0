//! The `spike_events` table.

use std::collections::{BTreeSet, HashMap, HashSet};

use rust_decimal::Decimal;
use sqlx::{MySql, MySqlConnection, MySqlExecutor, QueryBuilder};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::domain::flash_sale::{
    EventStatus, EventWindow, FlashSaleEvent, NewEvent, ORDERS_PER_BUYER,
};
use crate::domain::money::Money;
use crate::domain::product::Page;
use crate::repo::RepoError;

#[derive(sqlx::FromRow)]
struct EventRow {
    id: u64,
    product_id: u64,
    title: String,
    spike_price: Decimal,
    total_stock: u32,
    available_stock: u32,
    returned_stock: u32,
    per_user_limit: u32,
    start_at: PrimitiveDateTime,
    end_at: PrimitiveDateTime,
    created_at: PrimitiveDateTime,
}

impl TryFrom<EventRow> for FlashSaleEvent {
    type Error = RepoError;
    fn try_from(row: EventRow) -> Result<FlashSaleEvent, RepoError> {
        Ok(FlashSaleEvent {
            id: row.id,
            product_id: row.product_id,
            title: row.title,
            spike_price: Money::new(row.spike_price)
                .map_err(|e| super::decode_error("spike_price", e))?,
            total_stock: row.total_stock,
            available_stock: row.available_stock,
            returned_stock: row.returned_stock,
            per_user_limit: row.per_user_limit,
            window: EventWindow::stored(row.start_at.assume_utc(), row.end_at.assume_utc()),
            created_at: row.created_at.assume_utc(),
        })
    }
}

/// The list query's head (built at run time: its filter varies); the checked queries below
/// spell the same columns out.
const SELECT_EVENTS: &str = "SELECT id, product_id, title, spike_price, total_stock, \
     available_stock, returned_stock, per_user_limit, start_at, end_at, created_at \
     FROM spike_events";

fn utc(t: OffsetDateTime) -> PrimitiveDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    PrimitiveDateTime::new(t.date(), t.time())
}

pub async fn insert(tx: &mut MySqlConnection, event: &NewEvent) -> Result<u64, RepoError> {
    let result = sqlx::query!(
        "INSERT INTO spike_events (product_id, title, spike_price, total_stock, available_stock, \
         per_user_limit, start_at, end_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        event.product_id,
        event.title,
        event.spike_price.amount(),
        event.stock,
        event.stock,
        ORDERS_PER_BUYER,
        utc(event.window.start_at()),
        utc(event.window.end_at())
    )
    .execute(tx)
    .await?;
    Ok(result.last_insert_id())
}

/// Rewrites an event's fields (not its product); `stock` sets both the allotment and what is left
/// of it (only valid before the sale starts, when nothing is sold).
pub async fn update(tx: &mut MySqlConnection, id: u64, event: &NewEvent) -> Result<(), RepoError> {
    sqlx::query!(
        "UPDATE spike_events SET title = ?, spike_price = ?, total_stock = ?, available_stock = ?, \
         start_at = ?, end_at = ? WHERE id = ?",
        event.title,
        event.spike_price.amount(),
        event.stock,
        event.stock,
        utc(event.window.start_at()),
        utc(event.window.end_at()),
        id
    )
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn find(
    db: impl MySqlExecutor<'_>,
    id: u64,
) -> Result<Option<FlashSaleEvent>, RepoError> {
    sqlx::query_as!(
        EventRow,
        "SELECT id, product_id, title, spike_price, total_stock, available_stock, returned_stock, \
         per_user_limit, \
         start_at, end_at, created_at FROM spike_events \
         WHERE id = ? AND status = 'scheduled'",
        id
    )
    .fetch_optional(db)
    .await?
    .map(FlashSaleEvent::try_from)
    .transpose()
}

/// [`find`], locking the row for the rest of the transaction.
pub async fn lock(tx: &mut MySqlConnection, id: u64) -> Result<Option<FlashSaleEvent>, RepoError> {
    sqlx::query_as!(
        EventRow,
        "SELECT id, product_id, title, spike_price, total_stock, available_stock, returned_stock, \
         per_user_limit, \
         start_at, end_at, created_at FROM spike_events \
         WHERE id = ? AND status = 'scheduled' FOR UPDATE",
        id
    )
    .fetch_optional(tx)
    .await?
    .map(FlashSaleEvent::try_from)
    .transpose()
}

/// A page of events by start time, optionally only those in `status` at `now`.
pub async fn list(
    db: &sqlx::MySqlPool,
    status: Option<EventStatus>,
    now: OffsetDateTime,
    page: Page,
) -> Result<(Vec<FlashSaleEvent>, u64), RepoError> {
    let push_filter = |query: &mut QueryBuilder<MySql>| {
        let now = utc(now);
        query.push(" WHERE status = 'scheduled'");
        match status {
            None => {}
            Some(EventStatus::Upcoming) => {
                query.push(" AND start_at > ").push_bind(now);
            }
            Some(EventStatus::Active) => {
                query
                    .push(" AND start_at <= ")
                    .push_bind(now)
                    .push(" AND end_at > ")
                    .push_bind(now);
            }
            Some(EventStatus::Ended) => {
                query.push(" AND end_at <= ").push_bind(now);
            }
        }
    };
    let mut select = QueryBuilder::<MySql>::new(SELECT_EVENTS);
    push_filter(&mut select);
    select
        .push(" ORDER BY start_at DESC, id DESC LIMIT ")
        .push_bind(page.page_size)
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows: Vec<EventRow> = select.build_query_as().fetch_all(db).await?;
    let mut count = QueryBuilder::<MySql>::new("SELECT COUNT(*) FROM spike_events");
    push_filter(&mut count);
    let total: i64 = count.build_query_scalar().fetch_one(db).await?;
    let events = rows
        .into_iter()
        .map(FlashSaleEvent::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((events, total.max(0) as u64))
}

/// Name of the unique key on `spike_orders (user_id, spike_event_id)`.
pub const ONE_PER_BUYER_KEY: &str = "uk_spike_orders_user_event";
/// Name of the unique key on `spike_orders (ticket)`.
pub const TICKET_KEY: &str = "uk_spike_orders_ticket";

/// [`lock`] for several events at once, in id order (two batches locking the same events take
/// them in the same order, so they queue instead of deadlocking). Unknown and cancelled events
/// are missing from the answer.
pub async fn lock_many(
    tx: &mut MySqlConnection,
    ids: &[u64],
) -> Result<Vec<FlashSaleEvent>, RepoError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::<MySql>::new(SELECT_EVENTS);
    query.push(" WHERE status = 'scheduled' AND id IN (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(") ORDER BY id FOR UPDATE");
    let rows: Vec<EventRow> = query.build_query_as().fetch_all(tx).await?;
    rows.into_iter().map(FlashSaleEvent::try_from).collect()
}

/// Takes `count` units of the event if MySQL still has that many: the last guard against
/// overselling, whatever Redis said. One statement for a whole batch of orders, so the event's
/// row (the hottest in a sale) is written once per batch.
pub async fn take_units(
    tx: &mut MySqlConnection,
    event_id: u64,
    count: u32,
) -> Result<bool, RepoError> {
    let result = sqlx::query!(
        "UPDATE spike_events SET available_stock = available_stock - ? \
         WHERE id = ? AND available_stock >= ?",
        count,
        event_id,
        count
    )
    .execute(tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A `spike_orders` row: which order a buyer got in an event, and from which reservation.
#[derive(Debug, Clone, Copy)]
pub struct FlashSaleOrderLink<'a> {
    pub event_id: u64,
    pub user_id: u64,
    pub order_id: u64,
    pub ticket: &'a str,
}

/// Links orders to their events and buyers, with one statement; the unique keys make a second
/// order for a buyer (or a ticket) fail the statement.
pub async fn insert_order_links(
    tx: &mut MySqlConnection,
    links: &[FlashSaleOrderLink<'_>],
) -> Result<(), RepoError> {
    if links.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::<MySql>::new(
        "INSERT INTO spike_orders (spike_event_id, user_id, order_id, ticket) ",
    );
    query.push_values(links, |mut row, link| {
        row.push_bind(link.event_id)
            .push_bind(link.user_id)
            .push_bind(link.order_id)
            .push_bind(link.ticket);
    });
    query.build().execute(tx).await?;
    Ok(())
}

/// The orders the given buyers hold: `(event_id, user_id) → order_id`, for those who have one.
/// One query for a whole batch (a range on the unique `(user_id, spike_event_id)` key; the pairs
/// are picked out of the cross product here).
pub async fn orders_of(
    db: impl MySqlExecutor<'_>,
    buyers: &[(u64, u64)],
) -> Result<HashMap<(u64, u64), u64>, RepoError> {
    if buyers.is_empty() {
        return Ok(HashMap::new());
    }
    let users: BTreeSet<u64> = buyers.iter().map(|(_, user)| *user).collect();
    let events: BTreeSet<u64> = buyers.iter().map(|(event, _)| *event).collect();
    let mut query = QueryBuilder::<MySql>::new(
        "SELECT spike_event_id, user_id, order_id FROM spike_orders WHERE user_id IN (",
    );
    let mut list = query.separated(", ");
    for user in &users {
        list.push_bind(*user);
    }
    query.push(") AND spike_event_id IN (");
    let mut list = query.separated(", ");
    for event in &events {
        list.push_bind(*event);
    }
    query.push(")");
    let rows: Vec<(u64, u64, u64)> = query.build_query_as().fetch_all(db).await?;
    let wanted: HashSet<(u64, u64)> = buyers.iter().copied().collect();
    Ok(rows
        .into_iter()
        .map(|(event, user, order)| ((event, user), order))
        .filter(|(buyer, _)| wanted.contains(buyer))
        .collect())
}

/// The order a buyer holds in an event, if any.
pub async fn order_of(
    db: impl MySqlExecutor<'_>,
    event_id: u64,
    user_id: u64,
) -> Result<Option<u64>, RepoError> {
    Ok(sqlx::query_scalar!(
        "SELECT order_id FROM spike_orders WHERE spike_event_id = ? AND user_id = ?",
        event_id,
        user_id
    )
    .fetch_optional(db)
    .await?)
}

/// Every buyer holding an order in the event.
pub async fn buyers(db: impl MySqlExecutor<'_>, event_id: u64) -> Result<Vec<u64>, RepoError> {
    Ok(sqlx::query_scalar!(
        "SELECT user_id FROM spike_orders WHERE spike_event_id = ?",
        event_id
    )
    .fetch_all(db)
    .await?)
}

/// Events whose window overlaps `[from, to)`: started before `to` and not ended at `from`
/// (the scheduler's "starting soon or running", the reconciler's "keys may be alive"). Each
/// row is decoded on its own, with its id, so one unreadable row is one event skipped, not a
/// failed pass for every event.
pub async fn overlapping(
    db: &sqlx::MySqlPool,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<(u64, Result<FlashSaleEvent, RepoError>)>, RepoError> {
    Ok(sqlx::query_as!(
        EventRow,
        "SELECT id, product_id, title, spike_price, total_stock, available_stock, returned_stock, \
         per_user_limit, \
         start_at, end_at, created_at FROM spike_events \
         WHERE status = 'scheduled' AND start_at < ? AND end_at > ? ORDER BY start_at, id",
        utc(to),
        utc(from)
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|row| (row.id, FlashSaleEvent::try_from(row)))
    .collect())
}

/// The event's orders that still hold a unit (any status but closed or cancelled).
pub async fn live_orders(db: impl MySqlExecutor<'_>, event_id: u64) -> Result<u64, RepoError> {
    let count = sqlx::query_scalar!(
        "SELECT COUNT(*) FROM spike_orders s JOIN orders o ON o.id = s.order_id \
         WHERE s.spike_event_id = ? AND o.status NOT IN ('closed', 'cancelled')",
        event_id
    )
    .fetch_one(db)
    .await?;
    Ok(count.max(0) as u64)
}

/// The event of each flash-sale order among `order_ids`: `order_id → event_id` (regular orders
/// are missing from the answer).
pub async fn events_of_orders(
    db: impl MySqlExecutor<'_>,
    order_ids: &[u64],
) -> Result<HashMap<u64, u64>, RepoError> {
    if order_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut query = QueryBuilder::<MySql>::new(
        "SELECT order_id, spike_event_id FROM spike_orders WHERE order_id IN (",
    );
    let mut list = query.separated(", ");
    for id in order_ids {
        list.push_bind(*id);
    }
    query.push(")");
    let rows: Vec<(u64, u64)> = query.build_query_as().fetch_all(db).await?;
    Ok(rows.into_iter().collect())
}

/// Gives `count` units of closed or cancelled orders back to their event in MySQL.
pub async fn return_units(
    tx: &mut MySqlConnection,
    event_id: u64,
    count: u32,
) -> Result<(), RepoError> {
    sqlx::query!(
        "UPDATE spike_events SET available_stock = available_stock + ? WHERE id = ?",
        count,
        event_id
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Whether `product_id` has a scheduled event that has not ended at `now` (upcoming or active):
/// such a product still sells and cannot be deleted.
pub async fn product_has_unfinished(
    db: impl MySqlExecutor<'_>,
    product_id: u64,
    now: PrimitiveDateTime,
) -> Result<bool, RepoError> {
    let found = sqlx::query_scalar!(
        "SELECT id FROM spike_events \
         WHERE product_id = ? AND status = 'scheduled' AND end_at > ? LIMIT 1",
        product_id,
        now
    )
    .fetch_optional(db)
    .await?;
    Ok(found.is_some())
}

/// Ended events whose unsold units have not gone back to their product yet, ended before
/// `ended_before`, oldest first, at most `limit`.
pub async fn ended_with_unsold(
    db: impl MySqlExecutor<'_>,
    ended_before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<u64>, RepoError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM spike_events \
         WHERE unsold_returned_at IS NULL AND end_at <= ? AND status = 'scheduled' \
         ORDER BY end_at, id LIMIT ?",
        utc(ended_before),
        limit
    )
    .fetch_all(db)
    .await?)
}

/// The event's flash-sale orders still awaiting payment (each may yet close and give its unit
/// back to the event).
pub async fn unpaid_orders(db: impl MySqlExecutor<'_>, event_id: u64) -> Result<u64, RepoError> {
    let count = sqlx::query_scalar!(
        "SELECT COUNT(*) FROM spike_orders s JOIN orders o ON o.id = s.order_id \
         WHERE s.spike_event_id = ? AND o.status = 'pending_payment'",
        event_id
    )
    .fetch_one(db)
    .await?;
    Ok(count.max(0) as u64)
}

/// Marks the locked event's `units` unsold units as gone back to the product: none left to
/// sell, counted in `returned_stock`. False when the event was done already (another worker).
pub async fn mark_unsold_returned(
    tx: &mut MySqlConnection,
    event_id: u64,
    units: u32,
    now: PrimitiveDateTime,
) -> Result<bool, RepoError> {
    let result = sqlx::query!(
        "UPDATE spike_events SET available_stock = available_stock - ?, \
         returned_stock = returned_stock + ?, unsold_returned_at = ? \
         WHERE id = ? AND unsold_returned_at IS NULL AND available_stock = ?",
        units,
        units,
        now,
        event_id,
        units
    )
    .execute(tx)
    .await?;
    Ok(result.rows_affected() == 1)
}
