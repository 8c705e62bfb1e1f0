//! Supervised background work (docs/design.md §9a): every periodic or consuming task of a process
//! runs under one [`Supervisor`].
//!
//! - A task that dies (its body panics, returns an error, or stops before shutdown) is started
//!   again after a backoff (1 s doubling to 30 s; back to 1 s after a run longer than that), and
//!   `spike_background_restarts_total{task}` counts it. After [`DEATHS_BEFORE_GIVING_UP`] deaths
//!   in a row (about 2.5 minutes) the supervisor gives up ([`Supervisor::given_up`]) and the
//!   role stops the process with that error, for its orchestrator to start a fresh one.
//! - A periodic task's pass that fails is logged (the first of a streak at `warn`, the rest at
//!   `debug`) and counted in `spike_background_failures_total{task}`; the next tick tries again.
//!   A pass that succeeds sets `spike_background_last_success_timestamp_seconds{task}`.
//! - Inside a pass, each unit of work (one event, one row) runs through [`UnitFailures::isolate`]:
//!   its error or panic is counted and logged with its id when it starts failing (not on every
//!   pass), and the pass goes on with the others.
//! - [`Supervisor::stalled`] names the tasks that are down or have not completed a pass for
//!   `stall_intervals` of their intervals (at least [`STALL_FLOOR`]); `/readyz` of the process
//!   answers `503` with them.
//!
//! One helper, [`Supervisor::periodic`], owns the interval, the missed-tick behaviour (delay:
//! a slow pass never causes a burst of catch-up passes), cancellation and a span per pass.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::telemetry::metrics::names;

/// The first wait before a dead task starts again; doubled per death in a row.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A task is never called stalled sooner than this without a pass: a pass over many events on a
/// busy database may take seconds, and in `spike all` a flapping `/readyz` would take the
/// process's HTTP API out of its load balancer.
pub const STALL_FLOOR: Duration = Duration::from_secs(10);
/// Deaths in a row (none after a run longer than [`BACKOFF_MAX`]) after which a task is given up
/// on: about two and a half minutes of backoff. Something the process cannot mend by itself is
/// broken (lapin gave up recovering the AMQP connection, so every new channel fails), and the
/// process stops with an error for its orchestrator to start a fresh one, as it did before
/// supervision when a consumer died.
pub const DEATHS_BEFORE_GIVING_UP: u32 = 10;

/// How the supervisor judges and tests its tasks (`SPIKE_BACKGROUND_*`).
#[derive(Debug, Clone, Default)]
pub struct SupervisorSettings {
    /// A periodic task without a successful pass for this many of its intervals is stalled.
    pub stall_intervals: u32,
    /// Fault injection (dev only): the named task's first `n` passes panic.
    pub fault_panics: Option<(String, u32)>,
}

/// What one task has done, shared between its supervisor loop and the readiness probe.
struct TaskRecord {
    name: &'static str,
    /// `None` for a long-running task (a consumer, a listener): it has no passes.
    every: Option<Duration>,
    running: AtomicBool,
    last_success: Mutex<Instant>,
    /// Failed passes in a row (the first is logged at `warn`).
    failing_streak: AtomicU32,
}

impl TaskRecord {
    fn pass_succeeded(&self) {
        *self.last_success.lock().expect("task record poisoned") = Instant::now();
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
        metrics::gauge!(names::BACKGROUND_LAST_SUCCESS, "task" => self.name).set(now);
        let streak = self.failing_streak.swap(0, Ordering::AcqRel);
        if streak > 0 {
            tracing::info!(
                task = self.name,
                failed_passes = streak,
                "background task passes again"
            );
        }
    }

    fn pass_failed(&self, error: &dyn Display) {
        metrics::counter!(names::BACKGROUND_FAILURES, "task" => self.name).increment(1);
        let streak = self.failing_streak.fetch_add(1, Ordering::AcqRel) + 1;
        if streak == 1 {
            tracing::warn!(task = self.name, %error, "background pass failed; next tick tries again");
        } else {
            tracing::debug!(task = self.name, %error, streak, "background pass failed again");
        }
    }

    /// Why this task counts as stalled now, if it does.
    fn stalled(&self, stall_intervals: u32) -> Option<String> {
        if !self.running.load(Ordering::Acquire) {
            return Some("down, restarting".into());
        }
        let every = self.every?;
        let allowed = every.saturating_mul(stall_intervals).max(STALL_FLOOR);
        let since = self
            .last_success
            .lock()
            .expect("task record poisoned")
            .elapsed();
        (since > allowed).then(|| format!("no successful pass for {}s", since.as_secs()))
    }
}

/// A task named by [`Supervisor::stalled`], and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    pub task: &'static str,
    pub reason: String,
}

/// Starts and watches a process's background tasks; cheap to clone (one per process, shared
/// by the API role, the worker and the readiness probe).
#[derive(Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    tasks: Arc<Mutex<Vec<Arc<TaskRecord>>>>,
    stall_intervals: u32,
    /// Panics still to inject: (task, count).
    fault_panics: Arc<Mutex<Option<(String, u32)>>>,
    /// Cancelled when a task has died [`DEATHS_BEFORE_GIVING_UP`] times in a row; the reason
    /// beside it.
    gave_up: CancellationToken,
    gave_up_reason: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    /// Tasks are spawned on `tracker`, so shutdown can wait for them.
    pub fn new(tracker: TaskTracker, settings: &SupervisorSettings) -> Supervisor {
        Supervisor {
            tracker,
            tasks: Arc::default(),
            stall_intervals: settings.stall_intervals.max(1),
            fault_panics: Arc::new(Mutex::new(settings.fault_panics.clone())),
            gave_up: CancellationToken::new(),
            gave_up_reason: Arc::default(),
        }
    }

    /// Resolves when a task has kept dying (see [`DEATHS_BEFORE_GIVING_UP`]) with why: the
    /// roles stop the process with that error.
    pub async fn given_up(&self) -> String {
        self.gave_up.cancelled().await;
        self.gave_up_reason
            .lock()
            .expect("give-up reason poisoned")
            .clone()
            .unwrap_or_default()
    }

    /// The tracker every task is spawned on (shutdown waits for it).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Runs `pass` every `every` until `shutdown` (the first pass at once), supervised.
    pub fn periodic<F, Fut, E>(
        &self,
        name: &'static str,
        every: Duration,
        shutdown: &CancellationToken,
        pass: F,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        metrics::gauge!(names::BACKGROUND_STALL_AFTER, "task" => name).set(
            every
                .saturating_mul(self.stall_intervals)
                .max(STALL_FLOOR)
                .as_secs_f64(),
        );
        let record = self.register(name, Some(every));
        let pass = Arc::new(pass);
        let this = self.clone();
        let stopping = shutdown.clone();
        self.supervise(record.clone(), shutdown.clone(), move || {
            let (pass, record, this, shutdown) =
                (pass.clone(), record.clone(), this.clone(), stopping.clone());
            async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        _ = ticks.tick() => {}
                    }
                    this.inject_fault(name);
                    let span = tracing::debug_span!("background.pass", task = name);
                    match pass().instrument(span).await {
                        Ok(()) => record.pass_succeeded(),
                        Err(error) => record.pass_failed(&error),
                    }
                }
            }
            .boxed()
        });
    }

    /// Runs `body` (a consumer, a listener) until `shutdown`, supervised: started again when it
    /// fails, panics or ends early. `body` gets the shutdown token and returns `Ok` once it is
    /// cancelled.
    pub fn long_running<F, Fut, E>(&self, name: &'static str, shutdown: &CancellationToken, body: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let record = self.register(name, None);
        let stopping = shutdown.clone();
        self.supervise(record, shutdown.clone(), move || {
            let run = body(stopping.clone());
            async move { run.await.map_err(|error| error.to_string()) }.boxed()
        });
    }

    /// The tasks that are down or have not completed a pass for too long.
    pub fn stalled(&self) -> Vec<Stalled> {
        self.tasks
            .lock()
            .expect("task list poisoned")
            .iter()
            .filter_map(|task| {
                task.stalled(self.stall_intervals).map(|reason| Stalled {
                    task: task.name,
                    reason,
                })
            })
            .collect()
    }

    fn register(&self, name: &'static str, every: Option<Duration>) -> Arc<TaskRecord> {
        for counter in [names::BACKGROUND_FAILURES, names::BACKGROUND_RESTARTS] {
            metrics::counter!(counter, "task" => name).increment(0);
        }
        let record = Arc::new(TaskRecord {
            name,
            every,
            running: AtomicBool::new(true),
            last_success: Mutex::new(Instant::now()),
            failing_streak: AtomicU32::new(0),
        });
        self.tasks
            .lock()
            .expect("task list poisoned")
            .push(record.clone());
        record
    }

    /// The loop that starts a task's body, and starts it again when it dies.
    fn supervise<S>(&self, record: Arc<TaskRecord>, shutdown: CancellationToken, start: S)
    where
        S: Fn() -> BoxFuture<'static, Result<(), String>> + Send + 'static,
    {
        let tracker = self.tracker.clone();
        let (gave_up, gave_up_reason) = (self.gave_up.clone(), self.gave_up_reason.clone());
        self.tracker.spawn(async move {
            let mut backoff = BACKOFF_MIN;
            let mut deaths_in_a_row = 0;
            loop {
                record.running.store(true, Ordering::Release);
                let started = Instant::now();
                let ended = tracker.spawn(start()).await;
                if shutdown.is_cancelled() {
                    return;
                }
                record.running.store(false, Ordering::Release);
                let reason = match ended {
                    Ok(Ok(())) => "ended before shutdown".to_owned(),
                    Ok(Err(error)) => error,
                    Err(error) if error.is_panic() => {
                        format!("panicked: {}", panic_message(&*error.into_panic()))
                    }
                    Err(error) => error.to_string(),
                };
                if started.elapsed() > BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                    deaths_in_a_row = 0;
                }
                deaths_in_a_row += 1;
                metrics::counter!(names::BACKGROUND_FAILURES, "task" => record.name).increment(1);
                if deaths_in_a_row >= DEATHS_BEFORE_GIVING_UP {
                    let why = format!(
                        "background task {} died {deaths_in_a_row} times in a row, last: {reason}",
                        record.name
                    );
                    tracing::error!(task = record.name, reason, "{why}; stopping the process");
                    *gave_up_reason.lock().expect("give-up reason poisoned") = Some(why);
                    gave_up.cancel();
                    return;
                }
                metrics::counter!(names::BACKGROUND_RESTARTS, "task" => record.name).increment(1);
                tracing::error!(
                    task = record.name,
                    reason,
                    restart_in = ?backoff,
                    "background task died; starting it again"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    /// The dev-only fault hook: panics while the named task has injected panics left.
    fn inject_fault(&self, task: &str) {
        let mut fault = self.fault_panics.lock().expect("fault hook poisoned");
        if let Some((name, left)) = fault.as_mut()
            && name == task
            && *left > 0
        {
            *left -= 1;
            drop(fault);
            panic!("fault injection: {task} panics on purpose (SPIKE_BACKGROUND_FAULT_PANICS)");
        }
    }
}

/// The units of work (events, rows) one step of a pass could not handle. Each is logged with
/// its id and reason when it starts failing or its reason changes, and again when it recovers,
/// not on every pass; every failure is counted in `spike_background_failures_total{task}`.
#[derive(Clone)]
pub struct UnitFailures {
    task: &'static str,
    /// What the unit is, for the log: "event".
    unit: &'static str,
    failing: Arc<Mutex<HashMap<u64, String>>>,
}

impl UnitFailures {
    pub fn new(task: &'static str, unit: &'static str) -> UnitFailures {
        UnitFailures {
            task,
            unit,
            failing: Arc::default(),
        }
    }

    /// Runs one unit's `work`, isolated: an error or a panic is reported and `None` returned,
    /// so the caller goes on with the next unit.
    pub async fn isolate<T, E, W>(&self, id: u64, work: W) -> Option<T>
    where
        W: Future<Output = Result<T, E>>,
        E: Display,
    {
        match AssertUnwindSafe(work).catch_unwind().await {
            Ok(Ok(value)) => {
                self.recovered(id);
                Some(value)
            }
            Ok(Err(error)) => {
                self.failed(id, error.to_string());
                None
            }
            Err(panic) => {
                self.failed(id, format!("panicked: {}", panic_message(&*panic)));
                None
            }
        }
    }

    /// Reports a unit that cannot be handled (it is skipped this pass).
    pub fn failed(&self, id: u64, reason: String) {
        metrics::counter!(names::BACKGROUND_FAILURES, "task" => self.task).increment(1);
        let mut failing = self.failing.lock().expect("unit failures poisoned");
        if failing.get(&id) != Some(&reason) {
            tracing::warn!(
                task = self.task,
                unit = self.unit,
                id,
                reason,
                "skipped: this unit cannot be handled; the pass goes on with the others (logged again only when the reason changes)"
            );
            failing.insert(id, reason);
        }
    }

    /// Forgets a unit that was failing (it was handled now, or is gone).
    pub fn recovered(&self, id: u64) {
        let mut failing = self.failing.lock().expect("unit failures poisoned");
        if failing.remove(&id).is_some() {
            tracing::info!(
                task = self.task,
                unit = self.unit,
                id,
                "handled again after failing"
            );
        }
    }

    /// The units failing now, with their reasons (tests and the admin).
    pub fn failing(&self) -> HashMap<u64, String> {
        self.failing.lock().expect("unit failures poisoned").clone()
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_unit_that_fails_or_panics_is_skipped_and_reported_once_until_it_recovers() {
        let failures = UnitFailures::new("test", "event");
        let mut handled = Vec::new();
        for id in 1..=3u64 {
            let done = failures
                .isolate(id, async move {
                    match id {
                        1 => Err("bad row"),
                        2 => panic!("overflow"),
                        _ => Ok(id),
                    }
                })
                .await;
            handled.extend(done);
        }
        assert_eq!(handled, vec![3]);
        let failing = failures.failing();
        assert_eq!(failing.get(&1).map(String::as_str), Some("bad row"));
        assert_eq!(
            failing.get(&2).map(String::as_str),
            Some("panicked: overflow")
        );
        failures.isolate(1, async { Ok::<_, String>(()) }).await;
        assert!(!failures.failing().contains_key(&1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_started_again_and_counts_as_stalled_while_down() {
        let tracker = TaskTracker::new();
        let settings = SupervisorSettings {
            stall_intervals: 3,
            fault_panics: Some(("flaky".into(), 2)),
        };
        let supervisor = Supervisor::new(tracker.clone(), &settings);
        let shutdown = CancellationToken::new();
        let passes = Arc::new(AtomicU32::new(0));
        let counted = passes.clone();
        supervisor.periodic("flaky", Duration::from_millis(100), &shutdown, move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::AcqRel);
                Ok::<_, String>(())
            }
        });
        // The first pass panics: the task is down until its backoff ends.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            supervisor.stalled(),
            vec![Stalled {
                task: "flaky",
                reason: "down, restarting".into()
            }]
        );
        assert_eq!(passes.load(Ordering::Acquire), 0);
        // Two panics (1 s + 2 s of backoff), then passes every 100 ms.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(passes.load(Ordering::Acquire) > 5);
        assert!(supervisor.stalled().is_empty());
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_keeps_dying_is_given_up_on_with_its_reason() {
        let tracker = TaskTracker::new();
        let supervisor = Supervisor::new(tracker.clone(), &SupervisorSettings::default());
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        supervisor.long_running("doomed", &shutdown, move |_| {
            counted.fetch_add(1, Ordering::AcqRel);
            async { Err::<(), _>("rabbitmq: disconnected") }
        });
        let reason = tokio::time::timeout(Duration::from_secs(600), supervisor.given_up())
            .await
            .expect("given up within ten minutes");
        assert_eq!(starts.load(Ordering::Acquire), DEATHS_BEFORE_GIVING_UP);
        assert!(reason.contains("doomed died 10 times in a row"), "{reason}");
        assert!(reason.contains("rabbitmq: disconnected"), "{reason}");
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_periodic_task_whose_passes_keep_failing_is_stalled_after_its_intervals() {
        let tracker = TaskTracker::new();
        let settings = SupervisorSettings {
            stall_intervals: 3,
            fault_panics: None,
        };
        let supervisor = Supervisor::new(tracker.clone(), &settings);
        let shutdown = CancellationToken::new();
        supervisor.periodic("broken", Duration::from_secs(5), &shutdown, || async {
            Err::<(), _>("database down")
        });
        tokio::time::sleep(Duration::from_secs(14)).await;
        assert!(supervisor.stalled().is_empty(), "within 3 intervals");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stalled = supervisor.stalled();
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].task, "broken");
        assert!(stalled[0].reason.starts_with("no successful pass for 1"));
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
