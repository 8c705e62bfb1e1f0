//! Access tokens (HS256 JWT) and refresh tokens (opaque random strings).
//!
//! Validation pins HS256: a token whose header names another algorithm, or `none`, is refused
//! before its signature is looked at, and `kid`/`jku`/`jwk` headers are ignored because the key
//! is always the configured secret. `exp` is required and checked with a small, explicit leeway
//! instead of the library's default of 60 s; a token issued (`iat`) or valid (`nbf`) only in the
//! future is refused with the same leeway. A token is refused, even correctly signed, when it is
//! longer than any token this service issues ([`ACCESS_TOKEN_MAX_BYTES`], before decoding),
//! when it claims a longer life than the configured lifetime (`exp - iat`), and when its `typ`
//! (header or claim) names another kind of token.
//!
//! Each access token names the login it was issued to (`sid`, the refresh-token family), so the
//! per-request user check can refuse the access tokens of a login that was revoked (logout,
//! refresh-token reuse) without waiting for them to expire.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::user::{Role, User};
use crate::service::ServiceError;

/// Clock skew tolerated between the issuing and the validating replica.
pub const EXP_LEEWAY: Duration = Duration::from_secs(5);

/// The longest access token accepted, checked before any decoding. The tokens issued here are
/// about 350 bytes; a correctly signed 100 KB payload was once decoded in full.
pub const ACCESS_TOKEN_MAX_BYTES: usize = 2048;

/// The `typ` header of the tokens issued here (RFC 7519 §5.1); `at+jwt` (RFC 9068) is taken too.
const HEADER_TYPES: [&str; 2] = ["JWT", "at+jwt"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (RFC 7519 `sub` is a StringOrURI).
    pub sub: String,
    pub role: Role,
    pub exp: u64,
    pub iat: u64,
    /// Unique token id, for audit logs.
    pub jti: String,
    /// The login this token belongs to: the family id of its refresh tokens. Absent in tokens
    /// of releases before it existed (they expire within `SPIKE_ACCESS_TTL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<uuid::Uuid>,
    /// Never written here; a token that carries one must say it is an access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// Who an access token says the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: u64,
    pub role: Role,
    /// The login the token was issued to (`sid`), when it names one.
    pub session: Option<uuid::Uuid>,
}

#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    /// Tokens this process has verified, by their exact text (see [`AccessTokens::verify`]).
    verified: moka::sync::Cache<Box<str>, Verified>,
}

/// How long a verified token is remembered at most (less when it expires sooner).
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// Tokens remembered at once, at most: a sale's active buyers on one replica.
const VERIFIED_MAX: u64 = 50_000;

/// What a verified token said, and until when it holds.
#[derive(Debug, Clone, Copy)]
struct Verified {
    principal: Principal,
    exp: u64,
}

impl Verified {
    /// Whether the token still holds at `now` (Unix seconds): as jsonwebtoken checks `exp`,
    /// with the same leeway.
    fn holds_at(&self, now: u64) -> bool {
        self.exp.saturating_add(EXP_LEEWAY.as_secs()) >= now
    }
}

impl AccessTokens {
    pub fn new(secret: &[u8], ttl: Duration) -> Result<AccessTokens, ServiceError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = EXP_LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Ok(AccessTokens {
            encoding: EncodingKey::from_secret(secret).map_err(ServiceError::internal)?,
            decoding: DecodingKey::from_secret(secret).map_err(ServiceError::internal)?,
            validation,
            ttl,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_MAX)
                .time_to_live(VERIFIED_FOR)
                .build(),
        })
    }

    /// Lifetime of a new token in seconds (the `expires_in` of a token response).
    pub fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs()
    }

    /// A token for `user`'s login `session` (the refresh-token family it belongs to).
    pub fn issue(&self, user: &User, session: uuid::Uuid) -> Result<String, ServiceError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.id.to_string(),
            role: user.role,
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            sid: Some(session),
            typ: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ServiceError::internal)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, ServiceError> {
        if token.len() > ACCESS_TOKEN_MAX_BYTES {
            return Err(ServiceError::Unauthenticated("token too long"));
        }
        // A buyer pressing "buy" again sends the same text: it was proven (signature, claims)
        // already, and only its expiry can have changed. The signature check, the base64 and the
        // JSON are most of what a refused buy costs (docs/benchmarks.md, issue 26).
        if let Some(verified) = self.verified.get(token) {
            if verified.holds_at(jsonwebtoken::get_current_timestamp()) {
                return Ok(verified.principal);
            }
            self.verified.invalidate(token);
            return Err(ServiceError::Unauthenticated("token expired"));
        }
        let verified = self.verify_signed(token)?;
        self.verified.insert(token.into(), verified);
        Ok(verified.principal)
    }

    /// The whole check of a token not seen before.
    fn verify_signed(&self, token: &str) -> Result<Verified, ServiceError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| {
                use jsonwebtoken::errors::ErrorKind;
                tracing::debug!(%error, "access token refused");
                ServiceError::Unauthenticated(match error.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidAlgorithm => "algorithm not allowed",
                    _ => "malformed token",
                })
            })?;
        let claims = data.claims;
        let issued_ahead = jsonwebtoken::get_current_timestamp() + EXP_LEEWAY.as_secs();
        if claims.iat > issued_ahead {
            return Err(ServiceError::Unauthenticated("issued in the future"));
        }
        // Valid for longer than this service issues tokens for: not one of ours, or minted
        // with a leaked key to last.
        if claims.exp.saturating_sub(claims.iat) > self.ttl.as_secs() {
            return Err(ServiceError::Unauthenticated("lifetime longer than issued"));
        }
        let header_type_ok = data
            .header
            .typ
            .as_deref()
            .is_none_or(|typ| HEADER_TYPES.iter().any(|t| t.eq_ignore_ascii_case(typ)));
        let claim_type_ok = claims.typ.as_deref().is_none_or(|typ| typ == "access");
        if !header_type_ok || !claim_type_ok {
            return Err(ServiceError::Unauthenticated("not an access token"));
        }
        let user_id = claims
            .sub
            .parse()
            .map_err(|_| ServiceError::Unauthenticated("malformed subject"))?;
        Ok(Verified {
            principal: Principal {
                user_id,
                role: claims.role,
                session: claims.sid,
            },
            exp: claims.exp,
        })
    }
}

/// A new refresh token (256 random bits, base64url) and the hash to store for it.
pub fn new_refresh_token() -> Result<(String, String), ServiceError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ServiceError::internal(e.to_string()))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    Ok((token, hash))
}

/// SHA-256, hex. Refresh tokens are high-entropy random strings, so a fast hash suffices: the
/// database alone never yields a usable token.
pub fn hash_refresh_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn user() -> User {
        User {
            id: 42,
            email: "a@example.com".into(),
            role: Role::User,
        }
    }

    const SESSION: uuid::Uuid = uuid::Uuid::from_u128(7);

    #[test]
    fn issued_tokens_verify() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60)).unwrap();
        let token = tokens.issue(&user(), SESSION).unwrap();
        assert_eq!(
            tokens.verify(&token).unwrap(),
            Principal {
                user_id: 42,
                role: Role::User,
                session: Some(SESSION),
            }
        );
        assert!(token.len() < ACCESS_TOKEN_MAX_BYTES / 4, "{}", token.len());
    }

    #[test]
    fn a_verified_token_is_remembered_by_its_exact_text() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60)).unwrap();
        let token = tokens.issue(&user(), SESSION).unwrap();
        let first = tokens.verify(&token).unwrap();
        assert!(tokens.verified.contains_key(token.as_str()));
        assert_eq!(
            tokens.verify(&token).unwrap(),
            first,
            "answered from memory"
        );
        // One character of the signature changed: another text, checked in full, refused.
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(tokens.verify(&forged).is_err());
        assert!(!tokens.verified.contains_key(forged.as_str()));
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60)).unwrap();
        let token = tokens.issue(&user(), SESSION).unwrap();
        let principal = tokens.verify(&token).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let lapsed = Verified {
            principal,
            exp: now - EXP_LEEWAY.as_secs() - 1,
        };
        tokens.verified.insert(token.as_str().into(), lapsed);
        assert!(matches!(
            tokens.verify(&token),
            Err(ServiceError::Unauthenticated("token expired"))
        ));
        assert!(!tokens.verified.contains_key(token.as_str()), "forgotten");
        // The leeway jsonwebtoken allows `exp`, and not a second more.
        let at = |exp| Verified { principal, exp };
        assert!(at(100).holds_at(100 + EXP_LEEWAY.as_secs()));
        assert!(!at(100).holds_at(101 + EXP_LEEWAY.as_secs()));
    }

    /// Signs `claims` (and the header's `typ`) with the right key, as someone holding it would.
    fn signed(claims: serde_json::Value, typ: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
    }

    #[test]
    fn correctly_signed_tokens_that_are_not_ours_are_refused() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(900)).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let claims = |exp: u64, extra: serde_json::Value| {
            let mut claims = serde_json::json!({
                "sub": "42", "role": "user", "iat": now, "exp": exp, "jti": "x"
            });
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            claims
        };
        let none = serde_json::json!({});
        // The shape this service issues, for contrast.
        assert!(
            tokens
                .verify(&signed(claims(now + 900, none.clone()), Some("JWT")))
                .is_ok()
        );
        assert!(
            tokens
                .verify(&signed(claims(now + 900, none.clone()), None))
                .is_ok()
        );
        for (token, reason) in [
            (
                signed(claims(now + 10 * 365 * 86_400, none.clone()), Some("JWT")),
                "lifetime longer than issued",
            ),
            (
                signed(claims(now + 900, none.clone()), Some("refresh")),
                "not an access token",
            ),
            (
                signed(
                    claims(now + 900, serde_json::json!({"typ": "refresh"})),
                    Some("JWT"),
                ),
                "not an access token",
            ),
            (
                signed(
                    claims(now + 900, serde_json::json!({"pad": "x".repeat(100_000)})),
                    Some("JWT"),
                ),
                "token too long",
            ),
            (
                signed(
                    claims(now + 900, serde_json::json!({"sid": "not-a-uuid"})),
                    Some("JWT"),
                ),
                "malformed token",
            ),
        ] {
            match tokens.verify(&token) {
                Err(ServiceError::Unauthenticated(why)) => assert_eq!(why, reason),
                other => panic!("{reason}: {other:?}"),
            }
        }
    }

    #[test]
    fn another_secret_is_refused() {
        let issuer =
            AccessTokens::new(b"another-secret-another-secret-xx", Duration::from_secs(60))
                .unwrap();
        let verifier = AccessTokens::new(SECRET, Duration::from_secs(60)).unwrap();
        let token = issuer.issue(&user(), SESSION).unwrap();
        assert!(matches!(
            verifier.verify(&token),
            Err(ServiceError::Unauthenticated("bad signature"))
        ));
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_refresh_token().unwrap();
        let (b, _) = new_refresh_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in base64url without padding");
        assert_eq!(hash_a, hash_refresh_token(&a));
        assert_eq!(hash_a.len(), 64);
        assert!(!hash_a.contains(&a));
    }
}
