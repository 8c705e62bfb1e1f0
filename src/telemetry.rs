//! Logging set-up: `tracing` with JSON lines (production) or human-readable output (development).
//!
//! Every HTTP request runs inside a span carrying its `request_id` (see `api::middleware`), and both
//! formats print the enclosing spans' fields, so each line a request causes names its request id.
//! Secrets never reach this layer: configuration values are wrapped in `config::Secret` and request
//! headers are not recorded.

use std::io;

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Installs the global subscriber writing to stdout. Call once, early in `main`.
pub fn init(format: LogFormat, level: &str) {
    init_with_writer(format, level, io::stdout);
}

/// Installs the global subscriber writing to `writer`. Does nothing when one is already
/// installed, so tests may call it repeatedly.
pub fn init_with_writer<W>(format: LogFormat, level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let _ = tracing::subscriber::set_global_default(subscriber(format, level, writer));
}

/// The subscriber `init` installs, for callers that scope it themselves (tests capturing logs
/// use `tracing::subscriber::set_default`). An invalid `level` falls back to `info`; config
/// validation rejects one before it gets here.
pub fn subscriber<W>(format: LogFormat, level: &str, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.with_target(true).finish()),
    }
}
