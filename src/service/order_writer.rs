//! The one place an order is written: the order row, its lines, and the outbox row that becomes
//! its delayed close message, all in the caller's transaction. Regular orders and flash-sale
//! orders (the worker's, and the naive `db` mode's) both go through it, each doing its own stock
//! step in the same transaction.

use sqlx::MySqlConnection;

use super::ServiceError;
use super::messages::OrderCloseMessage;
use crate::domain::order::OrderItem;
use crate::repo::amqp::ORDER_CLOSE_DELAY;
use crate::repo::mysql::orders::{self, NewOrder};
use crate::repo::mysql::outbox;

/// Why an order could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The database refused the order row itself (the caller inspects it: an idempotency-key
    /// duplicate is a replay, not a failure).
    #[error(transparent)]
    Order(sqlx::Error),
    #[error(transparent)]
    Other(#[from] ServiceError),
}

/// Writes `order` with `items` and schedules its close; returns the order id.
pub async fn write(
    tx: &mut MySqlConnection,
    order: &NewOrder<'_>,
    items: &[OrderItem],
) -> Result<u64, WriteError> {
    let order_id = orders::insert(tx, order).await.map_err(WriteError::Order)?;
    orders::insert_items(tx, order_id, items)
        .await
        .map_err(ServiceError::from)?;
    let close =
        serde_json::to_string(&OrderCloseMessage { order_id }).map_err(ServiceError::internal)?;
    outbox::insert(tx, ORDER_CLOSE_DELAY, &close)
        .await
        .map_err(ServiceError::from)?;
    Ok(order_id)
}
