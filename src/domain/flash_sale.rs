//! Flash-sale events: the sale window, the status derived from it, the event entity, and what
//! became of a buyer's reservation.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;
use time::macros::datetime;

use super::money::Money;

/// How far ahead an event may be scheduled (docs/api.md: neither time more than a year ahead).
pub const SCHEDULE_AHEAD_MAX: time::Duration = time::Duration::days(365);

/// The longest sale (docs/api.md: an event lasts at most 31 days).
pub const EVENT_LENGTH_MAX: time::Duration = time::Duration::days(31);

/// The earliest time an event may name: the Unix epoch, so every time has a non-negative Unix
/// millisecond (Redis and the messages carry those) and fits MySQL's `DATETIME`.
pub const SCHEDULE_EARLIEST: OffsetDateTime = datetime!(1970-01-01 00:00 UTC);

/// When a sale is open: `[start_at, end_at)`, with `end_at` after `start_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventWindow {
    start_at: OffsetDateTime,
    end_at: OffsetDateTime,
}

/// Why a window asked for cannot be scheduled, and which field to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowError {
    pub field: &'static str,
    pub problem: String,
}

impl EventWindow {
    /// A window as stored. Anything reads, so one bad row (from an older release or a manual
    /// fix) never makes a list of events unreadable; [`EventWindow::sale_problem`] says whether
    /// it may be sold. New windows go through [`EventWindow::schedule`].
    pub fn stored(start_at: OffsetDateTime, end_at: OffsetDateTime) -> EventWindow {
        EventWindow { start_at, end_at }
    }

    /// Why a stored window must not be sold (or warmed), if it breaks the rules
    /// [`EventWindow::schedule`] enforces on new ones: empty, before the epoch, or longer than
    /// [`EVENT_LENGTH_MAX`] (a year-9999 end, say). How far ahead it lies is not checked: a
    /// window scheduled long ago was within a year of its scheduling.
    pub fn sale_problem(&self) -> Option<String> {
        if self.end_at <= self.start_at {
            return Some(format!(
                "its stored window ends ({}) before it starts ({})",
                self.end_at, self.start_at
            ));
        }
        if self.start_at < SCHEDULE_EARLIEST {
            return Some(format!(
                "its stored start ({}) is before 1970-01-01",
                self.start_at
            ));
        }
        if self.end_at - self.start_at > EVENT_LENGTH_MAX {
            return Some(format!(
                "its stored window ({} to {}) is longer than 31 days",
                self.start_at, self.end_at
            ));
        }
        None
    }

    /// A window an admin asks for at `now`: after the epoch, neither time more than
    /// [`SCHEDULE_AHEAD_MAX`] ahead, `end_at` after `start_at` and at most
    /// [`EVENT_LENGTH_MAX`] later. Times far ahead are refused here, before anything is written:
    /// one year-9999 end once overflowed the keys' expiry computation after its row committed.
    pub fn schedule(
        start_at: OffsetDateTime,
        end_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<EventWindow, WindowError> {
        let refuse = |field, problem: String| Err(WindowError { field, problem });
        let latest = now.saturating_add(SCHEDULE_AHEAD_MAX);
        for (field, at) in [("start_at", start_at), ("end_at", end_at)] {
            if at < SCHEDULE_EARLIEST {
                return refuse(field, format!("{field} must not be before 1970-01-01"));
            }
            if at > latest {
                return refuse(
                    field,
                    format!("{field} must not be more than a year ahead (365 days)"),
                );
            }
        }
        if end_at <= start_at {
            return refuse("end_at", "end_at must be after start_at".into());
        }
        if end_at - start_at > EVENT_LENGTH_MAX {
            return refuse(
                "end_at",
                "an event lasts at most 31 days (end_at - start_at)".into(),
            );
        }
        Ok(EventWindow { start_at, end_at })
    }

    pub fn start_at(&self) -> OffsetDateTime {
        self.start_at
    }

    pub fn end_at(&self) -> OffsetDateTime {
        self.end_at
    }

    /// The status at `now`. Derived, never stored, so it cannot go stale.
    pub fn status_at(&self, now: OffsetDateTime) -> EventStatus {
        if now < self.start_at {
            EventStatus::Upcoming
        } else if now < self.end_at {
            EventStatus::Active
        } else {
            EventStatus::Ended
        }
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
pub enum EventStatus {
    Upcoming,
    Active,
    Ended,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A flash-sale event as stored in MySQL.
#[derive(Debug, Clone, PartialEq)]
pub struct FlashSaleEvent {
    pub id: u64,
    pub product_id: u64,
    pub title: String,
    pub spike_price: Money,
    /// Units allotted to the event (moved out of the product's inventory at creation).
    pub total_stock: u32,
    /// Units MySQL has not yet sold.
    pub available_stock: u32,
    /// Unsold units given back to the product after the event ended (0 until then; then
    /// `available_stock` is 0).
    pub returned_stock: u32,
    pub per_user_limit: u32,
    pub window: EventWindow,
    pub created_at: OffsetDateTime,
}

/// Orders one buyer may hold in one event (the unique `(user_id, spike_event_id)` key).
pub const ORDERS_PER_BUYER: u32 = 1;

/// An event's own fields, validated: what is created, and what an update rewrites (all but the
/// product, which never changes).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub product_id: u64,
    pub title: String,
    pub spike_price: Money,
    /// Units taken from the product for the event.
    pub stock: u32,
    pub window: EventWindow,
}

/// What became of a buyer's reservation, once the worker has settled it.
///
/// Kept in Redis for polling as `success:<order id>` or `failed:<reason>`: the same text every
/// version wrote, so replicas of two versions read each other's outcomes during a rolling deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyerOutcome {
    Success { order_id: u64 },
    Failed(FailureReason),
}

/// Why a reservation did not become an order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum FailureReason {
    /// MySQL had no unit left although Redis had reserved one.
    SoldOut,
    /// The event was deleted meanwhile.
    UnknownEvent,
    /// The buyer's account was deleted after its token was issued; the unit went back.
    BuyerUnknown,
    /// Every retry failed; the reservation was given back.
    OrderCreationFailed,
    /// The event ended while the buyer was still in its waiting line.
    Ended,
}

impl fmt::Display for BuyerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuyerOutcome::Success { order_id } => write!(f, "success:{order_id}"),
            BuyerOutcome::Failed(reason) => write!(f, "failed:{reason}"),
        }
    }
}

impl FromStr for BuyerOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<BuyerOutcome, String> {
        let unreadable = || format!("unreadable buyer outcome {s:?}");
        match s.split_once(':') {
            Some(("success", id)) => Ok(BuyerOutcome::Success {
                order_id: id.parse().map_err(|_| unreadable())?,
            }),
            Some(("failed", reason)) => Ok(BuyerOutcome::Failed(
                reason.parse().map_err(|_| unreadable())?,
            )),
            _ => Err(unreadable()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn status_follows_the_window() {
        let window = EventWindow::stored(
            datetime!(2026-01-01 10:00 UTC),
            datetime!(2026-01-01 11:00 UTC),
        );
        assert_eq!(
            window.status_at(datetime!(2026-01-01 09:59:59 UTC)),
            EventStatus::Upcoming
        );
        assert_eq!(
            window.status_at(datetime!(2026-01-01 10:00 UTC)),
            EventStatus::Active
        );
        assert_eq!(
            window.status_at(datetime!(2026-01-01 11:00 UTC)),
            EventStatus::Ended
        );
    }

    #[test]
    fn the_window_must_not_be_empty() {
        let t = datetime!(2026-01-01 10:00 UTC);
        assert!(EventWindow::stored(t, t).sale_problem().is_some());
        assert!(
            EventWindow::stored(t, t - time::Duration::SECOND)
                .sale_problem()
                .is_some()
        );
        assert!(EventWindow::schedule(t, t, t).is_err());
    }

    #[test]
    fn a_stored_window_outside_the_scheduling_rules_reads_but_is_not_for_sale() {
        let now = datetime!(2026-12-06 10:00 UTC);
        let sane = EventWindow::stored(now, now + time::Duration::hours(1));
        assert_eq!(sane.sale_problem(), None);
        let forever = EventWindow::stored(now, datetime!(9999-12-31 23:59:59 UTC));
        assert_eq!(forever.status_at(now), EventStatus::Active);
        assert!(
            forever
                .sale_problem()
                .unwrap()
                .contains("longer than 31 days")
        );
        let ancient = EventWindow::stored(
            datetime!(1000-01-01 00:00 UTC),
            datetime!(1000-01-02 00:00 UTC),
        );
        assert!(ancient.sale_problem().unwrap().contains("before 1970"));
        // Exactly the longest schedulable window is fine when read back.
        let longest = EventWindow::stored(now, now + EVENT_LENGTH_MAX);
        assert_eq!(longest.sale_problem(), None);
    }

    #[test]
    fn a_scheduled_window_lies_within_a_year_and_lasts_at_most_31_days() {
        use time::Duration;
        let now = datetime!(2026-12-04 12:00 UTC);
        let blame = |start, end| EventWindow::schedule(start, end, now).map_err(|e| e.field);
        // At the bounds.
        assert!(blame(now + Duration::days(334), now + Duration::days(365)).is_ok());
        assert!(blame(now, now + Duration::days(31)).is_ok());
        assert!(
            blame(
                datetime!(1970-01-01 00:00 UTC),
                datetime!(1970-01-02 00:00 UTC)
            )
            .is_ok()
        );
        // A wholly past event is allowed (its units go back to the product once it has ended).
        assert!(blame(now - Duration::days(10), now - Duration::days(9)).is_ok());
        // Beyond them, with the field to blame.
        assert_eq!(
            blame(now, now + Duration::days(31) + Duration::SECOND),
            Err("end_at")
        );
        assert_eq!(
            blame(
                now + Duration::days(340),
                now + Duration::days(365) + Duration::SECOND
            ),
            Err("end_at")
        );
        assert_eq!(
            blame(now + Duration::days(366), now + Duration::days(367)),
            Err("start_at")
        );
        assert_eq!(
            blame(now, datetime!(9999-12-31 23:59:59 UTC)),
            Err("end_at")
        );
        assert_eq!(blame(datetime!(0001-01-01 00:00 UTC), now), Err("start_at"));
        assert_eq!(blame(now, now - Duration::SECOND), Err("end_at"));
    }

    #[test]
    fn buyer_outcomes_read_back_what_they_write() {
        for outcome in [
            BuyerOutcome::Success { order_id: 42 },
            BuyerOutcome::Failed(FailureReason::SoldOut),
            BuyerOutcome::Failed(FailureReason::OrderCreationFailed),
        ] {
            assert_eq!(outcome.to_string().parse::<BuyerOutcome>(), Ok(outcome));
        }
        assert_eq!(
            BuyerOutcome::Failed(FailureReason::UnknownEvent).to_string(),
            "failed:unknown_event"
        );
        assert!("success:x".parse::<BuyerOutcome>().is_err());
        assert!("failed:bored".parse::<BuyerOutcome>().is_err());
        assert!("queued".parse::<BuyerOutcome>().is_err());
    }
}
