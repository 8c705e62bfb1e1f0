//! The value types settings are made of: secrets that never print, rate limits written `10/1m`,
//! the enums a key chooses between, and durations as the keys write them (`15m`, `500ms`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Deployment environment; selects the config file and a few safety rules.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[strum(serialize_all = "lowercase")]
pub enum Environment {
    Dev,
    Staging,
    Prod,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Log output format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::VariantNames,
)]
#[strum(serialize_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// RabbitMQ queue type for the durable work queues.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[strum(serialize_all = "lowercase")]
pub enum QueueType {
    /// Replicated Raft queues (RabbitMQ ≥ 3.8): survive the loss of a node.
    Quorum,
    /// Classic queues: for brokers or setups without quorum support.
    Classic,
}

/// How spike reaches Redis.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::VariantNames,
)]
#[strum(serialize_all = "lowercase")]
pub enum RedisMode {
    /// One server (or a proxy in front of several): `redis_url` is its URL.
    Standalone,
    /// A Redis Cluster: `redis_url` lists seed nodes, comma-separated; the client learns the
    /// rest of the cluster from them.
    Cluster,
}

/// How the flash-sale buy endpoint takes a unit.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::VariantNames,
)]
#[strum(serialize_all = "lowercase")]
pub enum FlashSaleMode {
    /// Redis reservation, confirmed publish, order created by the worker (docs/design.md §5).
    Queue,
    /// The naive baseline: one MySQL transaction per request, no Redis, no queue. For teaching
    /// and for measuring what the queue path buys (docs/benchmarks.md); never for a real sale.
    Db,
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
    pub const fn new(burst: u32, per: Duration) -> RateLimit {
        RateLimit { burst, per }
    }

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

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.burst, format_duration(self.per))
    }
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

/// The longest configurable duration: ten years. Every duration is added to the current time
/// somewhere (token expiry, pay deadline, key retention), and a bound here keeps all those sums
/// far inside the representable years.
pub const DURATION_MAX: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Accepts humantime strings (`15m`, `2s`, `1h 30m`) and bare integers as seconds, up to
/// [`DURATION_MAX`].
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let duration = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw).map_err(|e| e.to_string())?,
    };
    if duration > DURATION_MAX {
        return Err("must be at most ten years".into());
    }
    Ok(duration)
}

/// A duration as the docs write it: the largest whole unit (`15m`, `14d`, `500ms`).
pub fn format_duration(duration: Duration) -> String {
    const UNITS: [(u128, &str); 5] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    for (size, unit) in UNITS {
        if millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_and_print_as_count_per_duration() {
        let limit: RateLimit = "10/1m".parse().unwrap();
        assert_eq!(limit, RateLimit::new(10, Duration::from_secs(60)));
        assert_eq!(limit.to_string(), "10/1m");
        assert!((limit.refill_per_second() - 10.0 / 60.0).abs() < 1e-9);
        assert!("10".parse::<RateLimit>().is_err());
        assert!("0/1m".parse::<RateLimit>().is_err());
        assert!("x/1m".parse::<RateLimit>().is_err());
    }

    #[test]
    fn enums_read_and_print_their_lowercase_names() {
        assert_eq!("db".parse::<FlashSaleMode>(), Ok(FlashSaleMode::Db));
        assert_eq!(QueueType::Classic.to_string(), "classic");
        assert_eq!(Environment::Staging.as_str(), "staging");
        assert!("Prod".parse::<Environment>().is_err());
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

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("3650d").unwrap(), DURATION_MAX);
        assert!(parse_duration("3651d").is_err());
        assert!(parse_duration("18446744073709551615").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn durations_are_documented_in_their_largest_whole_unit() {
        for text in ["15m", "14d", "500ms", "1h", "90s", "5s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
