//! The `users` table.

use sqlx::MySqlExecutor;

use crate::domain::user::{Role, User};
use crate::repo::RepoError;

/// Name of the unique key on `users.email` (see the migration).
pub const EMAIL_KEY: &str = "uk_users_email";

#[derive(sqlx::FromRow)]
struct UserRow {
    id: u64,
    email: String,
    role: String,
}

impl TryFrom<UserRow> for User {
    type Error = RepoError;
    fn try_from(row: UserRow) -> Result<User, RepoError> {
        let role = row
            .role
            .parse::<Role>()
            .map_err(|e| super::decode_error("role", e))?;
        Ok(User {
            id: row.id,
            email: row.email,
            role,
        })
    }
}

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
    let result = sqlx::query("INSERT INTO users (email, password_hash, role) VALUES (?, ?, ?)")
        .bind(email)
        .bind(password_hash)
        .bind(role.as_str())
        .execute(db)
        .await?;
    Ok(result.last_insert_id())
}

pub async fn find_by_id(db: impl MySqlExecutor<'_>, id: u64) -> Result<Option<User>, RepoError> {
    let row = sqlx::query_as::<_, UserRow>("SELECT id, email, role FROM users WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.map(User::try_from).transpose()
}

pub async fn find_credentials(
    db: impl MySqlExecutor<'_>,
    email: &str,
) -> Result<Option<Credentials>, RepoError> {
    let row: Option<(u64, String, String, String)> =
        sqlx::query_as("SELECT id, email, role, password_hash FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(db)
            .await?;
    row.map(|(id, email, role, password_hash)| {
        Ok(Credentials {
            user: User::try_from(UserRow { id, email, role })?,
            password_hash,
        })
    })
    .transpose()
}

/// Sets the role of the user with `email`; returns whether such a user exists.
pub async fn set_role(
    db: impl MySqlExecutor<'_>,
    email: &str,
    role: Role,
) -> Result<bool, RepoError> {
    // sqlx connects with CLIENT_FOUND_ROWS: rows_affected counts matched rows, so a user who
    // already has the role still reports 1.
    let result = sqlx::query("UPDATE users SET role = ? WHERE email = ?")
        .bind(role.as_str())
        .bind(email)
        .execute(db)
        .await?;
    Ok(result.rows_affected() > 0)
}
