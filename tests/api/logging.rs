//! Logs: every line a request causes carries its request id; secrets stay out.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use spike::api::AppState;
use spike::api::response::ApiResponse;

use crate::helpers::{CapturedLogs, TestOptions, spawn_app_with};

#[tokio::test]
async fn every_log_line_of_a_request_names_its_request_id() {
    let (logs, _guard) = CapturedLogs::start(tracing::Level::INFO);
    let routes: Router<AppState> = Router::new().route(
        "/api/v1/_probe/log",
        get(|| async {
            tracing::info!("handler says hello");
            tracing::warn!(step = 2, "handler warns");
            ApiResponse::ok("logged")
        }),
    );
    let app = spawn_app_with(TestOptions::default().routes(routes)).await;

    let response = app
        .get_with_header("/api/v1/_probe/log", "x-request-id", "log-probe-7")
        .await;
    assert_eq!(response.status(), 200);

    let request_lines: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|line| line.to_string().contains("_probe/log"))
        .collect();
    // The two handler lines and the access line.
    assert_eq!(request_lines.len(), 3, "{}", logs.text());
    for line in &request_lines {
        let spans = line["spans"].as_array().expect("span list in JSON logs");
        let http = spans
            .iter()
            .find(|s| s["name"] == "http")
            .expect("http span");
        assert_eq!(http["request_id"], "log-probe-7", "{line}");
    }
    assert!(
        request_lines
            .iter()
            .any(|l| l["message"] == "finished processing request" && l["status"] == 200),
        "access line with status: {}",
        logs.text()
    );
}

#[tokio::test]
async fn credentials_in_urls_and_authorization_headers_are_not_logged() {
    let (logs, _guard) = CapturedLogs::start(tracing::Level::DEBUG);
    let app = spawn_app_with(TestOptions::default()).await;
    app.get_with_header("/readyz", "authorization", "Bearer very-secret-token-value")
        .await;
    let text = logs.text();
    assert!(!text.is_empty(), "something was logged");
    assert!(
        !text.contains("very-secret-token-value"),
        "bearer token leaked"
    );
    // The database and AMQP URLs contain passwords ("spike", "guest"); only the masked forms may
    // appear.
    let db_url = app.config.database.url.expose();
    assert!(!text.contains(db_url), "database URL with password leaked");
    assert!(
        !text.contains(app.config.amqp.url.expose()),
        "AMQP URL with password leaked"
    );
    assert!(
        !text.contains(app.config.auth.jwt_secret.expose()),
        "JWT secret leaked"
    );
}

#[tokio::test]
async fn request_lines_are_sampled_but_server_errors_are_always_logged() {
    let (logs, _guard) = CapturedLogs::start(tracing::Level::INFO);
    let routes: Router<AppState> = Router::new()
        .route(
            "/api/v1/_probe/fine",
            get(|| async { ApiResponse::ok("fine") }),
        )
        .route(
            "/api/v1/_probe/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        );
    let app = spawn_app_with(
        TestOptions::default()
            .routes(routes)
            .env("SPIKE_LOG_REQUEST_SAMPLE", "0"),
    )
    .await;
    for _ in 0..20 {
        assert_eq!(app.get("/api/v1/_probe/fine").await.status(), 200);
    }
    assert_eq!(app.get("/api/v1/_probe/broken").await.status(), 500);

    let access: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|line| line["message"] == "finished processing request")
        .collect();
    assert_eq!(access.len(), 1, "only the 5xx: {}", logs.text());
    assert_eq!(access[0]["status"], 500);
}

#[tokio::test]
async fn passwords_tokens_and_cookies_never_reach_the_logs_even_at_debug() {
    let (logs, _guard) = CapturedLogs::start(tracing::Level::DEBUG);
    let app = spawn_app_with(TestOptions::default()).await;
    let password = "Pass-word-never-logged-7";
    let email = format!("secrets-{}@example.com", uuid::Uuid::new_v4().simple());
    assert_eq!(app.register(&email, password).await.status(), 201);
    // A wrong password too: a failed login is the likeliest to be logged with its input.
    let wrong = "Wrong-password-never-logged-8";
    assert_eq!(app.login(&email, wrong).await.status(), 401);
    let tokens = crate::helpers::envelope(app.login(&email, password).await).await["data"].clone();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let me = app
        .client
        .get(app.url("/api/v1/users/me"))
        .bearer_auth(&access)
        .header("cookie", "session=cookie-value-never-logged")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let renewed = crate::helpers::envelope(
        app.post_json(
            "/api/v1/auth/refresh",
            &serde_json::json!({ "refresh_token": refresh }),
        )
        .await,
    )
    .await["data"]
        .clone();
    let new_refresh = renewed["refresh_token"].as_str().unwrap().to_owned();
    // The spent one again (reuse detection logs a warning) and a logout.
    app.post_json(
        "/api/v1/auth/refresh",
        &serde_json::json!({ "refresh_token": refresh }),
    )
    .await;
    app.post_json(
        "/api/v1/auth/logout",
        &serde_json::json!({ "refresh_token": new_refresh }),
    )
    .await;

    let text = logs.text();
    assert!(
        text.matches("finished processing request").count() >= 6,
        "the requests were logged: {text}"
    );
    for (what, secret) in [
        ("password", password),
        ("wrong password", wrong),
        ("access token", access.as_str()),
        ("refresh token", refresh.as_str()),
        ("renewed refresh token", new_refresh.as_str()),
        ("cookie", "cookie-value-never-logged"),
    ] {
        assert!(!text.contains(secret), "the {what} leaked into the logs");
    }
    // A JWT's signature alone is enough to forge nothing, but its payload names the user: no
    // segment of the token may appear either.
    for segment in access.split('.') {
        assert!(!text.contains(segment), "part of the access token leaked");
    }
}
