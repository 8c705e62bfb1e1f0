//! The bodies and headers of the messages the services publish and the worker consumes. They sit
//! apart from both sides so that neither imports the other for a type.

use serde::{Deserialize, Serialize};

/// Message header carrying the id of the HTTP request that reserved the unit, so the worker's
/// log lines can be joined with the API's.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The message published for each flash-sale reservation (`spike.order.create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationMessage {
    pub ticket: String,
    pub event_id: u64,
    pub user_id: u64,
    pub reserved_at_ms: i64,
}

/// Body of the messages on `order.close.delay` / `order.close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCloseMessage {
    pub order_id: u64,
}
