//! Registration, login, token rotation and logout.
//!
//! Access tokens are short-lived JWTs. Their signature is checked without a database round trip;
//! [`AuthService::confirm`] then asks whether the user still exists, what role it has now and
//! whether the login the token was issued to has been revoked (cached per replica for
//! `SPIKE_USER_CHECK_TTL`), so a deleted user is refused, a demoted admin loses the admin routes
//! and a logged-out token stops working within seconds instead of at the token's expiry. The
//! flash-sale buy path skips that check to stay off MySQL; the worker refuses a buyer that no
//! longer exists. Refresh tokens are opaque, stored hashed, rotated on every use, and grouped in
//! families (one per login): presenting a spent one again means it was copied, so the whole
//! family is revoked (RFC 9700 §4.14 reuse detection).
//!
//! Login, registration and refresh are rate limited in Redis. Failed logins count per
//! (email, client address) strictly and per email more loosely, both keyed on the canonical
//! email ([`Email`]): guesses from one address cannot lock the owner out from another, and
//! guesses from many addresses are still bounded per account.

pub mod password;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::MySqlPool;
use uuid::Uuid;

use crate::config::{AuthSettings, BootstrapAdmin, RateLimit};
use crate::domain::user::{Email, Password, Role, User};
use crate::repo::mysql::{self, OnConstraint, refresh_tokens, users};
use crate::repo::redis::rate_limit::{self, Admission};
use crate::repo::redis::{Keys, RedisConnection};
use crate::service::ServiceError;
use password::PasswordHasher;
use tokens::{AccessTokens, Principal};

/// What [`create_or_promote_admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminMade {
    /// A new account with the admin role (its id).
    Created(u64),
    /// The account existed: it has the admin role now, its password unchanged (its id).
    Promoted(u64),
}

/// Creates an admin account, or gives an existing account with that email the admin role
/// (leaving its password alone). Safe when several processes do it at once. Needs MySQL only:
/// `spike admin create` runs it without the other stores.
pub async fn create_or_promote_admin(
    db: &MySqlPool,
    hasher: &PasswordHasher,
    email: &Email,
    password: &Password,
) -> Result<AdminMade, ServiceError> {
    if let Some(id) = users::set_role(db, email.as_str(), Role::Admin).await? {
        return Ok(AdminMade::Promoted(id));
    }
    let hash = hasher.hash(password.expose()).await?;
    let inserted = users::insert(db, email.as_str(), &hash, Role::Admin)
        .await
        .map(Some)
        .on_constraint(users::EMAIL_KEY, || Ok::<_, ServiceError>(None))?;
    match inserted {
        Some(id) => Ok(AdminMade::Created(id)),
        // Another process created it between our two statements.
        None => {
            let id = users::set_role(db, email.as_str(), Role::Admin)
                .await?
                .ok_or_else(|| ServiceError::internal("the admin vanished after its insert"))?;
            Ok(AdminMade::Promoted(id))
        }
    }
}

/// What a successful login or refresh hands out.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
}

#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    db: MySqlPool,
    redis: RedisConnection,
    keys: Keys,
    hasher: PasswordHasher,
    access_tokens: AccessTokens,
    refresh_ttl: Duration,
    limits: AuthLimits,
    /// (user id, login) → what MySQL said of them: the user's role (`None`: the user is gone)
    /// and whether the login has been revoked.
    known_sessions: moka::sync::Cache<(u64, Option<Uuid>), SessionCheck>,
}

/// What the per-request user check last read about a token's user and login.
#[derive(Debug, Clone, Copy)]
struct SessionCheck {
    role: Option<Role>,
    revoked: bool,
}

/// Sessions whose user and login a replica remembers at most.
const KNOWN_SESSIONS_MAX: u64 = 200_000;

/// The auth routes' rate limits (see `AuthSettings`).
struct AuthLimits {
    login_per_ip: RateLimit,
    login_per_email_ip: RateLimit,
    login_per_email: RateLimit,
    register_per_ip: RateLimit,
    refresh_per_ip: RateLimit,
}

impl AuthService {
    /// Keys go under `redis_prefix`.
    pub fn new(
        config: &AuthSettings,
        redis_prefix: &str,
        db: MySqlPool,
        redis: RedisConnection,
    ) -> Result<AuthService, ServiceError> {
        Ok(AuthService {
            inner: Arc::new(Inner {
                db,
                redis,
                keys: Keys::new(redis_prefix.to_owned()),
                hasher: PasswordHasher::new(config.argon2, config.password_hash_concurrency)?,
                access_tokens: AccessTokens::new(
                    config.jwt_secret.expose().as_bytes(),
                    config.access_ttl,
                )?,
                refresh_ttl: config.refresh_ttl,
                known_sessions: moka::sync::Cache::builder()
                    .time_to_live(config.user_check_ttl)
                    .max_capacity(KNOWN_SESSIONS_MAX)
                    .build(),
                limits: AuthLimits {
                    login_per_ip: config.login_limit_per_ip,
                    login_per_email_ip: config.login_limit_per_email_ip,
                    login_per_email: config.login_limit_per_email,
                    register_per_ip: config.register_limit_per_ip,
                    refresh_per_ip: config.refresh_limit_per_ip,
                },
            }),
        })
    }

    /// Creates an account; registrations are rate limited per client IP (each costs a hash).
    pub async fn register(
        &self,
        email: Email,
        password: Password,
        client_ip: IpAddr,
    ) -> Result<User, ServiceError> {
        let limit = self.inner.limits.register_per_ip;
        self.take_token("register:ip", &client_ip.to_string(), limit)
            .await?;
        let hash = self.inner.hasher.hash(password.expose()).await?;
        let id = users::insert(&self.inner.db, email.as_str(), &hash, Role::User)
            .await
            .on_constraint(users::EMAIL_KEY, || Err(ServiceError::EmailTaken))?;
        tracing::info!(user_id = id, "user registered");
        Ok(User {
            id,
            email: email.as_str().to_owned(),
            role: Role::User,
        })
    }

    /// Checks the rate limits, then the password; answers the same error for an unknown email
    /// and a wrong password, after the same amount of hashing work.
    ///
    /// Every attempt draws from the client IP's bucket. The email's buckets — one per
    /// (email, client IP), strict, and one per email, looser — only pay for failed attempts:
    /// they exist to stop password guessing against one account, and an account that logs in
    /// successfully and often (a shared admin, a test suite) must not lock itself out. A guesser
    /// on one address empties its own (email, IP) bucket long before the email's, so the owner
    /// still logs in from elsewhere; guessers on many addresses meet the email's bucket.
    /// The tokens are still taken *before* the password is checked and given back on success:
    /// deciding after the check would let a burst of parallel guesses all pass a peek at the
    /// bucket before the first failure is counted.
    pub async fn login(
        &self,
        email: &Email,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<TokenPair, ServiceError> {
        let limits = &self.inner.limits;
        let per_email_ip = format!("{email} {client_ip}");
        let buckets = [
            (
                "login:email-ip",
                per_email_ip.as_str(),
                limits.login_per_email_ip,
            ),
            ("login:email", email.as_str(), limits.login_per_email),
        ];
        self.take_token("login:ip", &client_ip.to_string(), limits.login_per_ip)
            .await?;
        for (scope, subject, limit) in buckets {
            self.take_token(scope, subject, limit).await?;
        }

        let credentials = users::find_credentials(&self.inner.db, email.as_str()).await?;
        let stored_hash = credentials.as_ref().map(|c| c.password_hash.as_str());
        let matches = self.inner.hasher.verify(password, stored_hash).await?;
        let user = match credentials {
            Some(credentials) if matches => credentials.user,
            _ => {
                tracing::info!(%client_ip, "login refused");
                return Err(ServiceError::WrongCredentials);
            }
        };
        let mut redis = self.inner.redis.clone();
        for (scope, subject, limit) in buckets {
            let key = self.inner.keys.rate_limit(scope, subject);
            if let Err(error) = rate_limit::give_back(&mut redis, &key, limit).await {
                // The login stands; the account merely counts one failure too many for a while.
                tracing::warn!(%error, scope, "could not give back a login attempt");
            }
        }

        let pair = self
            .issue_pair(&self.inner.db, &user, Uuid::new_v4())
            .await?;
        tracing::info!(user_id = user.id, "login");
        Ok(pair.0)
    }

    /// Rotates a refresh token: the presented one is spent and a new pair is returned. A spent,
    /// revoked or unknown token is refused; a spent one also revokes its whole family.
    /// Rotations are rate limited per client IP.
    #[tracing::instrument(level = "debug", name = "mysql.tx refresh_token", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client_ip: IpAddr,
    ) -> Result<TokenPair, ServiceError> {
        let limit = self.inner.limits.refresh_per_ip;
        self.take_token("refresh:ip", &client_ip.to_string(), limit)
            .await?;
        let hash = tokens::hash_refresh_token(refresh_token);
        let mut tx = self.inner.db.begin().await?;
        // The row lock serializes concurrent refreshes of one token: the loser sees it spent.
        let Some(row) = refresh_tokens::find_for_update(&mut tx, &hash).await? else {
            return Err(ServiceError::RefreshTokenInvalid);
        };
        let now = mysql::now_utc();
        if row.is_spent() {
            let revoked = refresh_tokens::revoke_family(&mut *tx, &row.family_id, now).await?;
            tx.commit().await?;
            tracing::warn!(
                user_id = row.user_id,
                family = row.family_id,
                revoked,
                "refresh token reuse detected; token family revoked"
            );
            return Err(ServiceError::RefreshTokenInvalid);
        }
        if row.expires_at <= now {
            return Err(ServiceError::RefreshTokenInvalid);
        }
        let Some(user) = users::find_by_id(&mut *tx, row.user_id).await? else {
            return Err(ServiceError::RefreshTokenInvalid);
        };
        let family = row.family_id.parse().map_err(ServiceError::internal)?;
        let (pair, new_id) = self.issue_pair(&mut *tx, &user, family).await?;
        refresh_tokens::mark_replaced(&mut *tx, row.id, new_id).await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Revokes the family of `refresh_token`. Answers the same whether the token was live, spent,
    /// revoked or never existed (RFC 7009 §2.2): logging out twice is fine, and the answer tells
    /// a caller nothing about which tokens exist.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ServiceError> {
        let hash = tokens::hash_refresh_token(refresh_token);
        let Some(row) = refresh_tokens::find(&self.inner.db, &hash).await? else {
            tracing::info!("logout with an unknown refresh token");
            return Ok(());
        };
        refresh_tokens::revoke_family(&self.inner.db, &row.family_id, mysql::now_utc()).await?;
        tracing::info!(user_id = row.user_id, "logout");
        Ok(())
    }

    /// Verifies an access token (no database access).
    pub fn authenticate(&self, access_token: &str) -> Result<Principal, ServiceError> {
        self.inner.access_tokens.verify(access_token)
    }

    /// The caller as MySQL knows it now: a user deleted since the token was issued, or a token
    /// of a login revoked since (logout, refresh-token reuse), is unauthenticated, and the role
    /// is the current one, not the token's. What was read is trusted for
    /// `SPIKE_USER_CHECK_TTL`, so a revoked login's access tokens die within that time.
    pub async fn confirm(&self, principal: Principal) -> Result<Principal, ServiceError> {
        let key = (principal.user_id, principal.session);
        let check = match self.inner.known_sessions.get(&key) {
            Some(check) => check,
            None => {
                let user = users::find_by_id(&self.inner.db, principal.user_id).await?;
                let revoked = match principal.session {
                    Some(family) => {
                        refresh_tokens::family_revoked(&self.inner.db, &family.to_string()).await?
                    }
                    None => false,
                };
                let check = SessionCheck {
                    role: user.map(|user| user.role),
                    revoked,
                };
                self.inner.known_sessions.insert(key, check);
                check
            }
        };
        if check.revoked {
            return Err(ServiceError::Unauthenticated("login revoked"));
        }
        let role = check
            .role
            .ok_or(ServiceError::Unauthenticated("user no longer exists"))?;
        Ok(Principal { role, ..principal })
    }

    /// The user `user_id`, as MySQL has it now; a user deleted since is unauthenticated.
    pub async fn current_user(&self, user_id: u64) -> Result<User, ServiceError> {
        users::find_by_id(&self.inner.db, user_id)
            .await?
            .ok_or(ServiceError::Unauthenticated("user no longer exists"))
    }

    /// Creates the configured admin, or promotes the existing account (its password is left
    /// alone). Idempotent, and safe when several replicas start at once. The dev admin of
    /// `configs/dev.toml` is announced as such: its password is published.
    pub async fn bootstrap_admin(&self, admin: &BootstrapAdmin) -> Result<(), ServiceError> {
        let email = Email::parse(&admin.email)
            .map_err(|e| ServiceError::internal(format!("bootstrap admin email: {e}")))?;
        let password = Password::parse(admin.password.expose().to_owned())
            .map_err(|e| ServiceError::internal(format!("bootstrap admin password: {e}")))?;
        // This replica at least sees the new role at once; others within `user_check_ttl`.
        self.inner.known_sessions.invalidate_all();
        let made =
            create_or_promote_admin(&self.inner.db, &self.inner.hasher, &email, &password).await?;
        match made {
            AdminMade::Created(id) => tracing::info!(user_id = id, "bootstrap admin created"),
            AdminMade::Promoted(id) => {
                tracing::info!(
                    user_id = id,
                    "bootstrap admin: existing account has the admin role"
                );
            }
        }
        if admin.is_dev_default() {
            tracing::warn!(
                email = %email,
                "the dev admin is on, with the password published in configs/dev.toml and the \
                 README (SPIKE_ENV=dev only; every other environment refuses it)"
            );
        }
        Ok(())
    }

    /// Takes one token from the `scope` bucket of `subject`, or answers 429.
    async fn take_token(
        &self,
        scope: &str,
        subject: &str,
        limit: RateLimit,
    ) -> Result<(), ServiceError> {
        let key = self.inner.keys.rate_limit(scope, subject);
        match rate_limit::take(&mut self.inner.redis.clone(), &key, limit).await? {
            Admission::Allowed => Ok(()),
            Admission::Limited { retry_after } => {
                tracing::info!(scope, "rate limited");
                Err(ServiceError::RateLimited { retry_after })
            }
        }
    }

    /// Issues an access token and a refresh token of the login `family`; returns the pair and
    /// the id of the stored refresh token.
    async fn issue_pair(
        &self,
        db: impl sqlx::MySqlExecutor<'_>,
        user: &User,
        family: Uuid,
    ) -> Result<(TokenPair, u64), ServiceError> {
        let access_token = self.inner.access_tokens.issue(user, family)?;
        let (refresh_token, refresh_hash) = tokens::new_refresh_token()?;
        let expires_at = mysql::now_utc() + self.inner.refresh_ttl;
        let family_id = family.to_string();
        let id = refresh_tokens::insert(db, user.id, &family_id, &refresh_hash, expires_at).await?;
        let pair = TokenPair {
            access_token,
            refresh_token,
            expires_in: self.inner.access_tokens.ttl_secs(),
        };
        Ok((pair, id))
    }
}
