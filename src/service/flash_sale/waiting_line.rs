//! The waiting line's drain (docs/flash-sale.md, "The waiting line"), the worker's half of 排队:
//! a buyer who arrives when the event's admission rate is used up holds a place in the event's
//! line (`reserve.lua`); [`LineDrainer`] admits them in turn, head first, at the admission rate,
//! each with the reservation a buyer admitted at once gets, and publishes the reservations to
//! the order queue exactly as the buy path does. Once the event sells out or ends, everyone still
//! waiting fails at once, in the same pass.
//!
//! Leaderless: every worker drains every line. One Redis script pops and reserves atomically,
//! so two drainers never admit the same buyer and never skip one; together they admit no faster
//! than the bucket allows, since both take its tokens. A drainer that dies between the script
//! and the publish leaves reservations without a message, which the reconciler republishes
//! (`SPIKE_FLASH_SALE_RECONCILE_AFTER`), as for a buy request that dies there.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::MySqlPool;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::{OrderQueue, RESULT_TTL_SECS, to_time};
use crate::background::UnitFailures;
use crate::config::{FlashSaleSettings, RateLimit};
use crate::domain::flash_sale::EventStatus;
use crate::repo::mysql::flash_sale_events;
use crate::repo::redis::flash_sale::{EventStore, LineDrain};
use crate::service::ServiceError;
use crate::service::messages::{ReservationGroup, ReservationMessage};
use crate::telemetry::metrics::names;

/// The background task that drains the lines.
pub const LINE_DRAIN_TASK: &str = "waiting_line_drainer";
/// How often the worker drains the lines: an admitted buyer waits at most this long for it.
pub const LINE_DRAIN_TICK: Duration = Duration::from_millis(50);
/// How often the list of events to drain is read again from MySQL; ended events (whose lines
/// must close) are visited on these passes only.
const EVENTS_REFRESH: Duration = Duration::from_secs(1);
/// Buyers one script call admits or fails, at most (a call blocks Redis while it runs).
const MOST_PER_CALL: u32 = 1_000;

/// What one pass over the lines did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineDrainReport {
    /// Buyers admitted (each holds a reservation now).
    pub admitted: u64,
    /// Of those, the ones whose reservation could not be published (the reconciler will).
    pub unpublished: u64,
    /// Buyers failed because their event sold out or ended.
    pub failed: u64,
    /// Buyers still waiting in the lines drained.
    pub still_waiting: u64,
}

/// The events whose lines are drained, as last read from MySQL.
#[derive(Default)]
struct DrainedEvents {
    active: Vec<u64>,
    /// Ended within the keys' retention: their lines may still hold buyers to fail.
    ended: Vec<u64>,
    read_at: Option<Instant>,
}

pub struct LineDrainer {
    db: MySqlPool,
    store: EventStore,
    queue: OrderQueue,
    admission: RateLimit,
    publish_group_max: usize,
    keys_retention: Duration,
    /// Fault injection (dev only): die between an admission and its publish.
    abort_after_reserve: bool,
    events: Mutex<DrainedEvents>,
    failures: UnitFailures,
}

impl LineDrainer {
    pub(super) fn new(
        settings: &FlashSaleSettings,
        db: MySqlPool,
        store: EventStore,
        queue: OrderQueue,
    ) -> LineDrainer {
        LineDrainer {
            db,
            store,
            queue,
            admission: settings.event_rate_limit,
            publish_group_max: usize::from(settings.publish_group_max),
            keys_retention: settings.keys_retention,
            abort_after_reserve: settings.fault_abort_after_reserve,
            events: Mutex::default(),
            failures: UnitFailures::new(LINE_DRAIN_TASK, "event"),
        }
    }

    /// One pass: every active event's line (and, once a second, every recently ended one's).
    /// An event whose drain fails is reported and skipped; the others are drained.
    pub async fn drain(&self) -> Result<LineDrainReport, ServiceError> {
        let events = self.events_to_drain().await?;
        let mut report = LineDrainReport::default();
        for id in events {
            if let Some(drained) = self.failures.isolate(id, self.drain_event(id)).await {
                report.admitted += drained.admitted;
                report.unpublished += drained.unpublished;
                report.failed += drained.failed;
                report.still_waiting += drained.still_waiting;
            }
        }
        metrics::gauge!(names::WAITING_LINE_LENGTH).set(report.still_waiting as f64);
        Ok(report)
    }

    /// The active events, plus the recently ended ones when the list is read afresh.
    async fn events_to_drain(&self) -> Result<Vec<u64>, ServiceError> {
        {
            let events = self.events.lock().expect("drained events poisoned");
            if events
                .read_at
                .is_some_and(|read_at| read_at.elapsed() < EVENTS_REFRESH)
            {
                return Ok(events.active.clone());
            }
        }
        let now = OffsetDateTime::now_utc();
        let since = now.saturating_sub(to_time(self.keys_retention));
        let mut fresh = DrainedEvents {
            read_at: Some(Instant::now()),
            ..DrainedEvents::default()
        };
        // An unreadable row is the warm-up's to report; its line cannot have been joined.
        for (id, event) in flash_sale_events::overlapping(&self.db, since, now).await? {
            match event.map(|event| event.window.status_at(now)) {
                Ok(EventStatus::Active) => fresh.active.push(id),
                Ok(EventStatus::Ended) => fresh.ended.push(id),
                Ok(EventStatus::Upcoming) | Err(_) => {}
            }
        }
        let due = fresh.active.iter().chain(&fresh.ended).copied().collect();
        *self.events.lock().expect("drained events poisoned") = fresh;
        Ok(due)
    }

    /// Drains one event's line as far as the bucket allows, or closes it to the end.
    async fn drain_event(&self, event_id: u64) -> Result<LineDrainReport, ServiceError> {
        let mut report = LineDrainReport::default();
        loop {
            let drained = self
                .store
                .admit_waiting(event_id, self.admission, MOST_PER_CALL, RESULT_TTL_SECS)
                .await?;
            let LineDrain::Done {
                admitted,
                at_ms,
                still_waiting,
                closed,
            } = drained
            else {
                // The line went with the keys; warm-up restores the event, not its line.
                return Ok(report);
            };
            report.still_waiting = still_waiting;
            let full_call = admitted.len() == MOST_PER_CALL as usize;
            if !admitted.is_empty() {
                report.admitted += admitted.len() as u64;
                metrics::counter!(names::LINE_ADMISSIONS).increment(admitted.len() as u64);
                report.unpublished += self.publish(event_id, admitted, at_ms).await;
            }
            if let Some((reason, failed)) = closed {
                report.failed += failed;
                metrics::counter!(names::LINE_CLOSED, "reason" => <&str>::from(reason))
                    .increment(failed);
                tracing::info!(event_id, %reason, failed, "waiting buyers failed: the line is closed");
            }
            let more = still_waiting > 0 && (closed.is_some() || full_call);
            if !more {
                return Ok(report);
            }
        }
    }

    /// Publishes the admitted buyers' reservations, grouped as the buy path groups them; returns
    /// how many could not be published (they stay reserved: the reconciler republishes them).
    async fn publish(&self, event_id: u64, admitted: Vec<(u64, String)>, at_ms: i64) -> u64 {
        if self.abort_after_reserve {
            tracing::error!(
                event_id,
                "fault injection: aborting after admitting waiting buyers"
            );
            std::process::abort();
        }
        let reservations: Vec<ReservationMessage> = admitted
            .into_iter()
            .map(|(user_id, ticket)| ReservationMessage {
                ticket,
                event_id,
                user_id,
                reserved_at_ms: at_ms,
                request_id: None,
            })
            .collect();
        let mut unpublished = 0;
        for group in reservations.chunks(self.publish_group_max) {
            let group = ReservationGroup {
                reservations: group.to_vec(),
            };
            if let Err(error) = self.queue.publish(&group).await {
                tracing::warn!(
                    event_id,
                    reservations = group.reservations.len(),
                    %error,
                    "admitted buyers not queued; the reconciler will republish them"
                );
                unpublished += group.reservations.len() as u64;
            }
        }
        unpublished
    }
}
