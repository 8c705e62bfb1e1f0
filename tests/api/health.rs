//! `/healthz`, `/readyz`, and start-up against dependencies that are down.

use std::time::Duration;

use crate::helpers::{
    TcpProxy, TestOptions, TestResources, closed_port, envelope, spawn_app, spawn_app_with,
    test_config,
};
use spike::startup::Application;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_is_200_when_every_dependency_answers() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body = envelope(response).await;
    assert_eq!(body["code"], 0);
    assert_eq!(body["data"]["status"], "ready");
    for dependency in ["mysql", "redis", "rabbitmq"] {
        assert_eq!(body["data"]["checks"][dependency], "ok", "{body}");
    }
}

#[tokio::test]
async fn readyz_is_503_naming_redis_when_redis_goes_away() {
    let proxy = TcpProxy::start("127.0.0.1:6379").await;
    let app = spawn_app_with(TestOptions::default().redis_through(proxy.port)).await;
    assert_eq!(
        app.get("/readyz").await.status(),
        200,
        "ready while Redis is reachable"
    );

    proxy.cut();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body = envelope(response).await;
    assert_eq!(body["code"], 10008);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("redis"), "message names redis: {message}");
    assert!(
        !message.contains("mysql") && !message.contains("rabbitmq"),
        "{message}"
    );
    assert_eq!(body["data"]["status"], "unavailable");
    assert_ne!(body["data"]["checks"]["redis"], "ok");
    assert_eq!(body["data"]["checks"]["mysql"], "ok");
    assert_eq!(body["data"]["checks"]["rabbitmq"], "ok");

    // Liveness is unaffected: the process itself is fine.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn start_up_gives_up_on_a_closed_redis_port_after_the_startup_timeout() {
    let resources = TestResources::create().await;
    let port = closed_port().await;
    let mut overrides = std::collections::HashMap::new();
    overrides.insert(
        "SPIKE_REDIS_URL".to_string(),
        format!("redis://127.0.0.1:{port}"),
    );
    overrides.insert("SPIKE_REDIS_MODE".to_string(), "standalone".to_string());
    overrides.insert("SPIKE_STARTUP_TIMEOUT".to_string(), "1s".to_string());
    let config = test_config(&resources, &overrides).unwrap();

    let started = std::time::Instant::now();
    let error = match Application::build(config).await {
        Ok(_) => panic!("start-up must fail while Redis is down"),
        Err(error) => error,
    };
    assert!(
        error.to_string().contains("redis"),
        "error names redis: {error}"
    );
    // Retries happened, bounded by the timeout (loose bounds: this is not a timing test).
    assert!(started.elapsed() < Duration::from_secs(30));
}
