//! OpenTelemetry traces: the OTLP exporter, the sampling decision, the `tracing` layer that turns
//! the shop's spans into OpenTelemetry spans, and W3C trace-context propagation.
//!
//! The shop's code creates ordinary `tracing` spans: `http` for each request (api::middleware),
//! `redis.*` for each script call, `amqp.publish` and `amqp.consume` for the broker, and one span
//! per MySQL transaction. This module only exports them. The trace context crosses the queue in
//! the `traceparent` message header, so a buyer's request, the publish, the consume and the
//! worker's transaction share one trace. When tracing is off (no `SPIKE_OTLP_ENDPOINT`) every
//! function here returns at once.
//!
//! **Sampling is decided once per unit of work, before its first span**: per HTTP request (the
//! caller's `traceparent` flag, else the ratio), per consumed batch (its first message's flag,
//! else the ratio), per outbox page (the ratio). The decision is a task-local ([`in_scope`]),
//! and the layer's filter lets a span through only inside a traced scope, so an unsampled
//! request costs no OpenTelemetry work at all: a sampler at span start would come too late,
//! after every span had been built and then dropped (measured: +31 % instructions per buy at
//! 1 %, against +1 % this way; docs/benchmarks.md). Work outside any scope (the warm-up and
//! reconciler passes) is not traced.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use tracing::{Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

/// Set once a tracing layer is installed; until then propagation is skipped entirely.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The share of new traces sampled (an `f64`'s bits).
static RATIO: AtomicU64 = AtomicU64::new(0);

tokio::task_local! {
    /// Whether the unit of work running in this task is traced, and the trace it continues.
    static TRACED: TraceDecision;
}

/// Whether a unit of work is traced, and the caller's trace it continues (read once, from the
/// `traceparent` that decided it).
#[derive(Clone, Default)]
pub struct TraceDecision {
    traced: bool,
    parent: Option<opentelemetry::Context>,
}

/// A decision made without a caller's trace context: a new trace when `true`.
impl From<bool> for TraceDecision {
    fn from(traced: bool) -> TraceDecision {
        TraceDecision {
            traced,
            parent: None,
        }
    }
}

/// Spans kept in memory waiting for export; more are dropped (and counted by the SDK) rather
/// than slow the shop down when the collector is away.
const MAX_QUEUED_SPANS: usize = 8192;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter: {0}")]
pub struct TraceSetupError(String);

/// Where spans go, and the share of new traces sampled.
pub struct Exporter {
    provider: SdkTracerProvider,
    ratio: f64,
}

impl Exporter {
    /// Spans through `provider` (tests pass one with an in-memory exporter), sampling `ratio`.
    pub fn new(provider: SdkTracerProvider, ratio: f64) -> Exporter {
        Exporter { provider, ratio }
    }

    /// Spans over OTLP/HTTP to `endpoint` ([`otlp_provider`]), sampling `ratio`.
    pub fn otlp(
        endpoint: &str,
        ratio: f64,
        role: &'static str,
    ) -> Result<Exporter, TraceSetupError> {
        Ok(Exporter::new(otlp_provider(endpoint, role)?, ratio))
    }

    /// The `tracing` layer exporting through this exporter ([`layer`]).
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        layer(&self.provider, self.ratio)
    }

    /// Exports what is still queued; call before the process exits.
    pub fn shutdown(self) -> Result<(), String> {
        self.provider.shutdown().map_err(|error| error.to_string())
    }
}

/// A tracer provider exporting over OTLP/HTTP (protobuf) to `{endpoint}/v1/traces`, in batches.
/// It records every span it is given: [`layer`]'s filter has made the sampling decision. Must be
/// called inside the Tokio runtime, which runs the export.
fn otlp_provider(endpoint: &str, role: &'static str) -> Result<SdkTracerProvider, TraceSetupError> {
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
        .with_sampler(Sampler::AlwaysOn)
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

/// The `tracing` layer exporting through `provider` the spans of traced work (see the module
/// docs): the shop's own (target `spike`) down to `debug`, where the store spans live;
/// dependencies' spans stay out. `ratio` (0 to 1) is the share of new traces sampled. Also turns
/// propagation on.
fn layer<S>(provider: &SdkTracerProvider, ratio: f64) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Release);
    ENABLED.store(true, Ordering::Release);
    // Only what a span needs: no busy/idle timing and no OpenTelemetry context switch on every
    // poll of an instrumented future (the shop reads a span's context explicitly, never the
    // "current" one), no thread, source location or target attributes (an allocation per span,
    // sampled or not).
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("spike"))
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_filter(filter_fn(|metadata| {
            metadata.target().starts_with("spike")
                && *metadata.level() <= tracing::Level::DEBUG
                && traced()
        }))
}

/// Whether the work about to start is traced: the caller's decision when `header` finds a trace
/// context (an incoming request's or message's `traceparent`), which the work then continues
/// ([`continue_trace`]); else a draw at the sample ratio. Never traced when tracing is off.
pub fn decide(header: impl Fn(&str) -> Option<String>) -> TraceDecision {
    if !enabled() {
        return TraceDecision::default();
    }
    match remote_context(header) {
        Some(context) => {
            let traced = context.span().span_context().is_sampled();
            TraceDecision {
                traced,
                parent: traced.then_some(context),
            }
        }
        None => {
            TraceDecision::from(fastrand::f64() < f64::from_bits(RATIO.load(Ordering::Acquire)))
        }
    }
}

/// Runs `work` as decided: its spans, and those of what it calls in this task, are exported
/// only when it is traced.
pub async fn in_scope<F: Future>(decision: impl Into<TraceDecision>, work: F) -> F::Output {
    TRACED.scope(decision.into(), work).await
}

/// Whether the work running in this task is traced (`false` outside any [`in_scope`]).
pub fn traced() -> bool {
    TRACED.try_with(|decision| decision.traced).unwrap_or(false)
}

/// Whether a tracing layer is installed.
fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// The W3C trace-context headers (`traceparent`, and `tracestate` when there is one) of `span`,
/// to put on an outgoing message. Empty when the work is not traced.
pub fn context_headers(span: &Span) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    if traced() {
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

/// Makes `span` (just created, not yet entered) a child of the caller's trace that the running
/// work continues ([`decide`]). None, or not traced: `span` stays a root.
pub fn continue_trace(span: &Span) {
    let parent = TRACED.try_with(|decision| decision.parent.clone());
    if let Ok(Some(parent)) = parent {
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to the trace context `header` finds: a batch carries many traces, its span is
/// the child of one and links the others.
pub fn link_from(span: &Span, header: impl Fn(&str) -> Option<String>) {
    if !traced() {
        return;
    }
    if let Some(context) = remote_context(header) {
        span.add_link(context.span().span_context().clone());
    }
}

/// Links `span` to the trace of `other` (a publish group to the requests that joined it).
pub fn link(span: &Span, other: &Span) {
    if traced() {
        span.add_link(other.context().span().span_context().clone());
    }
}

/// The trace id of `span` in hex, for the logs; `None` when the work is not traced.
pub fn trace_id(span: &Span) -> Option<String> {
    if !traced() {
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
    if traced() {
        span.set_attribute("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.set_status(opentelemetry::trace::Status::error(format!(
                "HTTP {status}"
            )));
        }
    }
}
