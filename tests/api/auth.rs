//! Registration, login, tokens, refresh rotation and reuse detection, logout, roles, rate limits.

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use spike::api::AppState;
use spike::api::extract::AdminUser;
use spike::api::response::ApiResponse;
use spike::config::{BootstrapAdmin, Secret};
use spike::startup::Application;

use std::time::Duration;

use crate::helpers::{
    CapturedLogs, TEST_PASSWORD, TestApp, TestOptions, envelope, spawn_app, spawn_app_with,
    wait_for,
};

async fn expect_error(response: reqwest::Response, status: u16, code: u64) -> Value {
    assert_eq!(response.status(), status);
    let body = envelope(response).await;
    assert_eq!(body["code"], code, "{body}");
    body
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/api/v1/auth/refresh", &json!({"refresh_token": token}))
        .await
}

#[tokio::test]
async fn register_login_and_read_me() {
    let app = spawn_app().await;
    let response = app.register("  Ada@Example.COM ", "correct horse").await;
    assert_eq!(response.status(), 201);
    let user = envelope(response).await["data"].clone();
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["role"], "user");
    assert!(user["id"].is_u64());
    assert!(user.get("password_hash").is_none());

    let response = app.login("ADA@example.com", "correct horse").await;
    assert_eq!(response.status(), 200);
    let tokens = envelope(response).await["data"].clone();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert!(tokens["refresh_token"].as_str().unwrap().len() >= 43);

    let response = app
        .get_authed("/api/v1/users/me", tokens["access_token"].as_str().unwrap())
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(envelope(response).await["data"], user);
}

#[tokio::test]
async fn duplicate_email_is_409_whatever_its_case() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("bob@example.com", "password-1").await.status(),
        201
    );
    expect_error(
        app.register("BOB@Example.com", "password-2").await,
        409,
        20001,
    )
    .await;
}

#[tokio::test]
async fn invalid_registrations_name_the_fields() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "long enough"}),
            vec!["email"],
        ),
        (
            json!({"email": "a@example.com", "password": "short"}),
            vec!["password"],
        ),
        (
            json!({"email": "a@example.com", "password": "x".repeat(129)}),
            vec!["password"],
        ),
        (
            json!({"email": "nope", "password": "1234567"}),
            vec!["email", "password"],
        ),
        (json!({}), vec!["email", "password"]),
    ];
    for (body, fields) in cases {
        let response = app.post_json("/api/v1/auth/register", &body).await;
        let error = expect_error(response, 400, 10001).await;
        let reported: Vec<&str> = error["data"]["fields"]
            .as_object()
            .unwrap_or_else(|| panic!("fields for {body}: {error}"))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(reported, fields, "{body}");
    }
    // 128 characters is still fine.
    let ok = app.register("long@example.com", &"x".repeat(128)).await;
    assert_eq!(ok.status(), 201);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    let (_, email) = app.signed_in_user().await;
    let wrong = expect_error(app.login(&email, "not the password").await, 401, 20002).await;
    let unknown = expect_error(
        app.login("nobody@example.com", TEST_PASSWORD).await,
        401,
        20002,
    )
    .await;
    assert_eq!(wrong["message"], unknown["message"]);
}

fn encode_segment(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn sign(app: &TestApp, claims: &Value, secret: &[u8]) -> String {
    let _ = app;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn bad_access_tokens_are_401() {
    let app = spawn_app().await;
    let (tokens, _) = app.signed_in_user().await;
    let valid = tokens["access_token"].as_str().unwrap().to_owned();
    let secret = app.config.auth.jwt_secret.expose().as_bytes().to_vec();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |exp: u64, role: &str| json!({"sub": "1", "role": role, "iat": now - 3600, "exp": exp, "jti": "j"});

    let expired = sign(&app, &claims(now - 60, "user"), &secret);
    let other_secret = sign(
        &app,
        &claims(now + 600, "user"),
        b"some-other-secret-some-other-secret",
    );
    let alg_none = format!(
        "{}.{}.",
        encode_segment(&json!({"alg": "none", "typ": "JWT"})),
        encode_segment(&claims(now + 600, "admin"))
    );
    // A valid token whose payload was swapped for one claiming the admin role.
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[1] = encode_segment(&claims(now + 600, "admin"));
    let tampered = parts.join(".");
    let no_exp = sign(
        &app,
        &json!({"sub": "1", "role": "user", "iat": now, "jti": "j"}),
        &secret,
    );
    // Signed with the right key for a real user, but issued or valid only in an hour.
    let me = envelope(app.get_authed("/api/v1/users/me", &valid).await).await;
    let sub = me["data"]["id"].to_string();
    let issued_later = sign(
        &app,
        &json!({"sub": sub, "role": "user", "iat": now + 3600, "exp": now + 7200, "jti": "j"}),
        &secret,
    );
    let valid_later = sign(
        &app,
        &json!({"sub": sub, "role": "user", "iat": now, "nbf": now + 3600, "exp": now + 7200, "jti": "j"}),
        &secret,
    );
    let fine = sign(
        &app,
        &json!({"sub": sub, "role": "user", "iat": now, "exp": now + 600, "jti": "j"}),
        &secret,
    );
    // Correctly signed, but not what this service issues (issue 23): a life of ten years, a
    // refresh token's type (header or claim), a 10 KB payload.
    let ten_years = sign(
        &app,
        &json!({"sub": sub, "role": "user", "iat": now, "exp": now + 10 * 365 * 86_400, "jti": "j"}),
        &secret,
    );
    let mut refresh_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    refresh_header.typ = Some("refresh".into());
    let refresh_typed = jsonwebtoken::encode(
        &refresh_header,
        &json!({"sub": sub, "role": "user", "iat": now, "exp": now + 600, "jti": "j"}),
        &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
    )
    .unwrap();
    let refresh_claim = sign(
        &app,
        &json!({"sub": sub, "role": "user", "iat": now, "exp": now + 600, "jti": "j", "typ": "refresh"}),
        &secret,
    );
    let padded = sign(
        &app,
        &json!({"sub": sub, "role": "user", "iat": now, "exp": now + 600, "jti": "j", "pad": "x".repeat(10_000)}),
        &secret,
    );
    assert_eq!(
        app.get_authed("/api/v1/users/me", &fine).await.status(),
        200,
        "the forged-in-the-future tokens differ from a good one only in their times"
    );

    let unauthenticated = [
        None,
        Some("Bearer".to_owned()),
        Some("Bearer garbage".to_owned()),
        Some(format!("Basic {valid}")),
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {other_secret}")),
        Some(format!("Bearer {alg_none}")),
        Some(format!("Bearer {tampered}")),
        Some(format!("Bearer {no_exp}")),
        Some(format!("Bearer {issued_later}")),
        Some(format!("Bearer {valid_later}")),
        Some(format!("Bearer {ten_years}")),
        Some(format!("Bearer {refresh_typed}")),
        Some(format!("Bearer {refresh_claim}")),
        Some(format!("Bearer {padded}")),
    ];
    for header in unauthenticated {
        let mut request = app.client.get(app.url("/api/v1/users/me"));
        if let Some(value) = &header {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        expect_error(response, 401, 10002).await;
    }
    // The untouched token still works, and the scheme is case-insensitive.
    let response = app
        .get_with_header(
            "/api/v1/users/me",
            "authorization",
            &format!("bearer {valid}"),
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn refresh_rotates_the_token() {
    let app = spawn_app().await;
    let (first, _) = app.signed_in_user().await;
    let response = refresh(&app, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(response.status(), 200);
    let second = envelope(response).await["data"].clone();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["token_type"], "Bearer");
    let me = app
        .get_authed("/api/v1/users/me", second["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status(), 200);
    // The new refresh token rotates again.
    let third = refresh(&app, second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(third.status(), 200);
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_revokes_the_family() {
    let app = spawn_app().await;
    let (first, email) = app.signed_in_user().await;
    let spent = first["refresh_token"].as_str().unwrap().to_owned();
    let second = envelope(refresh(&app, &spent).await).await["data"].clone();

    expect_error(refresh(&app, &spent).await, 401, 20003).await;
    // The newer token of the same family stopped working too.
    let newer = second["refresh_token"].as_str().unwrap();
    expect_error(refresh(&app, newer).await, 401, 20003).await;

    // Another login (another family) is unaffected.
    let other = envelope(app.login(&email, TEST_PASSWORD).await).await["data"].clone();
    assert_eq!(
        refresh(&app, other["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_let_exactly_one_through() {
    let app = spawn_app().await;
    let (tokens, _) = app.signed_in_user().await;
    let token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let attempts = (0..16).map(|_| refresh(&app, &token));
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        15,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn logout_revokes_the_family() {
    let app = spawn_app().await;
    let (tokens, _) = app.signed_in_user().await;
    let token = tokens["refresh_token"].as_str().unwrap();
    let response = app
        .post_json("/api/v1/auth/logout", &json!({"refresh_token": token}))
        .await;
    assert_eq!(response.status(), 200);
    assert!(envelope(response).await["data"].is_null());
    expect_error(refresh(&app, token).await, 401, 20003).await;
    // One answer whether the token was live, revoked or never existed (RFC 7009): logging out
    // again is harmless and the answer reveals nothing.
    let again = app
        .post_json("/api/v1/auth/logout", &json!({"refresh_token": token}))
        .await;
    assert_eq!(again.status(), 200);
    let unknown = app
        .post_json("/api/v1/auth/logout", &json!({"refresh_token": "made-up"}))
        .await;
    assert_eq!(unknown.status(), 200);
    let empty = app
        .post_json("/api/v1/auth/logout", &json!({"refresh_token": " "}))
        .await;
    expect_error(empty, 400, 10001).await;
    expect_error(refresh(&app, "").await, 401, 20003).await;
}

fn admin_probe() -> Router<AppState> {
    Router::new().route(
        "/api/v1/_probe/admin",
        get(|AdminUser(admin): AdminUser| async move { ApiResponse::ok(admin.id) }),
    )
}

#[tokio::test]
async fn only_admins_reach_admin_routes_and_the_bootstrap_admin_is_one() {
    let app = spawn_app_with(
        TestOptions::default()
            .routes(admin_probe())
            .env("SPIKE_BOOTSTRAP_ADMIN_EMAIL", "Root@Example.com")
            .env("SPIKE_BOOTSTRAP_ADMIN_PASSWORD", "bootstrap-password"),
    )
    .await;
    let (user, _) = app.signed_in_user().await;
    let response = app
        .get_authed(
            "/api/v1/_probe/admin",
            user["access_token"].as_str().unwrap(),
        )
        .await;
    expect_error(response, 403, 10003).await;
    expect_error(app.get("/api/v1/_probe/admin").await, 401, 10002).await;

    let admin = envelope(app.login("root@example.com", "bootstrap-password").await).await;
    let access = admin["data"]["access_token"].as_str().unwrap();
    let response = app.get_authed("/api/v1/_probe/admin", access).await;
    assert_eq!(response.status(), 200);
    let me = envelope(app.get_authed("/api/v1/users/me", access).await).await;
    assert_eq!(me["data"]["role"], "admin");
}

#[tokio::test]
async fn bootstrap_promotes_an_existing_account_idempotently() {
    let app = spawn_app().await;
    let (_, email) = app.signed_in_user().await;
    let mut config = app.config.clone();
    config.auth.bootstrap_admin = Some(BootstrapAdmin {
        email: email.clone(),
        password: Secret::new("ignored-for-existing-accounts"),
    });
    // Start twice more on the same database, as two replicas would.
    for _ in 0..2 {
        Application::build(config.clone()).await.expect("starts");
    }
    // Promoted, and the password is unchanged.
    let tokens = envelope(app.login(&email, TEST_PASSWORD).await).await;
    let me = app
        .get_authed(
            "/api/v1/users/me",
            tokens["data"]["access_token"].as_str().unwrap(),
        )
        .await;
    assert_eq!(envelope(me).await["data"]["role"], "admin");
}

#[tokio::test]
async fn login_is_rate_limited_per_email_and_per_ip() {
    let app = spawn_app_with(
        TestOptions::default()
            .env("SPIKE_LOGIN_LIMIT_PER_EMAIL", "3/1m")
            .env("SPIKE_LOGIN_LIMIT_PER_IP", "9/1m"),
    )
    .await;
    let (_, email) = app.signed_in_user().await;
    // Successful logins do not count against the email...
    for _ in 0..3 {
        assert_eq!(app.login(&email, TEST_PASSWORD).await.status(), 200);
    }
    // ...failed ones do: three fit, then even the right password is refused for a while.
    for _ in 0..3 {
        expect_error(app.login(&email, "wrong password").await, 401, 20002).await;
    }
    let response = app.login(&email, TEST_PASSWORD).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    expect_error(response, 429, 10006).await;

    // Every attempt draws from the IP's bucket (8 of 9 so far): one more, then 429 for anyone.
    expect_error(
        app.login("other@example.com", "whatever-pass").await,
        401,
        20002,
    )
    .await;
    expect_error(
        app.login("fresh@example.com", "whatever-pass").await,
        429,
        10006,
    )
    .await;
}

#[tokio::test]
async fn parallel_password_guesses_cannot_slip_past_the_email_limit() {
    let app =
        spawn_app_with(TestOptions::default().env("SPIKE_LOGIN_LIMIT_PER_EMAIL", "10/1m")).await;
    let (_, email) = app.signed_in_user().await;
    let guesses = (0..100).map(|i| {
        let (app, email) = (&app, &email);
        async move {
            app.login(email, &format!("guess number {i}"))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(
        (checked, limited),
        (10, 90),
        "only the burst reaches the password check: {statuses:?}"
    );
}

#[tokio::test]
async fn registration_and_refresh_are_rate_limited_per_ip() {
    let app = spawn_app_with(
        TestOptions::default()
            .env("SPIKE_REGISTER_LIMIT_PER_IP", "3/1m")
            .env("SPIKE_REFRESH_LIMIT_PER_IP", "2/1m"),
    )
    .await;
    let (pair, _) = app.signed_in_user().await;
    for i in 0..2 {
        let email = format!("limited{i}-{}@example.com", uuid::Uuid::new_v4().simple());
        assert_eq!(app.register(&email, TEST_PASSWORD).await.status(), 201);
    }
    let response = app.register("one-more@example.com", TEST_PASSWORD).await;
    assert!(response.headers().contains_key("retry-after"));
    expect_error(response, 429, 10006).await;

    let mut token = pair["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let response = refresh(&app, &token).await;
        assert_eq!(response.status(), 200);
        token = envelope(response).await["data"]["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    expect_error(refresh(&app, &token).await, 429, 10006).await;
}

#[tokio::test]
async fn no_password_hash_or_token_reaches_the_logs() {
    let (logs, _guard) = CapturedLogs::start(tracing::Level::TRACE);
    let app = spawn_app().await;
    let password = "very-distinctive-password-123";
    let email = "logcheck@example.com";
    assert_eq!(app.register(email, password).await.status(), 201);
    let tokens = envelope(app.login(email, password).await).await["data"].clone();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    app.get_authed("/api/v1/users/me", &access).await;
    let rotated = envelope(refresh(&app, &refresh_token).await).await["data"].clone();
    let rotated_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    refresh(&app, &refresh_token).await; // reuse: logged as a warning
    app.post_json(
        "/api/v1/auth/logout",
        &json!({"refresh_token": rotated_refresh}),
    )
    .await;
    app.login(email, "a-wrong-password-456").await;

    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE email = ?")
        .bind(email)
        .fetch_one(&app.infra.db)
        .await
        .unwrap();
    let text = logs.text();
    assert!(
        text.contains("refresh token reuse detected"),
        "logs were captured"
    );
    for secret in [
        password,
        "a-wrong-password-456",
        hash.as_str(),
        access.as_str(),
        refresh_token.as_str(),
        rotated_refresh.as_str(),
        rotated["access_token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "secret found in logs: {secret}");
    }
}

#[tokio::test]
async fn auth_routes_are_in_the_openapi_document() {
    let app = spawn_app().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
    ] {
        assert!(doc["paths"][path]["post"].is_object(), "{path}");
    }
    let me = &doc["paths"]["/api/v1/users/me"]["get"];
    assert_eq!(me["security"][0]["bearer"], json!([]));
}

/// A login sent from the loopback address `source` (127.0.0.2 stands in for another client:
/// the server sees the socket's peer address).
async fn login_from(app: &TestApp, source: [u8; 4], email: &str, password: &str) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(source))
        .build()
        .unwrap();
    client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Issue 23: ten wrong guesses from one address once made the owner's right password answer 429
/// everywhere. Failures count per (email, address) strictly and per email more loosely: the
/// guesser is stopped, the owner on another address still gets in, and guessers on many
/// addresses together still meet a bound.
#[tokio::test]
async fn guesses_from_one_address_do_not_lock_the_owner_out_of_another() {
    // Hour-long refill periods: no token comes back while the test runs.
    let app = spawn_app_with(
        TestOptions::default()
            .env("SPIKE_LOGIN_LIMIT_PER_EMAIL_IP", "5/1h")
            .env("SPIKE_LOGIN_LIMIT_PER_EMAIL", "12/1h"),
    )
    .await;
    let (_, email) = app.signed_in_user().await;
    let guesser = [127, 0, 0, 1];
    let mut answers = Vec::new();
    for i in 0..8 {
        answers.push(login_from(&app, guesser, &email, &format!("guess {i}")).await);
    }
    assert_eq!(answers, [401, 401, 401, 401, 401, 429, 429, 429]);
    assert_eq!(
        login_from(&app, guesser, &email, TEST_PASSWORD).await,
        429,
        "the guessing address is locked out, even with the right password"
    );
    assert_eq!(
        login_from(&app, [127, 0, 0, 2], &email, TEST_PASSWORD).await,
        200,
        "the owner on another address is not"
    );

    // Guessers on four more addresses: the email's own bucket (12, 5 spent) lets 7 more
    // failures through in all, then refuses every address, the owner's too.
    let mut checked = 0;
    for source in 3..=6 {
        for i in 0..5 {
            match login_from(&app, [127, 0, 0, source], &email, &format!("guess {i}")).await {
                401 => checked += 1,
                429 => {}
                other => panic!("guess answered {other}"),
            }
        }
    }
    assert_eq!(checked, 7, "failures that reached the password check");
    assert_eq!(
        login_from(&app, [127, 0, 0, 7], &email, TEST_PASSWORD).await,
        429,
        "a distributed guesser is still bounded per account"
    );
}

/// Issue 23: access tokens once kept working for their whole 15 minutes after logout and after
/// a refresh-token reuse revoked their login. The user check refuses them within its TTL; other
/// logins of the same user are untouched.
#[tokio::test]
async fn a_revoked_logins_access_tokens_stop_working_within_the_check_ttl() {
    let app = spawn_app_with(TestOptions::default().env("SPIKE_USER_CHECK_TTL", "1s")).await;
    let (first, email) = app.signed_in_user().await;
    let second = envelope(app.login(&email, TEST_PASSWORD).await).await["data"].clone();
    let access = |tokens: &Value| tokens["access_token"].as_str().unwrap().to_owned();
    let status_of = |token: String| {
        let app = &app;
        async move { app.get_authed("/api/v1/users/me", &token).await.status() }
    };
    // Read once, so a replica's cache holds the login as live.
    assert_eq!(status_of(access(&first)).await, 200);
    assert_eq!(status_of(access(&second)).await, 200);

    let logout = app
        .post_json(
            "/api/v1/auth/logout",
            &json!({"refresh_token": first["refresh_token"]}),
        )
        .await;
    assert_eq!(logout.status(), 200);
    wait_for(
        "the logged-out login's access token to be refused",
        Duration::from_secs(10),
        || async { status_of(access(&first)).await == 401 },
    )
    .await;
    assert_eq!(status_of(access(&second)).await, 200, "another login stays");

    // Reuse of a spent refresh token revokes the login: the tokens issued before and after the
    // rotation die alike.
    let spent = second["refresh_token"].as_str().unwrap();
    let rotated = envelope(refresh(&app, spent).await).await["data"].clone();
    assert_eq!(status_of(access(&rotated)).await, 200);
    expect_error(refresh(&app, spent).await, 401, 20003).await;
    wait_for(
        "the reused login's access tokens to be refused",
        Duration::from_secs(10),
        || async {
            status_of(access(&second)).await == 401 && status_of(access(&rotated)).await == 401
        },
    )
    .await;
    let body = envelope(app.get_authed("/api/v1/users/me", &access(&rotated)).await).await;
    assert_eq!(body["code"], 10002);
    // A new login works.
    assert_eq!(app.login(&email, TEST_PASSWORD).await.status(), 200);
}
