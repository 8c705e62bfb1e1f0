//! Every error is the docs/api.md envelope with the right status and code, including the ones the
//! framework produces (unknown route, wrong method, malformed JSON, oversized body, timeouts,
//! panics); request ids are echoed.

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use serde::Deserialize;
use spike::api::AppState;
use spike::api::extract::ApiJson;
use spike::api::response::ApiResponse;

use crate::helpers::{TestOptions, envelope, spawn_app, spawn_app_with};

#[derive(Deserialize, serde::Serialize)]
struct Greeting {
    name: String,
}

/// Probe routes mounted inside the real middleware stack.
fn probe_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/_probe/echo",
            post(|ApiJson(greeting): ApiJson<Greeting>| async move { ApiResponse::ok(greeting) }),
        )
        .route("/api/v1/_probe/panic", get(panicking_handler))
        .route(
            "/api/v1/_probe/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                ApiResponse::ok("slow")
            }),
        )
}

async fn panicking_handler() -> ApiResponse<()> {
    panic!("boom: internal detail")
}

async fn probe_app() -> crate::helpers::TestApp {
    spawn_app_with(
        TestOptions::default()
            .routes(probe_routes())
            .env("SPIKE_HTTP_BODY_LIMIT", "1024")
            .env("SPIKE_HTTP_REQUEST_TIMEOUT", "500ms"),
    )
    .await
}

#[tokio::test]
async fn unknown_route_is_404_envelope() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/no-such-thing").await;
    assert_eq!(response.status(), 404);
    let body = envelope(response).await;
    assert_eq!(body["code"], 10004);
    assert!(body["data"].is_null());
}

#[tokio::test]
async fn wrong_method_is_405_envelope() {
    let app = spawn_app().await;
    let response = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body = envelope(response).await;
    assert_eq!(body["code"], 10001);
}

#[tokio::test]
async fn valid_json_reaches_the_handler() {
    let app = probe_app().await;
    let response = app
        .post_raw("/api/v1/_probe/echo", r#"{"name":"ada"}"#)
        .await;
    assert_eq!(response.status(), 200);
    let body = envelope(response).await;
    assert_eq!(body["code"], 0);
    assert_eq!(body["message"], "OK");
    assert_eq!(body["data"]["name"], "ada");
}

#[tokio::test]
async fn malformed_json_is_400_envelope() {
    let app = probe_app().await;
    for bad in [r#"{"name":"#, "not json", r#"{"name": 42}"#, r#"{}"#, ""] {
        let response = app.post_raw("/api/v1/_probe/echo", bad).await;
        assert_eq!(response.status(), 400, "body {bad:?}");
        let body = envelope(response).await;
        assert_eq!(body["code"], 10001, "body {bad:?}");
    }
}

#[tokio::test]
async fn missing_content_type_is_400_envelope() {
    let app = probe_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/_probe/echo"))
        .body(r#"{"name":"ada"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(envelope(response).await["code"], 10001);
}

#[tokio::test]
async fn oversized_body_is_413_envelope() {
    let app = probe_app().await;
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(4096));
    let response = app.post_raw("/api/v1/_probe/echo", big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(envelope(response).await["code"], 10010);

    // Same without a Content-Length (chunked): the limit applies while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(br#"{"name":""#.to_vec()),
        Ok(vec![b'x'; 4096]),
        Ok(br#""}"#.to_vec()),
    ];
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = app.post_raw("/api/v1/_probe/echo", stream).await;
    assert_eq!(response.status(), 413);
    assert_eq!(envelope(response).await["code"], 10010);
}

#[tokio::test]
async fn panic_is_500_envelope_without_details() {
    let app = probe_app().await;
    let response = app.get("/api/v1/_probe/panic").await;
    assert_eq!(response.status(), 500);
    let body = envelope(response).await;
    assert_eq!(body["code"], 10007);
    assert_eq!(body["message"], "internal error");
    assert!(
        !body.to_string().contains("boom"),
        "panic detail leaked: {body}"
    );
    // The server survives the panic.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn slow_request_times_out_with_503_envelope() {
    let app = probe_app().await;
    let response = app.get("/api/v1/_probe/slow").await;
    assert_eq!(response.status(), 503);
    let body = envelope(response).await;
    assert_eq!(body["code"], 10008);
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app().await;

    let response = app
        .get_with_header("/api/v1/nothing-here", "x-request-id", "client-chosen-42")
        .await;
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
    assert_eq!(envelope(response).await["request_id"], "client-chosen-42");

    let response = app.get("/readyz").await;
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        uuid::Uuid::parse_str(&generated).is_ok(),
        "generated id {generated}"
    );
    assert_eq!(envelope(response).await["request_id"], generated.as_str());

    // An unreasonable id (too long) is replaced rather than echoed into logs and responses.
    let response = app
        .get_with_header("/readyz", "x-request-id", &"x".repeat(300))
        .await;
    let replaced = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(replaced).is_ok());

    // Two requests never share a generated id.
    let a = app.get("/healthz").await.headers()["x-request-id"].clone();
    let b = app.get("/healthz").await.headers()["x-request-id"].clone();
    assert_ne!(a, b);
}

#[tokio::test]
async fn responses_are_gzipped_on_request_and_cors_preflight_is_answered() {
    let app = spawn_app().await;
    let response = app
        .get_with_header("/api/v1/openapi.json", "accept-encoding", "gzip")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");

    let response = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/orders"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn openapi_document_and_docs_page_are_served() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"]["/healthz"]["get"].is_object());
    assert!(doc["paths"]["/readyz"]["get"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let response = app.get("/docs/").await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(
        html.to_lowercase().contains("swagger"),
        "docs page is Swagger UI"
    );
    // The UI's assets are served by the binary itself: no internet needed.
    let response = app.get("/docs/swagger-ui.css").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_openapi_document_tells_what_the_server_does() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let responses = &operation["responses"];
            let what = format!("{method} {path}");
            assert!(responses["default"].is_object(), "{what}: no default error");
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if secured {
                assert!(responses["401"].is_object(), "{what}: no 401");
            }
            if operation["parameters"].is_array() || operation["requestBody"].is_object() {
                assert!(responses["400"].is_object(), "{what}: no 400");
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["name"] == "id" {
                    assert_eq!(parameter["schema"]["minimum"], 1, "{what}");
                }
                if parameter["name"] == "page" || parameter["name"] == "page_size" {
                    let types = parameter["schema"]["type"].to_string();
                    assert!(types.contains("integer"), "{what}: {parameter}");
                }
                if parameter["name"] == "Idempotency-Key" {
                    assert_eq!(parameter["schema"]["maxLength"], 128, "{what}");
                }
            }
        }
    }
    assert!(operations >= 27, "{operations}");
    let admin_only = &paths["/api/v1/products"]["post"];
    assert!(admin_only["responses"]["403"].is_object());
    assert_eq!(admin_only["security"][0]["bearer"][0], "admin");

    let schemas = &doc["components"]["schemas"];
    let required = |name: &str| schemas[name]["required"].to_string();
    assert!(
        required("Registration").contains("email") && required("Registration").contains("password")
    );
    assert!(required("NewProduct").contains("title") && required("NewProduct").contains("price"));
    assert_eq!(schemas["ProductChanges"]["minProperties"], 1);
    let ready =
        doc["paths"]["/readyz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            .to_string();
    assert!(
        ready.contains("Envelope"),
        "/readyz answers in the envelope: {ready}"
    );
}
