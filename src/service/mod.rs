//! Business rules, one module per area. Services hold the repo handles they need, enforce the
//! rules, own transactions, and return [`ServiceError`]; they never see HTTP types.

pub mod auth;
pub mod catalog;
pub mod flash_sale;
pub mod flash_sale_units;
pub mod health;
pub mod messages;
pub mod order_writer;
pub mod orders;
pub mod outbox;
pub mod store_gauges;

use std::time::Duration;

use crate::repo::{Dependency, ErrorKind, RepoError};

/// What a service call can fail with. The API layer maps each variant to one envelope code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A store did not answer; the client may retry later.
    #[error("{0} is unavailable")]
    Unavailable(Dependency, #[source] RepoError),
    /// Anything else unexpected: logged in full, reported to the client without details.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    #[error("email already registered")]
    EmailTaken,
    #[error("wrong email or password")]
    WrongCredentials,
    #[error("refresh token invalid, expired, revoked or reused")]
    RefreshTokenInvalid,
    #[error("product {0} not found")]
    ProductNotFound(u64),
    #[error("insufficient stock for product {product_id}")]
    InsufficientStock { product_id: u64 },
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    #[error("order not found")]
    OrderNotFound,
    #[error("flash-sale event not found")]
    EventNotFound,
    /// A buyer turned away by the flash sale (sold out, not started, rate limited, …).
    #[error(transparent)]
    Refused(#[from] flash_sale::Refusal),
    /// Nothing was done; the same request may succeed in a moment (503/10008).
    #[error("{0}")]
    Retryable(String),
    /// The request conflicts with the resource's current state (generic 409/10005).
    #[error("{0}")]
    Conflict(String),
    /// The order's status does not allow the action (pay a closed order, cancel a paid one).
    #[error("{0}")]
    OrderStateConflict(String),
    /// A request that passed field validation but breaks a business rule (e.g. a total too big).
    #[error("{0}")]
    InvalidArgument(String),
    /// One field of the request breaks a rule only the service can check (it needs the stored
    /// state, e.g. an event's new end with its kept start): 400/10001 naming the field.
    #[error("{field}: {problem}")]
    InvalidField {
        field: &'static str,
        problem: String,
    },
    /// Missing, malformed, expired or forged access token; the reason is for logs only.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
}

impl ServiceError {
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ServiceError {
        ServiceError::Internal(error.into())
    }

    /// What the store said, when a store's error is behind this one.
    pub fn repo_kind(&self) -> Option<ErrorKind> {
        match self {
            ServiceError::Unavailable(_, error) => Some(error.kind()),
            ServiceError::Internal(error) => error.downcast_ref::<RepoError>().map(RepoError::kind),
            _ => None,
        }
    }
}

impl From<RepoError> for ServiceError {
    /// An unreachable store becomes `Unavailable` (503, retryable); anything else `Internal`.
    fn from(error: RepoError) -> ServiceError {
        match error.unavailable_dependency() {
            Some(dependency) => ServiceError::Unavailable(dependency, error),
            None => ServiceError::Internal(Box::new(error)),
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(error: sqlx::Error) -> ServiceError {
        ServiceError::from(RepoError::from(error))
    }
}
