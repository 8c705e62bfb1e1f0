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
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::error::{ApiError, ErrorCode};
use crate::config::{CorsOrigins, HttpSettings};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Client-supplied ids longer than this (or with odd characters) are replaced by a fresh one.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, or an empty string outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Wraps `router` in the full middleware stack configured by `config`.
pub fn apply(router: Router, config: &HttpSettings) -> Router {
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
        .on_response(
            DefaultOnResponse::new()
                .level(Level::INFO)
                .latency_unit(tower_http::LatencyUnit::Millis),
        );

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

/// Accepts the client's `X-Request-Id` when it is sane, else makes one; echoes it on the response.
async fn assign_request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_acceptable_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let header_value = HeaderValue::from_str(&id).expect("request ids are visible ASCII");
    request
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value.clone());
    let mut response = REQUEST_ID.scope(id, next.run(request)).await;
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, header_value);
    response
}

fn is_acceptable_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_and_plain() {
        assert!(is_acceptable_request_id("abc-123_x.y:z"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id("has space"));
        assert!(!is_acceptable_request_id(&"a".repeat(129)));
    }
}
