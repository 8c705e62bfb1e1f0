//! The `users` table.

use sqlx::MySqlExecutor;

use crate::domain::user::{Role, User};
use crate::repo::RepoError;

/// Name of the unique key on `users.email` (see the migration).
pub const EMAIL_KEY: &str = "uk_users_email";

/// A user with the stored password hash, for login.
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// Inserts a user; a taken email fails with a unique violation on [`EMAIL_KEY`].
pub async fn insert(
    db: impl MySqlExecutor<'_>,
    email: &str,
    password_hash: &str,
    role: Role,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "INSERT INTO users (email, password_hash, role) VALUES (?, ?, ?)",
        email,
        password_hash,
        role
    )
    .execute(db)
    .await?;
    Ok(result.last_insert_id())
}

pub async fn find_by_id(db: impl MySqlExecutor<'_>, id: u64) -> Result<Option<User>, RepoError> {
    Ok(sqlx::query_as!(
        User,
        r#"SELECT id, email, role AS "role: Role" FROM users WHERE id = ?"#,
        id
    )
    .fetch_optional(db)
    .await?)
}

pub async fn find_credentials(
    db: impl MySqlExecutor<'_>,
    email: &str,
) -> Result<Option<Credentials>, RepoError> {
    let row = sqlx::query!(
        r#"SELECT id, email, role AS "role: Role", password_hash FROM users WHERE email = ?"#,
        email
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| Credentials {
        user: User {
            id: row.id,
            email: row.email,
            role: row.role,
        },
        password_hash: row.password_hash,
    }))
}

/// Sets the role of the user with `email`; returns whether such a user exists.
pub async fn set_role(
    db: impl MySqlExecutor<'_>,
    email: &str,
    role: Role,
) -> Result<bool, RepoError> {
    // sqlx connects with CLIENT_FOUND_ROWS: rows_affected counts matched rows, so a user who
    // already has the role still reports 1.
    let result = sqlx::query!("UPDATE users SET role = ? WHERE email = ?", role, email)
        .execute(db)
        .await?;
    Ok(result.rows_affected() > 0)
}
