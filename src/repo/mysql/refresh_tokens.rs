//! The `refresh_tokens` table: one row per issued refresh token (only its SHA-256 is stored).
//! A token is *spent* once `replaced_by` is set (rotated) or `revoked_at` is set (logout or
//! reuse detection); tokens of one login share a `family_id`.

use sqlx::{MySqlConnection, MySqlExecutor};
use time::PrimitiveDateTime;

use crate::repo::RepoError;

#[derive(Debug)]
pub struct RefreshTokenRow {
    pub id: u64,
    pub user_id: u64,
    pub family_id: String,
    pub expires_at: PrimitiveDateTime,
    pub revoked_at: Option<PrimitiveDateTime>,
    pub replaced_by: Option<u64>,
}

impl RefreshTokenRow {
    pub fn is_spent(&self) -> bool {
        self.revoked_at.is_some() || self.replaced_by.is_some()
    }
}

pub async fn insert(
    db: impl MySqlExecutor<'_>,
    user_id: u64,
    family_id: &str,
    token_hash: &str,
    expires_at: PrimitiveDateTime,
) -> Result<u64, RepoError> {
    let result = sqlx::query!(
        "INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at) VALUES (?, ?, ?, ?)",
        user_id,
        family_id,
        token_hash,
        expires_at
    )
    .execute(db)
    .await?;
    Ok(result.last_insert_id())
}

/// Finds a token by hash and locks its row until the transaction ends, so two concurrent
/// refreshes with one token are serialized: the second sees it spent.
///
/// The lock is taken through the primary key, not `token_hash`: a locking read on the
/// secondary unique index takes a next-key lock (record and the gap before it), and the
/// rotation's INSERT of the new hash into that gap then deadlocks with a concurrent refresh
/// queued on the same record. A primary-key equality lock covers the record only.
pub async fn find_for_update(
    tx: &mut MySqlConnection,
    token_hash: &str,
) -> Result<Option<RefreshTokenRow>, RepoError> {
    let id = sqlx::query_scalar!(
        "SELECT id FROM refresh_tokens WHERE token_hash = ?",
        token_hash
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    // A locking read sees the latest committed version, whatever the snapshot above saw.
    Ok(sqlx::query_as!(
        RefreshTokenRow,
        "SELECT id, user_id, family_id, expires_at, revoked_at, replaced_by \
         FROM refresh_tokens WHERE id = ? FOR UPDATE",
        id
    )
    .fetch_optional(tx)
    .await?)
}

pub async fn find(
    db: impl MySqlExecutor<'_>,
    token_hash: &str,
) -> Result<Option<RefreshTokenRow>, RepoError> {
    Ok(sqlx::query_as!(
        RefreshTokenRow,
        "SELECT id, user_id, family_id, expires_at, revoked_at, replaced_by \
         FROM refresh_tokens WHERE token_hash = ?",
        token_hash
    )
    .fetch_optional(db)
    .await?)
}

/// Marks `id` as rotated into `replaced_by`.
pub async fn mark_replaced(
    db: impl MySqlExecutor<'_>,
    id: u64,
    replaced_by: u64,
) -> Result<(), RepoError> {
    sqlx::query!(
        "UPDATE refresh_tokens SET replaced_by = ? WHERE id = ?",
        replaced_by,
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Revokes every still-live token of a family; returns how many were revoked.
pub async fn revoke_family(
    db: impl MySqlExecutor<'_>,
    family_id: &str,
    now: PrimitiveDateTime,
) -> Result<u64, RepoError> {
    let result = sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
        now,
        family_id
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// Whether the login `family_id` has been revoked (logout or reuse detection): revocation
/// marks every token of the family it finds live, so one revoked token is enough.
pub async fn family_revoked(
    db: impl MySqlExecutor<'_>,
    family_id: &str,
) -> Result<bool, RepoError> {
    let revoked = sqlx::query_scalar!(
        "SELECT id FROM refresh_tokens WHERE family_id = ? AND revoked_at IS NOT NULL LIMIT 1",
        family_id
    )
    .fetch_optional(db)
    .await?;
    Ok(revoked.is_some())
}
