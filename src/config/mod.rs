//! Typed configuration: `configs/<SPIKE_ENV>.toml` overridden by `SPIKE_*` environment variables.
//!
//! Every key is flat (`database_url` in the file is `SPIKE_DATABASE_URL` in the environment). Each
//! area has its own settings struct and reads its own keys ([`http`], [`stores`], [`auth`],
//! [`shop`], [`flash_sale`], [`telemetry`]); each component is handed only its own section.
//! Loading never stops at the first problem: it reads every key and returns one [`ConfigError`]
//! listing all of them, because a deploy that fails five times in a row for five typos is worse
//! than one that fails once with the whole list. The reader records which keys it read, so a key
//! nothing read is reported as unknown, and how each is documented: the README's key table and
//! `.env.example` are rendered from that record ([`key_docs`]; a test fails when they differ).

mod auth;
mod docs;
mod flash_sale;
mod http;
mod reader;
mod shop;
mod stores;
mod telemetry;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

pub use auth::{
    Argon2Params, AuthSettings, BootstrapAdmin, DEV_ADMIN_EMAIL, DEV_ADMIN_PASSWORD, DEV_JWT_SECRET,
};
pub use docs::{env_example, readme_table};
pub use flash_sale::FlashSaleSettings;
pub use http::HttpSettings;
pub use reader::KeyDoc;
pub use shop::{CatalogSettings, OrderSettings};
pub use stores::{AmqpSettings, DatabaseSettings, RedisSettings, management_url_parts};
pub use telemetry::TelemetrySettings;
pub use values::{
    CorsOrigins, Environment, FlashSaleMode, LogFormat, QueueType, RateLimit, RedisMode, Secret,
    parse_duration, redact_url,
};

use reader::{ENV_PREFIX, Reader};

/// The validated configuration of one process, one section per area.
#[derive(Debug, Clone)]
pub struct Config {
    pub env: Environment,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub amqp: AmqpSettings,
    pub auth: AuthSettings,
    pub catalog: CatalogSettings,
    pub orders: OrderSettings,
    pub flash_sale: FlashSaleSettings,
    pub telemetry: TelemetrySettings,
    /// Keys found in the file or as `SPIKE_*` variables that no setting reads (typos, usually).
    pub unknown_keys: Vec<String>,
    /// `(old, new)` for keys set under a name that still works but is deprecated.
    pub renamed_keys: Vec<(String, String)>,
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

    /// Loads from the given variables (only `SPIKE_*` ones are looked at) and the config file
    /// they select.
    pub fn load(vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let env_vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();

        let mut problems = Vec::new();
        let raw_env = env_vars
            .get("SPIKE_ENV")
            .map(String::as_str)
            .unwrap_or("dev");
        let env = raw_env.parse::<Environment>().unwrap_or_else(|_| {
            problems.push(format!(
                "env (SPIKE_ENV): must be one of dev, staging, prod (got {raw_env:?})"
            ));
            Environment::Dev
        });
        let config_dir = env_vars
            .get("SPIKE_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("configs"));
        let file = config_dir.join(format!("{}.toml", env.as_str()));
        let file_exists = file.is_file();

        let merged = reader::read_sources(&file, file_exists, &env_vars).unwrap_or_else(|e| {
            problems.push(e);
            BTreeMap::new()
        });
        let mut reader = Reader::new(&merged);
        reader.problems = problems;
        let config = read_all(env, &mut reader);
        if !reader.problems.is_empty() {
            return Err(ConfigError {
                problems: reader.problems,
                missing_file: (!file_exists).then_some(file),
            });
        }
        let mut config = config.expect("no problems means every key was read");
        config.unknown_keys = reader.unread_keys();
        config.renamed_keys = reader.renamed;
        config.source_file = file_exists.then_some(file);
        Ok(config)
    }
}

/// Every key, in the order it is read, with its documentation.
pub fn key_docs() -> Vec<KeyDoc> {
    let nothing = BTreeMap::new();
    let mut reader = Reader::new(&nothing);
    let _ = read_all(Environment::Dev, &mut reader);
    reader.docs
}

fn read_all(env: Environment, r: &mut Reader<'_>) -> Option<Config> {
    // Read before the file (they choose it), documented here so they appear in the tables.
    r.section("Environment");
    r.document(
        "env",
        "`dev`, `staging` or `prod`; selects the config file",
        "dev".into(),
    );
    r.document(
        "config_dir",
        "where the `<env>.toml` files are",
        "configs".into(),
    );
    let http = HttpSettings::read(r, env);
    let stores = stores::read(r, env);
    let auth = AuthSettings::read(r, env);
    let catalog = CatalogSettings::read(r, env);
    let orders = OrderSettings::read(r, env);
    let flash_sale = FlashSaleSettings::read(r, env);
    let telemetry = TelemetrySettings::read(r, env);
    let (database, redis, amqp) = stores?;
    Some(Config {
        env,
        http: http?,
        database,
        redis,
        amqp,
        auth: auth?,
        catalog: catalog?,
        orders: orders?,
        flash_sale: flash_sale?,
        telemetry: telemetry?,
        unknown_keys: Vec::new(),
        renamed_keys: Vec::new(),
        source_file: None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert_eq!(c.http.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.orders.pay_timeout, Duration::from_secs(900));
        assert_eq!(c.redis.prefix, "spike:");
        assert_eq!(c.amqp.prefix, "");
        assert_eq!(c.telemetry.log_format, LogFormat::Pretty);
        assert_eq!(c.auth.login_limit_per_ip.to_string(), "600/1m");
        assert!(c.auth.bootstrap_admin.is_none());
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
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
            ("SPIKE_AMQP_PREFETCH", "0"),
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
            "amqp_prefetch (SPIKE_AMQP_PREFETCH): must be at least 1",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert_eq!(err.problems.len(), 7, "{text}");
    }

    #[test]
    fn a_redis_cluster_is_named_by_its_seed_nodes_and_a_single_redis_by_one_url() {
        let load = |pairs: &[(&str, &str)]| Config::load(vars(pairs)).map(|c| c.redis);
        let single = load(&[]).unwrap();
        assert_eq!(single.mode, RedisMode::Standalone);
        assert_eq!(single.urls(), ["redis://127.0.0.1:6379"]);

        let seeds = "redis://:pw1@a:7000, redis://:pw2@b:7001";
        let cluster = load(&[("SPIKE_REDIS_MODE", "cluster"), ("SPIKE_REDIS_URL", seeds)]).unwrap();
        assert_eq!(cluster.mode, RedisMode::Cluster);
        assert_eq!(
            cluster.urls(),
            ["redis://:pw1@a:7000", "redis://:pw2@b:7001"]
        );
        assert_eq!(
            cluster.redacted(),
            "redis://:***@a:7000,redis://:***@b:7001"
        );

        let err = load(&[("SPIKE_REDIS_URL", seeds)]).expect_err("a list without cluster mode");
        assert!(
            err.to_string()
                .contains("several nodes need redis_mode = cluster"),
            "{err}"
        );
        let err = load(&[
            ("SPIKE_REDIS_MODE", "cluster"),
            ("SPIKE_REDIS_URL", "redis://a:7000,http://b:7001"),
        ])
        .expect_err("a seed of another scheme");
        assert!(
            err.to_string().contains("redis_url (SPIKE_REDIS_URL)"),
            "{err}"
        );
        load(&[
            ("SPIKE_REDIS_MODE", "cluster"),
            ("SPIKE_REDIS_URL", "unix:///tmp/r.sock"),
        ])
        .expect_err("the cluster client speaks TCP only");
        load(&[("SPIKE_REDIS_MODE", "sharded")]).expect_err("not a mode");
    }

    #[test]
    fn a_redis_prefix_with_a_brace_is_refused_as_it_would_move_the_hash_tag() {
        let err = Config::load(vars(&[("SPIKE_REDIS_PREFIX", "shop{1}:")])).expect_err("brace");
        assert!(err.to_string().contains("must not contain {"), "{err}");
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
    fn the_dev_admins_published_password_is_refused_outside_dev() {
        let admin = |env: &'static str| {
            Config::load(vars(&[
                ("SPIKE_ENV", env),
                ("SPIKE_BOOTSTRAP_ADMIN_EMAIL", "root@shop.example"),
                ("SPIKE_BOOTSTRAP_ADMIN_PASSWORD", DEV_ADMIN_PASSWORD),
            ]))
        };
        for env in ["staging", "prod"] {
            let err = admin(env).expect_err("the dev admin's password outside dev");
            assert!(err.to_string().contains("not allowed outside dev"), "{err}");
            assert!(
                !err.to_string().contains(DEV_ADMIN_PASSWORD),
                "not echoed: {err}"
            );
        }
        let dev = admin("dev").expect("fine in dev");
        assert!(
            !dev.auth.bootstrap_admin.unwrap().is_dev_default(),
            "another email"
        );
    }

    #[test]
    fn the_shipped_dev_config_has_the_dev_admin_and_the_others_none() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
        let load = |env: &str| {
            let mut pairs = vars(&[("SPIKE_ENV", env)]);
            pairs.retain(|(key, _)| key != "SPIKE_CONFIG_DIR");
            pairs.push(("SPIKE_CONFIG_DIR".into(), dir.into()));
            Config::load(pairs).map(|c| c.auth.bootstrap_admin)
        };
        let dev = load("dev").unwrap().expect("a dev admin");
        assert_eq!(dev.email, DEV_ADMIN_EMAIL);
        assert!(dev.is_dev_default());
        assert!(load("staging").unwrap().is_none());
        assert!(load("prod").unwrap().is_none());
    }

    #[test]
    fn dev_bounds_the_order_queue_by_policy_unless_the_url_is_emptied() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/configs");
        let load = |pairs: &[(&str, &str)]| {
            let mut all = vars(pairs);
            all.retain(|(key, _)| key != "SPIKE_CONFIG_DIR");
            all.push(("SPIKE_CONFIG_DIR".into(), dir.into()));
            Config::load(all).unwrap().amqp.management_url
        };
        let dev = load(&[]).expect("policy mode in dev");
        assert_eq!(dev.expose(), "http://guest:guest@127.0.0.1:15672");
        assert!(load(&[("SPIKE_AMQP_MANAGEMENT_URL", "")]).is_none());
        assert!(
            load(&[("SPIKE_ENV", "prod")]).is_none(),
            "elsewhere it is the operator's"
        );
    }

    #[test]
    fn non_dev_defaults_to_json_logs() {
        let c = Config::load(vars(&[("SPIKE_ENV", "prod")])).expect("valid");
        assert_eq!(c.telemetry.log_format, LogFormat::Json);
        assert!(!c.database.auto_migrate);
    }

    #[test]
    fn request_lines_are_all_logged_in_dev_and_sampled_elsewhere() {
        let sample = |pairs: &[(&str, &str)]| {
            Config::load(vars(pairs)).map(|c| c.telemetry.request_log_sample)
        };
        assert_eq!(sample(&[]).unwrap(), 1.0);
        assert_eq!(sample(&[("SPIKE_ENV", "prod")]).unwrap(), 0.01);
        assert_eq!(sample(&[("SPIKE_LOG_REQUEST_SAMPLE", "0")]).unwrap(), 0.0);
        let err = sample(&[("SPIKE_LOG_REQUEST_SAMPLE", "1.5")]).expect_err("above 1");
        assert!(err.to_string().contains("must be from 0 to 1"), "{err}");
        sample(&[("SPIKE_LOG_REQUEST_SAMPLE", "half")]).expect_err("not a number");
    }

    #[test]
    fn tracing_is_off_unless_an_http_collector_is_named_and_samples_a_share() {
        let load = |pairs: &[(&str, &str)]| Config::load(vars(pairs)).map(|c| c.telemetry);
        assert_eq!(load(&[]).unwrap().otlp_endpoint, None);
        assert_eq!(
            load(&[("SPIKE_OTLP_ENDPOINT", " ")]).unwrap().otlp_endpoint,
            None
        );
        let on = load(&[("SPIKE_OTLP_ENDPOINT", "http://collector:4318")]).unwrap();
        assert_eq!(on.otlp_endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(on.trace_sample_ratio, 1.0, "dev traces everything");
        let prod = load(&[("SPIKE_ENV", "prod")]).unwrap();
        assert_eq!(prod.trace_sample_ratio, 0.01);
        let err = load(&[("SPIKE_OTLP_ENDPOINT", "https://collector:4318")]).expect_err("TLS");
        assert!(err.to_string().contains("must start with http://"), "{err}");
        let err = load(&[("SPIKE_TRACE_SAMPLE_RATIO", "-0.1")]).expect_err("below 0");
        assert!(err.to_string().contains("must be from 0 to 1"), "{err}");
        let internal = Config::load(vars(&[])).unwrap().http.internal_addr;
        assert_eq!(
            internal.port(),
            8081,
            "a port of its own next to the API's 8080"
        );
    }

    #[test]
    fn a_replica_and_a_management_api_are_optional_and_checked_without_echoing_passwords() {
        let load = |pairs: &[(&str, &str)]| Config::load(vars(pairs));
        let plain = load(&[]).unwrap();
        assert!(plain.database.read_url.is_none());
        assert!(plain.amqp.management_url.is_none());
        assert_eq!(plain.amqp.vhost(), "/");
        let set = load(&[
            ("SPIKE_DATABASE_READ_URL", "mysql://r:pw@replica:3306/spike"),
            (
                "SPIKE_AMQP_MANAGEMENT_URL",
                "http://guest:guest@rabbit:15672",
            ),
        ])
        .unwrap();
        assert!(set.database.read_url.is_some());
        assert!(set.amqp.management_url.is_some());
        let err =
            load(&[("SPIKE_DATABASE_READ_URL", "postgres://u:hunter2@db/x")]).expect_err("scheme");
        assert!(err.to_string().contains("database_read_url"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        for bad in [
            "https://u:p@rabbit:15671",
            "http://rabbit:15672",
            "http://u:p@rabbit/api",
        ] {
            let err = load(&[("SPIKE_AMQP_MANAGEMENT_URL", bad)]).expect_err(bad);
            assert!(err.to_string().contains("amqp_management_url"), "{err}");
        }
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
        assert_eq!(c.auth.bootstrap_admin.unwrap().email, "a@b.c");
    }

    #[test]
    fn invalid_url_error_does_not_echo_the_password() {
        let err = Config::load(vars(&[("SPIKE_DATABASE_URL", "mysql://u:hunter2@[bad")]))
            .expect_err("bad url");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn cors_origins_any_list_or_none() {
        let origins = |pairs: &[(&str, &str)]| Config::load(vars(pairs)).unwrap().http.cors_origins;
        assert_eq!(origins(&[]), CorsOrigins::Any);
        assert_eq!(
            origins(&[("SPIKE_CORS_ORIGINS", "https://a.example, https://b.example")]),
            CorsOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert_eq!(
            origins(&[("SPIKE_CORS_ORIGINS", "")]),
            CorsOrigins::List(vec![])
        );
    }

    #[test]
    fn unknown_keys_are_collected() {
        let c = Config::load(vars(&[("SPIKE_DATABSE_URL", "typo")])).expect("valid");
        assert_eq!(c.unknown_keys, vec!["databse_url".to_string()]);
    }

    #[test]
    fn a_bad_rate_limit_names_its_key() {
        let err = Config::load(vars(&[("SPIKE_LOGIN_LIMIT_PER_IP", "lots")])).expect_err("bad");
        assert!(err.to_string().contains("login_limit_per_ip"));
    }

    #[test]
    fn retry_delays_are_a_list_of_durations() {
        let c = Config::load(vars(&[("SPIKE_FLASH_SALE_RETRY_DELAYS", "100ms, 2s")])).unwrap();
        assert_eq!(
            c.flash_sale.retry_delays,
            vec![Duration::from_millis(100), Duration::from_secs(2)]
        );
        assert!(Config::load(vars(&[("SPIKE_FLASH_SALE_RETRY_DELAYS", "1s,soon")])).is_err());
        assert!(Config::load(vars(&[("SPIKE_FLASH_SALE_RETRY_DELAYS", "0s")])).is_err());
    }

    #[test]
    fn the_flash_sale_mode_is_queue_unless_db_is_asked_for() {
        let mode = |pairs: &[(&str, &str)]| Config::load(vars(pairs)).map(|c| c.flash_sale.mode);
        assert_eq!(mode(&[]).unwrap(), FlashSaleMode::Queue);
        assert_eq!(
            mode(&[("SPIKE_FLASH_SALE_MODE", "db")]).unwrap(),
            FlashSaleMode::Db
        );
        let err = mode(&[("SPIKE_FLASH_SALE_MODE", "redis")]).expect_err("bad");
        assert!(
            err.to_string().contains("must be one of queue, db"),
            "{err}"
        );
    }

    #[test]
    fn the_old_flash_sale_key_names_still_work_and_are_reported() {
        let c = Config::load(vars(&[
            ("SPIKE_SPIKE_MODE", "db"),
            ("SPIKE_SPIKE_USER_RATE_LIMIT", "7/1s"),
        ]))
        .unwrap();
        assert_eq!(c.flash_sale.mode, FlashSaleMode::Db);
        assert_eq!(c.flash_sale.user_rate_limit.burst, 7);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        let mut renamed = c.renamed_keys.clone();
        renamed.sort();
        assert_eq!(
            renamed,
            vec![
                ("spike_mode".to_string(), "flash_sale_mode".to_string()),
                (
                    "spike_user_rate_limit".to_string(),
                    "flash_sale_user_rate_limit".to_string()
                ),
            ]
        );
    }

    #[test]
    fn the_worker_listeners_old_key_names_the_internal_listener() {
        let c = Config::load(vars(&[("SPIKE_WORKER_HTTP_ADDR", "127.0.0.1:9101")])).unwrap();
        assert_eq!(c.http.internal_addr.port(), 9101);
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert_eq!(
            c.renamed_keys,
            vec![(
                "worker_http_addr".to_string(),
                "internal_http_addr".to_string()
            )]
        );
        let both = Config::load(vars(&[
            ("SPIKE_WORKER_HTTP_ADDR", "127.0.0.1:9101"),
            ("SPIKE_INTERNAL_HTTP_ADDR", "127.0.0.1:9102"),
        ]))
        .unwrap();
        assert_eq!(both.http.internal_addr.port(), 9102, "the new name wins");
    }

    #[test]
    fn every_key_is_documented_once() {
        let docs = key_docs();
        let mut names: Vec<&str> = docs.iter().map(|d| d.key).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a key is read twice");
        assert!(docs.iter().all(|d| !d.doc.is_empty()));
        assert!(names.contains(&"env") && names.contains(&"flash_sale_mode"));
    }
}
