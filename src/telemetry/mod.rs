//! Telemetry: logs (here), Prometheus metrics ([`metrics`]) and OpenTelemetry traces.
//!
//! Logging set-up: `tracing` with JSON lines (production) or human-readable output (development).
//!
//! Every HTTP request runs inside a span carrying its `request_id` (see `api::middleware`), and both
//! formats print the enclosing spans' fields, so each line a request causes names its request id.
//! Secrets never reach this layer: configuration values are wrapped in `config::Secret` and request
//! headers are not recorded.

pub mod metrics;
pub mod traces;

use std::io;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::config::LogFormat;

/// Installs the global subscriber writing to stdout, exporting spans through `traces` when
/// given. Call once, early in `main`.
pub fn init(format: LogFormat, level: &str, traces: Option<&traces::Exporter>) {
    init_with_writer(format, level, io::stdout, traces);
}

/// Installs the global subscriber writing to `writer`. Does nothing when one is already
/// installed, so tests may call it repeatedly.
pub fn init_with_writer<W>(
    format: LogFormat,
    level: &str,
    writer: W,
    traces: Option<&traces::Exporter>,
) where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let _ = tracing::subscriber::set_global_default(subscriber(format, level, writer, traces));
}

/// The subscriber `init` installs: [`format_layer`] under an `EnvFilter` for `level`, and the
/// trace exporter ([`traces::layer`]) under its own filter, so spans the logs do not show (the
/// `debug` store spans) still reach the traces. An invalid `level` falls back to `info`; config
/// validation rejects one before it gets here.
pub fn subscriber<W>(
    format: LogFormat,
    level: &str,
    writer: W,
    traces: Option<&traces::Exporter>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    Box::new(
        Registry::default()
            .with(format_layer(format, writer).with_filter(filter))
            .with(traces.map(traces::Exporter::layer)),
    )
}

/// The formatting layer alone, so tests can put it under a filter of their own and see exactly
/// the lines production would print.
pub fn format_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_target(true).with_writer(writer).boxed(),
    }
}
