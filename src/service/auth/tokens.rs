//! Access tokens (HS256 JWT) and refresh tokens (opaque random strings).
//!
//! Validation pins HS256: a token whose header names another algorithm, or `none`, is refused
//! before its signature is looked at, and `kid`/`jku`/`jwk` headers are ignored because the key
//! is always the configured secret. `exp` is required and checked with a small, explicit leeway
//! instead of the library's default of 60 s; a token issued (`iat`) or valid (`nbf`) only in the
//! future is refused with the same leeway.

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (RFC 7519 `sub` is a StringOrURI).
    pub sub: String,
    pub role: Role,
    pub exp: u64,
    pub iat: u64,
    /// Unique token id, for audit logs and a future deny-list.
    pub jti: String,
}

/// Who an access token says the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: u64,
    pub role: Role,
}

#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
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
        })
    }

    /// Lifetime of a new token in seconds (the `expires_in` of a token response).
    pub fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs()
    }

    pub fn issue(&self, user: &User) -> Result<String, ServiceError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.id.to_string(),
            role: user.role,
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ServiceError::internal)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, ServiceError> {
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
        let issued_ahead = jsonwebtoken::get_current_timestamp() + EXP_LEEWAY.as_secs();
        if data.claims.iat > issued_ahead {
            return Err(ServiceError::Unauthenticated("issued in the future"));
        }
        let user_id = data
            .claims
            .sub
            .parse()
            .map_err(|_| ServiceError::Unauthenticated("malformed subject"))?;
        Ok(Principal {
            user_id,
            role: data.claims.role,
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

    #[test]
    fn issued_tokens_verify() {
        let tokens = AccessTokens::new(SECRET, Duration::from_secs(60)).unwrap();
        let token = tokens.issue(&user()).unwrap();
        assert_eq!(
            tokens.verify(&token).unwrap(),
            Principal {
                user_id: 42,
                role: Role::User
            }
        );
    }

    #[test]
    fn another_secret_is_refused() {
        let issuer =
            AccessTokens::new(b"another-secret-another-secret-xx", Duration::from_secs(60))
                .unwrap();
        let verifier = AccessTokens::new(SECRET, Duration::from_secs(60)).unwrap();
        let token = issuer.issue(&user()).unwrap();
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
