//! What a run found, three ways: a text summary for the terminal, JSON for scripts
//! (`--json`), and one self-contained HTML page with inline SVG charts (`--report`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::checks::{Check, Drain, SaleFacts};
use super::load::{LoadResult, Outcome, SLOT, Slot};

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
                "  sale        event {}: {} buyers x {} attempts for {} units",
                sale.event_id, sale.buyers, sale.attempts, sale.stock
            );
        }
        if let Some(d) = &self.drain {
            let _ = writeln!(
                out,
                "  drain       {} in {:.2} s, {} orders, {:.0} orders/s",
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

    /// One self-contained HTML page: no script, no external style sheet, font or image.
    pub fn html(&self) -> String {
        let mut page = String::new();
        let title = format!("spike bench: {}", escape(&self.scenario));
        let _ = write!(
            page,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
             <style>{STYLE}</style></head><body><h1>{title}</h1><p class=\"sub\">{} · {} connections · {}</p>",
            escape(&self.url),
            self.connections,
            match self.rate {
                Some(rate) => format!("open loop at {rate:.0} req/s"),
                None => "closed loop".to_owned(),
            }
        );
        let verdict = if self.checks.is_empty() {
            String::new()
        } else if self.any_check_failed() {
            "<span class=\"fail\">invariants violated</span>".to_owned()
        } else {
            "<span class=\"pass\">invariants hold</span>".to_owned()
        };
        let _ = write!(
            page,
            "<div class=\"tiles\">{}{}{}{}</div>",
            tile("throughput", &format!("{:.0} req/s", self.throughput)),
            tile(
                "requests",
                &format!("{} in {:.1} s", self.requests, self.seconds)
            ),
            tile("p99", &format!("{:.2} ms", self.latency.p99)),
            tile(
                "result",
                if verdict.is_empty() {
                    "no checks"
                } else {
                    &verdict
                }
            ),
        );
        page.push_str("<h2>Latency</h2>");
        page.push_str(&percentile_table(&self.latency));
        page.push_str(&histogram_svg(&self.histogram));
        page.push_str("<h2>Throughput and errors over time</h2>");
        page.push_str(&timeline_svg(&self.timeline, self.timeline_slot_ms));
        page.push_str("<h2>Outcomes</h2>");
        page.push_str(&outcome_svg(&self.mix.by_label));
        if let Some(sale) = &self.sale {
            let _ = write!(
                page,
                "<h2>Sale</h2><p>Event {}: {} buyers × {} attempts for {} units.</p>",
                sale.event_id, sale.buyers, sale.attempts, sale.stock,
            );
        }
        if let Some(d) = &self.drain {
            let _ = write!(
                page,
                "<h2>Drain</h2><p>Drain {} in {:.2} s after the load: {} orders, {:.0} orders/s.</p>",
                if d.complete {
                    "complete"
                } else {
                    "<b class=\"fail\">incomplete</b>"
                },
                d.seconds,
                d.orders,
                d.orders_per_sec
            );
        }
        if !self.checks.is_empty() {
            page.push_str("<h2>Invariants (DESIGN.md §1)</h2><table><tr><th></th><th>check</th><th>found</th></tr>");
            for check in &self.checks {
                let (class, mark) = match check.passed {
                    Some(true) => ("pass", "✔ pass"),
                    Some(false) => ("fail", "✘ FAIL"),
                    None => ("na", "– n/a"),
                };
                let _ = write!(
                    page,
                    "<tr><td class=\"{class}\">{mark}</td><td>{}</td><td>{}</td></tr>",
                    escape(&check.name),
                    escape(&check.detail)
                );
            }
            page.push_str("</table>");
        }
        page.push_str("</body></html>\n");
        page
    }
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222}\
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}\
.tiles{display:flex;gap:1em}.tile{flex:1;border:1px solid #ddd;border-radius:6px;padding:.6em 1em}\
.tile b{display:block;font-size:1.4em}.tile span.k{color:#666;font-size:.85em}\
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}\
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:700}.na{color:#888}\
svg{display:block;margin:.8em 0}svg text{font:11px system-ui,sans-serif;fill:#444}";

fn tile(key: &str, value: &str) -> String {
    format!("<div class=\"tile\"><span class=\"k\">{key}</span><b>{value}</b></div>")
}

fn percentile_table(l: &Latency) -> String {
    let rows = [
        ("p50", l.p50),
        ("p90", l.p90),
        ("p95", l.p95),
        ("p99", l.p99),
        ("p99.9", l.p999),
        ("max", l.max),
        ("mean", l.mean),
    ];
    let mut out = String::from("<table><tr>");
    for (name, _) in rows {
        let _ = write!(out, "<th>{name}</th>");
    }
    out.push_str("</tr><tr>");
    for (_, value) in rows {
        let _ = write!(out, "<td>{value:.2} ms</td>");
    }
    out.push_str("</tr></table>");
    out
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

const WIDTH: f64 = 940.0;
/// Most bars a chart draws.
const MAX_BARS: usize = 150;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 30.0;

fn histogram_svg(buckets: &[Bucket]) -> String {
    if buckets.is_empty() {
        return "<p>No answers.</p>".to_owned();
    }
    let top = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
    let plot_w = WIDTH - LEFT - 10.0;
    let plot_h = HEIGHT - BOTTOM - 10.0;
    let bar_w = plot_w / buckets.len() as f64;
    let mut svg = svg_open("latency histogram: answers per latency bucket (log scale of time)");
    for (i, bucket) in buckets.iter().enumerate() {
        let h = bucket.count as f64 / top * plot_h;
        let x = LEFT + i as f64 * bar_w;
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#4c78a8\"><title>≤ {:.3} ms: {}</title></rect>",
            10.0 + plot_h - h,
            (bar_w - 1.0).max(1.0),
            bucket.upto_ms,
            bucket.count
        );
        if i % 4 == 0 {
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{:.1}\">{}</text>",
                HEIGHT - 8.0,
                short_ms(bucket.upto_ms)
            );
        }
    }
    axis(&mut svg, top, "answers");
    svg.push_str("</svg>");
    svg
}

/// Bars of answers per second (successes, refusals, errors stacked), at most [`MAX_BARS`]: a
/// long run's slots are merged.
fn timeline_svg(timeline: &[Slot], slot_ms: u64) -> String {
    if timeline.is_empty() {
        return "<p>No answers.</p>".to_owned();
    }
    let per_bar = timeline.len().div_ceil(MAX_BARS);
    let bars: Vec<Slot> = timeline
        .chunks(per_bar)
        .map(|chunk| {
            let mut bar = Slot::default();
            chunk.iter().for_each(|slot| bar.add(slot));
            bar
        })
        .collect();
    let bar_secs = (per_bar as u64 * slot_ms) as f64 / 1e3;
    let per_second = |count: u64| count as f64 / bar_secs;
    let top = bars
        .iter()
        .map(|b| per_second(b.requests))
        .fold(1.0, f64::max);
    let plot_w = WIDTH - LEFT - 10.0;
    let plot_h = HEIGHT - BOTTOM - 10.0;
    let step = plot_w / bars.len() as f64;
    let mut svg = svg_open(
        "answers per second over the run: successes (blue), refusals (grey), errors (red)",
    );
    for (i, bar) in bars.iter().enumerate() {
        let x = LEFT + i as f64 * step;
        let mut y = 10.0 + plot_h;
        for (count, color) in [
            (bar.successes, "#4c78a8"),
            (bar.refusals, "#bab0ac"),
            (bar.errors, "#e45756"),
        ] {
            let h = per_second(count) / top * plot_h;
            y -= h;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{:.1} s: {count}</title></rect>",
                (step - 1.0).max(1.0),
                i as f64 * bar_secs
            );
        }
        if i % (bars.len() / 10).max(1) == 0 {
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{:.1}\">{:.1}s</text>",
                HEIGHT - 8.0,
                i as f64 * bar_secs
            );
        }
    }
    axis(&mut svg, top, "req/s");
    svg.push_str("</svg>");
    svg
}

fn outcome_svg(by_label: &BTreeMap<String, u64>) -> String {
    if by_label.is_empty() {
        return "<p>No answers.</p>".to_owned();
    }
    let total: u64 = by_label.values().sum();
    let row = 24.0;
    let height = row * by_label.len() as f64 + 10.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\"><title>outcome mix</title>"
    );
    for (i, (label, &count)) in by_label.iter().enumerate() {
        let y = 5.0 + i as f64 * row;
        let w = count as f64 / total.max(1) as f64 * (WIDTH - 330.0);
        let color = match label.as_bytes().first() {
            Some(b'2') => "#4c78a8",
            Some(b'4') if label.starts_with("409") || label.starts_with("429") => "#bab0ac",
            _ => "#e45756",
        };
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\">{}</text><rect x=\"130\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{count} ({:.1} %)</text>",
            y + 15.0,
            escape(label),
            row - 6.0,
            136.0 + w,
            y + 15.0,
            count as f64 * 100.0 / total.max(1) as f64
        );
    }
    svg.push_str("</svg>");
    svg
}

fn svg_open(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\"><title>{title}</title>"
    )
}

fn axis(svg: &mut String, top: f64, unit: &str) {
    let base = HEIGHT - BOTTOM;
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{WIDTH}\" y2=\"{base}\" stroke=\"#999\"/>\
         <line x1=\"{LEFT}\" y1=\"10\" x2=\"{LEFT}\" y2=\"{base}\" stroke=\"#999\"/>\
         <text x=\"0\" y=\"18\">{top:.0}</text><text x=\"0\" y=\"{base}\">0</text>\
         <text x=\"0\" y=\"{:.0}\">{unit}</text>",
        base / 2.0
    );
}

fn short_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}ms")
    } else if ms >= 1.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.0}µs", ms * 1e3)
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load() -> LoadResult {
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

    #[test]
    fn the_page_is_self_contained_and_escapes_text() {
        let mut report = Report::new("<sale>", "http://127.0.0.1:1", 4, Some(100.0), &load());
        report.checks.push(Check {
            name: "no oversell".into(),
            passed: Some(false),
            detail: "51 > 50 & more".into(),
        });
        let page = report.html();
        assert!(page.contains("&lt;sale&gt;") && !page.contains("<sale>"));
        assert!(page.contains("51 &gt; 50 &amp; more"));
        assert!(page.contains("invariants violated"));
        assert_eq!(page.matches("<svg").count(), 3);
        for external in ["<script", "src=", "href=", "@import", "url("] {
            assert!(
                !page.contains(external),
                "the page loads nothing: {external}"
            );
        }
    }

    #[test]
    fn a_long_run_is_drawn_with_merged_bars_in_requests_per_second() {
        let slot = Slot {
            requests: 10,
            successes: 10,
            ..Slot::default()
        };
        let svg = timeline_svg(&vec![slot; 1000], 100);
        assert_eq!(
            svg.matches("<rect").count(),
            3 * 143,
            "1000 slots → 143 bars of 7"
        );
        assert!(
            svg.contains(">100</text>"),
            "10 answers per 100 ms = 100 req/s: {svg}"
        );
    }
}
