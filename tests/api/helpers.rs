//! `spawn_app()`: a fresh, isolated instance of the application for one test.
//!
//! Each app gets a new database `spike_test_<id>` (migrated), a Redis prefix `spike_test_<id>:`
//! and an AMQP prefix `spike_test_<id>.`, and listens on `127.0.0.1:0`. Dropping the [`TestApp`]
//! stops the server and deletes the database, the Redis keys and the queues and exchanges,
//! also when the test panicked. Set `SPIKE_TEST_LOG=debug` to see the app's logs.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use axum::Router;
use spike::api::AppState;
use spike::config::{Config, LogFormat};
use spike::repo::{Infra, Topology};
use spike::startup::{self, Application, Services};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Every test app has this admin (bootstrap), unless a test overrides it.
pub const ADMIN_EMAIL: &str = "admin@spike.test";
pub const ADMIN_PASSWORD: &str = "admin-password";

/// The password `signed_in_user` registers with.
pub const TEST_PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub infra: Infra,
    pub state: AppState,
    /// The app's services; the worker, when started, shares them (as in `spike all`).
    pub services: Services,
    pub shutdown: CancellationToken,
    pub server: Option<tokio::task::JoinHandle<()>>,
    resources: TestResources,
}

/// Environment overrides for one test app, on top of the process environment and dev.toml.
#[derive(Default)]
pub struct TestOptions {
    pub env: HashMap<String, String>,
    pub extra_routes: Option<Router<AppState>>,
    /// Also run the worker role (outbox relay, consumers) in the test's runtime.
    pub worker: bool,
}

impl TestOptions {
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    pub fn routes(mut self, routes: Router<AppState>) -> Self {
        self.extra_routes = Some(routes);
        self
    }

    pub fn with_worker(mut self) -> Self {
        self.worker = true;
        self
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    init_logs();
    let resources = TestResources::create().await;
    let config = test_config(&resources, &options.env).expect("test configuration is valid");
    let app =
        Application::build_with_routes(config.clone(), options.extra_routes.unwrap_or_default())
            .await
            .expect("application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let infra = app.infra().clone();
    let state = app.state().clone();
    let services = app.services().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let tasks = TaskTracker::new();
            app.run_until_stopped(shutdown, &tasks)
                .await
                .expect("server runs");
            tasks.close();
            tasks.wait().await;
        }
    });
    let app = TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client"),
        config,
        infra,
        state,
        services,
        shutdown,
        server: Some(server),
        resources,
    };
    if options.worker {
        app.start_worker();
    }
    app
}

/// The configuration a test app would get: process env, then the test's isolation settings,
/// then `overrides`.
pub fn test_config(
    resources: &TestResources,
    overrides: &HashMap<String, String>,
) -> Result<Config, spike::config::ConfigError> {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    vars.insert("SPIKE_HTTP_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("SPIKE_DATABASE_URL".into(), resources.database_url.clone());
    vars.insert("SPIKE_REDIS_PREFIX".into(), resources.redis_prefix.clone());
    vars.insert("SPIKE_AMQP_PREFIX".into(), resources.amqp_prefix.clone());
    vars.insert("SPIKE_AUTO_MIGRATE".into(), "true".into());
    vars.insert("SPIKE_STARTUP_TIMEOUT".into(), "5s".into());
    vars.insert("SPIKE_SHUTDOWN_GRACE".into(), "5s".into());
    // Every test declares and deletes its own set of queues. A quorum queue is a Raft cluster
    // of its own: hundreds of them created and torn down per run load a 2-core broker heavily
    // (one wedged RabbitMQ 3.10 here). Tests use classic queues unless they say otherwise;
    // `lifecycle` covers the quorum declaration.
    vars.insert("SPIKE_AMQP_QUEUE_TYPE".into(), "classic".into());
    vars.insert("SPIKE_BOOTSTRAP_ADMIN_EMAIL".into(), ADMIN_EMAIL.into());
    vars.insert(
        "SPIKE_BOOTSTRAP_ADMIN_PASSWORD".into(),
        ADMIN_PASSWORD.into(),
    );
    vars.extend(overrides.clone());
    Config::load(vars)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// GET with one extra request header.
    pub async fn get_with_header(&self, path: &str, name: &str, value: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(name, value)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs a raw body with `Content-Type: application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs a JSON value.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_authed(&self, path: &str, access_token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/register",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/login",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers a new user with a unique email and signs in; returns the login `data`
    /// (`access_token`, `refresh_token`, …) and the email.
    pub async fn signed_in_user(&self) -> (serde_json::Value, String) {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let registered = self.register(&email, TEST_PASSWORD).await;
        assert_eq!(registered.status(), 201, "register {email}");
        let response = self.login(&email, TEST_PASSWORD).await;
        assert_eq!(response.status(), 200, "login {email}");
        (envelope(response).await["data"].clone(), email)
    }

    /// Starts the worker role (outbox relay, `order.close` consumer) until the app is dropped.
    pub fn start_worker(&self) {
        let (config, infra) = (self.config.clone(), self.infra.clone());
        let (services, shutdown) = (self.services.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            if let Err(error) = spike::worker::run(&config, infra, services, shutdown).await {
                panic!("worker failed: {error}");
            }
        });
    }

    /// Creates a product as the admin; returns its id.
    pub async fn create_product(&self, admin_token: &str, price: &str, stock: u32) -> u64 {
        let body = serde_json::json!({"title": "product", "price": price, "stock": stock});
        let response = self
            .send_authed(
                reqwest::Method::POST,
                "/api/v1/products",
                admin_token,
                Some(&body),
            )
            .await;
        assert_eq!(response.status(), 201, "create product");
        envelope(response).await["data"]["id"].as_u64().unwrap()
    }

    /// Current stock of a product, from MySQL.
    pub async fn stock_of(&self, product_id: u64) -> i64 {
        sqlx::query_scalar("SELECT CAST(stock AS SIGNED) FROM inventory WHERE product_id = ?")
            .bind(product_id)
            .fetch_one(&self.infra.db)
            .await
            .unwrap()
    }

    /// POST /orders with an optional Idempotency-Key.
    pub async fn place_order(
        &self,
        token: &str,
        items: serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/api/v1/orders"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "items": items }));
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("request sent")
    }

    /// An access token of the bootstrap admin.
    pub async fn admin_token(&self) -> String {
        let response = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(response.status(), 200, "admin login");
        envelope(response).await["data"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sends `method path` with a bearer token and an optional JSON body.
    pub async fn send_authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    pub fn topology(&self) -> Topology {
        startup::topology(&self.config)
    }

    pub fn database_name(&self) -> &str {
        &self.resources.database
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A response body as JSON, asserting the envelope's shape on the way.
pub async fn envelope(response: reqwest::Response) -> serde_json::Value {
    let header_id = response
        .headers()
        .get("x-request-id")
        .expect("every response has X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert!(body["code"].is_u64(), "code missing: {body}");
    assert!(body["message"].is_string(), "message missing: {body}");
    assert!(body.get("data").is_some(), "data missing: {body}");
    assert_eq!(
        body["request_id"],
        header_id.as_str(),
        "body and header request ids differ"
    );
    body
}

/// Installs the test binary's one global subscriber: the per-thread capture layer (see
/// [`CapturedLogs`]) and, with `SPIKE_TEST_LOG=<filter>`, readable logs on stderr.
fn init_logs() {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{EnvFilter, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;

    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let capture = spike::telemetry::format_layer(LogFormat::Json, || ThreadSink)
            .with_filter(filter_fn(capturing));
        let stderr = std::env::var("SPIKE_TEST_LOG").ok().map(|level| {
            spike::telemetry::format_layer(LogFormat::Pretty, std::io::stderr)
                .with_filter(EnvFilter::new(level))
        });
        let subscriber = tracing_subscriber::registry().with(capture).with(stderr);
        tracing::subscriber::set_global_default(subscriber).expect("one global test subscriber");
    });
}

/// The isolated database, Redis prefix and AMQP prefix of one test; removed on drop.
pub struct TestResources {
    pub database: String,
    pub database_url: String,
    pub redis_prefix: String,
    pub amqp_prefix: String,
    base_config: Config,
}

impl TestResources {
    pub async fn create() -> TestResources {
        let base_config = Config::from_env().expect("base configuration (configs/dev.toml + env)");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("spike_test_{id}");
        let base_url = base_config.database.url.expose();
        let mut admin = admin_connection(base_url).await;
        // The name is ours (a UUID), not user input: safe to splice.
        let create = format!(
            "CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        );
        admin
            .execute(sqlx::AssertSqlSafe(create))
            .await
            .expect("create test database");
        admin.close().await.ok();
        TestResources {
            database_url: with_database(base_url, &database),
            database,
            redis_prefix: format!("spike_test_{id}:"),
            amqp_prefix: format!("spike_test_{id}."),
            base_config,
        }
    }
}

impl Drop for TestResources {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; clean up from a
        // separate thread with its own runtime and its own connections.
        let database = self.database.clone();
        let redis_prefix = self.redis_prefix.clone();
        let mut config = self.base_config.clone();
        config.amqp.prefix = self.amqp_prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            // Bounded, so a broken service fails the run instead of hanging it.
            let cleanup = remove_resources(&config, &database, &redis_prefix);
            runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(30), cleanup).await })
                .expect("test cleanup finished within 30 s");
        });
        if cleanup.join().is_err() {
            // A failed cleanup leaks databases and queues into every later run: fail loudly,
            // unless the test is already failing (a second panic would abort the process).
            if std::thread::panicking() {
                eprintln!("cleanup of {} failed", self.database);
            } else {
                panic!("cleanup of {} failed", self.database);
            }
        }
    }
}

async fn remove_resources(config: &Config, database: &str, redis_prefix: &str) {
    let mut admin = admin_connection(config.database.url.expose()).await;
    // The app's connections belong to the test's runtime, which is blocked while this runs: one
    // of them may sit inside a transaction (the outbox relay's, say) whose locks would make
    // DROP DATABASE wait forever. End them first.
    let sessions: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
    )
    .bind(database)
    .fetch_all(&mut admin)
    .await
    .expect("list test sessions");
    for id in sessions {
        // A session may end by itself meanwhile; that is fine.
        let _ = admin
            .execute(sqlx::AssertSqlSafe(format!("KILL {id}")))
            .await;
    }
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS `{database}`"
        )))
        .await
        .expect("drop test database");

    let client = redis::Client::open(config.redis.url.expose()).expect("redis url");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{redis_prefix}*"))
        .query_async(&mut redis)
        .await
        .expect("list test keys");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .expect("delete test keys");
    }

    let amqp = lapin::Connection::connect(
        config.amqp.url.expose(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("amqp connection");
    let channel = amqp.create_channel().await.expect("amqp channel");
    let topology = startup::topology(config);
    for queue in topology.queue_names() {
        channel
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await
            .expect("delete a test queue");
    }
    for exchange in [topology.exchange(), topology.dead_letter_exchange()] {
        channel
            .exchange_delete(
                exchange.into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await
            .expect("delete a test exchange");
    }
    amqp.close(200, "test cleanup".into()).await.ok();
}

async fn admin_connection(url: &str) -> sqlx::MySqlConnection {
    MySqlConnectOptions::from_str(url)
        .expect("database url")
        .connect()
        .await
        .expect("connect to MySQL as the test admin")
}

/// `mysql://u:p@h:3306/spike?x=y` with the database part replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (without_query, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = without_query.split_once("://").expect("url has a scheme");
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut out = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A TCP proxy in front of a real service: tests point the app at it, then cut it to simulate
/// the service going away (its port closes and every open connection drops).
pub struct TcpProxy {
    pub port: u16,
    cut: CancellationToken,
}

impl TcpProxy {
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let cut = CancellationToken::new();
        let upstream = upstream.to_owned();
        let token = cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return, // drops the listener: the port closes
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let upstream = upstream.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        TcpProxy { port, cut }
    }

    /// Closes the port and every connection through it.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}

/// A free local port with nothing listening on it.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Log lines captured from the code running on the current thread (the test's runtime).
///
/// One global subscriber serves the whole test binary: its capture layer writes to the sink the
/// current thread registered, if any. (Per-test `set_default` subscribers race with tracing's
/// callsite-interest cache when tests run in parallel, and silently drop lines.)
#[derive(Clone, Default)]
pub struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<(CapturedLogs, tracing::level_filters::LevelFilter)>> =
        const { std::cell::RefCell::new(None) };
}

/// Stops capturing on the current thread when dropped.
pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

impl CapturedLogs {
    /// Captures the app's JSON log lines at `level` and above until the guard drops.
    /// `#[tokio::test]` runs the app on the test's own thread, so only this test's lines land here.
    pub fn start(level: tracing::Level) -> (CapturedLogs, CaptureGuard) {
        init_logs();
        let logs = CapturedLogs::default();
        CAPTURE.with(|capture| {
            *capture.borrow_mut() = Some((
                logs.clone(),
                tracing::level_filters::LevelFilter::from_level(level),
            ))
        });
        (logs, CaptureGuard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each log line is JSON"))
            .collect()
    }
}

/// Writes to the current thread's capture sink (or nowhere).
struct ThreadSink;

impl std::io::Write for ThreadSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some((logs, _)) = capture.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capturing(metadata: &tracing::Metadata<'_>) -> bool {
    CAPTURE.with(|capture| {
        capture
            .borrow()
            .as_ref()
            .is_some_and(|(_, level)| metadata.level() <= level)
    })
}

/// Status, envelope code and body of a response.
pub async fn code(response: reqwest::Response) -> (u16, Option<u64>, serde_json::Value) {
    let status = response.status().as_u16();
    let body = envelope(response).await;
    (status, body["code"].as_u64(), body)
}

impl TestApp {
    /// MySQL's `available_stock` of a flash-sale event.
    /// The order's status as its owner sees it.
    pub async fn order_status(&self, token: &str, order_id: u64) -> String {
        let body = envelope(
            self.get_authed(&format!("/api/v1/orders/{order_id}"), token)
                .await,
        )
        .await;
        body["data"]["status"].as_str().unwrap().to_owned()
    }

    /// Deletes every Redis key of the event, as a Redis restart would.
    pub async fn forget_event_keys(&self, event_id: u64) {
        let pattern = format!("{}ev:{{{event_id}}}:*", self.config.redis.prefix);
        let mut redis = self.infra.redis.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "the event was warm");
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .unwrap();
    }

    /// The event's ledger as the admin endpoint shows it.
    pub async fn ledger(&self, admin: &str, event_id: u64) -> serde_json::Value {
        let response = self
            .get_authed(&format!("/api/v1/spike/events/{event_id}/ledger"), admin)
            .await;
        assert_eq!(response.status(), 200);
        envelope(response).await["data"].clone()
    }

    pub async fn event_stock(&self, event_id: u64) -> u32 {
        sqlx::query_scalar("SELECT available_stock FROM spike_events WHERE id = ?")
            .bind(event_id)
            .fetch_one(&self.infra.db)
            .await
            .unwrap()
    }

    /// Waits (up to 5 s) until `queue` holds exactly `expected` messages; fails at once on more.
    /// The broker's queue statistics trail publisher confirms by a moment.
    pub async fn expect_queue_len(&self, queue: &str, expected: u32) {
        let channel = self.infra.amqp.create_channel().await.unwrap();
        let started = std::time::Instant::now();
        loop {
            let declared = channel
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
                .unwrap();
            let waiting = declared.message_count();
            assert!(
                waiting <= expected,
                "{waiting} messages in {queue}, expected {expected}"
            );
            if waiting == expected {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "only {waiting} of {expected} messages reached {queue}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An access token for `user_id` minted with the app's secret (no login, no password hash).
    pub fn mint_token(&self, user_id: u64) -> String {
        let user = spike::domain::user::User {
            id: user_id,
            email: format!("user{user_id}@example.com"),
            role: spike::domain::user::Role::User,
        };
        spike::service::auth::tokens::AccessTokens::new(
            self.config.auth.jwt_secret.expose().as_bytes(),
            Duration::from_secs(600),
        )
        .unwrap()
        .issue(&user)
        .unwrap()
    }
}

/// Polls `check` every 100 ms until it holds; fails the test after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
