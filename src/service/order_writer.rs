//! The one place a regular order is written: the order row, its lines, and the outbox row that
//! becomes its delayed close message, all in the caller's transaction. Flash-sale orders come in
//! batches (`flash_sale::fulfilment` writes them with multi-row statements) and schedule their
//! close through [`schedule_close`] too, one message per batch.

use sqlx::MySqlConnection;

use super::ServiceError;
use super::messages::OrderCloseMessage;
use crate::domain::order::OrderItem;
use crate::repo::amqp::ORDER_CLOSE_DELAY;
use crate::repo::mysql::orders::{self, InsertOrderError, NewOrder};
use crate::repo::mysql::outbox;

/// Why an order could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The order row itself was refused (an idempotency-key duplicate is a replay, not a
    /// failure).
    #[error(transparent)]
    Order(InsertOrderError),
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
    schedule_close(tx, &[order_id]).await?;
    Ok(order_id)
}

/// Writes the outbox row that becomes the close message of `order_ids` (orders sharing one pay
/// deadline: a regular order, or a batch of flash-sale orders).
pub async fn schedule_close(
    tx: &mut MySqlConnection,
    order_ids: &[u64],
) -> Result<(), ServiceError> {
    let close = serde_json::to_string(&OrderCloseMessage {
        order_ids: order_ids.to_vec(),
    })
    .map_err(ServiceError::internal)?;
    outbox::insert(tx, ORDER_CLOSE_DELAY, &close).await?;
    Ok(())
}
