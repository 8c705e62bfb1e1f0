//! The bodies and headers of the messages the services publish and the worker consumes. They sit
//! apart from both sides so that neither imports the other for a type.

use serde::{Deserialize, Serialize};

/// Message header carrying the id of the HTTP request that reserved the unit, in messages of 0.2
/// (0.3 carries it in each reservation of a group).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One flash-sale reservation, as the worker needs it to make the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationMessage {
    pub ticket: String,
    pub event_id: u64,
    pub user_id: u64,
    pub reserved_at_ms: i64,
    /// The HTTP request that reserved it, to join the worker's log lines with the API's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Body of a `spike.order.create` message: the reservations of concurrent buy requests that
/// were published together (one message and one broker confirm for the group).
///
/// Written `{"reservations":[..]}`; 0.2 wrote one reservation per message, as the bare object,
/// still read so that messages queued before an upgrade are honoured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ReservationsWire")]
pub struct ReservationGroup {
    pub reservations: Vec<ReservationMessage>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ReservationsWire {
    Many {
        reservations: Vec<ReservationMessage>,
    },
    One(ReservationMessage),
}

impl From<ReservationsWire> for ReservationGroup {
    fn from(wire: ReservationsWire) -> ReservationGroup {
        let reservations = match wire {
            ReservationsWire::Many { reservations } => reservations,
            ReservationsWire::One(reservation) => vec![reservation],
        };
        ReservationGroup { reservations }
    }
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
    fn reservation_groups_carry_a_list_and_the_single_reservation_of_0_2_still_reads() {
        let reservation = ReservationMessage {
            ticket: "t1".into(),
            event_id: 3,
            user_id: 5,
            reserved_at_ms: 7,
            request_id: None,
        };
        let group = ReservationGroup {
            reservations: vec![
                reservation.clone(),
                ReservationMessage {
                    request_id: Some("r2".into()),
                    ..reservation.clone()
                },
            ],
        };
        let text = serde_json::to_string(&group).unwrap();
        assert_eq!(
            text,
            r#"{"reservations":[{"ticket":"t1","event_id":3,"user_id":5,"reserved_at_ms":7},{"ticket":"t1","event_id":3,"user_id":5,"reserved_at_ms":7,"request_id":"r2"}]}"#
        );
        assert_eq!(
            serde_json::from_str::<ReservationGroup>(&text).unwrap(),
            group
        );
        let old: ReservationGroup =
            serde_json::from_str(r#"{"ticket":"t1","event_id":3,"user_id":5,"reserved_at_ms":7}"#)
                .unwrap();
        assert_eq!(old.reservations, vec![reservation]);
        assert!(serde_json::from_str::<ReservationGroup>(r#"{"ticket":"t1"}"#).is_err());
    }

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
