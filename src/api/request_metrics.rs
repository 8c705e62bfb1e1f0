//! The request metrics: every answer counted in `spike_http_requests_total{method, route,
//! status}` and timed in `spike_http_request_duration_seconds{method, route}`.
//!
//! `route` is the route *template* (`/api/v1/orders/{id}`), so ids never become labels; a request
//! no route matched counts as `unmatched` and an unusual method as `other`, which keeps every
//! label set closed. A hand-written layer (no boxed future), and the metric handles of each
//! (method, route, status) are looked up once per thread: building a labelled key and finding it
//! in the registry costs several thousand instructions, a noticeable share of a `/healthz` answer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, Response, StatusCode};
use metrics::{Counter, Histogram};
use tower::{Layer, Service};

use crate::telemetry::metrics::names;

const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, Copy)]
pub(super) struct RecordMetricsLayer;

impl<S> Layer<S> for RecordMetricsLayer {
    type Service = RecordMetrics<S>;

    fn layer(&self, inner: S) -> RecordMetrics<S> {
        RecordMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub(super) struct RecordMetrics<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for RecordMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RecordedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The router puts the matched template in the request (this layer runs per route).
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = method_label(request.method());
        RecordedResponse {
            inner: self.inner.call(request),
            method,
            route: Some(route),
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, recorded when it is ready.
    pub(super) struct RecordedResponse<F> {
        #[pin]
        inner: F,
        method: &'static str,
        // Taken when recorded, so a future polled after completion records nothing twice.
        route: Option<Option<MatchedPath>>,
        started: Instant,
    }
}

impl<F, E, ResBody> Future for RecordedResponse<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(route)) = (&result, this.route.take()) {
            let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            record(
                this.method,
                route,
                response.status(),
                this.started.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(result)
    }
}

/// The handles of one (method, route, status).
struct Handles {
    method: &'static str,
    status: StatusCode,
    requests: Counter,
    duration: Histogram,
}

thread_local! {
    /// Route template → the handles seen on this thread. Bounded: routes × methods × statuses.
    static HANDLES: RefCell<HashMap<Box<str>, Vec<Handles>>> = RefCell::new(HashMap::new());
}

fn record(method: &'static str, route: &str, status: StatusCode, seconds: f64) {
    HANDLES.with(|cache| {
        let mut cache = cache.borrow_mut();
        // One lookup on the hot path; a route seen for the first time is inserted after.
        if let Some(known) = cache.get_mut(route) {
            record_into(known, method, route, status, seconds);
            return;
        }
        let mut known = Vec::new();
        record_into(&mut known, method, route, status, seconds);
        cache.insert(route.into(), known);
    });
}

/// Counts and times one answer with the handles of its (method, status), made on first use.
fn record_into(
    known: &mut Vec<Handles>,
    method: &'static str,
    route: &str,
    status: StatusCode,
    seconds: f64,
) {
    let position = known
        .iter()
        .position(|h| h.method == method && h.status == status)
        .unwrap_or_else(|| {
            known.push(handles(method, route, status));
            known.len() - 1
        });
    let handles = &known[position];
    handles.requests.increment(1);
    handles.duration.record(seconds);
}

fn handles(method: &'static str, route: &str, status: StatusCode) -> Handles {
    let route = route.to_owned();
    Handles {
        method,
        status,
        requests: metrics::counter!(
            names::HTTP_REQUESTS,
            "method" => method,
            "route" => route.clone(),
            "status" => status.as_str().to_owned(),
        ),
        duration: metrics::histogram!(names::HTTP_DURATION, "method" => method, "route" => route),
    }
}

/// The method as a label from a closed set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
