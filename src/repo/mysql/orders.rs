//! The `orders`, `order_items` and `payments` tables.

use std::collections::HashMap;

use rust_decimal::Decimal;
use sqlx::{MySql, MySqlConnection, MySqlExecutor, QueryBuilder};
use time::PrimitiveDateTime;

use super::decode_error;
use crate::domain::money::Money;
use crate::domain::order::{Order, OrderItem, OrderKind, OrderStatus};
use crate::domain::product::Page;
use crate::repo::RepoError;

/// Name of the foreign key from `orders.user_id` to `users` (see the migration).
pub const USER_KEY: &str = "fk_orders_user";

/// Name of the unique key on `orders (user_id, idempotency_key)`.
pub const IDEMPOTENCY_KEY: &str = "uk_orders_user_idempotency_key";

/// Why an order row was not inserted: the two refusals its caller acts on, or anything else.
#[derive(Debug, thiserror::Error)]
pub enum InsertOrderError {
    /// The buyer used this `Idempotency-Key` before ([`IDEMPOTENCY_KEY`]): a replay.
    #[error("idempotency key used before")]
    DuplicateKey,
    /// The buyer's account is gone ([`USER_KEY`]): its token outlived it.
    #[error("no such user")]
    UnknownUser,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

impl From<sqlx::Error> for InsertOrderError {
    fn from(error: sqlx::Error) -> InsertOrderError {
        if super::is_unique_violation(&error, IDEMPOTENCY_KEY) {
            InsertOrderError::DuplicateKey
        } else if super::is_foreign_key_violation(&error, USER_KEY) {
            InsertOrderError::UnknownUser
        } else {
            InsertOrderError::Repo(error.into())
        }
    }
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: u64,
    user_id: u64,
    status: OrderStatus,
    kind: OrderKind,
    total_amount: Decimal,
    pay_deadline: PrimitiveDateTime,
    created_at: PrimitiveDateTime,
    paid_at: Option<PrimitiveDateTime>,
    closed_at: Option<PrimitiveDateTime>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    order_id: u64,
    product_id: u64,
    quantity: u32,
    price: Decimal,
}

fn to_order(row: OrderRow, items: Vec<OrderItem>) -> Result<Order, RepoError> {
    Ok(Order {
        id: row.id,
        user_id: row.user_id,
        status: row.status,
        kind: row.kind,
        total_amount: Money::new(row.total_amount).map_err(|e| decode_error("total_amount", e))?,
        items,
        pay_deadline: row.pay_deadline.assume_utc(),
        created_at: row.created_at.assume_utc(),
        paid_at: row.paid_at.map(PrimitiveDateTime::assume_utc),
        closed_at: row.closed_at.map(PrimitiveDateTime::assume_utc),
    })
}

/// The list query's head (built at run time: its filter varies); `find` spells the same columns
/// out for the checked macro.
const SELECT_ORDERS: &str = "SELECT id, user_id, status, kind, total_amount, pay_deadline, \
     created_at, paid_at, closed_at FROM orders";

/// The order holding `key` for `user_id`, with the hash of the request that created it.
pub async fn find_by_idempotency_key(
    db: impl MySqlExecutor<'_>,
    user_id: u64,
    key: &str,
) -> Result<Option<(u64, Option<String>)>, RepoError> {
    let row = sqlx::query!(
        "SELECT id, request_hash FROM orders WHERE user_id = ? AND idempotency_key = ?",
        user_id,
        key
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| (row.id, row.request_hash)))
}

/// Current prices of the active products among `ids`.
pub async fn active_prices(
    db: impl MySqlExecutor<'_>,
    ids: &[u64],
) -> Result<HashMap<u64, Money>, RepoError> {
    let mut query = QueryBuilder::<MySql>::new(
        "SELECT id, price FROM products WHERE status = 'active' AND id IN (",
    );
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    let rows: Vec<(u64, Decimal)> = query.build_query_as().fetch_all(db).await?;
    rows.into_iter()
        .map(|(id, price)| {
            Money::new(price)
                .map(|price| (id, price))
                .map_err(|e| decode_error("price", e))
        })
        .collect()
}

/// A new order row; `Err` is the raw sqlx error so the caller can spot the idempotency key.
pub struct NewOrder<'a> {
    pub user_id: u64,
    pub kind: OrderKind,
    pub total_amount: Money,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: Option<&'a str>,
    pub pay_deadline: PrimitiveDateTime,
}

pub async fn insert(
    tx: &mut MySqlConnection,
    order: &NewOrder<'_>,
) -> Result<u64, InsertOrderError> {
    let result = sqlx::query!(
        "INSERT INTO orders \
         (user_id, status, kind, total_amount, idempotency_key, request_hash, pay_deadline) \
         VALUES (?, 'pending_payment', ?, ?, ?, ?, ?)",
        order.user_id,
        order.kind,
        order.total_amount.amount(),
        order.idempotency_key,
        order.request_hash,
        order.pay_deadline
    )
    .execute(tx)
    .await?;
    Ok(result.last_insert_id())
}

pub async fn insert_items(
    tx: &mut MySqlConnection,
    order_id: u64,
    items: &[OrderItem],
) -> Result<(), RepoError> {
    let lines: Vec<(u64, OrderItem)> = items.iter().map(|item| (order_id, *item)).collect();
    insert_lines(tx, &lines).await
}

/// Order lines of any number of orders, `(order_id, item)`, with one statement.
pub async fn insert_lines(
    tx: &mut MySqlConnection,
    lines: &[(u64, OrderItem)],
) -> Result<(), RepoError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::<MySql>::new(
        "INSERT INTO order_items (order_id, product_id, quantity, price) ",
    );
    query.push_values(lines, |mut row, (order_id, item)| {
        row.push_bind(*order_id)
            .push_bind(item.product_id)
            .push_bind(item.quantity)
            .push_bind(item.price.amount());
    });
    query.build().execute(tx).await?;
    Ok(())
}

/// A flash-sale order of a batch; its reservation's ticket identifies it until it has an id.
#[derive(Debug, Clone, Copy)]
pub struct NewFlashSaleOrder<'a> {
    pub user_id: u64,
    pub ticket: &'a str,
    pub total_amount: Money,
    pub pay_deadline: PrimitiveDateTime,
}

/// Inserts a batch of flash-sale orders with one statement and returns their ids by ticket. The
/// ids are read back by ticket rather than counted from `LAST_INSERT_ID()`: a multi-row insert's
/// ids need not be consecutive under `innodb_autoinc_lock_mode = 2` (migration 7).
pub async fn insert_flash_sale_orders(
    tx: &mut MySqlConnection,
    orders: &[NewFlashSaleOrder<'_>],
) -> Result<HashMap<String, u64>, RepoError> {
    if orders.is_empty() {
        return Ok(HashMap::new());
    }
    let mut insert = QueryBuilder::<MySql>::new(
        "INSERT INTO orders (user_id, status, kind, total_amount, ticket, pay_deadline) ",
    );
    insert.push_values(orders, |mut row, order| {
        row.push_bind(order.user_id)
            .push_bind(OrderStatus::PendingPayment)
            .push_bind(OrderKind::FlashSale)
            .push_bind(order.total_amount.amount())
            .push_bind(order.ticket)
            .push_bind(order.pay_deadline);
    });
    insert.build().execute(&mut *tx).await?;
    let mut select = QueryBuilder::<MySql>::new("SELECT ticket, id FROM orders WHERE ticket IN (");
    let mut list = select.separated(", ");
    for order in orders {
        list.push_bind(order.ticket);
    }
    select.push(")");
    let ids: Vec<(String, u64)> = select.build_query_as().fetch_all(&mut *tx).await?;
    Ok(ids.into_iter().collect())
}

pub async fn find(db: &mut MySqlConnection, id: u64) -> Result<Option<Order>, RepoError> {
    let Some(row) = sqlx::query_as!(
        OrderRow,
        r#"SELECT id, user_id, status AS "status: OrderStatus", kind AS "kind: OrderKind",
               total_amount, pay_deadline, created_at, paid_at, closed_at
           FROM orders WHERE id = ?"#,
        id
    )
    .fetch_optional(&mut *db)
    .await?
    else {
        return Ok(None);
    };
    let mut items = items_of(&mut *db, &[id]).await?;
    let items = items.remove(&id).unwrap_or_default();
    to_order(row, items).map(Some)
}

/// [`find`], locking the order row for the rest of the transaction: the one read a payment,
/// a cancel or a close decides on.
pub async fn lock(tx: &mut MySqlConnection, id: u64) -> Result<Option<Order>, RepoError> {
    let Some(row) = sqlx::query_as!(
        OrderRow,
        r#"SELECT id, user_id, status AS "status: OrderStatus", kind AS "kind: OrderKind",
               total_amount, pay_deadline, created_at, paid_at, closed_at
           FROM orders WHERE id = ? FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let mut items = items_of(&mut *tx, &[id]).await?;
    let items = items.remove(&id).unwrap_or_default();
    to_order(row, items).map(Some)
}

/// [`lock`] for many orders (in id order, so two transactions locking overlapping sets queue
/// instead of deadlocking); unknown ids are missing from the answer.
pub async fn lock_many(tx: &mut MySqlConnection, ids: &[u64]) -> Result<Vec<Order>, RepoError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut select = QueryBuilder::<MySql>::new(SELECT_ORDERS);
    select.push(" WHERE id IN (");
    let mut list = select.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    select.push(") ORDER BY id FOR UPDATE");
    let rows: Vec<OrderRow> = select.build_query_as().fetch_all(&mut *tx).await?;
    let found: Vec<u64> = rows.iter().map(|row| row.id).collect();
    let mut items = items_of(&mut *tx, &found).await?;
    rows.into_iter()
        .map(|row| {
            let items = items.remove(&row.id).unwrap_or_default();
            to_order(row, items)
        })
        .collect()
}

/// Closes the orders among `ids` that are still pending payment, with one statement; returns
/// how many it closed.
pub async fn close_pending(
    tx: &mut MySqlConnection,
    ids: &[u64],
    now: PrimitiveDateTime,
) -> Result<u64, RepoError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut update = QueryBuilder::<MySql>::new("UPDATE orders SET status = ");
    update
        .push_bind(OrderStatus::Closed)
        .push(", closed_at = ")
        .push_bind(now)
        .push(" WHERE status = ")
        .push_bind(OrderStatus::PendingPayment)
        .push(" AND id IN (");
    let mut list = update.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    update.push(")");
    Ok(update.build().execute(tx).await?.rows_affected())
}

/// Moves an order from `from` to `to` if it is still in `from`, stamping `paid_at` or
/// `closed_at`; false when another transaction moved it first.
pub async fn transition(
    tx: &mut MySqlConnection,
    id: u64,
    from: OrderStatus,
    to: OrderStatus,
    now: PrimitiveDateTime,
) -> Result<bool, RepoError> {
    let moved = match to {
        OrderStatus::Paid => sqlx::query!(
            "UPDATE orders SET status = ?, paid_at = ? WHERE id = ? AND status = ?",
            to,
            now,
            id,
            from
        ),
        _ => sqlx::query!(
            "UPDATE orders SET status = ?, closed_at = ? WHERE id = ? AND status = ?",
            to,
            now,
            id,
            from
        ),
    };
    let result = moved.execute(tx).await?;
    Ok(result.rows_affected() == 1)
}

/// Records the simulated payment; the unique key on `order_id` makes a second one fail.
pub async fn insert_payment(
    tx: &mut MySqlConnection,
    order_id: u64,
    amount: Money,
) -> Result<(), RepoError> {
    sqlx::query!(
        "INSERT INTO payments (order_id, amount, status) VALUES (?, ?, 'succeeded')",
        order_id,
        amount.amount()
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A page of a user's orders, newest first, and how many match.
pub async fn list_for_user(
    db: &sqlx::MySqlPool,
    user_id: u64,
    status: Option<OrderStatus>,
    page: Page,
) -> Result<(Vec<Order>, u64), RepoError> {
    let mut select = QueryBuilder::<MySql>::new(SELECT_ORDERS);
    push_filter(&mut select, user_id, status);
    select
        .push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(page.page_size)
        .push(" OFFSET ")
        .push_bind(page.offset());
    let rows: Vec<OrderRow> = select.build_query_as().fetch_all(db).await?;

    let mut count = QueryBuilder::<MySql>::new("SELECT COUNT(*) FROM orders");
    push_filter(&mut count, user_id, status);
    let total: i64 = count.build_query_scalar().fetch_one(db).await?;

    let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
    let mut conn = db.acquire().await?;
    let mut items = items_of(&mut conn, &ids).await?;
    let orders = rows
        .into_iter()
        .map(|row| {
            let items = items.remove(&row.id).unwrap_or_default();
            to_order(row, items)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((orders, total.max(0) as u64))
}

fn push_filter(query: &mut QueryBuilder<MySql>, user_id: u64, status: Option<OrderStatus>) {
    query.push(" WHERE user_id = ").push_bind(user_id);
    if let Some(status) = status {
        query.push(" AND status = ").push_bind(status);
    }
}

async fn items_of(
    db: &mut MySqlConnection,
    order_ids: &[u64],
) -> Result<HashMap<u64, Vec<OrderItem>>, RepoError> {
    let mut by_order: HashMap<u64, Vec<OrderItem>> = HashMap::new();
    if order_ids.is_empty() {
        return Ok(by_order);
    }
    let mut query = QueryBuilder::<MySql>::new(
        "SELECT order_id, product_id, quantity, price FROM order_items WHERE order_id IN (",
    );
    let mut list = query.separated(", ");
    for id in order_ids {
        list.push_bind(*id);
    }
    query.push(") ORDER BY order_id, product_id");
    let rows: Vec<ItemRow> = query.build_query_as().fetch_all(db).await?;
    for row in rows {
        let price = Money::new(row.price).map_err(|e| decode_error("price", e))?;
        by_order.entry(row.order_id).or_default().push(OrderItem {
            product_id: row.product_id,
            quantity: row.quantity,
            price,
        });
    }
    Ok(by_order)
}
