//! MySQL / MariaDB: the connection pool, migrations, the liveness query, and one module of
//! queries per table group. Functions take `impl MySqlExecutor` (a pool or a transaction) so the
//! service layer decides what runs in one transaction.

pub mod orders;
pub mod outbox;
pub mod products;
pub mod refresh_tokens;
pub mod spike_events;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::MySqlPool;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use super::{Dependency, RepoError, retry};
use crate::config::{DatabaseSettings, redact_url};

/// The schema migrations, embedded at compile time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a request waits for a pooled connection before failing; short on purpose, so an
/// exhausted pool or a dead database answers 503 quickly instead of hanging a request.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens the pool, retrying until `startup_timeout`.
pub async fn connect(config: &DatabaseSettings) -> Result<MySqlPool, RepoError> {
    // Every DATETIME column holds UTC; pin the session zone so NOW() agrees with the app.
    let options = MySqlConnectOptions::from_str(config.url.expose())?
        .timezone(Some("+00:00".into()))
        .charset("utf8mb4");
    let target = redact_url(config.url.expose());
    retry::with_backoff(Dependency::Mysql, &target, config.startup_timeout, || {
        MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
    })
    .await
    .map_err(RepoError::from)
}

/// Applies pending migrations. Safe with several processes: sqlx takes an advisory lock.
pub async fn migrate(pool: &MySqlPool) -> Result<(), RepoError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Cheapest query that proves a connection works.
pub async fn ping(pool: &MySqlPool) -> Result<(), RepoError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// A column whose value the domain type refuses (a status no code knows, a negative price):
/// the row is unreadable, which is a bug or a bad migration, never the client's fault.
pub(crate) fn decode_error(column: &str, error: impl std::fmt::Display) -> RepoError {
    RepoError::Mysql(sqlx::Error::Decode(format!("{column}: {error}").into()))
}

/// True when `error` is a duplicate-key violation of the unique key named `key`.
pub fn is_unique_violation(error: &sqlx::Error, key: &str) -> bool {
    match error {
        sqlx::Error::Database(db) => db.is_unique_violation() && db.message().contains(key),
        _ => false,
    }
}

/// The current time as stored in `DATETIME(3)` columns (UTC, millisecond precision).
pub fn now_utc() -> time::PrimitiveDateTime {
    let now = time::OffsetDateTime::now_utc();
    let millis = now.millisecond();
    let now = now.replace_millisecond(millis).unwrap_or(now);
    time::PrimitiveDateTime::new(now.date(), now.time())
}
