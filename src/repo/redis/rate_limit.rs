//! Cluster-wide rate limits: token buckets kept in Redis and updated by one Lua script, so every
//! API replica draws from the same bucket.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::RedisConnection;
use crate::config::RateLimit;
use crate::repo::RepoError;

static TOKEN_BUCKET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("scripts/bucket.lua"),
        include_str!("scripts/token_bucket.lua")
    ))
});

/// Outcome of taking one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused; a token will be available after this long.
    Limited {
        retry_after: Duration,
    },
}

/// Takes one token from the bucket at `key` (the full key, prefix included).
/// `Script` sends EVALSHA and falls back to EVAL when Redis answers NOSCRIPT (after a restart).
pub async fn take(
    redis: &mut RedisConnection,
    key: &str,
    limit: RateLimit,
) -> Result<Admission, RepoError> {
    run(redis, key, limit, 1).await
}

/// Puts one token back (never above the burst): for an attempt that turned out not to count.
pub async fn give_back(
    redis: &mut RedisConnection,
    key: &str,
    limit: RateLimit,
) -> Result<(), RepoError> {
    run(redis, key, limit, -1).await.map(drop)
}

#[tracing::instrument(level = "debug", name = "redis.token_bucket", skip_all, fields(otel.kind = "client", db.system = "redis"))]
async fn run(
    redis: &mut RedisConnection,
    key: &str,
    limit: RateLimit,
    cost: i32,
) -> Result<Admission, RepoError> {
    let (allowed, retry_after_ms): (i64, i64) = TOKEN_BUCKET
        .key(key)
        .arg(limit.burst)
        .arg(limit.refill_per_second())
        .arg(cost)
        .invoke_async(redis)
        .await?;
    Ok(if allowed == 1 {
        Admission::Allowed
    } else {
        Admission::Limited {
            retry_after: Duration::from_millis(retry_after_ms.max(0) as u64),
        }
    })
}
