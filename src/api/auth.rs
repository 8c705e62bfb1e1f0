//! `/auth/*` and `/users/me`: registration, login, token rotation, logout, the current user.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::body::{LoginBody, RefreshTokenBody, RegistrationBody};
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{ApiJson, AuthUser, ClientIp};
use super::response::{ApiResponse, Envelope};
use super::validation::FieldErrors;
use crate::domain::user::{Email, Password, User};
use crate::service::auth::TokenPair;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: u64,
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// `user` or `admin`.
    #[schema(example = "user")]
    pub role: &'static str,
}

impl From<User> for UserView {
    fn from(user: User) -> UserView {
        UserView {
            id: user.id,
            email: user.email,
            role: user.role.as_str(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPairView {
    /// HS256 JWT for `Authorization: Bearer …`.
    pub access_token: String,
    /// Opaque; exchange at `/auth/refresh` (once: it is rotated).
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Access token lifetime in seconds.
    #[schema(example = 900)]
    pub expires_in: u64,
}

impl From<TokenPair> for TokenPairView {
    fn from(pair: TokenPair) -> TokenPairView {
        TokenPairView {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
        }
    }
}

/// Create an account. The email is stored in its canonical form (Unicode NFKC, lower-cased;
/// invisible, control and bidi characters refused); one account per address. Rate limited per
/// client IP.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "auth",
    request_body = RegistrationBody,
    responses(
        (status = 201, description = "registered", body = Envelope<UserView>),
        (status = 400, description = "invalid email or password (10001, `data.fields`)", body = ErrorEnvelope),
        (status = 409, description = "email already registered (20001)", body = ErrorEnvelope),
        (status = 429, description = "too many registrations from this client IP (10006)", body = ErrorEnvelope),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RegistrationBody>,
) -> Result<ApiResponse<UserView>, ApiError> {
    let mut errors = FieldErrors::default();
    let email = errors.check("email", Email::parse(&body.email));
    let password = errors.check("password", Password::parse(body.password));
    let (Some(email), Some(password)) = (email, password) else {
        return Err(errors.into_error());
    };
    let user = state.auth.register(email, password, ip).await?;
    Ok(ApiResponse::created(user.into()))
}

/// Exchange email and password for an access token and a refresh token. The email is
/// normalised as at registration (one account however it is spelt). Rate limited per client
/// IP, and failed attempts per (email, client IP) and per email (429/10006 with `Retry-After`).
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "signed in", body = Envelope<TokenPairView>),
        (status = 400, description = "an email that cannot be normalised (10001, `data.fields`)", body = ErrorEnvelope),
        (status = 401, description = "wrong email or password (20002)", body = ErrorEnvelope),
        (status = 429, description = "too many attempts (10006)", body = ErrorEnvelope),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<ApiResponse<TokenPairView>, ApiError> {
    let mut errors = FieldErrors::default();
    let Some(email) = errors.check("email", Email::parse(&body.email)) else {
        return Err(errors.into_error());
    };
    let pair = state.auth.login(&email, &body.password, ip).await?;
    Ok(ApiResponse::ok(pair.into()))
}

/// Rotate a refresh token: returns a new pair and spends the presented token. Presenting a
/// spent token again revokes every token of that login.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "auth",
    request_body = RefreshTokenBody,
    responses(
        (status = 200, description = "new pair", body = Envelope<TokenPairView>),
        (status = 401, description = "invalid, expired, revoked or reused (20003)", body = ErrorEnvelope),
        (status = 429, description = "too many rotations from this client IP (10006)", body = ErrorEnvelope),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RefreshTokenBody>,
) -> Result<ApiResponse<TokenPairView>, ApiError> {
    let pair = state.auth.refresh(&body.refresh_token, ip).await?;
    Ok(ApiResponse::ok(pair.into()))
}

/// Sign out: revokes the refresh token's whole family; the access tokens of that login stop
/// working within the user-check TTL (`SPIKE_USER_CHECK_TTL`, seconds). The answer is the same
/// for a spent, revoked or unknown token.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    request_body = RefreshTokenBody,
    responses(
        (status = 200, description = "signed out, or the token was already spent, revoked or unknown (RFC 7009); `data` is null", body = Envelope<Option<String>>),
        (status = 400, description = "no refresh_token (10001, `data.fields`)", body = ErrorEnvelope),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshTokenBody>,
) -> Result<ApiResponse<Option<()>>, ApiError> {
    if body.refresh_token.trim().is_empty() {
        let mut errors = FieldErrors::default();
        errors.add("refresh_token", "required");
        return Err(errors.into_error());
    }
    state.auth.logout(&body.refresh_token).await?;
    Ok(ApiResponse::ok(None))
}

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/users/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller", body = Envelope<UserView>),
        (status = 401, description = "missing, malformed, expired or forged token (10002)", body = ErrorEnvelope),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<ApiResponse<UserView>, ApiError> {
    let user = state.auth.current_user(user.id).await?;
    Ok(ApiResponse::ok(user.into()))
}
