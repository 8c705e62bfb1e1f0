//! The middleware stack around every route, outermost first:
//! request id (and the trace decision) → trace span → request metrics (`request_metrics`) →
//! CORS → gzip → body buffer → request timeout → panic recovery → body limit.
//!
//! The request id is stored in a task-local for the duration of the request, so envelopes built
//! anywhere below (handlers, the timeout and panic handlers, the 404/405 fallbacks) carry it
//! without threading it through every function.

use std::any::Any;
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Response as HttpResponse;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnResponse, OnResponse, TraceLayer};
use tracing::field::Empty;
use tracing::{Level, Span};

use super::error::{ApiError, ErrorCode};
use super::request_id::{REQUEST_ID_HEADER, assign_request_id};
use super::request_metrics::RecordMetricsLayer;
use crate::config::{CorsOrigins, HttpSettings};
use crate::service::flash_sale::MAX_RESULT_WAIT;
use crate::telemetry::traces;

const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// Wraps `router` in the full middleware stack configured by `config`.
/// `sample` is the share of finished requests logged at `info` (`SampledAccessLog`).
pub fn apply(router: Router, config: &HttpSettings, sample: f64) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<Body>| {
            let request_id = request
                .headers()
                .get(&REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            // The path only: query strings and headers (Authorization!) stay out of the logs.
            let span = tracing::info_span!(
                "http",
                request_id,
                trace_id = Empty,
                method = %request.method(),
                path = request.uri().path(),
                "otel.name" = Empty,
                "otel.kind" = Empty,
            );
            if traces::traced() {
                describe_for_traces(&span, request);
            }
            span
        })
        .on_request(())
        .on_response(SampledAccessLog { sample });

    let stack = ServiceBuilder::new()
        .layer(middleware::from_fn(assign_request_id))
        .layer(trace)
        .layer(RecordMetricsLayer)
        .layer(cors(&config.cors_origins))
        .layer(CompressionLayer::new())
        .layer(BufferBodyLayer(BodyReading {
            limit: config.body_limit,
            timeout: config.body_timeout,
        }))
        .layer(RequestTimeoutLayer {
            limit: config.request_timeout,
            held_limit: config.request_timeout + MAX_RESULT_WAIT,
        })
        .layer(CatchPanicLayer::custom(handler_panicked))
        .layer(DefaultBodyLimit::max(config.body_limit));
    router.layer(stack)
}

/// Makes the request's span a server span named after its route, a child of the caller's trace
/// when the request carries a `traceparent`, and puts its trace id in the logs.
fn describe_for_traces(span: &Span, request: &Request<Body>) {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    span.record("otel.name", format!("{} {route}", request.method()));
    span.record("otel.kind", "server");
    traces::continue_trace(span);
    if let Some(trace_id) = traces::trace_id(span) {
        span.record("trace_id", trace_id);
    }
}

/// The access log line, "finished processing request" with the status and the latency in ms, for
/// a `sample` share of requests: at flash-sale rates a line per request costs more than the request
/// (`/healthz` runs at about half its rate with one). Answers with a 5xx are always logged, and
/// so is everything the request logs itself at `warn` or above.
#[derive(Debug, Clone, Copy)]
struct SampledAccessLog {
    sample: f64,
}

impl<B> OnResponse<B> for SampledAccessLog {
    fn on_response(self, response: &HttpResponse<B>, latency: Duration, span: &Span) {
        let status = response.status();
        traces::record_status(span, status.as_u16());
        if status.is_server_error() || (self.sample > 0.0 && fastrand::f64() < self.sample) {
            DefaultOnResponse::new()
                .level(Level::INFO)
                .latency_unit(tower_http::LatencyUnit::Millis)
                .on_response(response, latency, span);
        }
    }
}

/// How much of a request body `BufferBodyLayer` reads, and for how long.
#[derive(Debug, Clone, Copy)]
struct BodyReading {
    limit: usize,
    timeout: Duration,
}

/// Reads the whole request body before any handler runs, for two reasons. A handler that answers
/// early (a 401 from the token check, a 404 for another buyer's order) would otherwise leave the
/// body unread, and hyper then closes the keep-alive connection under a client that is about to
/// reuse it: its next request fails with "server disconnected". And a client that stalls
/// mid-body gets 408 after `SPIKE_HTTP_BODY_TIMEOUT` instead of holding a handler until the
/// request timeout blames a dependency (503).
///
/// A hand-written layer rather than `middleware::from_fn`, which boxes a future for every
/// request: most requests (every GET, every buy) have no body and go straight through.
#[derive(Debug, Clone, Copy)]
struct BufferBodyLayer(BodyReading);

impl<S> Layer<S> for BufferBodyLayer {
    type Service = BufferBody<S>;

    fn layer(&self, inner: S) -> BufferBody<S> {
        BufferBody {
            inner,
            reading: self.0,
        }
    }
}

#[derive(Debug, Clone)]
struct BufferBody<S> {
    inner: S,
    reading: BodyReading,
}

impl<S> Service<Request> for BufferBody<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if HttpBody::size_hint(request.body()).exact() == Some(0) {
            return Either::Left(self.inner.call(request));
        }
        // The service that was polled ready handles this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let reading = self.reading;
        Either::Right(Box::pin(async move {
            match read_body(request, reading).await {
                Ok(request) => inner.call(request).await,
                Err(refusal) => Ok(refusal),
            }
        }))
    }
}

/// The request with its body in memory, or the answer when it cannot be read.
async fn read_body(request: Request, reading: BodyReading) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, reading.limit).collect();
    match tokio::time::timeout(reading.timeout, read).await {
        Ok(Ok(collected)) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            Err(ApiError::new(ErrorCode::PayloadTooLarge).into_response())
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "request body could not be read");
            Err(ApiError::new(ErrorCode::InvalidArgument)
                .with_message("request body could not be read")
                .into_response())
        }
        Err(_elapsed) => {
            tracing::info!(timeout = ?reading.timeout, "request body not received in time");
            Err(ApiError::new(ErrorCode::RequestTimeout).into_response())
        }
    }
}

fn cors(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            IDEMPOTENCY_KEY_HEADER,
            REQUEST_ID_HEADER,
        ])
        .expose_headers([REQUEST_ID_HEADER, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// Answers 503/10008 for a request still running after `http_request_timeout`. A held result
/// request (`?wait=N`) gets [`MAX_RESULT_WAIT`] more: holding the answer is its job.
#[derive(Debug, Clone, Copy)]
struct RequestTimeoutLayer {
    limit: Duration,
    held_limit: Duration,
}

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> RequestTimeout<S> {
        RequestTimeout {
            inner,
            limits: *self,
        }
    }
}

#[derive(Debug, Clone)]
struct RequestTimeout<S> {
    inner: S,
    limits: RequestTimeoutLayer,
}

impl<S, B> Service<Request> for RequestTimeout<S>
where
    S: Service<Request, Response = HttpResponse<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let limit = if asks_to_wait(request.uri().query()) {
            self.limits.held_limit
        } else {
            self.limits.limit
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(answered) => answered.map(|response| response.map(Body::new)),
                Err(_) => {
                    tracing::warn!("request timed out");
                    Ok(ApiError::new(ErrorCode::Unavailable)
                        .with_message("request timed out, retry later")
                        .with_retry_after(1)
                        .into_response())
                }
            }
        })
    }
}

/// Whether the query string carries `wait` (only the result route accepts it).
fn asks_to_wait(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("wait"))
    })
}

fn handler_panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = detail, "handler panicked");
    ApiError::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wait_parameter_earns_the_longer_timeout() {
        assert!(asks_to_wait(Some("wait=30")));
        assert!(asks_to_wait(Some("x=1&wait=5")));
        assert!(asks_to_wait(Some("wait")));
        assert!(!asks_to_wait(None));
        assert!(!asks_to_wait(Some("waiting=1")));
        assert!(!asks_to_wait(Some("page=2&await=3")));
    }
}
