//! Log capture for tests that assert on log lines, readable logs with `SPIKE_TEST_LOG`, and the
//! finished spans of traces a test started ([`traced_spans`]).

use std::sync::{Once, OnceLock};

use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, SpanData};

use spike::config::LogFormat;

/// Spans of every sampled trace, kept in memory. Only traces a test starts itself are sampled:
/// the decision follows the caller's `traceparent`, and the ratio for new traces is 0, so a test
/// that sends a sampled `traceparent` finds exactly its own trace here.
static SPANS: OnceLock<(InMemorySpanExporter, spike::telemetry::traces::Exporter)> =
    OnceLock::new();

/// The finished spans of trace `trace_id` (32 hex digits).
pub fn traced_spans(trace_id: &str) -> Vec<SpanData> {
    init_logs();
    let (exporter, _) = SPANS.get().expect("installed by init_logs");
    exporter
        .get_finished_spans()
        .expect("in-memory spans")
        .into_iter()
        .filter(|span| span.span_context.trace_id().to_string() == trace_id)
        .collect()
}

/// Installs the test binary's one global subscriber: the per-thread capture layer (see
/// [`CapturedLogs`]), the production trace layer over an in-memory exporter, and, with
/// `SPIKE_TEST_LOG=<filter>`, readable logs on stderr.
pub(super) fn init_logs() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{EnvFilter, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;

    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let capture = spike::telemetry::format_layer(LogFormat::Json, || ThreadSink)
            .with_filter(filter_fn(capturing));
        let stderr = std::env::var("SPIKE_TEST_LOG").ok().map(|level| {
            spike::telemetry::format_layer(LogFormat::Pretty, std::io::stderr)
                .with_filter(EnvFilter::new(level))
        });
        let (_, traces) = SPANS.get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .with_sampler(Sampler::AlwaysOn)
                .build();
            (
                exporter,
                spike::telemetry::traces::Exporter::new(provider, 0.0),
            )
        });
        let traces = traces.layer();
        let subscriber = tracing_subscriber::registry()
            .with(capture)
            .with(stderr)
            .with(traces);
        tracing::subscriber::set_global_default(subscriber).expect("one global test subscriber");
    });
}

/// Log lines captured from the code running on the current thread (the test's runtime).
///
/// One global subscriber serves the whole test binary: its capture layer writes to the sink the
/// current thread registered, if any. (Per-test `set_default` subscribers race with tracing's
/// callsite-interest cache when tests run in parallel, and silently drop lines.)
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<(CapturedLogs, tracing::level_filters::LevelFilter)>> =
        const { std::cell::RefCell::new(None) };
}

/// Stops capturing on the current thread when dropped.
pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

impl CapturedLogs {
    /// Captures the app's JSON log lines at `level` and above until the guard drops.
    /// `#[tokio::test]` runs the app on the test's own thread, so only this test's lines land here.
    pub fn start(level: tracing::Level) -> (CapturedLogs, CaptureGuard) {
        init_logs();
        let logs = CapturedLogs::default();
        CAPTURE.with(|capture| {
            *capture.borrow_mut() = Some((
                logs.clone(),
                tracing::level_filters::LevelFilter::from_level(level),
            ))
        });
        (logs, CaptureGuard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each log line is JSON"))
            .collect()
    }
}

/// Writes to the current thread's capture sink (or nowhere).
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some((logs, _)) = capture.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capturing(metadata: &tracing::Metadata<'_>) -> bool {
    CAPTURE.with(|capture| {
        capture
            .borrow()
            .as_ref()
            .is_some_and(|(_, level)| metadata.level() <= level)
    })
}
