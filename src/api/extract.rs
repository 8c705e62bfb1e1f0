//! Extractors: JSON bodies, path parameters and query strings whose rejections are API
//! envelopes, the authenticated caller, and the client's IP address.
//!
//! A handler's signature says what it needs: `AuthUser` for any signed-in user, `AdminUser` for
//! admins only (403 otherwise), `TokenUser` where the token alone must do (the flash-sale hot
//! path), `ClientIp` where the caller's address matters (rate limits).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::domain::user::Role;
use crate::domain::{ID_MAX, parse_positive};
use crate::service::ServiceError;
use crate::service::auth::tokens::Principal;

/// `axum::Json`, but malformed JSON, a wrong content type and an oversized body answer
/// 400/10001, 400/10001 and 413/10010 in the envelope.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// The `{id}` of a path: a positive integer written the canonical way (`7`, not `07`, `+7` or
/// `7.0`) and at most the int64 the document promises, else 400/10001 (see
/// `domain::parse_positive`).
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state).await?;
        parse_id(&raw).map(PathId).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidArgument).with_message(format!(
                "invalid path parameter: the id must be a positive integer such as 42 (got {raw:?})"
            ))
        })
    }
}

/// A path id: canonical and at most [`ID_MAX`] (the document's int64).
fn parse_id(raw: &str) -> Option<u64> {
    parse_positive(raw).filter(|id| *id <= ID_MAX)
}

/// `axum::extract::Query`, but a malformed query string answers 400/10001.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The caller, from a valid `Authorization: Bearer <access token>` whose user still exists
/// (with its current role: see `AuthService::confirm`); 401/10002 otherwise.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: u64,
    pub role: Role,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claimed = bearer_principal(parts, state)?;
        Ok(state.auth.confirm(claimed).await?.into())
    }
}

impl From<Principal> for AuthUser {
    fn from(principal: Principal) -> AuthUser {
        AuthUser {
            id: principal.user_id,
            role: principal.role,
        }
    }
}

/// The caller as its access token says, checked by signature alone: no database read. Only
/// for the flash-sale buy and result routes, which must stay off MySQL at sale rates; a buyer
/// deleted since the token was issued is refused by the worker instead.
#[derive(Debug, Clone, Copy)]
pub struct TokenUser(pub AuthUser);

impl FromRequestParts<AppState> for TokenUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(TokenUser(bearer_principal(parts, state)?.into()))
    }
}

/// Who the request's `Authorization: Bearer` token says the caller is (signature only).
fn bearer_principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ServiceError::Unauthenticated(
            "missing Authorization header",
        ))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or(ServiceError::Unauthenticated("not a Bearer token"))?;
    Ok(state.auth.authenticate(token)?)
}

/// An authenticated admin; 401 without a valid token, 403/10003 for other roles.
#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(ApiError::new(ErrorCode::Forbidden).with_message(&state.admin_hint));
        }
        Ok(AdminUser(user))
    }
}

/// Longest accepted `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;

/// The optional `Idempotency-Key` header: 1 to 128 visible ASCII characters, else 400/10001.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|key| !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_MAX && key.is_ascii())
            .ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidArgument).with_message(format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
                ))
            })?;
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// The client's IP: the socket peer, or — behind `SPIKE_TRUSTED_PROXY_HOPS` reverse proxies —
/// the address the outermost trusted proxy saw. Entries a client wrote into `X-Forwarded-For`
/// itself are never trusted: only the last `hops` entries were added by our proxies.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| {
                tracing::error!("no ConnectInfo: serve with into_make_service_with_connect_info");
                ApiError::internal()
            })?;
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        Ok(ClientIp(client_ip(
            peer,
            &forwarded,
            state.trusted_proxy_hops,
        )))
    }
}

fn client_ip(peer: IpAddr, forwarded: &[&str], trusted_hops: usize) -> IpAddr {
    if trusted_hops == 0 || forwarded.len() < trusted_hops {
        return peer;
    }
    forwarded[forwarded.len() - trusted_hops]
        .parse()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_stop_at_the_documents_int64() {
        // The spellings are `domain::parse_positive`'s (tested there).
        assert_eq!(parse_id("1"), Some(1));
        assert_eq!(parse_id("9223372036854775807"), Some(i64::MAX as u64));
        assert_eq!(parse_id("9223372036854775808"), None);
        assert_eq!(parse_id("01"), None);
    }

    #[test]
    fn forwarded_for_is_trusted_only_as_far_as_configured() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let chain = ["6.6.6.6", "203.0.113.7"]; // spoofed by the client, then added by our proxy
        assert_eq!(client_ip(peer, &chain, 0), peer);
        assert_eq!(
            client_ip(peer, &chain, 1),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer, &chain, 2),
            "6.6.6.6".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer, &chain, 3),
            peer,
            "fewer entries than proxies"
        );
        assert_eq!(client_ip(peer, &["garbage"], 1), peer);
    }
}
