//! The middleware stack around every route, outermost first:
//! request id → trace span → CORS → gzip → request timeout → panic recovery → body limit.
//!
//! The request id is stored in a task-local for the duration of the request, so envelopes built
//! anywhere below (handlers, the timeout and panic handlers, the 404/405 fallbacks) carry it
//! without threading it through every function.

use std::any::Any;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Response as HttpResponse;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnResponse, OnResponse, TraceLayer};
use tracing::{Level, Span};

use super::error::{ApiError, ErrorCode};
use super::request_id::{REQUEST_ID_HEADER, assign_request_id};
use crate::config::{CorsOrigins, HttpSettings};

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
            tracing::info_span!(
                "http",
                request_id,
                method = %request.method(),
                path = request.uri().path(),
            )
        })
        .on_request(())
        .on_response(SampledAccessLog { sample });

    let stack = ServiceBuilder::new()
        .layer(middleware::from_fn(assign_request_id))
        .layer(trace)
        .layer(cors(&config.cors_origins))
        .layer(CompressionLayer::new())
        .layer(HandleErrorLayer::new(request_timed_out))
        .layer(TimeoutLayer::new(config.request_timeout))
        .layer(CatchPanicLayer::custom(handler_panicked))
        .layer(DefaultBodyLimit::max(config.body_limit));
    router.layer(stack)
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
        if status.is_server_error() || (self.sample > 0.0 && fastrand::f64() < self.sample) {
            DefaultOnResponse::new()
                .level(Level::INFO)
                .latency_unit(tower_http::LatencyUnit::Millis)
                .on_response(response, latency, span);
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

async fn request_timed_out(error: tower::BoxError) -> Response {
    if error.is::<Elapsed>() {
        tracing::warn!("request timed out");
        ApiError::new(ErrorCode::Unavailable)
            .with_message("request timed out, retry later")
            .with_retry_after(1)
            .into_response()
    } else {
        tracing::error!(%error, "unhandled middleware error");
        ApiError::internal().into_response()
    }
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
