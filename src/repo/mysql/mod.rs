//! MySQL / MariaDB: the connection pool, migrations, the liveness query, and one module of
//! queries per table group. Functions take `impl MySqlExecutor` (a pool or a transaction) so the
//! service layer decides what runs in one transaction.

pub mod flash_sale_events;
pub mod inventory;
pub mod orders;
pub mod outbox;
pub mod products;
pub mod refresh_tokens;
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
    connect_to(config.url.expose(), config).await
}

/// A pool to the server at `url` (the primary's or a replica's) with `config`'s pool settings,
/// retrying until `startup_timeout`.
pub async fn connect_to(url: &str, config: &DatabaseSettings) -> Result<MySqlPool, RepoError> {
    // Every DATETIME column holds UTC; pin the session zone so NOW() agrees with the app.
    let options = MySqlConnectOptions::from_str(url)?
        .timezone(Some("+00:00".into()))
        .charset("utf8mb4");
    let target = redact_url(url);
    retry::with_backoff(Dependency::Mysql, &target, config.startup_timeout, || {
        MySqlPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
    })
    .await
    .map_err(RepoError::from)
}

/// Applies pending migrations, then the data steps SQL cannot express (emails to their
/// canonical form), and reports in the log what a data step could not do. Safe with several
/// processes: sqlx takes an advisory lock, and the data steps are idempotent.
pub async fn migrate(pool: &MySqlPool) -> Result<(), RepoError> {
    MIGRATOR.run(pool).await?;
    let emails = users::canonicalize_emails(pool).await?;
    for (user_id, other_user_id) in &emails.collisions {
        tracing::warn!(
            user_id,
            other_user_id,
            "email migration: this user's address, once normalised, is another account's; \
             left as is (it cannot log in under it) until an operator merges or renames one"
        );
    }
    for (user_id, reason) in &emails.unreadable {
        tracing::warn!(
            user_id,
            reason,
            "email migration: this user's address has no canonical form; left as is (it \
             cannot log in) until an operator corrects it"
        );
    }
    if emails != users::EmailMigration::default() {
        tracing::info!(
            rewritten = emails.rewritten.len(),
            collisions = emails.collisions.len(),
            unreadable = emails.unreadable.len(),
            "email migration: stored addresses brought to their canonical form"
        );
    }
    Ok(())
}

/// Cheapest query that proves a connection works.
pub async fn ping(pool: &MySqlPool) -> Result<(), RepoError> {
    sqlx::query_scalar!("SELECT 1 AS one")
        .fetch_one(pool)
        .await?;
    Ok(())
}

/// A column whose value the domain type refuses (a status no code knows, a negative price):
/// the row is unreadable, which is a bug or a bad migration, never the client's fault.
pub(crate) fn decode_error(column: &str, error: impl std::fmt::Display) -> RepoError {
    RepoError::Mysql(sqlx::Error::Decode(format!("{column}: {error}").into()))
}

/// Lets an enum of the domain travel as its text (`Display`/`FromStr`, the names the schema's
/// `ENUM` columns list), in checked queries (`status AS "status: OrderStatus"`) and in rows read
/// at run time alike. Written here rather than derived in the domain: the domain knows no SQL,
/// and sqlx's derived enums do not accept the ENUM columns MariaDB reports.
macro_rules! text_column {
    ($($domain:ty),+) => {$(
        impl sqlx::Type<sqlx::MySql> for $domain {
            fn type_info() -> sqlx::mysql::MySqlTypeInfo {
                <str as sqlx::Type<sqlx::MySql>>::type_info()
            }

            fn compatible(ty: &sqlx::mysql::MySqlTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::MySql>>::compatible(ty)
            }
        }

        impl sqlx::Decode<'_, sqlx::MySql> for $domain {
            fn decode(value: sqlx::mysql::MySqlValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::MySql>>::decode(value)?;
                Ok(text.parse::<$domain>()?)
            }
        }

        impl sqlx::Encode<'_, sqlx::MySql> for $domain {
            fn encode_by_ref(
                &self,
                buf: &mut Vec<u8>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::MySql>>::encode(self.as_str(), buf)
            }
        }
    )+};
}

text_column!(
    crate::domain::order::OrderStatus,
    crate::domain::order::OrderKind,
    crate::domain::user::Role
);

/// True when `error` is a duplicate-key violation of the unique key named `key`.
///
/// sqlx-mysql has no `constraint()` (MySQL reports the key only inside the message text), so
/// the key's name is looked for in the message; key names are unique in the schema.
pub fn is_unique_violation(error: &sqlx::Error, key: &str) -> bool {
    match error {
        sqlx::Error::Database(db) => db.is_unique_violation() && db.message().contains(key),
        _ => false,
    }
}

/// Whether `error` is a foreign-key violation of the constraint named `constraint` (a row
/// referring to one that is gone, e.g. an order for a deleted user).
pub fn is_foreign_key_violation(error: &sqlx::Error, constraint: &str) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            db.is_foreign_key_violation() && db.message().contains(constraint)
        }
        _ => false,
    }
}

/// Handles the violation of one named constraint (a unique key or a foreign key) where the
/// caller expects it, in the shape of realworld-axum-sqlx's `on_constraint`:
/// `users::insert(..).await.on_constraint(users::EMAIL_KEY, || Err(ServiceError::EmailTaken))?`,
/// or `Ok(..)` to recover. Any other error converts as usual.
pub trait OnConstraint<T> {
    fn on_constraint<E: From<sqlx::Error>>(
        self,
        constraint: &str,
        then: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E>;
}

impl<T> OnConstraint<T> for Result<T, sqlx::Error> {
    fn on_constraint<E: From<sqlx::Error>>(
        self,
        constraint: &str,
        then: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        match self {
            Err(e)
                if is_unique_violation(&e, constraint)
                    || is_foreign_key_violation(&e, constraint) =>
            {
                then()
            }
            other => other.map_err(E::from),
        }
    }
}

/// The current time as stored in `DATETIME(3)` columns (UTC, millisecond precision).
pub fn now_utc() -> time::PrimitiveDateTime {
    let now = time::OffsetDateTime::now_utc();
    let millis = now.millisecond();
    let now = now.replace_millisecond(millis).unwrap_or(now);
    time::PrimitiveDateTime::new(now.date(), now.time())
}
