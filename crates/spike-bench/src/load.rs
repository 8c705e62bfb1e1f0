//! The load loop: `connections` tasks, each with its own keep-alive connection, take request
//! numbers from one counter until the request budget or the duration runs out.
//!
//! Closed loop (default): a task sends its next request as soon as the last one answered, so
//! throughput is what the server sustains. Open loop (`--rate`): request `i` is due at
//! `start + i / rate`; its latency is measured from that intended time, not from when a free
//! connection finally sent it, so a server that falls behind shows its queueing in the
//! percentiles instead of hiding it (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::client::{Answer, Call, Connection, Target};

/// Latencies are recorded in microseconds, up to a minute, with 3 significant digits.
const HIGHEST_MICROS: u64 = 60_000_000;

/// Produces request number `i`; `None` when the scenario has nothing more to send (for
/// example, every buyer has bought).
pub trait RequestSource: Send + Sync {
    fn call(&self, i: u64) -> Option<Call>;
}

/// How much load, and how it arrives.
#[derive(Debug, Clone, Copy)]
pub struct LoadSettings {
    pub connections: usize,
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    /// Requests per second (open loop); `None` for closed loop.
    pub rate: Option<f64>,
    /// Keep the ticket of every `202` (the sale's checks need them).
    pub keep_tickets: bool,
    pub progress: bool,
}

/// What one request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// An HTTP answer: its status and, for errors, the envelope's code.
    Answered { status: u16, code: Option<i64> },
    /// No answer: connect failed, connection reset, malformed response.
    Transport,
}

impl Outcome {
    pub fn of(answer: &Answer) -> Outcome {
        let code = if answer.status >= 400 {
            serde_json::from_slice::<CodeOnly>(&answer.body)
                .ok()
                .and_then(|envelope| envelope.code)
        } else {
            None
        };
        Outcome::Answered {
            status: answer.status,
            code,
        }
    }

    /// A refusal the contract foresees (409 business answers, 429): not an error.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Outcome::Answered {
                status: 409 | 429,
                ..
            }
        )
    }

    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Answered { status, .. } if (200..300).contains(&status))
    }

    /// `202`, `409/50004`, `transport error`.
    pub fn label(self) -> String {
        match self {
            Outcome::Answered {
                status,
                code: Some(code),
            } => format!("{status}/{code}"),
            Outcome::Answered { status, code: None } => status.to_string(),
            Outcome::Transport => "transport error".to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct CodeOnly {
    code: Option<i64>,
}

#[derive(Deserialize)]
struct QueuedEnvelope {
    data: QueuedData,
}

#[derive(Deserialize)]
struct QueuedData {
    ticket: String,
}

/// Width of one slot of the timeline: fine enough to show a sub-second burst.
pub const SLOT: Duration = Duration::from_millis(100);

/// One [`SLOT`] of the run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Slot {
    pub requests: u64,
    pub successes: u64,
    pub refusals: u64,
    pub errors: u64,
    /// Slowest answer of the slot, in milliseconds.
    pub max_ms: f64,
}

/// Everything the loop measured.
pub struct LoadResult {
    pub histogram: Histogram<u64>,
    pub outcomes: BTreeMap<Outcome, u64>,
    pub timeline: Vec<Slot>,
    pub elapsed: Duration,
    /// `(request number, ticket)` of every `202`, when asked for.
    pub tickets: Vec<(u64, String)>,
}

impl LoadResult {
    /// Nothing sent (the `drain` scenario).
    pub fn empty() -> LoadResult {
        LoadResult {
            histogram: new_histogram(),
            outcomes: BTreeMap::new(),
            timeline: Vec::new(),
            elapsed: Duration::ZERO,
            tickets: Vec::new(),
        }
    }

    pub fn requests(&self) -> u64 {
        self.outcomes.values().sum()
    }
}

impl Slot {
    /// Adds `other`'s counts (and keeps the slower maximum).
    pub fn add(&mut self, other: &Slot) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.refusals += other.refusals;
        self.errors += other.errors;
        self.max_ms = self.max_ms.max(other.max_ms);
    }
}

/// What one load task (or one simulated buyer of a `crowd`) saw; merged into a [`LoadResult`].
pub struct Recorder {
    histogram: Histogram<u64>,
    outcomes: BTreeMap<Outcome, u64>,
    timeline: Vec<Slot>,
    tickets: Vec<(u64, String)>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            histogram: new_histogram(),
            outcomes: BTreeMap::new(),
            timeline: Vec::new(),
            tickets: Vec::new(),
        }
    }

    /// One answer (or transport error) `latency` after it was due, `at` from the start.
    pub fn record(&mut self, outcome: Outcome, latency: Duration, at: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, HIGHEST_MICROS);
        self.histogram.saturating_record(micros);
        *self.outcomes.entry(outcome).or_default() += 1;
        let index = (at.as_millis() / SLOT.as_millis()) as usize;
        if self.timeline.len() <= index {
            self.timeline.resize(index + 1, Slot::default());
        }
        let slot = &mut self.timeline[index];
        slot.requests += 1;
        if outcome.is_success() {
            slot.successes += 1;
        } else if outcome.is_refusal() {
            slot.refusals += 1;
        } else {
            slot.errors += 1;
        }
        slot.max_ms = slot.max_ms.max(latency.as_secs_f64() * 1e3);
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

/// Shared between the tasks and the progress ticker.
struct Shared {
    source: Arc<dyn RequestSource>,
    target: Target,
    settings: LoadSettings,
    start: Instant,
    next: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    stopped: AtomicBool,
}

/// Runs the load and returns what it measured.
pub async fn run(
    target: Target,
    source: Arc<dyn RequestSource>,
    settings: LoadSettings,
) -> LoadResult {
    let shared = Arc::new(Shared {
        source,
        target,
        settings,
        start: Instant::now(),
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
    });
    let progress = progress_bar(&settings);
    let ticker = tokio::spawn(tick(shared.clone(), progress.clone()));
    let tasks: Vec<_> = (0..settings.connections.max(1))
        .map(|_| tokio::spawn(load_task(shared.clone())))
        .collect();
    let mut result = LoadResult::empty();
    for task in tasks {
        let Ok(part) = task.await else { continue };
        merge(&mut result, part);
    }
    result.elapsed = shared.start.elapsed();
    shared.stopped.store(true, Ordering::Release);
    let _ = ticker.await;
    progress.finish_and_clear();
    result.tickets.sort_unstable();
    result
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds")
}

/// Adds what `part` recorded to `total`.
pub fn merge(total: &mut LoadResult, part: Recorder) {
    total
        .histogram
        .add(&part.histogram)
        .expect("histograms of the same bounds merge");
    for (outcome, n) in part.outcomes {
        *total.outcomes.entry(outcome).or_default() += n;
    }
    if total.timeline.len() < part.timeline.len() {
        total.timeline.resize(part.timeline.len(), Slot::default());
    }
    for (sum, slot) in total.timeline.iter_mut().zip(part.timeline) {
        sum.add(&slot);
    }
    total.tickets.extend(part.tickets);
}

async fn load_task(shared: Arc<Shared>) -> Recorder {
    let settings = shared.settings;
    let deadline = settings.duration.map(|d| shared.start + d);
    let mut connection = Connection::new(shared.target.clone());
    let mut mine = Recorder::new();
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if settings.requests.is_some_and(|limit| i >= limit) {
            break;
        }
        let due = match settings.rate {
            Some(rate) => shared.start + Duration::from_secs_f64(i as f64 / rate),
            None => Instant::now(),
        };
        if deadline.is_some_and(|deadline| due >= deadline) {
            break;
        }
        let Some(call) = shared.source.call(i) else {
            break;
        };
        if settings.rate.is_some() {
            tokio::time::sleep_until(due.into()).await;
        }
        let answer = connection.send(call).await;
        let finished = Instant::now();
        let latency = finished.saturating_duration_since(due);
        let outcome = match &answer {
            Ok(answer) => Outcome::of(answer),
            Err(_) => Outcome::Transport,
        };
        if settings.keep_tickets
            && let (Ok(answer), Outcome::Answered { status: 202, .. }) = (&answer, outcome)
            && let Ok(queued) = serde_json::from_slice::<QueuedEnvelope>(&answer.body)
        {
            mine.tickets.push((i, queued.data.ticket));
        }
        mine.record(outcome, latency, finished - shared.start);
        shared.done.fetch_add(1, Ordering::Relaxed);
        if !outcome.is_success() && !outcome.is_refusal() {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            if outcome == Outcome::Transport {
                // The server may be restarting or out of sockets: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    mine
}

fn progress_bar(settings: &LoadSettings) -> ProgressBar {
    if !settings.progress {
        return ProgressBar::hidden();
    }
    let (bar, template) = match (settings.requests, settings.duration) {
        (Some(total), _) => (
            ProgressBar::new(total),
            "{bar:30} {pos}/{len} requests {msg}",
        ),
        (None, Some(duration)) => (
            ProgressBar::new(duration.as_millis().max(1) as u64),
            "{bar:30} {percent:>3}% of the duration {msg}",
        ),
        (None, None) => (ProgressBar::no_length(), "{pos} requests {msg}"),
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
    // stderr: stdout carries the report (and `--json`); hidden when stderr is no terminal.
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(5));
    bar
}

/// Refreshes the bar with the live rate and error count until the load stops.
async fn tick(shared: Arc<Shared>, bar: ProgressBar) {
    let mut last = (Instant::now(), 0u64);
    while !shared.stopped.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Instant::now();
        let done = shared.done.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done);
        let position = match (shared.settings.requests, shared.settings.duration) {
            (Some(_), _) | (None, None) => done,
            (None, Some(_)) => shared.start.elapsed().as_millis() as u64,
        };
        bar.set_position(position);
        bar.set_message(format!(
            "{rate:>8.0} req/s  {} errors",
            shared.errors.load(Ordering::Relaxed)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_the_envelope_code_of_errors_only() {
        let refused = Answer {
            status: 409,
            body: br#"{"code":50004,"message":"sold out","data":null}"#.as_slice().into(),
            retry_after: None,
        };
        assert_eq!(Outcome::of(&refused).label(), "409/50004");
        assert!(Outcome::of(&refused).is_refusal());
        let queued = Answer {
            status: 202,
            body: br#"{"code":0,"data":{"ticket":"t"}}"#.as_slice().into(),
            retry_after: None,
        };
        assert_eq!(Outcome::of(&queued).label(), "202");
        assert!(Outcome::of(&queued).is_success());
        let crashed = Answer {
            status: 502,
            body: bytes::Bytes::from_static(b"<html>bad gateway</html>"),
            retry_after: None,
        };
        assert_eq!(Outcome::of(&crashed).label(), "502");
        assert!(!Outcome::of(&crashed).is_refusal());
    }

    #[test]
    fn slots_count_each_kind_and_keep_the_slowest() {
        let mut mine = Recorder::new();
        let ok = Outcome::Answered {
            status: 202,
            code: None,
        };
        mine.record(ok, Duration::from_millis(3), Duration::from_millis(10));
        mine.record(
            Outcome::Transport,
            Duration::from_millis(9),
            Duration::from_millis(150),
        );
        mine.record(ok, Duration::from_millis(1), Duration::from_millis(190));
        assert_eq!(mine.timeline.len(), 2);
        assert_eq!(mine.timeline[0].successes, 1);
        assert_eq!(
            (mine.timeline[1].errors, mine.timeline[1].successes),
            (1, 1)
        );
        assert!((mine.timeline[1].max_ms - 9.0).abs() < 1e-9);
        assert_eq!(mine.histogram.len(), 3);
    }
}
