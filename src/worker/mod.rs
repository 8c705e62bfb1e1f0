//! The background role (`spike worker`, or inside `spike all`), built in one place:
//! [`Worker::build`] composes the outbox relay, the `order.close` and `spike.order.create`
//! consumers, the flash-sale housekeeping (warm-up scheduler, reconciler, unsold units), the
//! drain of the flash sales' waiting lines, the order consumer's activity reports and the store
//! gauges; [`Worker::start`] runs each under the
//! process's [`Supervisor`](crate::background::Supervisor). Every handler is idempotent, so any
//! number of workers may run.
//!
//! Each task's step is also a method ([`Worker::housekeep`], [`Worker::drain_outbox`],
//! [`Worker::drain_lines`], [`Worker::drain_orders`], [`Worker::drain_closes`]) that runs once to completion and returns
//! what it did, so tests drive the worker step by step
//! instead of starting it and polling.

mod handlers;
pub mod housekeeping;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::background::Supervisor;
use crate::config::Config;
use crate::repo::amqp::consumer::{self, Activity, Batching, ConsumerSpec, RetryPolicy, Route};
use crate::repo::amqp::{ORDER_CLOSE, ORDER_CLOSE_DELAY, ORDER_CREATE};
use crate::repo::redis::consumer_reports::{ConsumerReport, ConsumerReports};
use crate::repo::{Infra, RepoError};
use crate::service::ServiceError;
use crate::service::flash_sale::{
    FlashSale, HOUSEKEEPING_TASK, LINE_DRAIN_TASK, LINE_DRAIN_TICK, LineDrainReport,
};
use crate::service::outbox::OutboxRelay;
use crate::service::store_gauges::{self, Sampled};
use crate::startup::Services;
use handlers::{OrderCloser, OrderCreator};
pub use housekeeping::HousekeepingReport;

/// How often each periodic task runs.
#[derive(Debug, Clone, Copy)]
struct Intervals {
    outbox: Duration,
    housekeeping: Duration,
    gauges: Duration,
    /// The order consumer's activity report: twice per housekeeping interval, so the
    /// reconciler always reads a fresh one.
    activity_report: Duration,
}

/// The worker's parts, built once; [`Worker::start`] runs them.
pub struct Worker {
    supervisor: Supervisor,
    infra: Infra,
    relay: OutboxRelay,
    flash_sale: FlashSale,
    creator: Arc<OrderCreator>,
    closer: Arc<OrderCloser>,
    creator_spec: ConsumerSpec,
    closer_spec: ConsumerSpec,
    /// What the order consumer holds, reported for the reconciler (it proves a quiet queue
    /// before releasing units a re-warm held back).
    creator_activity: Arc<Activity>,
    reports: ConsumerReports,
    /// This worker's name in the reports.
    reporter_id: String,
    intervals: Intervals,
}

impl Worker {
    /// The worker of this process, on `services` (the same ones the HTTP API uses in `spike all`).
    pub fn build(config: &Config, infra: &Infra, services: &Services) -> Worker {
        let flash_sale = services.flash_sale.clone();
        let prefetch = config.amqp.prefetch;
        let creator_spec = ConsumerSpec {
            route: Route {
                queue: ORDER_CREATE,
                retry: RetryPolicy::RetryQueues,
                defer_to: None,
            },
            batching: Batching {
                max: usize::from(config.flash_sale.batch_max),
                wait: config.flash_sale.batch_wait,
            },
            prefetch: flash_sale.order_create_prefetch,
        };
        let closer_spec = ConsumerSpec {
            route: Route {
                queue: ORDER_CLOSE,
                retry: RetryPolicy::Requeue,
                defer_to: Some(ORDER_CLOSE_DELAY),
            },
            // Close messages are handled side by side, as many as are delivered.
            batching: Batching {
                max: usize::from(prefetch),
                wait: Duration::ZERO,
            },
            prefetch,
        };
        let housekeeping = config.flash_sale.scheduler_interval;
        Worker {
            supervisor: services.supervisor.clone(),
            infra: infra.clone(),
            relay: OutboxRelay::new(
                infra.db.clone(),
                infra.amqp.clone(),
                infra.topology.exchange(),
            ),
            creator: Arc::new(OrderCreator {
                fulfilment: flash_sale.fulfilment.clone(),
            }),
            closer: Arc::new(OrderCloser {
                orders: services.orders.clone(),
            }),
            reports: flash_sale.consumer_reports.clone(),
            flash_sale,
            creator_spec,
            closer_spec,
            creator_activity: Arc::default(),
            reporter_id: uuid::Uuid::new_v4().simple().to_string(),
            intervals: Intervals {
                outbox: config.orders.outbox_poll_interval,
                housekeeping,
                gauges: config.telemetry.metrics_sample_interval,
                activity_report: (housekeeping / 2).max(Duration::from_millis(50)),
            },
        }
    }

    /// Starts every task under the supervisor; they run until `shutdown` (the caller waits for
    /// `Services::tasks`).
    pub fn start(self, shutdown: &CancellationToken) {
        let worker = Arc::new(self);
        let supervisor = &worker.supervisor;
        let intervals = worker.intervals;

        let this = worker.clone();
        supervisor.periodic("outbox_relay", intervals.outbox, shutdown, move || {
            let this = this.clone();
            async move { this.drain_outbox().await.map(drop) }
        });
        let this = worker.clone();
        supervisor.periodic(
            HOUSEKEEPING_TASK,
            intervals.housekeeping,
            shutdown,
            move || {
                let this = this.clone();
                async move { this.housekeep().await.into_result().map(drop) }
            },
        );
        let this = worker.clone();
        supervisor.periodic(LINE_DRAIN_TASK, LINE_DRAIN_TICK, shutdown, move || {
            let this = this.clone();
            async move { this.drain_lines().await.map(drop) }
        });
        let this = worker.clone();
        supervisor.periodic("worker_gauges", intervals.gauges, shutdown, move || {
            let this = this.clone();
            async move {
                store_gauges::sample(&this.infra, Sampled::PoolQueuesAndOutbox).await;
                Ok::<(), Infallible>(())
            }
        });
        let this = worker.clone();
        supervisor.periodic(
            "order_consumer_report",
            intervals.activity_report,
            shutdown,
            move || {
                let this = this.clone();
                async move { this.report_activity().await }
            },
        );
        // A stopped consumer holds nothing: its report goes at shutdown. (A killed worker's
        // report is ignored once stale and dropped by the reconciler after a minute.)
        let this = worker.clone();
        let stopping = shutdown.clone();
        worker.supervisor.tracker().spawn(async move {
            stopping.cancelled().await;
            let _ = this
                .reports
                .forget(std::slice::from_ref(&this.reporter_id))
                .await;
        });

        let this = worker.clone();
        supervisor.long_running("order_create_consumer", shutdown, move |shutdown| {
            let this = this.clone();
            async move {
                let Worker {
                    infra,
                    creator,
                    creator_spec,
                    creator_activity,
                    ..
                } = &*this;
                consumer::run(
                    &infra.amqp,
                    &infra.topology,
                    creator_spec,
                    creator.as_ref(),
                    creator_activity,
                    shutdown,
                )
                .await
            }
        });
        let this = worker.clone();
        supervisor.long_running("order_close_consumer", shutdown, move |shutdown| {
            let this = this.clone();
            async move {
                let closer_activity = Activity::default();
                consumer::run(
                    &this.infra.amqp,
                    &this.infra.topology,
                    &this.closer_spec,
                    this.closer.as_ref(),
                    &closer_activity,
                    shutdown,
                )
                .await
            }
        });
    }

    /// One pass over the flash sales' waiting lines: admits whom the admission rate allows,
    /// fails everyone waiting in a sold-out or ended event.
    pub async fn drain_lines(&self) -> Result<LineDrainReport, ServiceError> {
        self.flash_sale.line_drainer.drain().await
    }

    /// One housekeeping pass to completion (see [`housekeeping`]).
    pub async fn housekeep(&self) -> HousekeepingReport {
        housekeeping::pass(&self.flash_sale).await
    }

    /// Turns every reservation message waiting in `spike.order.create` now into orders, a batch
    /// at a time, as the live consumer would; returns how many messages were handled.
    pub async fn drain_orders(&self) -> Result<usize, RepoError> {
        consumer::drain(
            &self.infra.amqp,
            &self.infra.topology,
            &self.creator_spec,
            self.creator.as_ref(),
        )
        .await
    }

    /// Closes the orders of every `order.close` message due now; returns how many messages
    /// were handled.
    pub async fn drain_closes(&self) -> Result<usize, RepoError> {
        consumer::drain(
            &self.infra.amqp,
            &self.infra.topology,
            &self.closer_spec,
            self.closer.as_ref(),
        )
        .await
    }

    /// Publishes every outbox row waiting now, a page at a time; returns how many went out.
    pub async fn drain_outbox(&self) -> Result<usize, ServiceError> {
        self.relay.relay_all().await
    }

    /// Writes what the order consumer holds and has settled (see
    /// `repo::redis::consumer_reports`). A failed write leaves the report stale: the reconciler
    /// releases nothing until it is fresh again.
    async fn report_activity(&self) -> Result<(), ServiceError> {
        let (held, settled) = self.creator_activity.snapshot();
        let at_ms =
            i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX);
        let report = ConsumerReport {
            held,
            settled,
            at_ms,
        };
        self.reports.write(&self.reporter_id, report).await?;
        Ok(())
    }
}
