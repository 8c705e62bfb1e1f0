//! The flash-sale path: limits, the worker's housekeeping rhythm, the order queue's bound and
//! retries. Keys are `flash_sale_*`; their 0.2 names `spike_*` still work in 0.3, with a warning.

use std::time::Duration;

use super::Environment;
use super::reader::Reader;
use super::values::{FlashSaleMode, RateLimit};

#[derive(Debug, Clone)]
pub struct FlashSaleSettings {
    /// Backoff before each retry of a failed order creation; after the last one the message
    /// dead-letters. Written `1s,5s,30s`.
    pub retry_delays: Vec<Duration>,
    /// Requests per buyer, counted in each API process.
    pub user_rate_limit: RateLimit,
    /// Reservations admitted per event per second across every replica (counted in Redis).
    pub event_rate_limit: RateLimit,
    /// Buyers the event's waiting line holds at most; 0: no line (an empty admission bucket
    /// answers 429).
    pub waiting_line_max: u32,
    /// Result requests one API process holds at once (`?wait=`); more are answered at once.
    pub result_waiters_max: u32,
    /// The worker warms events starting within this much time.
    pub warmup_lead: Duration,
    /// How often the worker's warm-up scheduler and reconciler run.
    pub scheduler_interval: Duration,
    /// A reservation older than this without an order is republished by the reconciler.
    pub reconcile_after: Duration,
    /// Messages `spike.order.create` holds before the broker refuses more (`reject-publish`).
    pub queue_max_length: u32,
    /// How long an event's Redis keys (stock, buyers, reservations) outlive the event.
    pub keys_retention: Duration,
    /// `queue` (the real path) or `db` (the naive baseline the load tool compares against).
    pub mode: FlashSaleMode,
    /// Reservations the worker turns into orders in one transaction, at most.
    pub batch_max: u16,
    /// How long the worker waits after a batch's first reservation for more to join it.
    pub batch_wait: Duration,
    /// Reservations of concurrent buy requests published together as one message, at most.
    pub publish_group_max: u16,
    /// Publish groups waiting for their broker confirm at once, per API process.
    pub publish_groups_in_flight: u16,
    /// Whether a buy request must carry a purchase token (`X-Purchase-Token`).
    pub require_purchase_token: bool,
    /// How long a purchase token is valid.
    pub purchase_token_ttl: Duration,
    /// Fault injection for the crash test (docs/reliability.md): the process aborts right after
    /// a reservation, before its publish. Accepted only with `SPIKE_ENV=dev`.
    pub fault_abort_after_reserve: bool,
}

/// Largest `flash_sale_batch_max`: twice it must fit a prefetch count (u16), and a batch's
/// biggest statement (7 placeholders per order) stays far below MySQL's 65,535.
pub const BATCH_MAX_LIMIT: u16 = 5_000;

impl FlashSaleSettings {
    /// Deliveries the `spike.order.create` consumer may hold: a batch in its transaction and the
    /// next one gathering, or `amqp_prefetch` if that is more.
    pub fn order_create_prefetch(&self, amqp_prefetch: u16) -> u16 {
        amqp_prefetch.max(self.batch_max.saturating_mul(2))
    }
}

impl FlashSaleSettings {
    pub(super) fn read(r: &mut Reader<'_>, env: Environment) -> Option<FlashSaleSettings> {
        r.section("Flash sale");
        let retry_delays = r.durations(
            "flash_sale_retry_delays",
            "backoff of each retry of a failed flash-sale order creation; after the last the message dead-letters and the reservation is given back",
            &[
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            10,
        );
        let user_rate_limit = r.parsed(
            "flash_sale_user_rate_limit",
            "flash-sale requests per buyer, per API process (429 / `10006` beyond)",
            RateLimit::new(5, Duration::from_secs(1)),
        );
        let event_rate_limit = r.parsed(
            "flash_sale_event_rate_limit",
            "reservations admitted per event across all replicas (Redis); beyond it a buyer waits in the event's line (202 `waiting`), or gets 429 / `10006` without one",
            RateLimit::new(20_000, Duration::from_secs(1)),
        );
        let waiting_line_max = r.parsed::<u32>(
            "flash_sale_waiting_line_max",
            "buyers an event's waiting line holds, at most (429 / `10006` beyond); 0 turns the line off: an empty admission bucket answers 429",
            100_000,
        );
        let result_waiters_max = r.parsed::<u32>(
            "flash_sale_result_waiters_max",
            "result requests with `?wait=` one API process holds at once; beyond it they are answered at once",
            10_000,
        );
        let warmup_lead = r.duration(
            "flash_sale_warmup_lead",
            "the worker warms events starting within this time",
            Duration::from_secs(5 * 60),
        );
        let scheduler_interval = r.duration(
            "flash_sale_scheduler_interval",
            "how often the worker's warm-up scheduler and reconciler run",
            Duration::from_secs(1),
        );
        let reconcile_after = r.duration(
            "flash_sale_reconcile_after",
            "a reservation this old with no order is republished by the reconciler",
            Duration::from_secs(60),
        );
        let queue_max_length = r.at_least::<u32>(
            "flash_sale_queue_max_length",
            "bound of `spike.order.create`; a full queue nacks and the buyer gets 503 / `10008` (nothing reserved)",
            100_000,
            1,
        );
        let keys_retention = r.duration(
            "flash_sale_keys_retention",
            "how long an event's Redis keys outlive the event",
            Duration::from_secs(3600),
        );
        let mode = r.choice(
            "flash_sale_mode",
            "`queue`, or `db`: the naive baseline (one MySQL transaction per buy, no Redis, no queue), for benchmarks only (docs/benchmarks.md)",
            FlashSaleMode::Queue,
        );
        let batch_max = r.between(
            "flash_sale_batch_max",
            "reservations the worker turns into orders in one MySQL transaction, at most (group commit; docs/flash-sale.md)",
            500,
            1,
            BATCH_MAX_LIMIT,
        );
        let batch_wait = r.duration(
            "flash_sale_batch_wait",
            "how long the worker waits after a batch's first reservation for more to join it",
            Duration::from_millis(5),
        );
        let publish_group_max = r.between(
            "flash_sale_publish_group_max",
            "reservations of concurrent buy requests published together as one message with one confirm, at most (docs/flash-sale.md)",
            100,
            1,
            1_000,
        );
        let publish_groups_in_flight = r.between(
            "flash_sale_publish_groups_in_flight",
            "publish groups awaiting their broker confirm at once, per API process; requests arriving meanwhile join the next group",
            4,
            1,
            256,
        );
        let require_purchase_token = r.bool(
            "flash_sale_require_purchase_token",
            "buy requests must carry `X-Purchase-Token` from `GET /spike/events/{id}/purchase-token` (403 / `10003` without); on in prod.toml",
            false,
        );
        let purchase_token_ttl = r.duration(
            "flash_sale_purchase_token_ttl",
            "how long a purchase token is valid",
            Duration::from_secs(60),
        );
        let fault_abort_after_reserve = r.bool(
            "flash_sale_fault_abort_after_reserve",
            "testing only (dev): abort the process right after a reservation, before its publish, to prove the reconciler recovers it",
            false,
        );
        if fault_abort_after_reserve == Some(true) && env != Environment::Dev {
            r.problem(
                "flash_sale_fault_abort_after_reserve",
                "is a fault injection for tests: only allowed with SPIKE_ENV=dev",
            );
        }
        Some(FlashSaleSettings {
            fault_abort_after_reserve: fault_abort_after_reserve?,
            require_purchase_token: require_purchase_token?,
            purchase_token_ttl: purchase_token_ttl?,
            retry_delays: retry_delays?,
            user_rate_limit: user_rate_limit?,
            event_rate_limit: event_rate_limit?,
            waiting_line_max: waiting_line_max?,
            result_waiters_max: result_waiters_max?,
            warmup_lead: warmup_lead?,
            scheduler_interval: scheduler_interval?,
            reconcile_after: reconcile_after?,
            queue_max_length: queue_max_length?,
            keys_retention: keys_retention?,
            mode: mode?,
            batch_max: batch_max?,
            batch_wait: batch_wait?,
            publish_group_max: publish_group_max?,
            publish_groups_in_flight: publish_groups_in_flight?,
        })
    }
}
