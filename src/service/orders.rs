//! Regular orders: placing them (stock taken in one transaction), idempotent retries, simulated
//! payment, cancellation, and closing unpaid orders when their pay deadline passes.
//!
//! Every order transaction also writes an outbox row announcing the order's close message; the
//! relay (`service::outbox`) publishes it to the delay queue, whose TTL is the pay timeout, and
//! the worker's `order.close` consumer calls [`OrderService::close_expired_many`]. A committed order
//! therefore always gets its close message, even when RabbitMQ was down at commit time.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{MySqlConnection, MySqlPool};

use super::ServiceError;
use super::catalog::CatalogService;
use super::flash_sale_units::FlashSaleUnits;
use super::order_writer::{self, WriteError};
use crate::domain::money::Money;
use crate::domain::order::{Order, OrderEvent, OrderItem, OrderKind, OrderRequest, OrderStatus};
use crate::domain::product::Page;
use crate::repo::mysql::orders::InsertOrderError;
use crate::repo::mysql::{self, flash_sale_events, inventory, orders};

/// What [`OrderService::close_expired_many`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseReport {
    /// Closed now; their stock is back.
    pub closed: usize,
    /// The longest wait before an order still ahead of its deadline is due, if any is.
    pub not_due: Option<Duration>,
    /// Ids with no order.
    pub unknown: Vec<u64>,
}

#[derive(Clone)]
pub struct OrderService {
    inner: Arc<Inner>,
}

struct Inner {
    db: MySqlPool,
    catalog: CatalogService,
    flash_sale_units: FlashSaleUnits,
    pay_timeout: Duration,
}

impl OrderService {
    pub fn new(
        db: MySqlPool,
        catalog: CatalogService,
        flash_sale_units: FlashSaleUnits,
        pay_timeout: Duration,
    ) -> OrderService {
        OrderService {
            inner: Arc::new(Inner {
                db,
                catalog,
                flash_sale_units,
                pay_timeout,
            }),
        }
    }

    /// Places an order. With an idempotency key, a retry of the same request returns the order
    /// the first one created (`true` = replayed) and changes no stock; the same key with another
    /// request is refused.
    #[tracing::instrument(level = "debug", name = "mysql.tx create_order", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn create(
        &self,
        user_id: u64,
        request: &OrderRequest,
        idempotency_key: Option<&str>,
    ) -> Result<(Order, bool), ServiceError> {
        let request_hash = idempotency_key.map(|_| sha256_hex(&request.canonical()));
        if let Some(key) = idempotency_key
            && let Some(existing) = self.replay(user_id, key, request_hash.as_deref()).await?
        {
            return Ok((existing, true));
        }

        let mut tx = self.inner.db.begin().await?;
        let ids: Vec<u64> = request.lines().iter().map(|(id, _)| *id).collect();
        let prices = orders::active_prices(&mut *tx, &ids).await?;
        let mut items = Vec::with_capacity(ids.len());
        let mut total = Money::ZERO;
        for &(product_id, quantity) in request.lines() {
            let price = *prices
                .get(&product_id)
                .ok_or(ServiceError::ProductNotFound(product_id))?;
            total = price
                .times(quantity)
                .and_then(|line| total.plus(line))
                .ok_or_else(|| ServiceError::InvalidArgument("order total too large".into()))?;
            items.push(OrderItem {
                product_id,
                quantity,
                price,
            });
        }

        // The order row goes first: it claims the idempotency key, so a concurrent duplicate
        // waits on the key (not on stock) and then finds this order.
        let new_order = orders::NewOrder {
            user_id,
            kind: OrderKind::Regular,
            total_amount: total,
            idempotency_key,
            request_hash: request_hash.as_deref(),
            pay_deadline: mysql::now_utc() + self.inner.pay_timeout,
        };
        let order_id = match order_writer::write(&mut tx, &new_order, &items).await {
            Ok(id) => id,
            Err(WriteError::Order(InsertOrderError::DuplicateKey)) => {
                drop(tx);
                let key = idempotency_key.expect("only keyed orders hit the idempotency key");
                return match self.replay(user_id, key, request_hash.as_deref()).await? {
                    Some(existing) => Ok((existing, true)),
                    None => Err(ServiceError::internal("idempotency key vanished")),
                };
            }
            // The token outlived its user (deleted within `SPIKE_USER_CHECK_TTL`).
            Err(WriteError::Order(InsertOrderError::UnknownUser)) => {
                return Err(ServiceError::Unauthenticated("user no longer exists"));
            }
            Err(WriteError::Order(InsertOrderError::Repo(error))) => return Err(error.into()),
            Err(WriteError::Other(error)) => return Err(error),
        };
        // Lines are in ascending product id order: concurrent orders lock inventory rows in the
        // same order and cannot deadlock on each other.
        for item in &items {
            if !inventory::take_stock(&mut tx, item.product_id, item.quantity).await? {
                return Err(ServiceError::InsufficientStock {
                    product_id: item.product_id,
                });
            }
        }
        let order = orders::find(&mut tx, order_id)
            .await?
            .ok_or_else(|| ServiceError::internal("order vanished inside its own transaction"))?;
        tx.commit().await?;

        self.invalidate_products(&order).await;
        tracing::info!(order_id, user_id, total = %order.total_amount, "order placed");
        Ok((order, false))
    }

    /// The order already created under `key`, if any; the key with another request is an error.
    async fn replay(
        &self,
        user_id: u64,
        key: &str,
        request_hash: Option<&str>,
    ) -> Result<Option<Order>, ServiceError> {
        let Some((order_id, stored_hash)) =
            orders::find_by_idempotency_key(&self.inner.db, user_id, key).await?
        else {
            return Ok(None);
        };
        if stored_hash.as_deref() != request_hash {
            return Err(ServiceError::IdempotencyKeyReused);
        }
        let mut conn = self.inner.db.acquire().await?;
        Ok(orders::find(&mut conn, order_id).await?)
    }

    /// One order: the owner's, or any for an admin; otherwise "not found" (never "forbidden",
    /// which would confirm that the id exists).
    pub async fn get(
        &self,
        user_id: u64,
        is_admin: bool,
        order_id: u64,
    ) -> Result<Order, ServiceError> {
        let mut conn = self.inner.db.acquire().await?;
        match orders::find(&mut conn, order_id).await? {
            Some(order) if order.user_id == user_id || is_admin => Ok(order),
            _ => Err(ServiceError::OrderNotFound),
        }
    }

    pub async fn list(
        &self,
        user_id: u64,
        status: Option<OrderStatus>,
        page: Page,
    ) -> Result<(Vec<Order>, u64), ServiceError> {
        Ok(orders::list_for_user(&self.inner.db, user_id, status, page).await?)
    }

    /// Simulated payment. Paying a paid order returns it unchanged; paying after the deadline,
    /// or a cancelled or closed order, is a conflict.
    #[tracing::instrument(level = "debug", name = "mysql.tx pay_order", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn pay(&self, user_id: u64, order_id: u64) -> Result<Order, ServiceError> {
        let mut tx = self.inner.db.begin().await?;
        let mut order = lock_own(&mut tx, user_id, order_id).await?;
        if order.status == OrderStatus::Paid {
            return Ok(order);
        }
        let paid = order
            .status
            .apply(OrderEvent::Pay)
            .map_err(state_conflict)?;
        let now = mysql::now_utc();
        if now.assume_utc() > order.pay_deadline {
            return Err(ServiceError::OrderStateConflict(
                "the payment deadline has passed".into(),
            ));
        }
        orders::insert_payment(&mut tx, order_id, order.total_amount).await?;
        orders::transition(&mut tx, order_id, order.status, paid, now).await?;
        tx.commit().await?;
        // What the row now holds, without reading it back.
        order.status = paid;
        order.paid_at = Some(now.assume_utc());
        tracing::info!(order_id, user_id, "order paid");
        Ok(order)
    }

    /// The buyer gives up an unpaid order; its stock returns.
    #[tracing::instrument(level = "debug", name = "mysql.tx cancel_order", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn cancel(&self, user_id: u64, order_id: u64) -> Result<Order, ServiceError> {
        let mut tx = self.inner.db.begin().await?;
        let order = lock_own(&mut tx, user_id, order_id).await?;
        let to = order
            .status
            .apply(OrderEvent::Cancel)
            .map_err(state_conflict)?;
        let (order, returned) = self.release(&mut tx, order, to).await?;
        tx.commit().await?;
        self.after_return(&returned).await;
        tracing::info!(order_id, user_id, "order cancelled");
        Ok(order)
    }

    /// Closes the orders among `order_ids` whose pay deadline has passed and that are still
    /// unpaid, in one transaction: one UPDATE closes them, each product and each flash-sale
    /// event gets its units back with one statement, and each event's units go back to Redis
    /// with one call. Safe to call any number of times for the same orders.
    #[tracing::instrument(level = "debug", name = "mysql.tx close_expired_orders", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn close_expired_many(&self, order_ids: &[u64]) -> Result<CloseReport, ServiceError> {
        let mut tx = self.inner.db.begin().await?;
        let locked = orders::lock_many(&mut tx, order_ids).await?;
        let now = mysql::now_utc();
        let found: HashSet<u64> = locked.iter().map(|order| order.id).collect();
        let mut report = CloseReport {
            unknown: order_ids
                .iter()
                .filter(|id| !found.contains(id))
                .copied()
                .collect(),
            ..CloseReport::default()
        };
        let mut due = Vec::new();
        for order in locked {
            if order.status.apply(OrderEvent::Close).is_err() {
                continue; // paid, cancelled or closed already
            }
            if now.assume_utc() < order.pay_deadline {
                let remaining = (order.pay_deadline - now.assume_utc()).unsigned_abs();
                report.not_due = report.not_due.max(Some(remaining));
                continue;
            }
            due.push(order);
        }
        if due.is_empty() {
            return Ok(report);
        }
        let ids: Vec<u64> = due.iter().map(|order| order.id).collect();
        let closed = orders::close_pending(&mut tx, &ids, now).await?;
        if closed != ids.len() as u64 {
            return Err(ServiceError::internal("an order changed under its lock"));
        }
        let returned = return_units(&mut tx, &due).await?;
        tx.commit().await?;
        report.closed = due.len();
        self.after_return(&returned).await;
        tracing::info!(closed = report.closed, "unpaid orders closed");
        Ok(report)
    }

    /// Moves a locked pending order to `to` (cancelled or closed) and gives its stock back.
    async fn release(
        &self,
        tx: &mut MySqlConnection,
        mut order: Order,
        to: OrderStatus,
    ) -> Result<(Order, ReturnedUnits), ServiceError> {
        let now = mysql::now_utc();
        if !orders::transition(tx, order.id, OrderStatus::PendingPayment, to, now).await? {
            return Err(ServiceError::OrderStateConflict(
                "the order changed meanwhile".into(),
            ));
        }
        order.status = to;
        order.closed_at = Some(now.assume_utc());
        let returned = return_units(tx, std::slice::from_ref(&order)).await?;
        Ok((order, returned))
    }

    async fn invalidate_products(&self, order: &Order) {
        for item in &order.items {
            self.inner.catalog.invalidate(item.product_id).await;
        }
    }

    /// After the units' return committed: refresh the products' cached stock, and give
    /// flash-sale units back to Redis so other buyers can have them.
    async fn after_return(&self, returned: &ReturnedUnits) {
        for &product_id in returned.per_product.keys() {
            self.inner.catalog.invalidate(product_id).await;
        }
        for (&event_id, &units) in &returned.per_event {
            self.inner.flash_sale_units.give_back(event_id, units).await;
        }
    }
}

/// Units given back by released orders, per flash-sale event and per product.
#[derive(Debug, Default)]
struct ReturnedUnits {
    per_event: BTreeMap<u64, u32>,
    per_product: BTreeMap<u64, u32>,
}

/// Gives the units of released `orders` back where they came from, in the caller's transaction:
/// a flash-sale order's to its event (docs/design.md §3), a regular order's to its products. One
/// statement per event and per product, in id order (the order every writer locks them in).
async fn return_units(
    tx: &mut MySqlConnection,
    orders: &[Order],
) -> Result<ReturnedUnits, ServiceError> {
    let spike: Vec<u64> = orders
        .iter()
        .filter(|order| order.kind == OrderKind::FlashSale)
        .map(|order| order.id)
        .collect();
    let events_of = flash_sale_events::events_of_orders(&mut *tx, &spike).await?;
    let mut returned = ReturnedUnits::default();
    for order in orders {
        match order.kind {
            OrderKind::FlashSale => {
                if let Some(&event_id) = events_of.get(&order.id) {
                    *returned.per_event.entry(event_id).or_default() += 1;
                }
            }
            OrderKind::Regular => {
                for item in &order.items {
                    *returned.per_product.entry(item.product_id).or_default() += item.quantity;
                }
            }
        }
    }
    for (&event_id, &units) in &returned.per_event {
        flash_sale_events::return_units(tx, event_id, units).await?;
    }
    for (&product_id, &quantity) in &returned.per_product {
        inventory::return_stock(tx, product_id, quantity).await?;
    }
    Ok(returned)
}

/// Locks the caller's order; another user's order is "not found".
async fn lock_own(
    tx: &mut MySqlConnection,
    user_id: u64,
    order_id: u64,
) -> Result<Order, ServiceError> {
    match orders::lock(tx, order_id).await? {
        Some(order) if order.user_id == user_id => Ok(order),
        _ => Err(ServiceError::OrderNotFound),
    }
}

/// "a paid order cannot be cancelled" (409/40002).
fn state_conflict(error: crate::domain::order::IllegalTransition) -> ServiceError {
    ServiceError::OrderStateConflict(error.to_string())
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
