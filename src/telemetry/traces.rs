//! OpenTelemetry traces: the OTLP exporter, the sampler, the `tracing` layer that turns the
//! shop's spans into OpenTelemetry spans, and W3C trace-context propagation.
//!
//! The shop's code creates ordinary `tracing` spans: `http` for each request (api::middleware),
//! `redis.*` for each script call, `amqp.publish` and `amqp.consume` for the broker, and one span
//! per MySQL transaction. This module only exports them. The trace context crosses the queue in
//! the `traceparent` message header, so a buyer's request, the publish, the consume and the
//! worker's transaction share one trace. When tracing is off (no `SPIKE_OTLP_ENDPOINT`) every
//! function here returns at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use tracing::{Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, filter::LevelFilter};

/// Set once a tracing layer is installed; until then propagation is skipped entirely.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Spans kept in memory waiting for export; more are dropped (and counted by the SDK) rather
/// than slow the shop down when the collector is away.
const MAX_QUEUED_SPANS: usize = 8192;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter: {0}")]
pub struct TraceSetupError(String);

/// A tracer provider exporting over OTLP/HTTP (protobuf) to `{endpoint}/v1/traces`, in batches,
/// sampling `ratio` of new traces and following the caller's decision for the rest. Must be
/// called inside the Tokio runtime, which runs the export.
pub fn otlp_provider(
    endpoint: &str,
    ratio: f64,
    role: &'static str,
) -> Result<SdkTracerProvider, TraceSetupError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .map_err(|error| TraceSetupError(error.to_string()))?;
    let batches =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUED_SPANS)
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name("spike")
                .with_attribute(opentelemetry::KeyValue::new("spike.role", role))
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build(),
        )
        .build())
}

/// The `tracing` layer exporting through `provider`: the shop's own spans (target `spike`) down to
/// `debug`, where the store spans live; dependencies' spans stay out. Also installs the W3C
/// trace-context propagator and turns propagation on.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Release);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("spike"))
        .with_threads(false)
        .with_filter(Targets::new().with_target("spike", LevelFilter::DEBUG))
}

/// Whether spans are exported (a tracing layer is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// The W3C trace-context headers (`traceparent`, and `tracestate` when there is one) of `span`,
/// to put on an outgoing message. Empty when tracing is off.
pub fn context_headers(span: &Span) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    if enabled() {
        let context = span.context();
        TraceContextPropagator::new().inject_context(&context, &mut headers);
    }
    headers
}

/// The trace context that `header` finds in an incoming request or message, if any.
fn remote_context(header: impl Fn(&str) -> Option<String>) -> Option<opentelemetry::Context> {
    if !enabled() {
        return None;
    }
    let propagator = TraceContextPropagator::new();
    let carrier: HashMap<String, String> = propagator
        .fields()
        .filter_map(|name| header(name).map(|value| (name.to_owned(), value)))
        .collect();
    if carrier.is_empty() {
        return None;
    }
    let context = propagator.extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` (just created, not yet entered) a child of the trace context that `header`
/// finds in an incoming request or message. No context, or tracing off: `span` stays a root.
pub fn set_parent_from(span: &Span, header: impl Fn(&str) -> Option<String>) {
    if let Some(parent) = remote_context(header) {
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to the trace context `header` finds: a batch carries many traces, its span is
/// the child of one and links the others.
pub fn link_from(span: &Span, header: impl Fn(&str) -> Option<String>) {
    if let Some(context) = remote_context(header) {
        span.add_link(context.span().span_context().clone());
    }
}

/// Links `span` to the trace of `other` (a publish group to the requests that joined it).
pub fn link(span: &Span, other: &Span) {
    if enabled() {
        span.add_link(other.context().span().span_context().clone());
    }
}

/// The trace id of `span` in hex, for the logs; `None` when tracing is off.
pub fn trace_id(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Puts the HTTP status on a request's span; a 5xx marks it failed.
pub fn record_status(span: &Span, status: u16) {
    if enabled() {
        span.set_attribute("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.set_status(opentelemetry::trace::Status::error(format!(
                "HTTP {status}"
            )));
        }
    }
}
