//! The OpenAPI document (`/api/v1/openapi.json`) and the Swagger UI page (`/docs`).
//!
//! Route modules annotate their handlers with `#[utoipa::path]` and register them through
//! `utoipa_axum::routes!`, so the document is assembled from the same router that serves
//! requests and cannot drift from it. The Swagger UI assets are compiled into the binary
//! (`utoipa-swagger-ui/vendored`): the page works on a server with no internet access.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::ErrorEnvelope;

pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
pub const DOCS_PATH: &str = "/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "spike",
        description = "Flash-sale shopping backend. Every body under /api/v1 is the envelope \
                       {code, message, data, request_id}; money is a decimal string.",
    ),
    components(schemas(ErrorEnvelope)),
    modifiers(&BearerAuth),
    tags(
        (name = "service", description = "Liveness and readiness probes"),
        (name = "auth", description = "Registration, login, tokens and the current user"),
        (name = "products", description = "The catalog and its stock"),
        (name = "orders", description = "Regular orders, payment and cancellation"),
        (name = "flash sale", description = "Flash-sale events"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme (HS256 JWT access tokens) that protected routes reference.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
