//! The test app: [`spawn_app`] builds the real application on an isolated set of resources,
//! serves it on a free port, and (on request) runs the worker beside it.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use spike::api::AppState;
use spike::config::Config;
use spike::repo::{Infra, Topology};
use spike::startup::{self, Application, Services};
use spike::worker::{HousekeepingReport, Worker};
use tokio_util::sync::CancellationToken;

use super::logs::init_logs;
use super::mysql_pair::ReplicatedMysql;
use super::resources::{TestResources, redis_cluster_seeds};

/// Every test app has this admin (bootstrap), unless a test overrides it.
pub const ADMIN_EMAIL: &str = "admin@spike.test";
pub const ADMIN_PASSWORD: &str = "admin-password";

/// The password `signed_in_user` registers with.
pub const TEST_PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub address: String,
    /// The internal listener (`/healthz`, `/readyz`, `/metrics`), `http://127.0.0.1:<port>`.
    pub internal_address: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub infra: Infra,
    pub state: AppState,
    /// The app's services; the worker, when started, shares them (as in `spike all`).
    pub services: Services,
    pub shutdown: CancellationToken,
    pub server: Option<tokio::task::JoinHandle<()>>,
    pub resources: TestResources,
}

/// Environment overrides for one test app, on top of the process environment and dev.toml.
#[derive(Default)]
pub struct TestOptions {
    pub env: HashMap<String, String>,
    pub extra_routes: Option<Router<AppState>>,
    /// Also run the worker role (outbox relay, consumers) in the test's runtime.
    pub worker: bool,
    /// Reach MySQL through this local port (a proxy a test can take down).
    pub mysql_port: Option<u16>,
    /// Catalog reads through this local port (`SPIKE_DATABASE_READ_URL`).
    pub replica_port: Option<u16>,
    /// Run on the local Redis Cluster instead of the configured Redis.
    pub redis_cluster: bool,
    /// The database on this replicated MariaDB pair `(primary, replica)` (root URLs), the
    /// catalog's reads on its replica.
    pub replicated_mysql: Option<(String, String)>,
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

    /// The app (and every process the test starts on its resources) runs on the local Redis
    /// Cluster ([`redis_cluster_seeds`]).
    pub fn on_redis_cluster(mut self) -> Self {
        self.redis_cluster = true;
        self
    }

    /// The app's database lives on the primary of `pair` (`scripts/mysql-replica.sh`), and
    /// `SPIKE_DATABASE_READ_URL` names the same database on its binlog replica.
    pub fn on_replicated_mysql(mut self, pair: &ReplicatedMysql) -> Self {
        self.replicated_mysql = Some((pair.primary_url(), pair.replica_url()));
        self
    }

    /// The app reaches its test database through `127.0.0.1:port`.
    pub fn mysql_through(mut self, port: u16) -> Self {
        self.mysql_port = Some(port);
        self
    }

    /// The app reaches Redis through `127.0.0.1:port`: a proxy in front of the single Redis,
    /// whatever mode the suite runs in.
    pub fn redis_through(self, port: u16) -> Self {
        self.env("SPIKE_REDIS_MODE", "standalone")
            .env("SPIKE_REDIS_URL", format!("redis://127.0.0.1:{port}"))
    }

    /// Catalog reads through a local port to the test database, as through a replica
    /// (`SPIKE_DATABASE_READ_URL`).
    pub fn replica_through(mut self, port: u16) -> Self {
        self.replica_port = Some(port);
        self
    }
}

/// mysql://user:password@host:port/database → the same through the local `port`.
fn through(url: &str, port: u16) -> String {
    let at = url.rfind('@').expect("a user in the database url") + 1;
    let slash = at + url[at..].find('/').expect("a database in the url");
    format!("{}127.0.0.1:{port}{}", &url[..at], &url[slash..])
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    init_logs();
    let mut resources = TestResources::create().await;
    if options.redis_cluster {
        resources.redis_cluster = Some(redis_cluster_seeds());
    }
    let mut env = options.env.clone();
    if let Some((primary, replica)) = &options.replicated_mysql {
        let replica = resources.move_to_primary(primary, replica).await;
        env.insert("SPIKE_DATABASE_URL".into(), resources.database_url.clone());
        env.insert("SPIKE_DATABASE_READ_URL".into(), replica);
    }
    if let Some(port) = options.mysql_port {
        env.insert(
            "SPIKE_DATABASE_URL".into(),
            through(&resources.database_url, port),
        );
    }
    if let Some(port) = options.replica_port {
        env.insert(
            "SPIKE_DATABASE_READ_URL".into(),
            through(&resources.database_url, port),
        );
    }
    let config = test_config(&resources, &env).expect("test configuration is valid");
    let app =
        Application::build_with_routes(config.clone(), options.extra_routes.unwrap_or_default())
            .await
            .unwrap_or_else(|error| match &resources.redis_cluster {
                Some(seeds) => panic!(
                    "application starts on the Redis Cluster {seeds} (scripts/redis-cluster.sh \
                     start runs the local one; dev-services.sh starts it): {error}"
                ),
                None => panic!("application starts: {error}"),
            });
    let address = format!("http://127.0.0.1:{}", app.port());
    let internal_address = format!("http://127.0.0.1:{}", app.internal_port());
    let infra = app.infra().clone();
    let state = app.state().clone();
    let services = app.services().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let tasks = app.services().tasks.clone();
            app.run_until_stopped(shutdown).await.expect("server runs");
            tasks.close();
            tasks.wait().await;
        }
    });
    let app = TestApp {
        address,
        internal_address,
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
    vars.insert("SPIKE_INTERNAL_HTTP_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("SPIKE_DATABASE_URL".into(), resources.database_url.clone());
    for (key, value) in resources.redis_env() {
        vars.insert(key.into(), value);
    }
    vars.insert("SPIKE_AMQP_PREFIX".into(), resources.amqp_prefix.clone());
    vars.insert("SPIKE_AUTO_MIGRATE".into(), "true".into());
    vars.insert("SPIKE_STARTUP_TIMEOUT".into(), "5s".into());
    // Every test's client is one address (127.0.0.1), and the races open a connection per
    // request in flight (up to 2,000 at once on a slow run): beyond the per-address share
    // (1,250 by default) the server refuses with a bare 429, which a real crowd from many
    // addresses never meets. The cap's own tests (connections.rs) set theirs.
    vars.insert("SPIKE_HTTP_MAX_CONNECTIONS_PER_IP".into(), "10000".into());
    vars.insert("SPIKE_SHUTDOWN_GRACE".into(), "5s".into());
    // Every test declares and deletes its own set of queues. A quorum queue is a Raft cluster
    // of its own: hundreds of them created and torn down per run load a 2-core broker heavily
    // (one wedged RabbitMQ 3.10 here). Tests use classic queues unless they say otherwise;
    // `lifecycle` covers the quorum declaration.
    vars.insert("SPIKE_AMQP_QUEUE_TYPE".into(), "classic".into());
    // Dev bounds the order queue by a RabbitMQ policy; tests declare it instead (a policy per
    // test would outlive the test's queues), unless a test asks for the policy (queue_policy).
    vars.insert("SPIKE_AMQP_MANAGEMENT_URL".into(), String::new());
    vars.insert("SPIKE_BOOTSTRAP_ADMIN_EMAIL".into(), ADMIN_EMAIL.into());
    vars.insert(
        "SPIKE_BOOTSTRAP_ADMIN_PASSWORD".into(),
        ADMIN_PASSWORD.into(),
    );
    vars.extend(overrides.clone());
    Config::load(vars)
}

impl TestApp {
    /// Starts the live worker role (outbox relay, consumers, housekeeping, under the app's
    /// supervisor) with the app's services until the app is dropped. Tests of one step drive
    /// it with [`TestApp::housekeep`] and [`TestApp::drain_outbox`] instead.
    pub fn start_worker(&self) {
        self.worker().start(&self.shutdown);
    }

    /// The worker of this app (its steps share the app's services, as in `spike all`).
    pub fn worker(&self) -> Worker {
        Worker::build(&self.config, &self.infra, &self.services)
    }

    /// One flash-sale housekeeping pass (warm-up, reconciler, unsold units), to completion.
    pub async fn housekeep(&self) -> HousekeepingReport {
        self.worker().housekeep().await
    }

    /// Turns every reservation message waiting now into orders (the order consumer's step);
    /// returns how many messages were handled.
    pub async fn drain_orders(&self) -> usize {
        self.worker()
            .drain_orders()
            .await
            .expect("the order queue drains")
    }

    /// Closes the orders of every `order.close` message waiting now (the close consumer's step);
    /// returns how many messages were handled.
    pub async fn drain_closes(&self) -> usize {
        self.worker()
            .drain_closes()
            .await
            .expect("the close queue drains")
    }

    /// Publishes every outbox row waiting now; returns how many went out.
    pub async fn drain_outbox(&self) -> usize {
        self.worker()
            .drain_outbox()
            .await
            .expect("the outbox relays")
    }

    /// Current stock of a product, from MySQL.
    pub async fn stock_of(&self, product_id: u64) -> i64 {
        sqlx::query_scalar("SELECT CAST(stock AS SIGNED) FROM inventory WHERE product_id = ?")
            .bind(product_id)
            .fetch_one(&self.infra.db)
            .await
            .unwrap()
    }

    pub fn topology(&self) -> Topology {
        startup::topology(&self.config)
    }

    pub fn database_name(&self) -> &str {
        &self.resources.database
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

    /// Makes MySQL refuse every order of `user_id` (a trigger raising an error), as it would
    /// refuse a row it cannot take: the worker's statement fails on every attempt until
    /// [`TestApp::accept_orders_again`].
    pub async fn refuse_orders_of(&self, user_id: u64) {
        // A trigger takes no bind parameters; the id is a number.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER test_refuse_orders BEFORE INSERT ON orders FOR EACH ROW \
             IF NEW.user_id = {user_id} THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'test: this order is refused'; \
             END IF"
        )))
        .execute(&self.infra.db)
        .await
        .expect("create the refusing trigger");
    }

    pub async fn accept_orders_again(&self) {
        sqlx::query("DROP TRIGGER IF EXISTS test_refuse_orders")
            .execute(&self.infra.db)
            .await
            .expect("drop the refusing trigger");
    }

    /// Waits (up to 5 s) until `queue` holds exactly `expected` messages; fails at once on more.
    /// The broker's queue statistics trail publisher confirms by a moment.
    pub async fn expect_queue_len(&self, queue: &str, expected: u32) {
        let started = std::time::Instant::now();
        loop {
            let waiting = self.infra.amqp.queue_depth(queue).await.unwrap().messages;
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
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
