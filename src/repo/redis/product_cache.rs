//! The product detail cache: `{prefix}product:<id>` holds the product as JSON, or an empty string
//! meaning "no such product" (so requests for missing ids do not all reach MySQL).

use std::time::Duration;

use redis::AsyncCommands;

use super::RedisConnection;
use crate::domain::product::Product;
use crate::repo::RepoError;

/// What the cache knows about one id.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    Hit(Product),
    /// Recently looked up and not found.
    Missing,
    /// Not cached.
    Absent,
}

const MISSING_MARKER: &str = "";

pub async fn get(redis: &mut RedisConnection, key: &str) -> Result<Cached, RepoError> {
    let value: Option<String> = redis.get(key).await?;
    Ok(match value.as_deref() {
        None => Cached::Absent,
        Some(MISSING_MARKER) => Cached::Missing,
        Some(json) => match serde_json::from_str(json) {
            Ok(product) => Cached::Hit(product),
            Err(error) => {
                // An entry written by another version of the code: treat as absent.
                tracing::warn!(key, %error, "unreadable product cache entry ignored");
                Cached::Absent
            }
        },
    })
}

pub async fn put(
    redis: &mut RedisConnection,
    key: &str,
    product: &Product,
    ttl: Duration,
) -> Result<(), RepoError> {
    let json = serde_json::to_string(product).expect("products serialize");
    let _: () = redis.pset_ex(key, json, ttl.as_millis() as u64).await?;
    Ok(())
}

pub async fn put_missing(
    redis: &mut RedisConnection,
    key: &str,
    ttl: Duration,
) -> Result<(), RepoError> {
    let _: () = redis
        .pset_ex(key, MISSING_MARKER, ttl.as_millis() as u64)
        .await?;
    Ok(())
}

pub async fn invalidate(redis: &mut RedisConnection, key: &str) -> Result<(), RepoError> {
    let _: () = redis.del(key).await?;
    Ok(())
}
