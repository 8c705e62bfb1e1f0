//! The HTML page of a report: one self-contained file (inline SVG charts, no script, no external
//! style sheet, font or image), so it can be mailed, archived or opened offline.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Bucket, Latency, Report};
use crate::load::Slot;

/// The whole page.
pub(super) fn page(report: &Report) -> String {
    let mut page = String::new();
    let title = format!("spike bench: {}", escape(&report.scenario));
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><h1>{title}</h1><p class=\"sub\">{} · {} connections · {}</p>",
        escape(&report.url),
        report.connections,
        match report.rate {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => "closed loop".to_owned(),
        }
    );
    let verdict = if report.checks.is_empty() {
        String::new()
    } else if report.any_check_failed() {
        "<span class=\"fail\">invariants violated</span>".to_owned()
    } else {
        "<span class=\"pass\">invariants hold</span>".to_owned()
    };
    let _ = write!(
        page,
        "<div class=\"tiles\">{}{}{}{}</div>",
        tile("throughput", &format!("{:.0} req/s", report.throughput)),
        tile(
            "requests",
            &format!("{} in {:.1} s", report.requests, report.seconds)
        ),
        tile("p99", &format!("{:.2} ms", report.latency.p99)),
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
    page.push_str(&percentile_table(&report.latency));
    page.push_str(&histogram_svg(&report.histogram));
    page.push_str("<h2>Throughput and errors over time</h2>");
    let faults: Vec<Band> = report
        .soak
        .iter()
        .flat_map(|soak| &soak.faults)
        .map(|f| Band {
            from_secs: f.started_secs,
            to_secs: f.started_secs + f.seconds,
            label: f.planned.kind.name(),
        })
        .collect();
    page.push_str(&timeline_svg(
        &report.timeline,
        report.timeline_slot_ms,
        &faults,
    ));
    page.push_str("<h2>Outcomes</h2>");
    page.push_str(&outcome_svg(&report.mix.by_label));
    if let Some(sale) = &report.sale {
        let _ = write!(
            page,
            "<h2>Sale</h2><p>Event {}: {} buyers × {} attempts for {} units; the pipeline made {:.0} orders/s (first request to last order).</p>",
            sale.event_id, sale.buyers, sale.attempts, sale.stock, sale.pipeline_orders_per_sec,
        );
    }
    if let Some(c) = &report.crowd {
        let _ = write!(
            page,
            "<h2>Crowd</h2><p>Event {}: {} buyers arriving at {:.0}/s for {} units; {} were told to wait in line, {} answers were 429.</p>\
             <table><tr><th>requests per buyer</th><td>{:.2} (most {})</td></tr>\
             <tr><th>arrival to outcome</th><td>p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms</td></tr>\
             <tr><th>503 answers to buys (ridden out)</th><td>{}</td></tr>\
             <tr><th>first {} arrivals who won</th><td>{:.1} %</td></tr>\
             <tr><th>arrival vs admission rank correlation</th><td>{:.3}</td></tr></table>",
            c.event_id,
            c.buyers,
            c.arrival_rate,
            c.stock,
            c.waited,
            c.answers_429,
            c.requests_per_buyer,
            c.max_requests_of_a_buyer,
            c.time_to_outcome_p50_ms,
            c.time_to_outcome_p99_ms,
            c.time_to_outcome_max_ms,
            c.answers_503,
            c.stock,
            c.first_arrivals_won * 100.0,
            c.arrival_admission_correlation,
        );
    }
    if let Some(soak) = &report.soak {
        let _ = write!(
            page,
            "<h2>Fault schedule</h2><p>Seed {}: a fault about every {:.0} s, each run as <code>{} &lt;kind&gt; &lt;target&gt;</code> until repaired \
             (shaded on the timeline above). The invariants held {:.1} s after the drain.</p>\
             <table><tr><th>at</th><th>fault</th><th>target</th><th>result</th><th>inject + repair</th><th>last output</th></tr>",
            soak.seed,
            soak.fault_every_secs,
            escape(&soak.fault_command),
            soak.settled_after_secs,
        );
        for fault in &soak.faults {
            let _ = write!(
                page,
                "<tr><td>{:.1} s (planned {:.1} s)</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{:.1} s</td><td><pre>{}</pre></td></tr>",
                fault.started_secs,
                fault.planned.at_secs,
                fault.planned.kind.name(),
                fault.planned.target,
                if fault.succeeded { "pass" } else { "fail" },
                if fault.succeeded { "done" } else { "FAILED" },
                fault.seconds,
                escape(&fault.output),
            );
        }
        page.push_str("</table>");
    }
    if let Some(d) = &report.drain {
        let _ = write!(
            page,
            "<h2>Drain</h2><p>Drain {} in {:.2} s after the load: {} orders; the worker made {:.0} orders/s while watched.</p>",
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
    if !report.checks.is_empty() {
        page.push_str("<h2>Invariants (docs/design.md §1)</h2><table><tr><th></th><th>check</th><th>found</th></tr>");
        for check in &report.checks {
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

/// A stretch of the run to shade on the timeline (a soak's fault, from injection to repair).
struct Band {
    from_secs: f64,
    to_secs: f64,
    label: String,
}

/// Bars of answers per second (successes, refusals, errors stacked), at most [`MAX_BARS`]: a
/// long run's slots are merged. `bands` are shaded behind the bars, labelled at the top.
fn timeline_svg(timeline: &[Slot], slot_ms: u64, bands: &[Band]) -> String {
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
    let secs_per_px = bar_secs / step;
    for band in bands {
        let x = LEFT + band.from_secs / secs_per_px;
        let w = ((band.to_secs - band.from_secs) / secs_per_px).max(2.0);
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"10\" width=\"{w:.1}\" height=\"{plot_h:.1}\" fill=\"#f2cc8f\" opacity=\"0.45\"><title>{}</title></rect>\
             <text x=\"{x:.1}\" y=\"20\">{}</text>",
            escape(&band.label),
            escape(&band.label)
        );
    }
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
    use crate::checks::Check;
    use crate::report::tests::load;

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
        let svg = timeline_svg(&vec![slot; 1000], 100, &[]);
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

    #[test]
    fn a_fault_is_shaded_where_it_happened_on_the_timeline() {
        let slot = Slot {
            requests: 1,
            successes: 1,
            ..Slot::default()
        };
        // 100 s of slots (one bar per 0.7 s); a fault from 50 s to 60 s.
        let band = Band {
            from_secs: 50.0,
            to_secs: 60.0,
            label: "mysql-restart <1>".to_owned(),
        };
        let svg = timeline_svg(&vec![slot; 1000], 100, &[band]);
        let plot_w = WIDTH - LEFT - 10.0;
        let x = LEFT + plot_w / 143.0 * (50.0 / 0.7);
        let drawn = format!("<rect x=\"{x:.1}\" y=\"10\"");
        assert!(svg.contains(&drawn), "expected {drawn} in {svg}");
        assert!(svg.contains("mysql-restart &lt;1&gt;"), "escaped label");
    }
}
