//! The OpenAPI document (`/api/v1/openapi.json`) and the Swagger UI page (`/docs`).
//!
//! Route modules annotate their handlers with `#[utoipa::path]` and register them through
//! `utoipa_axum::routes!`, so the document is assembled from the same router that serves
//! requests and cannot drift from it. The Swagger UI assets are compiled into the binary
//! (`utoipa-swagger-ui/vendored`): the page works on a server with no internet access.
//!
//! [`complete`] then adds what every operation shares instead of repeating it in each
//! annotation: the error answers any request can get (400 for bad input, 401 without a valid
//! token, 403 for a non-admin on an admin route, and a `default` envelope for the rest: 408,
//! 413, 429, 500, 503), and the exact shape of a path id.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::ErrorEnvelope;

pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
pub const DOCS_PATH: &str = "/docs";

/// What the Swagger UI page may load: its own scripts, styles and the document from this
/// origin (React sets inline styles; its icons are data: URLs), nothing else, and no other
/// site may frame it (clickjacking a signed-in admin's "Try it out").
const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the browser protections of the docs page (and its assets) to a response.
pub async fn with_page_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            DOCS_CONTENT_SECURITY_POLICY,
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert::<HeaderName>(name, HeaderValue::from_static(value));
    }
    response
}

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

/// The role a route needs, as OpenAPI 3.1 lets a security requirement name it:
/// `security(("bearer" = ["admin"]))`.
const ADMIN_ROLE: &str = "admin";

/// Adds to every operation the answers the middleware and the extractors give any request (see
/// the module docs), and types every `{id}` as the server reads it.
pub fn complete(openapi: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&openapi).expect("the OpenAPI document serializes");
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
        })
    };
    let paths = doc["paths"].as_object_mut().into_iter().flatten();
    for (_, operation) in paths.flat_map(|(_, item)| item.as_object_mut().into_iter().flatten()) {
        let Some(operation) = operation.as_object_mut() else {
            continue;
        };
        let takes_input =
            operation.contains_key("parameters") || operation.contains_key("requestBody");
        let security = operation.get("security").and_then(Value::as_array);
        let secured = security.is_some_and(|requirements| !requirements.is_empty());
        let admin = security
            .into_iter()
            .flatten()
            .filter_map(|requirement| requirement.get("bearer")?.as_array())
            .flatten()
            .any(|role| role == ADMIN_ROLE);
        if let Some(parameters) = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
        {
            for parameter in parameters {
                if parameter["in"] == "path" && parameter["name"] == "id" {
                    parameter["schema"] = json!({
                        "type": "integer", "format": "int64",
                        "minimum": 1, "maximum": crate::domain::ID_MAX,
                    });
                }
            }
        }
        let responses = operation
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("responses is an object");
        if takes_input {
            responses.entry("400").or_insert_with(|| {
                error("invalid input, every bad field named in `data.fields` (10001)")
            });
        }
        if secured {
            responses.entry("401").or_insert_with(|| {
                error("missing, malformed, expired or forged token, or its user is gone (10002)")
            });
        }
        if admin {
            responses
                .entry("403")
                .or_insert_with(|| error("the admin role is required (10003)"));
        }
        responses.entry("default").or_insert_with(|| {
            error("any other error of docs/api.md's table, in the envelope: 408 body too slow and 413 body too large (10001/10010), 429 rate limited (10006, Retry-After), 500 (10007), 503 dependency unavailable or request timeout (10008, Retry-After)")
        });
    }
    doc
}
