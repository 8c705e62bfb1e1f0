//! What a run found, three ways: a text summary for the terminal, JSON for scripts
//! (`--json`), and one self-contained HTML page with inline SVG charts (`--report`, [`html`]).

mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::checks::{Check, Drain, SaleFacts};
use super::crowd::CrowdSummary;
use super::load::{LoadResult, Outcome, SLOT, Slot};
use super::soak::SoakSummary;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        let ms = |micros: u64| micros as f64 / 1e3;
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1e3,
        }
    }
}

/// One bar of the latency histogram: answers slower than the previous bound, up to `upto_ms`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    pub upto_ms: f64,
    pub count: u64,
}

/// The outcome mix, grouped as the issue asks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mix {
    pub success: u64,
    /// `409` answers by envelope code (`"50004"` → count).
    pub conflict_by_code: BTreeMap<String, u64>,
    pub too_many_requests: u64,
    pub unavailable: u64,
    pub other_4xx: u64,
    pub server_errors: u64,
    pub transport_errors: u64,
    /// Every outcome with its label (`202`, `409/50004`, `503/10008`, `transport error`).
    pub by_label: BTreeMap<String, u64>,
}

impl Mix {
    fn of(outcomes: &BTreeMap<Outcome, u64>) -> Mix {
        let mut mix = Mix::default();
        for (&outcome, &n) in outcomes {
            *mix.by_label.entry(outcome.label()).or_default() += n;
            match outcome {
                Outcome::Transport => mix.transport_errors += n,
                Outcome::Answered { status, .. } if (200..300).contains(&status) => {
                    mix.success += n
                }
                Outcome::Answered { status: 409, code } => {
                    let code = code.map_or("none".to_owned(), |c| c.to_string());
                    *mix.conflict_by_code.entry(code).or_default() += n;
                }
                Outcome::Answered { status: 429, .. } => mix.too_many_requests += n,
                Outcome::Answered { status: 503, .. } => mix.unavailable += n,
                Outcome::Answered { status, .. } if status >= 500 => mix.server_errors += n,
                Outcome::Answered { .. } => mix.other_4xx += n,
            }
        }
        mix
    }
}

/// The sale's own figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SaleSummary {
    pub event_id: u64,
    pub stock: u64,
    pub buyers: u64,
    pub attempts: u32,
    /// Orders ÷ (burst + drain): how fast the whole pipeline turned buyers into orders.
    pub pipeline_orders_per_sec: f64,
    pub facts: SaleFacts,
}

/// Everything one run measured and checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub url: String,
    pub connections: usize,
    /// Open-loop arrival rate, if any.
    pub rate: Option<f64>,
    pub requests: u64,
    pub seconds: f64,
    pub throughput: f64,
    pub latency: Latency,
    pub histogram: Vec<Bucket>,
    pub mix: Mix,
    /// Answers per [`SLOT`] (`timeline_slot_ms`) from the start of the load.
    pub timeline: Vec<Slot>,
    pub timeline_slot_ms: u64,
    /// The event under test, for scenarios that create one (`drain` reads it back).
    pub event_id: Option<u64>,
    /// How the worker turned the reservations into orders (`sale`, `drain`).
    pub drain: Option<Drain>,
    pub sale: Option<SaleSummary>,
    /// What the buyers of a `crowd` (or `soak`) went through.
    pub crowd: Option<CrowdSummary>,
    /// The fault schedule of a `soak` and what each fault came to.
    #[serde(default)]
    pub soak: Option<SoakSummary>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(
        scenario: &str,
        url: &str,
        connections: usize,
        rate: Option<f64>,
        load: &LoadResult,
    ) -> Report {
        let requests = load.requests();
        let seconds = load.elapsed.as_secs_f64();
        Report {
            scenario: scenario.to_owned(),
            url: url.to_owned(),
            connections,
            rate,
            requests,
            seconds,
            throughput: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            latency: Latency::of(&load.histogram),
            histogram: buckets(&load.histogram),
            mix: Mix::of(&load.outcomes),
            timeline: load.timeline.clone(),
            timeline_slot_ms: SLOT.as_millis() as u64,
            event_id: None,
            drain: None,
            sale: None,
            crowd: None,
            soak: None,
            checks: Vec::new(),
        }
    }

    /// True when any invariant check failed.
    pub fn any_check_failed(&self) -> bool {
        self.checks.iter().any(Check::failed)
    }

    /// The terminal summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            out,
            "scenario {} against {} ({} connections, {mode})",
            self.scenario, self.url, self.connections
        );
        let _ = writeln!(
            out,
            "  requests    {} in {:.2} s = {:.0} req/s",
            self.requests, self.seconds, self.throughput
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "  latency ms  p50 {:.2}  p90 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50, l.p90, l.p95, l.p99, l.p999, l.max
        );
        let m = &self.mix;
        let conflicts: Vec<String> = m
            .conflict_by_code
            .iter()
            .map(|(code, n)| format!("409/{code} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  outcomes    2xx {}  {}  429 {}  503 {}  other 4xx {}  5xx {}  transport {}",
            m.success,
            if conflicts.is_empty() {
                "409 0".to_owned()
            } else {
                conflicts.join("  ")
            },
            m.too_many_requests,
            m.unavailable,
            m.other_4xx,
            m.server_errors,
            m.transport_errors
        );
        if let Some(sale) = &self.sale {
            let _ = writeln!(
                out,
                "  sale        event {}: {} buyers x {} attempts for {} units, pipeline {:.0} orders/s",
                sale.event_id, sale.buyers, sale.attempts, sale.stock, sale.pipeline_orders_per_sec
            );
        }
        if let Some(c) = &self.crowd {
            let _ = writeln!(
                out,
                "  crowd       event {}: {} buyers at {:.0}/s for {} units; {} told to wait, {} answers 429, {} answers 503",
                c.event_id,
                c.buyers,
                c.arrival_rate,
                c.stock,
                c.waited,
                c.answers_429,
                c.answers_503
            );
            let _ = writeln!(
                out,
                "  buyers      {:.2} requests each (most {}), outcome after p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
                c.requests_per_buyer,
                c.max_requests_of_a_buyer,
                c.time_to_outcome_p50_ms,
                c.time_to_outcome_p99_ms,
                c.time_to_outcome_max_ms
            );
            let _ = writeln!(
                out,
                "  fairness    {:.1} % of the first {} arrivals won; arrival vs admission rank correlation {:.3}",
                c.first_arrivals_won * 100.0,
                c.stock,
                c.arrival_admission_correlation
            );
        }
        if let Some(soak) = &self.soak {
            let _ = writeln!(
                out,
                "  soak        seed {}, a fault every {:.0} s: {} faults; the invariants held {:.1} s after the drain",
                soak.seed,
                soak.fault_every_secs,
                soak.faults.len(),
                soak.settled_after_secs
            );
            for fault in &soak.faults {
                let _ = writeln!(
                    out,
                    "  fault       {:>6.1} s  {:<22} {}  {}, {:.1} s",
                    fault.started_secs,
                    fault.planned.kind.name(),
                    fault.planned.target,
                    if fault.succeeded { "done" } else { "FAILED" },
                    fault.seconds
                );
            }
        }
        if let Some(d) = &self.drain {
            let _ = writeln!(
                out,
                "  drain       {} in {:.2} s, {} orders, worker {:.0} orders/s while watched",
                if d.complete { "complete" } else { "INCOMPLETE" },
                d.seconds,
                d.orders,
                d.orders_per_sec
            );
        }
        for check in &self.checks {
            let verdict = match check.passed {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "n/a ",
            };
            let _ = writeln!(out, "  {verdict}  {}: {}", check.name, check.detail);
        }
        out
    }

    /// One self-contained HTML page (see [`html`]).
    pub fn html(&self) -> String {
        html::page(self)
    }
}

/// Log-spaced buckets (four per power of two) from the smallest to the largest latency.
fn buckets(histogram: &Histogram<u64>) -> Vec<Bucket> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut low = 0u64;
    let mut bound = histogram.min().max(1) as f64;
    let max = histogram.max();
    loop {
        let high = (bound.ceil() as u64).max(low + 1);
        let count = histogram.count_between(low + 1, high);
        out.push(Bucket {
            upto_ms: high as f64 / 1e3,
            count,
        });
        if high >= max {
            break;
        }
        low = high;
        bound *= 2f64.powf(0.25);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(super) fn load() -> LoadResult {
        let mut histogram = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
        for micros in [800, 1_000, 1_200, 5_000, 40_000] {
            histogram.record(micros).unwrap();
        }
        let mut outcomes = BTreeMap::new();
        outcomes.insert(
            Outcome::Answered {
                status: 202,
                code: None,
            },
            2,
        );
        outcomes.insert(
            Outcome::Answered {
                status: 409,
                code: Some(50004),
            },
            2,
        );
        outcomes.insert(Outcome::Transport, 1);
        LoadResult {
            histogram,
            outcomes,
            timeline: vec![Slot {
                requests: 5,
                successes: 2,
                refusals: 2,
                errors: 1,
                max_ms: 40.0,
            }],
            elapsed: Duration::from_millis(500),
            tickets: Vec::new(),
        }
    }

    #[test]
    fn the_summary_counts_and_groups_outcomes() {
        let report = Report::new("sale", "http://127.0.0.1:1", 4, None, &load());
        assert_eq!(report.requests, 5);
        assert!((report.throughput - 10.0).abs() < 1e-9);
        assert_eq!(report.mix.success, 2);
        assert_eq!(report.mix.conflict_by_code["50004"], 2);
        assert_eq!(report.mix.transport_errors, 1);
        assert!((report.latency.max - 40.0).abs() < 0.1);
        assert!(report.latency.p50 >= 1.0 && report.latency.p50 < 1.3);
        let counted: u64 = report.histogram.iter().map(|b| b.count).sum();
        assert_eq!(counted, 5, "every answer falls in one bucket");
        assert!(report.text().contains("409/50004 2"));
    }
}
