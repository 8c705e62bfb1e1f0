//! After a sale: wait for the worker to drain, then check docs/design.md §1 from MySQL and Redis
//! themselves (never from the server's own ledger, which could share the server's bug).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;

use super::BenchError;
use super::client::{Target, call_api};
use spike::repo::redis::RedisConnection;
use spike::repo::redis::flash_sale::EventKeys;

/// How often the drain is polled.
const POLL: Duration = Duration::from_millis(100);

/// A `202` and whose it was.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub user_id: u64,
    pub token: Arc<str>,
    pub ticket: String,
}

/// How the queue drained.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Drain {
    /// False when reservations were still pending at the time limit.
    pub complete: bool,
    /// From the end of the load (or the start of watching) until no reservation was pending.
    pub seconds: f64,
    /// Orders of the event when the drain ended.
    pub orders: u64,
    /// Orders created per second while watching (first new order to the last): the worker's
    /// rate. A drain that finished before watching began has too few points to say much.
    pub orders_per_sec: f64,
}

/// Watches the event until nobody waits in its line and no reservation waits in Redis (every one
/// is an order or a `failed` result) or `limit` passes.
pub async fn wait_for_drain(
    db: &MySqlPool,
    redis: &mut RedisConnection,
    keys: &EventKeys,
    event_id: u64,
    limit: Duration,
) -> Result<Drain, BenchError> {
    let started = Instant::now();
    let initial = spike_orders(db, event_id).await?;
    let mut first_change: Option<(Instant, u64)> = None;
    let mut last_change = (started, initial);
    loop {
        // The line first: a buyer admitted between the two reads is then in the reservations.
        let (waiting, reserved): (u64, u64) = redis::pipe()
            .zcard(keys.line())
            .hlen(keys.reservations())
            .query_async(redis)
            .await?;
        let pending = waiting + reserved;
        let orders = spike_orders(db, event_id).await?;
        let now = Instant::now();
        if orders != last_change.1 {
            first_change.get_or_insert((now, last_change.1));
            last_change = (now, orders);
        }
        let complete = pending == 0;
        if complete || now - started >= limit {
            // The rate over the stretch in which orders appeared; a drain seen in a single poll
            // counts from the start of watching.
            let (from, base) = first_change.unwrap_or((started, initial));
            let span = (last_change.0 - from).max(POLL).as_secs_f64();
            let created = last_change.1.saturating_sub(base);
            return Ok(Drain {
                complete,
                seconds: (now - started).as_secs_f64(),
                orders,
                orders_per_sec: created as f64 / span,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn spike_orders(db: &MySqlPool, event_id: u64) -> Result<u64, BenchError> {
    let count = sqlx::query_scalar!(
        "SELECT COUNT(*) FROM spike_orders WHERE spike_event_id = ?",
        event_id
    )
    .fetch_one(db)
    .await?;
    Ok(count.max(0) as u64)
}

/// What the stores say about one event after the sale.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SaleFacts {
    /// The event's allotted stock `S`.
    pub total_stock: u64,
    /// `spike_events.available_stock`.
    pub mysql_available: u64,
    /// Orders of the event in any status but `closed`/`cancelled`.
    pub live_orders: u64,
    /// Buyers with more than one order in the event.
    pub buyers_with_two_orders: u64,
    /// Redis's remaining units; `None` when the event has no Redis keys (db mode).
    pub redis_stock: Option<i64>,
    /// Reservations still waiting in Redis.
    pub pending_reservations: u64,
    /// `202` answers seen by the tool.
    pub accepted: u64,
    /// `202` tickets with neither an order nor a `failed` result.
    pub accepted_without_outcome: u64,
    /// Orders whose ticket the tool never received in a `202`.
    pub orders_nobody_was_promised: u64,
}

/// One invariant and whether it held (`None`: not applicable to this run).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub passed: Option<bool>,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, passed: bool, detail: String) -> Check {
        Check {
            name: name.to_owned(),
            passed: Some(passed),
            detail,
        }
    }

    pub fn failed(&self) -> bool {
        self.passed == Some(false)
    }
}

/// Reads the facts of `event_id` from MySQL and Redis; `accepted` are the run's `202`s (the
/// `failed` results of tickets without an order are asked of the API, as a buyer would).
pub async fn gather(
    db: &MySqlPool,
    redis: &mut RedisConnection,
    keys: &EventKeys,
    target: &Target,
    event_id: u64,
    accepted: &[Accepted],
) -> Result<SaleFacts, BenchError> {
    let event = sqlx::query!(
        "SELECT total_stock, available_stock FROM spike_events WHERE id = ?",
        event_id
    )
    .fetch_one(db)
    .await?;
    let (total_stock, mysql_available) = (event.total_stock, event.available_stock);
    // The queries are written out here rather than taken from `repo::mysql`: a checker that
    // shares the checked code's SQL would share its bugs too.
    let live_orders = sqlx::query_scalar!(
        "SELECT COUNT(*) FROM spike_orders so JOIN orders o ON o.id = so.order_id \
         WHERE so.spike_event_id = ? AND o.status NOT IN ('closed', 'cancelled')",
        event_id
    )
    .fetch_one(db)
    .await?;
    let buyers_with_two_orders = sqlx::query_scalar!(
        "SELECT COUNT(*) FROM (SELECT user_id FROM spike_orders WHERE spike_event_id = ? \
         GROUP BY user_id HAVING COUNT(*) > 1) AS twice",
        event_id
    )
    .fetch_one(db)
    .await?;
    let tickets = sqlx::query_scalar!(
        "SELECT ticket FROM spike_orders WHERE spike_event_id = ?",
        event_id
    )
    .fetch_all(db)
    .await?;
    let redis_stock: Option<i64> = redis::cmd("GET")
        .arg(keys.stock())
        .query_async(redis)
        .await?;
    let pending_reservations: u64 = redis::cmd("HLEN")
        .arg(keys.reservations())
        .query_async(redis)
        .await?;

    let ordered: HashSet<&str> = tickets.iter().map(String::as_str).collect();
    let promised: HashSet<&str> = accepted.iter().map(|a| a.ticket.as_str()).collect();
    let mut accepted_without_outcome = 0;
    for unfulfilled in accepted
        .iter()
        .filter(|a| !ordered.contains(a.ticket.as_str()))
    {
        let path = format!("/api/v1/spike/events/{event_id}/result");
        let result = call_api(target, Method::GET, &path, &unfulfilled.token, None, 200).await?;
        if result["status"] != "failed" {
            accepted_without_outcome += 1;
        }
    }
    Ok(SaleFacts {
        total_stock: u64::from(total_stock),
        mysql_available: u64::from(mysql_available),
        live_orders: live_orders as u64,
        buyers_with_two_orders: buyers_with_two_orders as u64,
        redis_stock,
        pending_reservations,
        accepted: accepted.len() as u64,
        accepted_without_outcome,
        orders_nobody_was_promised: ordered.difference(&promised).count() as u64,
    })
}

/// Whether the queue drained in time (the `drain` scenario's only check).
pub fn drained(drain: &Drain) -> Check {
    Check::new(
        "every reservation became an order or a failed result",
        drain.complete,
        format!("{} orders after {:.1} s", drain.orders, drain.seconds),
    )
}

/// The invariants of docs/design.md §1, judged from the facts.
pub fn evaluate(facts: &SaleFacts) -> Vec<Check> {
    let s = facts.total_stock;
    let mut checks = vec![
        Check::new(
            "no oversell",
            facts.live_orders <= s,
            format!("{} live orders for {s} units", facts.live_orders),
        ),
        Check::new(
            "one order per buyer",
            facts.buyers_with_two_orders == 0,
            format!(
                "{} buyers with more than one order",
                facts.buyers_with_two_orders
            ),
        ),
        Check::new(
            "every 202 ends as an order or a failed result",
            facts.accepted_without_outcome == 0,
            format!(
                "{} of {} accepted tickets have neither",
                facts.accepted_without_outcome, facts.accepted
            ),
        ),
        Check::new(
            "every order was promised by a 202",
            facts.orders_nobody_was_promised == 0,
            format!(
                "{} orders carry a ticket no buyer received",
                facts.orders_nobody_was_promised
            ),
        ),
        Check::new(
            "stock conserved in MySQL",
            facts.mysql_available + facts.live_orders == s,
            format!(
                "available {} + live orders {} = {} (allotted {s})",
                facts.mysql_available,
                facts.live_orders,
                facts.mysql_available + facts.live_orders
            ),
        ),
    ];
    checks.push(match facts.redis_stock {
        Some(redis_stock) => {
            let sum = redis_stock + facts.pending_reservations as i64 + facts.live_orders as i64;
            Check::new(
                "stock conserved in Redis",
                redis_stock >= 0 && sum == s as i64,
                format!(
                    "redis stock {redis_stock} + pending {} + live orders {} = {sum} (allotted {s})",
                    facts.pending_reservations, facts.live_orders
                ),
            )
        }
        None => Check {
            name: "stock conserved in Redis".to_owned(),
            passed: None,
            detail: "the event has no Redis stock (db mode): not applicable".to_owned(),
        },
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean_sale() -> SaleFacts {
        SaleFacts {
            total_stock: 50,
            mysql_available: 0,
            live_orders: 50,
            buyers_with_two_orders: 0,
            redis_stock: Some(0),
            pending_reservations: 0,
            accepted: 50,
            accepted_without_outcome: 0,
            orders_nobody_was_promised: 0,
        }
    }

    fn failed(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| c.failed())
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn a_clean_sale_passes_every_check() {
        let checks = evaluate(&clean_sale());
        assert_eq!(checks.len(), 6);
        assert!(checks.iter().all(|c| c.passed == Some(true)), "{checks:?}");
    }

    #[test]
    fn an_oversell_fails_the_oversell_and_both_conservation_checks() {
        let facts = SaleFacts {
            live_orders: 51,
            orders_nobody_was_promised: 1,
            ..clean_sale()
        };
        assert_eq!(
            failed(&evaluate(&facts)),
            [
                "no oversell",
                "every order was promised by a 202",
                "stock conserved in MySQL",
                "stock conserved in Redis"
            ]
        );
    }

    #[test]
    fn a_lost_reservation_and_a_second_order_are_caught() {
        let facts = SaleFacts {
            accepted_without_outcome: 1,
            buyers_with_two_orders: 1,
            ..clean_sale()
        };
        assert_eq!(
            failed(&evaluate(&facts)),
            [
                "one order per buyer",
                "every 202 ends as an order or a failed result"
            ]
        );
    }

    #[test]
    fn pending_reservations_count_toward_redis_conservation() {
        let facts = SaleFacts {
            live_orders: 40,
            mysql_available: 10,
            pending_reservations: 10,
            ..clean_sale()
        };
        assert!(failed(&evaluate(&facts)).is_empty());
        let negative = SaleFacts {
            redis_stock: Some(-1),
            pending_reservations: 1,
            ..clean_sale()
        };
        assert_eq!(failed(&evaluate(&negative)), ["stock conserved in Redis"]);
    }

    #[test]
    fn db_mode_has_no_redis_check() {
        let facts = SaleFacts {
            redis_stock: None,
            ..clean_sale()
        };
        let checks = evaluate(&facts);
        assert_eq!(checks[5].passed, None);
        assert!(failed(&checks).is_empty());
    }
}
