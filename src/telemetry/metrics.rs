//! Prometheus metrics: the process-wide recorder behind the `metrics` facade, the names and HELP
//! text of every family the shop exports, and the rendering `GET /metrics` serves.
//!
//! Code records through the facade (`metrics::counter!(names::BUYS, …)`) wherever the event
//! happens; this module only decides how it is exported. Every label takes values from a closed
//! set (an outcome, a queue of the topology, a route *template*), except the reconciler's
//! `event_id`, which is bounded by the live events and ages out with them (`GAUGE_IDLE`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// The metric names, one constant per family, so the code, the tests and the dashboards agree.
pub mod names {
    pub const HTTP_REQUESTS: &str = "spike_http_requests_total";
    pub const HTTP_DURATION: &str = "spike_http_request_duration_seconds";
    pub const BUYS: &str = "spike_buy_total";
    /// The `outcome` label values of [`BUYS`]: queued, a replay of a queued request, one per
    /// refusal (`service::flash_sale::Refusal::label`), and `error` for a failure of ours.
    pub const BUY_OUTCOMES: &[&str] = &[
        "queued",
        "replayed",
        "waiting",
        "sold_out",
        "duplicate",
        "rate_limited",
        "not_started",
        "ended",
        "unknown_event",
        "no_purchase_token",
        "human_check_failed",
        "in_progress",
        "unavailable",
        "error",
    ];
    /// Buyers waiting in the lines of the events one worker drains (the sum over its events).
    pub const WAITING_LINE_LENGTH: &str = "spike_waiting_line_length";
    /// Buyers admitted from a waiting line.
    pub const LINE_ADMISSIONS: &str = "spike_waiting_line_admitted_total";
    /// Buyers a closed line failed, by `reason` (sold_out, ended).
    pub const LINE_CLOSED: &str = "spike_waiting_line_failed_total";
    /// Result requests held by one API process (`?wait=`).
    pub const RESULT_WAITERS: &str = "spike_result_waiters";
    pub const CACHE_REQUESTS: &str = "spike_cache_requests_total";
    pub const CACHE_LOADS: &str = "spike_cache_loads_total";
    pub const PUBLISHES: &str = "spike_amqp_publishes_total";
    pub const CONSUMED: &str = "spike_consumer_messages_total";
    pub const QUEUE_DEPTH: &str = "spike_queue_depth";
    pub const OUTBOX_BACKLOG: &str = "spike_outbox_backlog";
    pub const OUTBOX_OLDEST_AGE: &str = "spike_outbox_oldest_age_seconds";
    pub const DRIFT: &str = "spike_reconciler_drift";
    pub const REPUBLISHED: &str = "spike_reconciler_republished_total";
    pub const RELEASED_UNITS: &str = "spike_reconciler_released_units_total";
    pub const TRIMMED_UNITS: &str = "spike_reconciler_trimmed_units_total";
    pub const UNSOLD_RETURNED_UNITS: &str = "spike_reconciler_unsold_returned_units_total";
    pub const DEAD_LETTERED_ORDERS: &str = "spike_order_create_dead_lettered_total";
    pub const DB_POOL_CONNECTIONS: &str = "spike_db_pool_connections";
    pub const DB_POOL_MAX: &str = "spike_db_pool_max_connections";
    pub const BUILD_INFO: &str = "spike_build_info";
    pub const BACKGROUND_FAILURES: &str = "spike_background_failures_total";
    pub const BACKGROUND_RESTARTS: &str = "spike_background_restarts_total";
    pub const BACKGROUND_LAST_SUCCESS: &str = "spike_background_last_success_timestamp_seconds";
    pub const BACKGROUND_STALL_AFTER: &str = "spike_background_stall_after_seconds";
}

/// Latency buckets for a service whose answers take 1–100 ms, with room either side to see a
/// regression (sub-millisecond cache hits, multi-second timeouts).
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A gauge not set for this long is dropped: the drift of an event that ended, a queue that is no
/// longer polled. The pollers set theirs every few seconds.
const GAUGE_IDLE: Duration = Duration::from_secs(600);

/// How often histogram samples are folded into their buckets when nobody scrapes, so memory stays
/// bounded.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder (once; later calls return
/// the same handle) and describes every family. When another recorder is installed already,
/// the handle renders an empty registry and the facade keeps feeding the other one.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(names::HTTP_DURATION.into()), HTTP_BUCKETS)
            .expect("the bucket list is not empty")
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE));
        let handle = match builder.install_recorder() {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed; /metrics stays empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        describe();
        start_counters_at_zero();
        record_build_info();
        handle
    })
}

/// The metrics in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    install().render()
}

/// Folds histogram samples and drops idle series; run every [`UPKEEP_EVERY`].
pub fn upkeep() {
    install().run_upkeep();
}

/// The counters that dashboards and alerts take the `rate`/`increase` of, by label value,
/// exported as 0 from start-up. A series that first appears with the value 1 shows no increase,
/// so without this the first dead letter of a process would never raise its alert.
/// (`spike_consumer_messages_total` is started by each consumer, which knows its queue.)
const COUNTERS_FROM_ZERO: &[(&str, &str, &[&str])] = &[
    (names::BUYS, "outcome", names::BUY_OUTCOMES),
    (
        names::PUBLISHES,
        "result",
        &["confirmed", "nacked", "unroutable", "timed_out", "failed"],
    ),
];

fn start_counters_at_zero() {
    for (name, label, values) in COUNTERS_FROM_ZERO {
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
    for result in ["hit", "miss"] {
        metrics::counter!(names::CACHE_REQUESTS, "cache" => "product", "result" => result)
            .increment(0);
    }
    metrics::counter!(names::CACHE_LOADS, "cache" => "product").increment(0);
    for reason in ["sold_out", "ended"] {
        metrics::counter!(names::LINE_CLOSED, "reason" => reason).increment(0);
    }
    for name in [
        names::LINE_ADMISSIONS,
        names::REPUBLISHED,
        names::RELEASED_UNITS,
        names::TRIMMED_UNITS,
        names::UNSOLD_RETURNED_UNITS,
        names::DEAD_LETTERED_ORDERS,
    ] {
        metrics::counter!(name).increment(0);
    }
    // Gauges a process may not touch for a while: shown as 0, not as missing.
    for name in [names::WAITING_LINE_LENGTH, names::RESULT_WAITERS] {
        metrics::gauge!(name).set(0.0);
    }
}

/// The version and the commit this binary was built from, as a gauge fixed at 1 whose labels
/// carry the values (the Prometheus convention for build info).
fn record_build_info() {
    metrics::gauge!(
        names::BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "git_sha" => env!("BUILD_GIT_SHA"),
    )
    .set(1.0);
}

/// The HELP text of every family: what a dashboard reader needs to know about it.
fn describe() {
    use names::*;
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from receiving an HTTP request to its answer, by method and route template"
    );
    describe_counter!(
        BUYS,
        "Flash-sale buy attempts by outcome: queued, replayed, waiting, sold_out, duplicate, rate_limited, not_started, ended, unknown_event, no_purchase_token, human_check_failed, in_progress, unavailable, error"
    );
    describe_gauge!(
        WAITING_LINE_LENGTH,
        "Buyers waiting in the flash-sale lines this worker drains (set on every drain tick)"
    );
    describe_counter!(
        LINE_ADMISSIONS,
        "Buyers admitted from a flash-sale waiting line (each got a reservation)"
    );
    describe_counter!(
        LINE_CLOSED,
        "Buyers still waiting when their event sold out or ended, failed at once, by reason"
    );
    describe_gauge!(
        RESULT_WAITERS,
        "Result requests this API process holds until the buyer's standing changes (?wait=)"
    );
    describe_counter!(
        CACHE_REQUESTS,
        "Product cache lookups by result (hit, miss)"
    );
    describe_counter!(
        CACHE_LOADS,
        "Product cache misses that loaded the product from MySQL (one per single flight)"
    );
    describe_counter!(
        PUBLISHES,
        "Messages published to RabbitMQ by result: confirmed, nacked, unroutable, timed_out, failed"
    );
    describe_counter!(
        CONSUMED,
        "Messages settled by a consumer, by queue and outcome: processed, retried, requeued, deferred, dead_lettered, rejected"
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Messages ready in a queue (passive declare by the worker's poller)"
    );
    describe_gauge!(
        OUTBOX_BACKLOG,
        "Outbox messages not yet published to RabbitMQ"
    );
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest unpublished outbox message (0 when the outbox is empty)"
    );
    describe_gauge!(
        DRIFT,
        "Per live flash-sale event: MySQL units unaccounted for by Redis stock plus pending reservations (0 is healthy)"
    );
    describe_counter!(
        REPUBLISHED,
        "Reservations the reconciler found without an order and published again"
    );
    describe_counter!(
        UNSOLD_RETURNED_UNITS,
        "Unsold units of ended events the reconciler gave back to their products' inventory"
    );
    describe_counter!(
        RELEASED_UNITS,
        "Units a re-warm held back that the reconciler gave back to Redis once the queue was quiet"
    );
    describe_counter!(
        TRIMMED_UNITS,
        "Units Redis counted that MySQL did not have (writes a Redis failover lost), taken away by the reconciler"
    );
    describe_counter!(
        BACKGROUND_FAILURES,
        "Background failures by task: failed passes, units of work (events, rows) a pass skipped, and deaths"
    );
    describe_counter!(
        BACKGROUND_RESTARTS,
        "Background tasks started again by the supervisor after they died (panic, error, early end)"
    );
    describe_gauge!(
        BACKGROUND_LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of a periodic background task's last successful pass"
    );
    describe_gauge!(
        BACKGROUND_STALL_AFTER,
        Unit::Seconds,
        "How long a periodic background task may go without a successful pass before /readyz names it"
    );
    describe_counter!(
        DEAD_LETTERED_ORDERS,
        "Flash-sale reservations that exhausted their retries and were compensated"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "MySQL pool connections by pool (primary, replica) and state (open, idle)"
    );
    describe_gauge!(
        DB_POOL_MAX,
        "MySQL pool size limit, by pool (primary, replica)"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the version and git commit of the running binary"
    );
}
