//! Password hashing with argon2id, off the async runtime.
//!
//! A hash costs tens of milliseconds of CPU and `memory_kib` of memory by design. Running it on
//! a runtime worker would stall every other request on that thread during a login burst, so it
//! runs on the blocking pool, and a semaphore caps how many run at once (which also caps the
//! memory they take: `concurrency × memory_kib`).

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::Argon2Params;
use crate::service::ServiceError;

#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash of a random password with the configured cost. Logins for unknown emails verify
    /// against it, so they take as long as logins with a wrong password: response time does not
    /// tell whether an email is registered.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub fn new(params: Argon2Params, concurrency: usize) -> Result<PasswordHasher, ServiceError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(ServiceError::internal)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| ServiceError::internal(e.to_string()))?;
        let dummy_hash = argon2
            .hash_password(&random)
            .map_err(ServiceError::internal)?
            .to_string();
        Ok(PasswordHasher {
            argon2,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The PHC string (`$argon2id$v=19$m=…`) of `password` with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, ServiceError> {
        let argon2 = self.argon2.clone();
        let password = password.to_owned();
        self.run_blocking(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(ServiceError::internal)
        })
        .await
    }

    /// Whether `password` matches `stored` (a PHC string). With `stored = None` it verifies
    /// against the dummy hash and answers false, taking the same time.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, ServiceError> {
        let argon2 = self.argon2.clone();
        let password = password.to_owned();
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        self.run_blocking(move || {
            let parsed = PasswordHash::new(&stored).map_err(ServiceError::internal)?;
            // The parameters stored in the hash are used, so changing the configured cost
            // does not lock out existing users.
            let matches = argon2.verify_password(password.as_bytes(), &parsed).is_ok();
            Ok(known && matches)
        })
        .await
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(ServiceError::internal)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(ServiceError::internal)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        let params = Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        PasswordHasher::new(params, 2).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_salts_differ() {
        let hasher = cheap();
        let a = hasher.hash("correct horse").await.unwrap();
        let b = hasher.hash("correct horse").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(hasher.verify("correct horse", Some(&a)).await.unwrap());
        assert!(!hasher.verify("wrong horse", Some(&a)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_users_never_match_even_with_the_dummy_password() {
        let hasher = cheap();
        assert!(!hasher.verify("anything", None).await.unwrap());
    }
}
