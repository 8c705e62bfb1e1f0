//! The three stores: MySQL, Redis and RabbitMQ — where they are, how their names are prefixed,
//! how hard the process leans on them.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::MySqlConnectOptions;

use super::Environment;
use super::reader::Reader;
use super::values::{QueueType, RedisMode, Secret, redact_url};

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: Secret,
    /// Where catalog reads go (a replica); `None` reads from `url`, the primary.
    pub read_url: Option<Secret>,
    pub max_connections: u32,
    /// Apply migrations when `serve`/`all` start.
    pub auto_migrate: bool,
    /// How long start-up keeps retrying a store that is down before it gives up (all three).
    pub startup_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One URL, or in cluster mode a comma-separated list of seed nodes ([`RedisSettings::urls`]).
    pub url: Secret,
    pub mode: RedisMode,
    /// Prefix of every key (tests and tenants share one Redis).
    pub prefix: String,
    pub startup_timeout: Duration,
}

impl RedisSettings {
    /// The URL of a standalone Redis, or each seed node of a cluster.
    pub fn urls(&self) -> Vec<&str> {
        seed_urls(self.url.expose(), self.mode)
    }

    /// [`RedisSettings::url`] with every password masked, for logs.
    pub fn redacted(&self) -> String {
        redact_list(&self.urls())
    }
}

/// A cluster's seed list is split at commas (a comma inside a password must be written `%2C`);
/// a standalone URL is taken whole.
fn seed_urls(raw: &str, mode: RedisMode) -> Vec<&str> {
    match mode {
        RedisMode::Standalone => vec![raw],
        RedisMode::Cluster => raw
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect(),
    }
}

#[derive(Debug, Clone)]
pub struct AmqpSettings {
    pub url: Secret,
    /// RabbitMQ's management API (`http://user:password@host:15672`): when set, the order
    /// queue's bound is a policy rather than a declaration argument.
    pub management_url: Option<Secret>,
    /// Prefix of every exchange and queue name.
    pub prefix: String,
    pub queue_type: QueueType,
    /// Unacknowledged messages a consumer holds at once (the order queue's holds at least two
    /// worker batches: `FlashSaleSettings::order_create_prefetch`).
    pub prefetch: u16,
    pub startup_timeout: Duration,
}

impl AmqpSettings {
    /// Each node's URL: `url` is one, or a comma-separated list of a cluster's nodes (a comma
    /// inside a password must be written `%2C`).
    pub fn urls(&self) -> Vec<&str> {
        amqp_urls(self.url.expose())
    }

    /// [`AmqpSettings::url`] with every password masked, for logs.
    pub fn redacted(&self) -> String {
        redact_list(&self.urls())
    }

    /// The virtual host the (first) URL names (`/` when it names none).
    pub fn vhost(&self) -> String {
        self.urls()
            .first()
            .and_then(|url| url.parse::<lapin::uri::AMQPUri>().ok())
            .map_or_else(|| "/".to_owned(), |uri| uri.vhost)
    }
}

/// A list of URLs, each with its password masked, joined with commas.
fn redact_list(urls: &[&str]) -> String {
    urls.iter()
        .map(|url| redact_url(url))
        .collect::<Vec<_>>()
        .join(",")
}

fn amqp_urls(raw: &str) -> Vec<&str> {
    raw.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// `redis_url`: one URL, or in cluster mode one or more seed nodes, each checked.
fn read_redis_url(r: &mut Reader<'_>, mode: RedisMode) -> Option<Secret> {
    let schemes: &[&str] = match mode {
        RedisMode::Standalone => &["redis", "rediss", "unix"],
        // The cluster client connects over TCP only.
        RedisMode::Cluster => &["redis", "rediss"],
    };
    r.url(
        "redis_url",
        "Redis 7 (configs/dev.toml has the local one); with `redis_mode = cluster`, seed nodes: `redis://a:6379,redis://b:6379`",
        "redis://127.0.0.1:6379",
        schemes,
        |raw| {
            let listed = raw.split(',').skip(1).any(|part| part.contains("://"));
            if mode == RedisMode::Standalone && listed {
                return Err("several nodes need redis_mode = cluster (SPIKE_REDIS_MODE)".into());
            }
            let seeds = seed_urls(raw, mode);
            if seeds.is_empty() {
                return Err("no seed node".into());
            }
            for seed in seeds {
                if !schemes.iter().any(|s| seed.starts_with(&format!("{s}://"))) {
                    return Err(format!("every seed must start with {}://", schemes.join("://, ")));
                }
                redis::Client::open(seed).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )
}

/// `user:password` and `host:port` of a management API URL, `http://user:password@host:port`
/// (no TLS, no path); `None` for any other form. The configuration checks the form with it, and
/// the management client takes the URL apart with it.
pub fn management_url_parts(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?.trim_end_matches('/');
    let (credentials, address) = rest.rsplit_once('@')?;
    let well_formed = credentials.contains(':') && !address.is_empty() && !address.contains('/');
    well_formed.then_some((credentials, address))
}

/// All three, read together because they share `startup_timeout`.
pub(super) fn read(
    r: &mut Reader<'_>,
    env: Environment,
) -> Option<(DatabaseSettings, RedisSettings, AmqpSettings)> {
    r.section("Stores");
    let startup_timeout = r.duration(
        "startup_timeout",
        "how long start-up retries a store that is down, then exits non-zero",
        Duration::from_secs(60),
    );

    let database_url = r.url(
        "database_url",
        "MySQL 8 / MariaDB 10.11 (configs/dev.toml has the local one)",
        "mysql://spike:spike@127.0.0.1:3306/spike",
        &["mysql", "mariadb"],
        |url| {
            MySqlConnectOptions::from_str(url)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    let read_url = r.optional_url(
        "database_read_url",
        "a MySQL replica for catalog reads (product list, detail, stock); unset: the primary (`database_url`). Orders, flash sales and every write use the primary",
        |url| {
            (url.starts_with("mysql://") || url.starts_with("mariadb://"))
                && MySqlConnectOptions::from_str(url).is_ok()
        },
        "not a valid mysql:// or mariadb:// URL",
    );
    let max_connections = r.at_least::<u32>(
        "db_max_connections",
        "MySQL pool size (each pool: the primary's, and the replica's when `database_read_url` is set)",
        20,
        1,
    );
    let auto_migrate = r.bool(
        "auto_migrate",
        "apply migrations when `serve`/`all` start",
        env == Environment::Dev,
    );
    r.default_is(
        "`true` in dev, `false` elsewhere (staging.toml sets `true`)",
        "true",
    );

    let redis_mode = r.choice(
        "redis_mode",
        "`standalone` (one server) or `cluster` (a Redis Cluster: `redis_url` lists seed nodes, comma-separated; docs/scale-out.md)",
        RedisMode::Standalone,
    );
    let redis_url = read_redis_url(r, redis_mode.unwrap_or(RedisMode::Standalone));
    let redis_prefix = r.text(
        "redis_prefix",
        "prefix of every Redis key (tests and tenants share one Redis); no `{` or `}`",
        "spike:",
    );
    if redis_prefix.contains(['{', '}']) {
        // The first `{…}` of a key is its cluster hash tag: a brace in the prefix would put
        // every event's keys in one slot, or scatter one event's keys over several.
        r.problem(
            "redis_prefix",
            "must not contain { or } (the event's hash tag decides a key's cluster slot)",
        );
    }

    let amqp_url = r.url(
        "amqp_url",
        "RabbitMQ 3 (configs/dev.toml has the local one); a cluster's nodes as a comma-separated list, tried in turn when the connected node goes away",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        &["amqp", "amqps"],
        |raw| {
            let urls = amqp_urls(raw);
            if urls.is_empty() {
                return Err("no node".into());
            }
            for url in urls {
                if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                    return Err("every node must start with amqp:// or amqps://".into());
                }
                url.parse::<lapin::uri::AMQPUri>()?;
            }
            Ok(())
        },
    );
    let management_url = r.optional_url(
        "amqp_management_url",
        "RabbitMQ's management API, `http://user:password@host:15672`: when set, the `spike.order.create` bound (`flash_sale_queue_max_length`) is applied as a policy, so changing it needs no queue recreated (docs/scale-out.md)",
        |url| management_url_parts(url).is_some(),
        "must be http://user:password@host:port (no TLS, no path)",
    );
    let amqp_prefix = r.text("amqp_prefix", "prefix of every exchange and queue name", "");
    let queue_type = r.choice(
        "amqp_queue_type",
        "`quorum` (replicated; RabbitMQ ≥ 3.10 for message TTLs) or `classic`",
        QueueType::Quorum,
    );
    let prefetch = r.at_least::<u16>(
        "amqp_prefetch",
        "unacknowledged messages per consumer (the `spike.order.create` consumer holds at least 2 × `SPIKE_FLASH_SALE_BATCH_MAX`)",
        32,
        1,
    );

    let startup_timeout = startup_timeout?;
    Some((
        DatabaseSettings {
            url: database_url?,
            read_url: read_url?,
            max_connections: max_connections?,
            auto_migrate: auto_migrate?,
            startup_timeout,
        },
        RedisSettings {
            url: redis_url?,
            mode: redis_mode?,
            prefix: redis_prefix,
            startup_timeout,
        },
        AmqpSettings {
            url: amqp_url?,
            management_url: management_url?,
            prefix: amqp_prefix,
            queue_type: queue_type?,
            prefetch: prefetch?,
            startup_timeout,
        },
    ))
}
