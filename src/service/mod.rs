//! Business rules, one module per area. Services hold the repo handles they need, enforce the
//! rules, own transactions, and return [`ServiceError`]; they never see HTTP types.

pub mod health;

use crate::repo::{Dependency, RepoError};

/// What a service call can fail with. The API layer maps each variant to one envelope code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A store did not answer; the client may retry later.
    #[error("{0} is unavailable")]
    Unavailable(Dependency, #[source] RepoError),
    /// Anything else unexpected: logged in full, reported to the client without details.
    #[error(transparent)]
    Internal(RepoError),
}

impl From<RepoError> for ServiceError {
    /// An unreachable store becomes `Unavailable` (503, retryable); anything else `Internal`.
    fn from(error: RepoError) -> ServiceError {
        match error.unavailable_dependency() {
            Some(dependency) => ServiceError::Unavailable(dependency, error),
            None => ServiceError::Internal(error),
        }
    }
}
