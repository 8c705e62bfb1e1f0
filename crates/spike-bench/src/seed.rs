//! Set-up before the clock starts: buyers written straight into MySQL with one precomputed
//! password hash (registering 100k buyers through argon2 would take minutes), their access
//! tokens minted with the configured JWT secret, and the product and event created through the
//! admin API like an operator would.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use hyper::header::HeaderValue;
use serde_json::json;
use sqlx::{MySql, MySqlPool, QueryBuilder};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::BenchError;
use super::client::{Connection, Target, bearer, call_api, call_api_on};
use spike::config::AuthSettings;
use spike::domain::user::{Role, User};
use spike::service::auth::password::PasswordHasher;
use spike::service::auth::tokens::AccessTokens;

/// Rows per multi-row INSERT (well under MySQL's packet and placeholder limits).
const INSERT_CHUNK: usize = 1_000;
/// How far ahead the event starts: enough for the create call's warm-up to finish first.
const START_DELAY: Duration = Duration::from_secs(2);

/// A seeded buyer and the `Authorization` header the load loop sends for them.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub user_id: u64,
    pub authorization: HeaderValue,
    pub token: Arc<str>,
}

/// Writes the accounts of one run; every email carries the run's random tag.
pub struct Seeder {
    db: MySqlPool,
    tokens: AccessTokens,
    hasher: PasswordHasher,
    run: String,
}

impl Seeder {
    pub fn new(config: &AuthSettings, db: MySqlPool) -> Result<Seeder, BenchError> {
        // The server refuses tokens that claim a longer life than it issues (`SPIKE_ACCESS_TTL`):
        // minted with the same configuration, they live as long as a login's would.
        let tokens = AccessTokens::new(config.jwt_secret.expose().as_bytes(), config.access_ttl)
            .map_err(|e| BenchError::Setup(format!("cannot mint tokens: {e}")))?;
        let hasher = PasswordHasher::new(config.argon2, 1)
            .map_err(|e| BenchError::Setup(format!("cannot hash passwords: {e}")))?;
        let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        Ok(Seeder {
            db,
            tokens,
            hasher,
            run,
        })
    }

    /// The run's tag (in every seeded email, product and event title).
    pub fn run_tag(&self) -> &str {
        &self.run
    }

    /// Inserts `count` buyers and mints a token for each, in id order.
    pub async fn buyers(&self, count: u64) -> Result<Vec<Buyer>, BenchError> {
        let users = self.insert_users("buyer", count, Role::User).await?;
        users
            .into_iter()
            .map(|user| {
                let token: Arc<str> = self.mint(&user)?.into();
                Ok(Buyer {
                    user_id: user.id,
                    authorization: bearer(&token)?,
                    token,
                })
            })
            .collect()
    }

    /// An admin account of this run and its token (the set-up's calls to the admin API).
    pub async fn admin(&self) -> Result<String, BenchError> {
        let admin = self.insert_users("admin", 1, Role::Admin).await?;
        self.mint(&admin[0])
    }

    /// A token of a login that has no refresh tokens (nobody can revoke it).
    fn mint(&self, user: &User) -> Result<String, BenchError> {
        self.tokens
            .issue(user, uuid::Uuid::new_v4())
            .map_err(|e| BenchError::Setup(format!("cannot mint a token: {e}")))
    }

    async fn insert_users(
        &self,
        kind: &str,
        count: u64,
        role: Role,
    ) -> Result<Vec<User>, BenchError> {
        // Nobody logs in as these accounts; the hash only makes them ordinary rows.
        let password = uuid::Uuid::new_v4().to_string();
        let hash = self
            .hasher
            .hash(&password)
            .await
            .map_err(|e| BenchError::Setup(format!("cannot hash a password: {e}")))?;
        let prefix = format!("bench-{}-{kind}-", self.run);
        let emails: Vec<String> = (0..count)
            .map(|i| format!("{prefix}{i:07}@bench.invalid"))
            .collect();
        for chunk in emails.chunks(INSERT_CHUNK) {
            let mut insert: QueryBuilder<MySql> =
                QueryBuilder::new("INSERT INTO users (email, password_hash, role) ");
            insert.push_values(chunk, |mut row, email| {
                row.push_bind(email)
                    .push_bind(&hash)
                    .push_bind(role.as_str());
            });
            insert.build().execute(&self.db).await?;
        }
        // Ids are read back by email: a multi-row insert's ids need not be consecutive.
        let rows = sqlx::query!(
            "SELECT id, email FROM users WHERE email LIKE ? ORDER BY email",
            format!("{prefix}%")
        )
        .fetch_all(&self.db)
        .await?;
        if rows.len() as u64 != count {
            return Err(BenchError::Setup(format!(
                "seeded {count} {kind} accounts but found {}",
                rows.len()
            )));
        }
        Ok(rows
            .into_iter()
            .map(|row| User {
                id: row.id,
                email: row.email,
                role,
            })
            .collect())
    }
}

/// A product created through the admin API.
pub async fn create_product(
    target: &Target,
    admin: &str,
    run: &str,
    stock: u64,
) -> Result<u64, BenchError> {
    let body = json!({
        "title": format!("bench {run}"),
        "description": "created by spike bench",
        "price": "100.00",
        "stock": stock,
    });
    let data = call_api(
        target,
        Method::POST,
        "/api/v1/products",
        admin,
        Some(&body),
        201,
    )
    .await?;
    id_of(&data, "product")
}

/// A flash-sale event of `stock` units of `product_id`, starting shortly and open for an hour;
/// returns its id and start.
pub async fn create_event(
    target: &Target,
    admin: &str,
    run: &str,
    product_id: u64,
    stock: u64,
) -> Result<(u64, OffsetDateTime), BenchError> {
    let start = OffsetDateTime::now_utc() + START_DELAY;
    let end = start + Duration::from_secs(3600);
    let rfc3339 = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let body = json!({
        "product_id": product_id,
        "title": format!("bench {run}"),
        "spike_price": "9.90",
        "stock": stock,
        "start_at": rfc3339(start),
        "end_at": rfc3339(end),
        "per_user_limit": 1,
    });
    let data = call_api(
        target,
        Method::POST,
        "/api/v1/spike/events",
        admin,
        Some(&body),
        201,
    )
    .await?;
    Ok((id_of(&data, "event")?, start))
}

/// Sleeps until `start` has passed (plus a little, for the server's clock).
pub async fn wait_for_start(start: OffsetDateTime) {
    let left = start - OffsetDateTime::now_utc() + time::Duration::milliseconds(50);
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
}

fn id_of(data: &serde_json::Value, what: &str) -> Result<u64, BenchError> {
    data["id"]
        .as_u64()
        .ok_or_else(|| BenchError::Setup(format!("the created {what} has no id: {data}")))
}

/// Fetches every buyer's purchase token for `event` through the API (the event must have
/// started), over `parallel` connections, before the clock starts: a real buyer fetches it once
/// the sale opens and then presses "buy".
pub async fn purchase_tokens(
    target: &Target,
    event_id: u64,
    buyers: &[Buyer],
    parallel: usize,
) -> Result<Vec<HeaderValue>, BenchError> {
    let path = format!("/api/v1/spike/events/{event_id}/purchase-token");
    let chunk = buyers.len().div_ceil(parallel.max(1)).max(1);
    let fetches = buyers.chunks(chunk).map(|chunk| {
        let path = &path;
        async move {
            let mut connection = Connection::new(target.clone());
            let mut tokens = Vec::with_capacity(chunk.len());
            for buyer in chunk {
                let data = call_api_on(&mut connection, Method::GET, path, &buyer.token, None, 200)
                    .await?;
                let token = data["token"].as_str().unwrap_or_default();
                tokens.push(HeaderValue::from_str(token).map_err(|_| {
                    BenchError::Setup("a purchase token is not a valid header value".into())
                })?);
            }
            Ok::<_, BenchError>(tokens)
        }
    });
    let mut tokens = Vec::with_capacity(buyers.len());
    for fetched in futures_util::future::join_all(fetches).await {
        tokens.extend(fetched?);
    }
    Ok(tokens)
}
