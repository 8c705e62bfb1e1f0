//! Typed configuration: `configs/<SPIKE_ENV>.toml` overridden by `SPIKE_*` environment variables.
//!
//! Every key is flat (`database_url` in the file is `SPIKE_DATABASE_URL` in the environment), so one
//! table in the README documents both. Loading never stops at the first problem: it checks every key
//! and returns one [`ConfigError`] listing all of them, because a deploy that fails five times in a
//! row for five different typos is worse than one that fails once with the whole list.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::MySqlConnectOptions;

/// The JWT secret shipped in `configs/dev.toml`. Accepted only when `SPIKE_ENV=dev`.
pub const DEV_JWT_SECRET: &str = "dev-only-jwt-secret-change-me-0123456789abcdef";

/// Minimum length of `jwt_secret` in bytes (HS256 wants at least the hash size).
const MIN_JWT_SECRET_BYTES: usize = 32;

/// Every key the service understands; anything else is reported as unknown.
const KNOWN_KEYS: &[&str] = &[
    "env",
    "config_dir",
    "http_addr",
    "http_body_limit",
    "http_request_timeout",
    "cors_origins",
    "shutdown_grace",
    "database_url",
    "db_max_connections",
    "redis_url",
    "redis_prefix",
    "amqp_url",
    "amqp_prefix",
    "amqp_queue_type",
    "startup_timeout",
    "auto_migrate",
    "jwt_secret",
    "access_ttl",
    "refresh_ttl",
    "order_pay_timeout",
    "bootstrap_admin_email",
    "bootstrap_admin_password",
    "login_limit_per_ip",
    "login_limit_per_email",
    "trusted_proxy_hops",
    "argon2_memory_kib",
    "argon2_iterations",
    "argon2_parallelism",
    "password_hash_concurrency",
    "product_cache_ttl",
    "product_cache_missing_ttl",
    "amqp_prefetch",
    "outbox_poll_interval",
    "spike_retry_delays",
    "spike_user_rate_limit",
    "spike_event_rate_limit",
    "spike_warmup_lead",
    "spike_scheduler_interval",
    "spike_reconcile_after",
    "spike_queue_max_length",
    "spike_keys_retention",
    "spike_mode",
    "log_format",
    "log_level",
];

/// Deployment environment; selects the config file and a few safety rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Dev,
    Staging,
    Prod,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Dev => "dev",
            Environment::Staging => "staging",
            Environment::Prod => "prod",
        }
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dev" => Ok(Environment::Dev),
            "staging" => Ok(Environment::Staging),
            "prod" => Ok(Environment::Prod),
            _ => Err("must be one of dev, staging, prod".into()),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err("must be json or pretty".into()),
        }
    }
}

/// RabbitMQ queue type for the durable work queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated Raft queues (RabbitMQ ≥ 3.8): survive the loss of a node.
    Quorum,
    /// Classic queues: for brokers or setups without quorum support.
    Classic,
}

impl FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quorum" => Ok(QueueType::Quorum),
            "classic" => Ok(QueueType::Classic),
            _ => Err("must be quorum or classic".into()),
        }
    }
}

/// How the flash-sale buy endpoint takes a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpikeMode {
    /// Redis reservation, confirmed publish, order created by the worker (DESIGN.md §5).
    Queue,
    /// The naive baseline: one MySQL transaction per request, no Redis, no queue. For teaching
    /// and for measuring what the queue path buys (docs/benchmarks.md); never for a real sale.
    Db,
}

impl FromStr for SpikeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "queue" => Ok(SpikeMode::Queue),
            "db" => Ok(SpikeMode::Db),
            _ => Err("must be queue or db".into()),
        }
    }
}

/// Which browser origins may call the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

/// A value that must never reach a log line. `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A token bucket: `burst` requests at once, refilled at `burst` per `per`. Written `10/1m`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub burst: u32,
    pub per: Duration,
}

impl RateLimit {
    /// Tokens added per second.
    pub fn refill_per_second(&self) -> f64 {
        f64::from(self.burst) / self.per.as_secs_f64()
    }
}

impl FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let invalid = || "must look like 10/1m (requests per duration)".to_string();
        let (burst, per) = s.split_once('/').ok_or_else(invalid)?;
        let burst: u32 = burst.trim().parse().map_err(|_| invalid())?;
        let per = parse_duration(per.trim()).map_err(|_| invalid())?;
        if burst == 0 || per.is_zero() {
            return Err("both the count and the duration must be greater than zero".into());
        }
        Ok(RateLimit { burst, per })
    }
}

/// Argon2id cost parameters (OWASP's recommendation by default: 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// Credentials of the admin account created or promoted at start-up.
#[derive(Debug, Clone)]
pub struct BootstrapAdmin {
    pub email: String,
    pub password: Secret,
}

/// The validated configuration of one process.
#[derive(Debug, Clone)]
pub struct Config {
    pub env: Environment,
    pub http_addr: SocketAddr,
    /// Largest accepted request body in bytes (larger → 413/10010).
    pub http_body_limit: usize,
    /// A request still running after this answers 503/10008.
    pub http_request_timeout: Duration,
    pub cors_origins: CorsOrigins,
    /// How long shutdown waits for in-flight work before giving up.
    pub shutdown_grace: Duration,
    pub database_url: Secret,
    pub db_max_connections: u32,
    pub redis_url: Secret,
    pub redis_prefix: String,
    pub amqp_url: Secret,
    pub amqp_prefix: String,
    pub amqp_queue_type: QueueType,
    /// How long start-up keeps retrying a dependency that is down before it gives up.
    pub startup_timeout: Duration,
    pub auto_migrate: bool,
    pub jwt_secret: Secret,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub order_pay_timeout: Duration,
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// Login attempts per client IP.
    pub login_limit_per_ip: RateLimit,
    /// Failed login attempts per email address.
    pub login_limit_per_email: RateLimit,
    /// Reverse proxies in front of the service that append to `X-Forwarded-For`; 0 trusts no
    /// header and uses the socket's peer address as the client IP.
    pub trusted_proxy_hops: usize,
    pub argon2: Argon2Params,
    /// Password hashes computed at once; each takes `argon2.memory_kib` of memory.
    pub password_hash_concurrency: usize,
    /// Lifetime of a cached product detail (± 10 % jitter).
    pub product_cache_ttl: Duration,
    /// Lifetime of the "no such product" marker.
    pub product_cache_missing_ttl: Duration,
    /// Unacknowledged messages a consumer holds at once (and handles concurrently).
    pub amqp_prefetch: u16,
    /// How often an idle outbox relay looks for new messages.
    pub outbox_poll_interval: Duration,
    /// Backoff before each retry of a failed flash-sale order creation; after the last one the
    /// message dead-letters. Written `1s,5s,30s`.
    pub spike_retry_delays: Vec<Duration>,
    /// Flash-sale requests per buyer, counted in each API process.
    pub spike_user_rate_limit: RateLimit,
    /// Flash-sale requests admitted per event across every replica (counted in Redis).
    pub spike_event_rate_limit: RateLimit,
    /// The worker warms events starting within this much time.
    pub spike_warmup_lead: Duration,
    /// How often the worker's warm-up scheduler and reconciler run.
    pub spike_scheduler_interval: Duration,
    /// A reservation older than this without an order is republished by the reconciler.
    pub spike_reconcile_after: Duration,
    /// Messages `spike.order.create` holds before the broker refuses more (`reject-publish`).
    pub spike_queue_max_length: u32,
    /// How long an event's Redis keys (stock, buyers, reservations) outlive the event.
    pub spike_keys_retention: Duration,
    /// `queue` (the real path) or `db` (the naive baseline the load tool compares against).
    pub spike_mode: SpikeMode,
    pub log_format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `spike=debug,sqlx=warn`.
    pub log_level: String,
    /// Keys found in the file or as `SPIKE_*` variables that no setting uses (typos, usually).
    pub unknown_keys: Vec<String>,
    /// The file that was read, if any.
    pub source_file: Option<PathBuf>,
}

/// Every problem found while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
    /// The config file that was looked for and not found, when that may explain the problems.
    pub missing_file: Option<PathBuf>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        if let Some(file) = &self.missing_file {
            writeln!(
                f,
                "(no config file at {}; set SPIKE_CONFIG_DIR?)",
                file.display()
            )?;
        }
        Ok(())
    }
}

impl Config {
    /// Loads from the process environment and `configs/<SPIKE_ENV>.toml`.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::load(std::env::vars())
    }

    /// Loads from the given variables (only `SPIKE_*` ones are looked at) and the config file they select.
    pub fn load(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let env_vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("SPIKE_"))
            .collect();

        let mut problems = Vec::new();
        let raw_env = env_vars
            .get("SPIKE_ENV")
            .map(String::as_str)
            .unwrap_or("dev");
        let env = raw_env.parse::<Environment>().unwrap_or_else(|e| {
            problems.push(format!("env (SPIKE_ENV): {e} (got {raw_env:?})"));
            Environment::Dev
        });
        let config_dir = env_vars
            .get("SPIKE_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("configs"));
        let file = config_dir.join(format!("{}.toml", env.as_str()));
        let file_exists = file.is_file();

        let merged = match read_sources(&file, file_exists, &env_vars) {
            Ok(map) => map,
            Err(e) => {
                problems.push(e);
                BTreeMap::new()
            }
        };

        let mut reader = KeyReader {
            values: &merged,
            problems,
        };
        let config = build(env, &mut reader);
        let unknown_keys = merged
            .keys()
            .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();

        if !reader.problems.is_empty() {
            return Err(ConfigError {
                problems: reader.problems,
                missing_file: (!file_exists).then_some(file),
            });
        }
        let mut config = config.expect("no problems means every key was read");
        config.unknown_keys = unknown_keys;
        config.source_file = file_exists.then_some(file);
        Ok(config)
    }
}

/// Merges the file (when present) and the environment into one flat `key → string` map.
fn read_sources(
    file: &Path,
    file_exists: bool,
    env_vars: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut builder = config::Config::builder();
    if file_exists {
        builder = builder.add_source(config::File::from(file.to_path_buf()));
    }
    let env_map: config::Map<String, String> = env_vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("SPIKE")
            .prefix_separator("_")
            .source(Some(env_map)),
    );
    let merged = builder
        .build()
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let table = merged
        .try_deserialize::<HashMap<String, config::Value>>()
        .map_err(|e| format!("cannot read configuration: {e}"))?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        match value.into_string() {
            Ok(s) => {
                out.insert(key.to_lowercase(), s);
            }
            Err(_) => return Err(format!("{key}: must be a plain value, not a table or list")),
        }
    }
    Ok(out)
}

/// Reads keys one by one, recording a problem for each missing or invalid one.
struct KeyReader<'a> {
    values: &'a BTreeMap<String, String>,
    problems: Vec<String>,
}

impl KeyReader<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems
            .push(format!("{key} (SPIKE_{}): {message}", key.to_uppercase()));
    }

    fn required(&mut self, key: &str) -> Option<String> {
        let value = self.raw(key).map(str::to_owned);
        if value.is_none() {
            self.problem(key, "missing");
        }
        value
    }

    fn optional(&self, key: &str) -> Option<String> {
        self.raw(key).map(str::to_owned)
    }

    fn parsed<T: FromStr>(&mut self, key: &str, default: T) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        match self.raw(key) {
            None => Some(default),
            Some(raw) => match raw.parse::<T>() {
                Ok(v) => Some(v),
                Err(e) => {
                    let raw = raw.to_owned();
                    self.problem(key, format!("{e} (got {raw:?})"));
                    None
                }
            },
        }
    }

    fn duration(&mut self, key: &str, default: Duration) -> Option<Duration> {
        let Some(raw) = self.raw(key).map(str::to_owned) else {
            return Some(default);
        };
        match parse_duration(&raw) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(key, "must be greater than zero");
                None
            }
            Err(e) => {
                self.problem(key, format!("{e} (got {raw:?}; use e.g. 15m, 30s, 7d)"));
                None
            }
        }
    }

    fn bool(&mut self, key: &str, default: bool) -> Option<bool> {
        match self.raw(key).map(str::to_ascii_lowercase).as_deref() {
            None => Some(default),
            Some("true" | "1" | "yes" | "on") => Some(true),
            Some("false" | "0" | "no" | "off") => Some(false),
            Some(other) => {
                let other = other.to_owned();
                self.problem(key, format!("must be true or false (got {other:?})"));
                None
            }
        }
    }

    /// A URL whose scheme must be one of `schemes`; `check` parses it further.
    fn url(
        &mut self,
        key: &str,
        schemes: &[&str],
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<Secret> {
        let raw = self.required(key)?;
        let scheme_ok = schemes.iter().any(|s| raw.starts_with(&format!("{s}://")));
        if !scheme_ok {
            self.problem(key, format!("must start with {}://", schemes.join("://, ")));
            return None;
        }
        if let Err(e) = check(&raw) {
            // The parser's message may echo the URL, password included: keep only its kind.
            self.problem(key, format!("not a valid URL ({})", first_words(&e)));
            return None;
        }
        Some(Secret::new(raw))
    }
}

fn first_words(message: &str) -> String {
    message
        .split([':', '/'])
        .next()
        .unwrap_or("invalid")
        .trim()
        .to_owned()
}

/// Accepts humantime strings (`15m`, `2s`, `1h 30m`) and bare integers as seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    if let Ok(secs) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw).map_err(|e| e.to_string())
}

fn build(env: Environment, r: &mut KeyReader<'_>) -> Option<Config> {
    let http_addr = r.parsed::<SocketAddr>("http_addr", ([0, 0, 0, 0], 8080).into());
    let http_body_limit = r.parsed::<usize>("http_body_limit", 64 * 1024);
    let http_request_timeout = r.duration("http_request_timeout", Duration::from_secs(10));
    // Unlike other keys, an empty value is meaningful here: no browser origin at all.
    let cors_origins = match r.values.get("cors_origins").map(|v| v.trim()) {
        None | Some("*") => CorsOrigins::Any,
        Some(list) => CorsOrigins::List(
            list.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        ),
    };
    let shutdown_grace = r.duration("shutdown_grace", Duration::from_secs(30));

    let database_url = r.url("database_url", &["mysql", "mariadb"], |url| {
        MySqlConnectOptions::from_str(url)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let db_max_connections = r.parsed::<u32>("db_max_connections", 20);
    let redis_url = r.url("redis_url", &["redis", "rediss", "unix"], |url| {
        redis::Client::open(url)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let redis_prefix = r
        .optional("redis_prefix")
        .unwrap_or_else(|| "spike:".into());
    let amqp_url = r.url("amqp_url", &["amqp", "amqps"], |url| {
        url.parse::<lapin::uri::AMQPUri>().map(|_| ())
    });
    let amqp_prefix = r.optional("amqp_prefix").unwrap_or_default();
    let amqp_queue_type = r.parsed("amqp_queue_type", QueueType::Quorum);
    let startup_timeout = r.duration("startup_timeout", Duration::from_secs(60));
    let auto_migrate = r.bool("auto_migrate", env == Environment::Dev);

    let jwt_secret = match r.optional("jwt_secret") {
        None => {
            r.problem("jwt_secret", "missing");
            None
        }
        Some(s) if env != Environment::Dev && s == DEV_JWT_SECRET => {
            r.problem("jwt_secret", "the dev default is not allowed outside dev");
            None
        }
        Some(s) if s.len() < MIN_JWT_SECRET_BYTES => {
            r.problem(
                "jwt_secret",
                format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
            );
            None
        }
        Some(s) => Some(Secret::new(s)),
    };
    let access_ttl = r.duration("access_ttl", Duration::from_secs(15 * 60));
    let refresh_ttl = r.duration("refresh_ttl", Duration::from_secs(14 * 24 * 3600));
    let order_pay_timeout = r.duration("order_pay_timeout", Duration::from_secs(15 * 60));

    let bootstrap_admin = match (
        r.optional("bootstrap_admin_email"),
        r.optional("bootstrap_admin_password"),
    ) {
        (None, None) => Some(None),
        (Some(email), Some(password)) => Some(Some(BootstrapAdmin {
            email,
            password: Secret::new(password),
        })),
        (Some(_), None) => {
            r.problem(
                "bootstrap_admin_password",
                "missing (bootstrap_admin_email is set)",
            );
            None
        }
        (None, Some(_)) => {
            r.problem(
                "bootstrap_admin_email",
                "missing (bootstrap_admin_password is set)",
            );
            None
        }
    };

    let login_limit_per_ip = r.parsed(
        "login_limit_per_ip",
        RateLimit {
            burst: 30,
            per: Duration::from_secs(60),
        },
    );
    let login_limit_per_email = r.parsed(
        "login_limit_per_email",
        RateLimit {
            burst: 10,
            per: Duration::from_secs(60),
        },
    );
    let trusted_proxy_hops = r.parsed::<usize>("trusted_proxy_hops", 0);
    let argon2_memory_kib = r.parsed::<u32>("argon2_memory_kib", 19 * 1024);
    let argon2_iterations = r.parsed::<u32>("argon2_iterations", 2);
    let argon2_parallelism = r.parsed::<u32>("argon2_parallelism", 1);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let password_hash_concurrency = r.parsed::<usize>("password_hash_concurrency", cores.max(2));
    if let (Some(m), Some(t), Some(p)) = (argon2_memory_kib, argon2_iterations, argon2_parallelism)
        && argon2::Params::new(m, t, p, None).is_err()
    {
        r.problem(
            "argon2_memory_kib",
            "argon2 parameters out of range (memory must be at least 8 × parallelism KiB)",
        );
    }
    if password_hash_concurrency == Some(0) {
        r.problem("password_hash_concurrency", "must be at least 1");
    }

    let product_cache_ttl = r.duration("product_cache_ttl", Duration::from_secs(60));
    let product_cache_missing_ttl =
        r.duration("product_cache_missing_ttl", Duration::from_secs(30));

    let amqp_prefetch = r.parsed::<u16>("amqp_prefetch", 32);
    if amqp_prefetch == Some(0) {
        r.problem("amqp_prefetch", "must be at least 1");
    }
    let outbox_poll_interval = r.duration("outbox_poll_interval", Duration::from_millis(500));
    let spike_retry_delays = match r.optional("spike_retry_delays") {
        None => Some(vec![
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(30),
        ]),
        Some(raw) => {
            let parsed: Result<Vec<Duration>, String> = raw
                .split(',')
                .map(|d| {
                    parse_duration(d.trim()).and_then(|d| {
                        if d.is_zero() {
                            Err("zero".into())
                        } else {
                            Ok(d)
                        }
                    })
                })
                .collect();
            match parsed {
                Ok(list) if (1..=10).contains(&list.len()) => Some(list),
                _ => {
                    r.problem(
                        "spike_retry_delays",
                        "must be 1 to 10 durations such as 1s,5s,30s",
                    );
                    None
                }
            }
        }
    };

    let spike_user_rate_limit = r.parsed(
        "spike_user_rate_limit",
        RateLimit {
            burst: 5,
            per: Duration::from_secs(1),
        },
    );
    let spike_event_rate_limit = r.parsed(
        "spike_event_rate_limit",
        RateLimit {
            burst: 20_000,
            per: Duration::from_secs(1),
        },
    );
    let spike_warmup_lead = r.duration("spike_warmup_lead", Duration::from_secs(5 * 60));
    let spike_scheduler_interval = r.duration("spike_scheduler_interval", Duration::from_secs(1));
    let spike_reconcile_after = r.duration("spike_reconcile_after", Duration::from_secs(60));
    let spike_queue_max_length = r.parsed::<u32>("spike_queue_max_length", 100_000);
    let spike_keys_retention = r.duration("spike_keys_retention", Duration::from_secs(3600));
    let spike_mode = r.parsed("spike_mode", SpikeMode::Queue);
    if spike_queue_max_length == Some(0) {
        r.problem("spike_queue_max_length", "must be at least 1");
    }

    let default_format = if env == Environment::Dev {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    };
    let log_format = r.parsed("log_format", default_format);
    let log_level = r.optional("log_level").unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        r.problem("log_level", e);
    }

    Some(Config {
        env,
        http_addr: http_addr?,
        http_body_limit: http_body_limit?,
        http_request_timeout: http_request_timeout?,
        cors_origins,
        shutdown_grace: shutdown_grace?,
        database_url: database_url?,
        db_max_connections: db_max_connections?,
        redis_url: redis_url?,
        redis_prefix,
        amqp_url: amqp_url?,
        amqp_prefix,
        amqp_queue_type: amqp_queue_type?,
        startup_timeout: startup_timeout?,
        auto_migrate: auto_migrate?,
        jwt_secret: jwt_secret?,
        access_ttl: access_ttl?,
        refresh_ttl: refresh_ttl?,
        order_pay_timeout: order_pay_timeout?,
        bootstrap_admin: bootstrap_admin?,
        login_limit_per_ip: login_limit_per_ip?,
        login_limit_per_email: login_limit_per_email?,
        trusted_proxy_hops: trusted_proxy_hops?,
        argon2: Argon2Params {
            memory_kib: argon2_memory_kib?,
            iterations: argon2_iterations?,
            parallelism: argon2_parallelism?,
        },
        password_hash_concurrency: password_hash_concurrency?,
        product_cache_ttl: product_cache_ttl?,
        product_cache_missing_ttl: product_cache_missing_ttl?,
        amqp_prefetch: amqp_prefetch?,
        outbox_poll_interval: outbox_poll_interval?,
        spike_retry_delays: spike_retry_delays?,
        spike_user_rate_limit: spike_user_rate_limit?,
        spike_event_rate_limit: spike_event_rate_limit?,
        spike_warmup_lead: spike_warmup_lead?,
        spike_scheduler_interval: spike_scheduler_interval?,
        spike_reconcile_after: spike_reconcile_after?,
        spike_queue_max_length: spike_queue_max_length?,
        spike_keys_retention: spike_keys_retention?,
        spike_mode: spike_mode?,
        log_format: log_format?,
        log_level,
        unknown_keys: Vec::new(),
        source_file: None,
    })
}

/// A URL with its password replaced by `***`, for log lines.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = vec![
            ("SPIKE_CONFIG_DIR".into(), "/nonexistent".into()),
            (
                "SPIKE_DATABASE_URL".into(),
                "mysql://u:p@127.0.0.1:3306/db".into(),
            ),
            ("SPIKE_REDIS_URL".into(), "redis://127.0.0.1:6379".into()),
            (
                "SPIKE_AMQP_URL".into(),
                "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            ),
            ("SPIKE_JWT_SECRET".into(), "x".repeat(32)),
        ];
        for (k, val) in pairs {
            v.retain(|(key, _)| key != k);
            v.push(((*k).into(), (*val).into()));
        }
        v
    }

    #[test]
    fn minimal_environment_loads_with_defaults() {
        let c = Config::load(vars(&[])).expect("valid");
        assert_eq!(c.env, Environment::Dev);
        assert_eq!(c.http_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.order_pay_timeout, Duration::from_secs(900));
        assert_eq!(c.redis_prefix, "spike:");
        assert_eq!(c.amqp_prefix, "");
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert!(c.bootstrap_admin.is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = Config::load(vars(&[
            ("SPIKE_ENV", "prod"),
            ("SPIKE_DATABASE_URL", ""),
            ("SPIKE_REDIS_URL", "http://nope"),
            ("SPIKE_JWT_SECRET", "short"),
            ("SPIKE_ORDER_PAY_TIMEOUT", "soon"),
            ("SPIKE_HTTP_ADDR", "localhost"),
            ("SPIKE_AUTO_MIGRATE", "maybe"),
        ]))
        .expect_err("invalid");
        let text = err.to_string();
        for key in [
            "database_url (SPIKE_DATABASE_URL): missing",
            "redis_url (SPIKE_REDIS_URL)",
            "jwt_secret (SPIKE_JWT_SECRET)",
            "order_pay_timeout (SPIKE_ORDER_PAY_TIMEOUT)",
            "http_addr (SPIKE_HTTP_ADDR)",
            "auto_migrate (SPIKE_AUTO_MIGRATE)",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert_eq!(err.problems.len(), 6, "{text}");
    }

    #[test]
    fn dev_jwt_secret_is_refused_outside_dev() {
        let err = Config::load(vars(&[
            ("SPIKE_ENV", "staging"),
            ("SPIKE_JWT_SECRET", DEV_JWT_SECRET),
        ]))
        .expect_err("dev secret in staging");
        assert!(err.to_string().contains("not allowed outside dev"));
        Config::load(vars(&[("SPIKE_JWT_SECRET", DEV_JWT_SECRET)])).expect("fine in dev");
    }

    #[test]
    fn non_dev_defaults_to_json_logs() {
        let c = Config::load(vars(&[("SPIKE_ENV", "prod")])).expect("valid");
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(!c.auto_migrate);
    }

    #[test]
    fn bootstrap_admin_needs_both_halves() {
        let err =
            Config::load(vars(&[("SPIKE_BOOTSTRAP_ADMIN_EMAIL", "a@b.c")])).expect_err("half");
        assert!(err.to_string().contains("bootstrap_admin_password"));
        let c = Config::load(vars(&[
            ("SPIKE_BOOTSTRAP_ADMIN_EMAIL", "a@b.c"),
            ("SPIKE_BOOTSTRAP_ADMIN_PASSWORD", "secret-pass"),
        ]))
        .expect("both");
        assert_eq!(c.bootstrap_admin.unwrap().email, "a@b.c");
    }

    #[test]
    fn invalid_url_error_does_not_echo_the_password() {
        let err = Config::load(vars(&[("SPIKE_DATABASE_URL", "mysql://u:hunter2@[bad")]))
            .expect_err("bad url");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn cors_origins_any_list_or_none() {
        assert_eq!(
            Config::load(vars(&[])).unwrap().cors_origins,
            CorsOrigins::Any
        );
        let list = Config::load(vars(&[(
            "SPIKE_CORS_ORIGINS",
            "https://a.example, https://b.example",
        )]))
        .unwrap()
        .cors_origins;
        assert_eq!(
            list,
            CorsOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
        let none = Config::load(vars(&[("SPIKE_CORS_ORIGINS", "")]))
            .unwrap()
            .cors_origins;
        assert_eq!(none, CorsOrigins::List(vec![]));
    }

    #[test]
    fn unknown_keys_are_collected() {
        let c = Config::load(vars(&[("SPIKE_DATABSE_URL", "typo")])).expect("valid");
        assert_eq!(c.unknown_keys, vec!["databse_url".to_string()]);
    }

    #[test]
    fn rate_limits_parse_as_count_per_duration() {
        let limit: RateLimit = "10/1m".parse().unwrap();
        assert_eq!(limit.burst, 10);
        assert!((limit.refill_per_second() - 10.0 / 60.0).abs() < 1e-9);
        assert!("10".parse::<RateLimit>().is_err());
        assert!("0/1m".parse::<RateLimit>().is_err());
        assert!("x/1m".parse::<RateLimit>().is_err());
        let err = Config::load(vars(&[("SPIKE_LOGIN_LIMIT_PER_IP", "lots")])).expect_err("bad");
        assert!(err.to_string().contains("login_limit_per_ip"));
    }

    #[test]
    fn retry_delays_are_a_list_of_durations() {
        let c = Config::load(vars(&[("SPIKE_SPIKE_RETRY_DELAYS", "100ms, 2s")])).unwrap();
        assert_eq!(
            c.spike_retry_delays,
            vec![Duration::from_millis(100), Duration::from_secs(2)]
        );
        assert!(Config::load(vars(&[("SPIKE_SPIKE_RETRY_DELAYS", "1s,soon")])).is_err());
        assert!(Config::load(vars(&[("SPIKE_SPIKE_RETRY_DELAYS", "0s")])).is_err());
    }

    #[test]
    fn the_flash_sale_mode_is_queue_unless_db_is_asked_for() {
        assert_eq!(
            Config::load(vars(&[])).unwrap().spike_mode,
            SpikeMode::Queue
        );
        let c = Config::load(vars(&[("SPIKE_SPIKE_MODE", "db")])).unwrap();
        assert_eq!(c.spike_mode, SpikeMode::Db);
        let err = Config::load(vars(&[("SPIKE_SPIKE_MODE", "redis")])).expect_err("bad");
        assert!(err.to_string().contains("spike_mode"), "{err}");
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_urls() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
        assert_eq!(
            redact_url("mysql://spike:hunter2@db:3306/spike"),
            "mysql://spike:***@db:3306/spike"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
