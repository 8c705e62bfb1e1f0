//! The isolated database, Redis prefix and AMQP prefix of one test, and their removal.

use std::str::FromStr;
use std::time::Duration;

use spike::config::{Config, RedisMode, Secret};
use spike::startup;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

/// The isolated database, Redis prefix and AMQP prefix of one test; removed on drop.
pub struct TestResources {
    pub database: String,
    pub database_url: String,
    pub redis_prefix: String,
    pub amqp_prefix: String,
    /// The seed nodes of the Redis Cluster the test runs on, when it runs on one (else the
    /// configured Redis).
    pub redis_cluster: Option<String>,
    base_config: Config,
}

/// The local Redis Cluster that `scripts/redis-cluster.sh start` runs (dev-services.sh starts
/// it), or the one `SPIKE_TEST_REDIS_CLUSTER_URL` lists.
pub fn redis_cluster_seeds() -> String {
    std::env::var("SPIKE_TEST_REDIS_CLUSTER_URL").unwrap_or_else(|_| {
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".to_owned()
    })
}

impl TestResources {
    pub async fn create() -> TestResources {
        let base_config = Config::from_env().expect("base configuration (configs/dev.toml + env)");
        // The test process's id leads the name: scripts/clean-test-data.sh removes only what a
        // process that is gone left behind, never a parallel run's.
        let id = format!("{}_{}", std::process::id(), uuid::Uuid::new_v4().simple());
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
            redis_cluster: None,
            base_config,
        }
    }

    /// Moves the test's database to a replicated pair ([`super::ReplicatedMysql`]): created on
    /// its primary (the replica follows), `database_url` pointing there; returns the same
    /// database on the replica. The pair is the test's own and goes with its data, so the
    /// cleanup leaves it alone.
    pub async fn move_to_primary(&mut self, primary: &str, replica: &str) -> String {
        let mut admin = admin_connection(primary).await;
        let create = format!(
            "CREATE DATABASE `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            self.database
        );
        admin
            .execute(sqlx::AssertSqlSafe(create))
            .await
            .expect("create the test database on the primary");
        admin.close().await.ok();
        self.database_url = with_database(primary, &self.database);
        with_database(replica, &self.database)
    }

    /// `SPIKE_*` variables pointing a spike process at this test's Redis.
    pub fn redis_env(&self) -> Vec<(&'static str, String)> {
        match &self.redis_cluster {
            Some(seeds) => vec![
                ("SPIKE_REDIS_MODE", "cluster".to_owned()),
                ("SPIKE_REDIS_URL", seeds.clone()),
                ("SPIKE_REDIS_PREFIX", self.redis_prefix.clone()),
            ],
            None => vec![("SPIKE_REDIS_PREFIX", self.redis_prefix.clone())],
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
        if let Some(seeds) = &self.redis_cluster {
            config.redis.mode = RedisMode::Cluster;
            config.redis.url = Secret::new(seeds.clone());
        }
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

    // Each node lists the keys it holds (every seed of the local cluster is a master); each is
    // deleted on its own, as a cluster refuses a DEL whose keys lie in several slots.
    for url in config.redis.urls() {
        let client = redis::Client::open(url).expect("redis url");
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
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.del(key).ignore();
            }
            let _: () = pipe
                .query_async(&mut redis)
                .await
                .expect("delete test keys");
        }
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
