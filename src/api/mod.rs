//! HTTP layer: routing, middleware, extractors, DTOs and the envelope. No business rules:
//! handlers parse input, call a service and shape its answer.

pub mod auth;
pub mod body;
pub mod docs;
pub mod error;
pub mod extract;
pub mod flash_sale;
pub mod health;
pub mod middleware;
pub mod orders;
pub mod products;
pub mod request_id;
mod request_metrics;
pub mod response;
pub mod serve;
pub mod validation;

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Uri};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::HttpSettings;
use crate::service::auth::AuthService;
use crate::service::catalog::CatalogService;
use crate::service::flash_sale::FlashSale;
use crate::service::health::HealthService;
use crate::service::orders::OrderService;
use error::{ApiError, ErrorCode};

/// What handlers share: one handle per service, behind one `Arc`. axum clones the state for
/// every request (whatever the handler extracts), so the clone must be one reference count,
/// not a copy of every service's handles.
#[derive(Clone)]
pub struct AppState(Arc<Handlers>);

/// The services the handlers call.
pub struct Handlers {
    pub health: HealthService,
    pub auth: AuthService,
    pub catalog: CatalogService,
    pub orders: OrderService,
    pub flash_sale: FlashSale,
    /// See `extract::ClientIp`.
    pub trusted_proxy_hops: usize,
    /// The message of a 403 for the admin role: how to become an admin in this environment.
    pub admin_hint: String,
}

impl AppState {
    pub fn new(handlers: Handlers) -> AppState {
        AppState(Arc::new(handlers))
    }
}

impl axum::extract::FromRef<AppState> for HealthService {
    fn from_ref(state: &AppState) -> HealthService {
        state.health.clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = Handlers;
    fn deref(&self) -> &Handlers {
        &self.0
    }
}

/// The complete application: every route, the docs, the fallbacks and the middleware stack.
///
/// `extra` is merged before the middleware is applied; tests use it to mount probe routes
/// (a panicking or slow handler) that run through the real stack.
/// `request_log_sample`: the share of finished requests logged at `info` (5xx always).
pub fn router(
    state: AppState,
    config: &HttpSettings,
    request_log_sample: f64,
    extra: Router<AppState>,
) -> Router {
    let (routes, openapi) = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .nest(
            "/api/v1",
            auth::router()
                .merge(products::router())
                .merge(orders::router())
                .merge(flash_sale::router()),
        )
        .split_for_parts();
    let openapi = docs::complete(openapi);
    let swagger_ui: Router<AppState> = SwaggerUi::new(docs::DOCS_PATH)
        .external_url_unchecked(docs::OPENAPI_PATH, openapi)
        .into();
    let app = routes
        .merge(extra)
        .merge(swagger_ui.layer(axum::middleware::map_response(
            docs::with_page_security_headers,
        )))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    middleware::apply(app, config, request_log_sample)
}

/// The internal listener's routes: `/healthz`, `/readyz` and `/metrics` only, behind the same
/// middleware (so its requests are logged and counted like the API's), for Kubernetes probes
/// and Prometheus scrapes. `/metrics` is served here and nowhere else.
pub fn internal_router(
    health: HealthService,
    config: &HttpSettings,
    request_log_sample: f64,
) -> Router {
    let app = Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .route("/metrics", axum::routing::get(health::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(health);
    middleware::apply(app, config, request_log_sample)
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound).with_message(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed)
        .with_message(format!("method {method} not allowed on {}", uri.path()))
}
