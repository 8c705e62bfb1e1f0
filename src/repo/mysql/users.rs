//! The `users` table.

use std::collections::{BTreeSet, HashSet};

use sqlx::{MySql, MySqlExecutor, QueryBuilder};

use super::OnConstraint;
use crate::domain::user::{Email, Role, User};
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

/// Sets the role of the user with `email`; returns the user's id, `None` when there is none.
pub async fn set_role(
    db: &sqlx::MySqlPool,
    email: &str,
    role: Role,
) -> Result<Option<u64>, RepoError> {
    // sqlx connects with CLIENT_FOUND_ROWS: rows_affected counts matched rows, so a user who
    // already has the role still reports 1.
    let result = sqlx::query!("UPDATE users SET role = ? WHERE email = ?", role, email)
        .execute(db)
        .await?;
    if result.rows_affected() == 0 {
        return Ok(None);
    }
    id_of(db, email).await
}

/// Which of `ids` are users (a deleted user's token may still reach the flash-sale worker).
pub async fn existing(
    db: impl MySqlExecutor<'_>,
    ids: &BTreeSet<u64>,
) -> Result<HashSet<u64>, RepoError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut query = QueryBuilder::<MySql>::new("SELECT id FROM users WHERE id IN (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    let found: Vec<u64> = query.build_query_scalar().fetch_all(db).await?;
    Ok(found.into_iter().collect())
}

/// What [`canonicalize_emails`] did to rows stored before emails had one canonical form.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EmailMigration {
    /// Rows rewritten to their canonical spelling.
    pub rewritten: Vec<u64>,
    /// `(user, other)`: the user's canonical spelling is already `other`'s address. Left as
    /// is: an operator decides which account keeps the address.
    pub collisions: Vec<(u64, u64)>,
    /// `(user, why)`: addresses with no canonical form (a hidden character, non-ASCII letters,
    /// a malformed address). Left as is; such an account cannot log in until fixed by hand.
    pub unreadable: Vec<(u64, &'static str)>,
}

/// Brings every stored email to its canonical form ([`Email::parse`]): the data half of the
/// migration that made `users.email` compare byte for byte. Idempotent and cheap to repeat: it
/// reads only rows that hold something a canonical address cannot (an upper-case letter,
/// anything but printable ASCII, surrounding spaces). Rows it cannot rewrite are reported,
/// never deleted or merged.
pub async fn canonicalize_emails(db: &sqlx::MySqlPool) -> Result<EmailMigration, RepoError> {
    // `[^ -~]` is anything outside printable ASCII; the binary collation makes LOWER() and the
    // comparison case-sensitive.
    let suspects = sqlx::query!(
        "SELECT id, email FROM users \
         WHERE email <> LOWER(email) OR email <> TRIM(email) OR email REGEXP '[^ -~]' \
         ORDER BY id"
    )
    .fetch_all(db)
    .await?;
    let mut report = EmailMigration::default();
    for row in suspects {
        let canonical = match Email::parse(&row.email) {
            Ok(email) => email,
            Err(why) => {
                report.unreadable.push((row.id, why));
                continue;
            }
        };
        if canonical.as_str() == row.email {
            continue;
        }
        if let Some(other) = id_of(db, canonical.as_str()).await? {
            report.collisions.push((row.id, other));
            continue;
        }
        let rewritten = sqlx::query!(
            "UPDATE users SET email = ? WHERE id = ? AND email = ?",
            canonical.as_str(),
            row.id,
            row.email
        )
        .execute(db)
        .await
        .map(|_| true)
        .on_constraint(EMAIL_KEY, || Ok::<_, RepoError>(false))?;
        if rewritten {
            report.rewritten.push(row.id);
        } else {
            // Registered under that address between the look and the rewrite.
            let other = id_of(db, canonical.as_str()).await?;
            report.collisions.push((row.id, other.unwrap_or_default()));
        }
    }
    Ok(report)
}

/// The id of the user whose stored address is exactly `email`.
async fn id_of(db: impl MySqlExecutor<'_>, email: &str) -> Result<Option<u64>, RepoError> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM users WHERE email = ?", email)
            .fetch_optional(db)
            .await?,
    )
}
