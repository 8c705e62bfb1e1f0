//! The `outbox` table: messages written in the same transaction as the change they announce,
//! published later by the relay (`service::outbox`).

use std::time::Duration;

use sqlx::{MySql, MySqlConnection, QueryBuilder};

use crate::repo::RepoError;

#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: u64,
    /// The routing key on the main exchange.
    pub topic: String,
    pub payload: String,
}

pub async fn insert(
    tx: &mut MySqlConnection,
    topic: &str,
    payload: &str,
) -> Result<u64, RepoError> {
    let result = sqlx::query!(
        "INSERT INTO outbox (topic, payload) VALUES (?, ?)",
        topic,
        payload
    )
    .execute(tx)
    .await?;
    Ok(result.last_insert_id())
}

/// Starts a relay's transaction in READ COMMITTED. Under MySQL's default REPEATABLE READ the
/// claim's locking scan of `(published_at, id)` takes gap locks, and two relays marking their
/// batches (which moves index entries into those gaps) deadlock: the victim rolls back after
/// publishing, and its batch goes out twice. READ COMMITTED takes no gap locks; the rows
/// themselves stay locked until commit, which is all `SKIP LOCKED` needs.
pub async fn begin_relay(
    db: &sqlx::MySqlPool,
) -> Result<sqlx::Transaction<'static, MySql>, RepoError> {
    Ok(db
        .begin_with("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION")
        .await?)
}

/// Claims up to `limit` unpublished messages, oldest first, locking them until the transaction
/// ends. `SKIP LOCKED` lets several relays work side by side: each takes rows the others do not
/// hold, and none waits.
pub async fn claim(tx: &mut MySqlConnection, limit: u32) -> Result<Vec<OutboxMessage>, RepoError> {
    Ok(sqlx::query_as!(
        OutboxMessage,
        "SELECT id, topic, payload FROM outbox WHERE published_at IS NULL \
         ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED",
        limit
    )
    .fetch_all(tx)
    .await?)
}

pub async fn mark_published(tx: &mut MySqlConnection, ids: &[u64]) -> Result<(), RepoError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut query = QueryBuilder::<MySql>::new(
        "UPDATE outbox SET published_at = UTC_TIMESTAMP(3), attempts = attempts + 1 WHERE id IN (",
    );
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    query.build().execute(tx).await?;
    Ok(())
}

pub async fn record_failure(
    tx: &mut MySqlConnection,
    id: u64,
    error: &str,
) -> Result<(), RepoError> {
    let error: String = error.chars().take(500).collect();
    sqlx::query!(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
        error,
        id
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The outbox's unpublished messages: how many, and how long the oldest has waited (zero when
/// there is none). The age is measured by MySQL's clock, which also stamped `created_at`.
pub async fn backlog(db: &sqlx::MySqlPool) -> Result<(u64, Duration), RepoError> {
    let row = sqlx::query!(
        r#"SELECT COUNT(*) AS "pending!: i64",
                  CAST(COALESCE(TIMESTAMPDIFF(MICROSECOND, MIN(created_at), NOW(3)), 0) AS SIGNED)
                      AS "oldest_micros!: i64"
           FROM outbox WHERE published_at IS NULL"#
    )
    .fetch_one(db)
    .await?;
    let age = Duration::from_micros(row.oldest_micros.max(0) as u64);
    Ok((row.pending.max(0) as u64, age))
}
