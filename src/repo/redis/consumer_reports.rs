//! What each consumer of a queue holds, reported by the worker that runs it: one Redis hash per
//! queue, a field per consumer (`held settled unix_ms`). The broker counts a queue's ready
//! messages but not those delivered to a consumer and not yet settled; these reports fill that
//! gap for the reconciler, which must prove no reservation is in flight before it releases
//! units a re-warm held back.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::RedisConnection;
use crate::repo::RepoError;

/// One consumer's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerReport {
    /// Deliveries in hand, not yet settled.
    pub held: u64,
    /// Deliveries settled since the consumer started.
    pub settled: u64,
    /// When it was written (unix ms).
    pub at_ms: i64,
}

#[derive(Clone)]
pub struct ConsumerReports {
    redis: RedisConnection,
    key: String,
}

impl ConsumerReports {
    /// Reports about the consumers of `queue`, under the Redis `prefix`.
    pub fn new(redis: RedisConnection, prefix: &str, queue: &str) -> ConsumerReports {
        ConsumerReports {
            redis,
            key: format!("{prefix}consumers:{queue}"),
        }
    }

    pub async fn write(&self, consumer: &str, report: ConsumerReport) -> Result<(), RepoError> {
        let value = format!("{} {} {}", report.held, report.settled, report.at_ms);
        let _: () = self.redis.clone().hset(&self.key, consumer, value).await?;
        Ok(())
    }

    /// Every consumer's latest report (unreadable entries are skipped).
    pub async fn read(&self) -> Result<HashMap<String, ConsumerReport>, RepoError> {
        let entries: HashMap<String, String> = self.redis.clone().hgetall(&self.key).await?;
        Ok(entries
            .into_iter()
            .filter_map(|(consumer, value)| {
                let mut parts = value.split(' ');
                let report = ConsumerReport {
                    held: parts.next()?.parse().ok()?,
                    settled: parts.next()?.parse().ok()?,
                    at_ms: parts.next()?.parse().ok()?,
                };
                Some((consumer, report))
            })
            .collect())
    }

    /// Drops the reports of consumers that stopped (their reports went stale).
    pub async fn forget(&self, consumers: &[String]) -> Result<(), RepoError> {
        if consumers.is_empty() {
            return Ok(());
        }
        let _: () = self.redis.clone().hdel(&self.key, consumers).await?;
        Ok(())
    }
}
