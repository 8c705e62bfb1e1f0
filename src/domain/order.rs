//! Orders: the status machine, order lines and the rules for a valid order request.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::money::Money;

/// Largest quantity of one product in one order.
pub const MAX_QUANTITY: u32 = 100;
/// Most lines in one order, counted as sent (before lines naming one product are merged).
pub const MAX_ITEMS: usize = 50;

/// ```text
/// pending_payment ──pay──▶ paid
///        │ ├──cancel──▶ cancelled   (by the buyer; stock returns)
///        │ └──close───▶ closed      (pay timeout; stock returns)
/// ```
/// Every other transition is illegal (409/40002); a paid order never closes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Cancelled,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    Pay,
    Cancel,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct IllegalTransition {
    pub from: OrderStatus,
    pub event: OrderEvent,
}

impl IllegalTransition {
    /// What a person reads: "a paid order cannot be cancelled".
    fn describe(&self) -> String {
        let status = match self.from {
            OrderStatus::PendingPayment => "an unpaid",
            OrderStatus::Paid => "a paid",
            OrderStatus::Cancelled => "a cancelled",
            OrderStatus::Closed => "a closed",
        };
        let action = match self.event {
            OrderEvent::Pay => "paid",
            OrderEvent::Cancel => "cancelled",
            OrderEvent::Close => "closed",
        };
        format!("{status} order cannot be {action}")
    }
}

impl OrderStatus {
    pub fn apply(self, event: OrderEvent) -> Result<OrderStatus, IllegalTransition> {
        match (self, event) {
            (OrderStatus::PendingPayment, OrderEvent::Pay) => Ok(OrderStatus::Paid),
            (OrderStatus::PendingPayment, OrderEvent::Cancel) => Ok(OrderStatus::Cancelled),
            (OrderStatus::PendingPayment, OrderEvent::Close) => Ok(OrderStatus::Closed),
            (from, event) => Err(IllegalTransition { from, event }),
        }
    }

    /// Whether the order still holds stock (invariant 1 of docs/design.md counts these).
    pub fn holds_stock(self) -> bool {
        matches!(self, OrderStatus::PendingPayment | OrderStatus::Paid)
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
pub enum OrderKind {
    Regular,
    /// Stored and sent as `spike`: the contract's and the schema's name.
    #[strum(serialize = "spike")]
    FlashSale,
}

impl OrderKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderItem {
    pub product_id: u64,
    pub quantity: u32,
    /// Unit price captured when the order was placed.
    pub price: Money,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: u64,
    pub user_id: u64,
    pub status: OrderStatus,
    pub kind: OrderKind,
    pub total_amount: Money,
    pub items: Vec<OrderItem>,
    pub pay_deadline: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub paid_at: Option<OffsetDateTime>,
    pub closed_at: Option<OffsetDateTime>,
}

/// What a buyer asked for: distinct products in ascending id order (the order in which their
/// stock rows are locked, so two orders never wait on each other crosswise), each with a
/// quantity of 1 to [`MAX_QUANTITY`]. Lines naming the same product are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    lines: Vec<(u64, u32)>,
}

impl OrderRequest {
    /// Validates `(product_id, quantity)` lines; errors are keyed like `items[2].quantity`.
    pub fn new(lines: &[(u64, i64)]) -> Result<OrderRequest, BTreeMap<String, String>> {
        let mut errors = BTreeMap::new();
        if lines.is_empty() {
            errors.insert("items".into(), "at least one item is required".into());
        }
        let mut merged: BTreeMap<u64, i64> = BTreeMap::new();
        for (index, (product_id, quantity)) in lines.iter().enumerate() {
            if *product_id == 0 {
                errors.insert(
                    format!("items[{index}].product_id"),
                    "must be a product id".into(),
                );
            }
            if !(1..=i64::from(MAX_QUANTITY)).contains(quantity) {
                errors.insert(
                    format!("items[{index}].quantity"),
                    format!("must be an integer from 1 to {MAX_QUANTITY}"),
                );
            }
            *merged.entry(*product_id).or_default() += quantity;
        }
        // Lines as sent, as the document's `maxItems` counts them (100 identical lines once
        // passed a limit of 50).
        if lines.len() > MAX_ITEMS {
            errors.insert("items".into(), format!("at most {MAX_ITEMS} lines"));
        }
        for (product_id, total) in &merged {
            if *total > i64::from(MAX_QUANTITY) && errors.is_empty() {
                errors.insert(
                    "items".into(),
                    format!("product {product_id}: merged quantity {total} exceeds {MAX_QUANTITY}"),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(OrderRequest {
            lines: merged
                .into_iter()
                .map(|(id, quantity)| (id, quantity as u32))
                .collect(),
        })
    }

    /// `(product_id, quantity)` in ascending product id order.
    pub fn lines(&self) -> &[(u64, u32)] {
        &self.lines
    }

    /// A canonical text of the request (merged, sorted), so the same order written with lines
    /// in another sequence counts as the same request for idempotency.
    pub fn canonical(&self) -> String {
        self.lines
            .iter()
            .map(|(id, quantity)| format!("{id}x{quantity}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_orders_move() {
        use OrderEvent::*;
        use OrderStatus::*;
        assert_eq!(PendingPayment.apply(Pay), Ok(Paid));
        assert_eq!(PendingPayment.apply(Cancel), Ok(Cancelled));
        assert_eq!(PendingPayment.apply(Close), Ok(Closed));
        for from in [Paid, Cancelled, Closed] {
            for event in [Pay, Cancel, Close] {
                assert_eq!(from.apply(event), Err(IllegalTransition { from, event }));
                let said = IllegalTransition { from, event }.to_string();
                assert!(
                    said.ends_with(" order cannot be paid")
                        || said.ends_with(" cancelled")
                        || said.ends_with(" closed"),
                    "{said}"
                );
            }
        }
        assert_eq!(
            IllegalTransition {
                from: Paid,
                event: OrderEvent::Cancel
            }
            .to_string(),
            "a paid order cannot be cancelled"
        );
        assert!(Paid.holds_stock() && PendingPayment.holds_stock());
        assert!(!Closed.holds_stock() && !Cancelled.holds_stock());
    }

    #[test]
    fn statuses_round_trip() {
        for status in [
            OrderStatus::PendingPayment,
            OrderStatus::Paid,
            OrderStatus::Cancelled,
            OrderStatus::Closed,
        ] {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        assert!("shipped".parse::<OrderStatus>().is_err());
    }

    #[test]
    fn lines_are_merged_and_sorted() {
        let request = OrderRequest::new(&[(9, 1), (3, 2), (9, 4)]).unwrap();
        assert_eq!(request.lines(), &[(3, 2), (9, 5)]);
        let same = OrderRequest::new(&[(3, 2), (9, 5)]).unwrap();
        assert_eq!(request.canonical(), same.canonical());
    }

    #[test]
    fn bad_lines_are_named() {
        let errors = OrderRequest::new(&[(1, 0), (0, 1), (2, 101)]).unwrap_err();
        assert!(errors.contains_key("items[0].quantity"));
        assert!(errors.contains_key("items[1].product_id"));
        assert!(errors.contains_key("items[2].quantity"));
        assert!(OrderRequest::new(&[]).unwrap_err().contains_key("items"));
        let merged_too_big = OrderRequest::new(&[(1, 60), (1, 60)]).unwrap_err();
        assert!(merged_too_big["items"].contains("exceeds"));
    }

    #[test]
    fn the_line_limit_counts_lines_as_sent() {
        assert!(OrderRequest::new(&[(1, 1); MAX_ITEMS]).is_ok());
        let same_product = OrderRequest::new(&[(1, 1); MAX_ITEMS + 1]).unwrap_err();
        assert!(same_product["items"].contains("at most 50 lines"));
    }
}
