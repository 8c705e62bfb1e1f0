//! Telemetry: logs (format, filter, sampling), the metrics gauges' sampling, and traces.

use std::time::Duration;

use super::Environment;
use super::reader::Reader;
use super::values::LogFormat;
use crate::background::SupervisorSettings;

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `spike=debug,sqlx=warn`.
    pub log_level: String,
    /// Share (0 to 1) of finished requests logged at `info`; a request answered with a 5xx is
    /// always logged, and so is every warning and error.
    pub request_log_sample: f64,
    /// How often the store gauges (pool, queue depths, outbox backlog) are sampled.
    pub metrics_sample_interval: Duration,
    /// Where spans go (OTLP over HTTP, e.g. `http://jaeger:4318`); no tracing when unset.
    pub otlp_endpoint: Option<String>,
    /// Share (0 to 1) of new traces sampled; a request that arrives with a sampled
    /// `traceparent` is always traced (parent-based).
    pub trace_sample_ratio: f64,
    /// How the background supervisor judges its tasks (and the dev-only fault hook).
    pub background: SupervisorSettings,
}

impl TelemetrySettings {
    pub(super) fn read(r: &mut Reader<'_>, env: Environment) -> Option<TelemetrySettings> {
        r.section("Logs");
        let default_format = if env == Environment::Dev {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        };
        let log_format = r.choice("log_format", "`json` or `pretty`", default_format);
        r.default_is("`pretty` in dev, `json` elsewhere", "pretty");
        let log_level = r.text(
            "log_level",
            "`tracing` filter, e.g. `info,spike=debug,sqlx=warn`",
            "info",
        );
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            r.problem("log_level", e);
        }
        let request_log_sample = share(
            r,
            env,
            "log_request_sample",
            "share (0 to 1) of finished requests logged at `info` (\"finished processing request\"); 5xx answers, warnings and errors are always logged",
        );
        r.section("Metrics and traces");
        let metrics_sample_interval = r.duration(
            "metrics_sample_interval",
            "how often the gauges of `/metrics` that describe the stores (pool, queue depths, outbox backlog) are sampled",
            Duration::from_secs(5),
        );
        // The exporter runs on the plain-HTTP hyper client already in the build.
        let otlp_endpoint = r.optional_url(
            "otlp_endpoint",
            "OTLP/HTTP collector base URL for traces, e.g. `http://localhost:4318` (spans go to `/v1/traces`); tracing is off when unset or empty",
            |url| url.starts_with("http://"),
            "must start with http:// (no TLS: send to a collector next to the process)",
        );
        let trace_sample_ratio = share(
            r,
            env,
            "trace_sample_ratio",
            "share (0 to 1) of new traces recorded; a request or message whose `traceparent` says sampled (or not) is followed",
        );
        r.section("Background work");
        let stall_intervals = r.between(
            "background_stall_intervals",
            "a periodic background task (warm-up, reconciler, relay, gauges) without a successful pass for this many of its intervals (and at least 10 s) makes `/readyz` of its process answer 503 naming it",
            5u32,
            1,
            1000,
        );
        let fault_panics = r.optional(
            "background_fault_panics",
            "testing only (dev): `task:n` makes that background task's first n passes panic, to prove the supervisor restarts it",
        );
        let fault_panics = match fault_panics.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(_) if env != Environment::Dev => {
                r.problem(
                    "background_fault_panics",
                    "is a fault injection for tests: only allowed with SPIKE_ENV=dev",
                );
                None
            }
            Some(raw) => match raw.split_once(':').map(|(t, n)| (t, n.parse::<u32>())) {
                Some((task, Ok(n))) if !task.is_empty() => Some(Some((task.to_owned(), n))),
                _ => {
                    r.problem(
                        "background_fault_panics",
                        format!("must be `task:n`, e.g. `flash_sale_housekeeping:3` (got {raw:?})"),
                    );
                    None
                }
            },
        };
        Some(TelemetrySettings {
            background: SupervisorSettings {
                stall_intervals: stall_intervals?,
                fault_panics: fault_panics?,
            },
            log_format: log_format?,
            log_level,
            request_log_sample: request_log_sample?,
            metrics_sample_interval: metrics_sample_interval?,
            otlp_endpoint: otlp_endpoint?.map(|url| url.expose().to_owned()),
            trace_sample_ratio: trace_sample_ratio?,
        })
    }
}

/// A share from 0 to 1 whose default is 1 in dev (see everything) and 0.01 elsewhere.
fn share(
    r: &mut Reader<'_>,
    env: Environment,
    key: &'static str,
    doc: &'static str,
) -> Option<f64> {
    let default = if env == Environment::Dev { 1.0 } else { 0.01 };
    let value = r.parsed(key, doc, default);
    r.default_is("`1` in dev, `0.01` elsewhere", "1");
    value.filter(|share| {
        let valid = (0.0..=1.0).contains(share);
        if !valid {
            r.problem(key, format!("must be from 0 to 1 (got {share})"));
        }
        valid
    })
}
