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

/// Body of the messages on `order.close.delay` / `order.close`: the orders to close once their
/// (shared) pay deadline has passed. The worker writes one for each batch of flash-sale orders,
/// a regular order one of its own.
///
/// Written `{"order_ids":[..]}`; 0.2 wrote `{"order_id":n}`, still read so that close messages
/// queued before an upgrade are honoured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CloseWire")]
pub struct OrderCloseMessage {
    pub order_ids: Vec<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CloseWire {
    Many { order_ids: Vec<u64> },
    One { order_id: u64 },
}

impl From<CloseWire> for OrderCloseMessage {
    fn from(wire: CloseWire) -> OrderCloseMessage {
        let order_ids = match wire {
            CloseWire::Many { order_ids } => order_ids,
            CloseWire::One { order_id } => vec![order_id],
        };
        OrderCloseMessage { order_ids }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_messages_carry_a_list_and_the_single_order_form_of_0_2_still_reads() {
        let message = OrderCloseMessage {
            order_ids: vec![7, 9],
        };
        let text = serde_json::to_string(&message).unwrap();
        assert_eq!(text, r#"{"order_ids":[7,9]}"#);
        assert_eq!(
            serde_json::from_str::<OrderCloseMessage>(&text).unwrap(),
            message
        );
        let old: OrderCloseMessage = serde_json::from_str(r#"{"order_id":42}"#).unwrap();
        assert_eq!(old.order_ids, vec![42]);
        assert!(serde_json::from_str::<OrderCloseMessage>(r#"{"orders":[1]}"#).is_err());
    }
}
