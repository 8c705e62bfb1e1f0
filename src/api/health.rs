//! The service endpoints outside `/api/v1`: liveness (`/healthz`), readiness (`/readyz`) and
//! Prometheus metrics (`/metrics`). The public port serves the first two; the internal listener
//! of every role serves all three (`/metrics` only there).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorCode, ErrorEnvelope};
use super::response::{ApiResponse, Envelope};
use crate::service::health::HealthService;
use crate::telemetry;

/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Readiness report: `status` is `ready` or `unavailable`; `checks` maps each dependency to
/// `ok` or the reason it failed; `stalled_tasks` maps each background task of this process that
/// is down or has not completed a pass for too long to why (empty when all run).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessReport {
    #[schema(example = "ready")]
    pub status: &'static str,
    #[schema(example = json!({"mysql": "ok", "redis": "ok", "rabbitmq": "ok"}))]
    pub checks: BTreeMap<&'static str, String>,
    #[schema(example = json!({}))]
    pub stalled_tasks: BTreeMap<&'static str, String>,
}

/// The process is alive. Checks nothing else, so an orchestrator never restarts a healthy
/// process because a dependency is down.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    responses((status = 200, description = "process alive", body = HealthStatus))
)]
pub async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// Ready to serve: MySQL, Redis and RabbitMQ all answer and no background task of the process
/// is stalled. Otherwise 503/10008 naming the failing ones in `message` and in `data.checks` /
/// `data.stalled_tasks`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "every dependency answers", body = Envelope<ReadinessReport>),
        (status = 503, description = "a dependency is down or a background task stalled", body = ErrorEnvelope),
    )
)]
pub async fn readyz(State(health): State<HealthService>) -> Response {
    let readiness = health.readiness().await;
    let checks = readiness
        .checks
        .iter()
        .map(|(dependency, result)| {
            let outcome = match result {
                Ok(()) => "ok".to_owned(),
                Err(reason) => reason.clone(),
            };
            (dependency.name(), outcome)
        })
        .collect();
    let stalled_tasks = readiness
        .stalled
        .iter()
        .map(|stalled| (stalled.task, stalled.reason.clone()))
        .collect();
    if readiness.is_ready() {
        return ApiResponse::ok(ReadinessReport {
            status: "ready",
            checks,
            stalled_tasks,
        })
        .into_response();
    }
    let mut failing: Vec<String> = readiness
        .failing()
        .iter()
        .map(|d| d.name().to_owned())
        .collect();
    failing.extend(
        readiness
            .stalled
            .iter()
            .map(|stalled| format!("background task {} ({})", stalled.task, stalled.reason)),
    );
    let report = ReadinessReport {
        status: "unavailable",
        checks,
        stalled_tasks,
    };
    ApiError::new(ErrorCode::Unavailable)
        .with_message(format!("not ready: {} unavailable", failing.join(", ")))
        .with_details(serde_json::to_value(report).expect("report serializes"))
        .with_retry_after(1)
        .into_response()
}

/// Every metric of this process in the Prometheus text format: HTTP traffic, flash-sale
/// outcomes, cache, publishes, consumers, queue depths, outbox, reconciler drift, DB pool, build
/// (docs/observability.md lists the families). Internal listener only: not in the public API
/// or its OpenAPI document.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        telemetry::metrics::render(),
    )
}
