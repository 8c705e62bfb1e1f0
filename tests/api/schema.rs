//! The schema of docs/design.md §3: the keys that the invariants rely on exist and hold.

use sqlx::{MySqlPool, Row};

use crate::helpers::spawn_app;

async fn index_columns(pool: &MySqlPool, table: &str, index: &str) -> (bool, String) {
    let rows = sqlx::query(
        "SELECT non_unique, column_name FROM information_schema.statistics \
         WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ? \
         ORDER BY seq_in_index",
    )
    .bind(table)
    .bind(index)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(!rows.is_empty(), "index {table}.{index} exists");
    let unique = rows[0].get::<i64, _>("non_unique") == 0;
    let columns = rows
        .iter()
        .map(|r| r.get::<String, _>("column_name"))
        .collect::<Vec<_>>()
        .join(",");
    (unique, columns)
}

#[tokio::test]
async fn every_designed_key_and_index_exists() {
    let app = spawn_app().await;
    let pool = &app.infra.db;
    let expected = [
        ("users", "uk_users_email", true, "email"),
        (
            "refresh_tokens",
            "uk_refresh_tokens_token_hash",
            true,
            "token_hash",
        ),
        (
            "refresh_tokens",
            "idx_refresh_tokens_family",
            false,
            "family_id",
        ),
        (
            "products",
            "idx_products_status_price",
            false,
            "status,price",
        ),
        ("products", "idx_products_created_at", false, "created_at"),
        (
            "orders",
            "idx_orders_user_created",
            false,
            "user_id,created_at",
        ),
        (
            "orders",
            "uk_orders_user_idempotency_key",
            true,
            "user_id,idempotency_key",
        ),
        (
            "spike_events",
            "idx_spike_events_product_window",
            false,
            "product_id,start_at,end_at",
        ),
        (
            "spike_orders",
            "uk_spike_orders_user_event",
            true,
            "user_id,spike_event_id",
        ),
        ("spike_orders", "uk_spike_orders_ticket", true, "ticket"),
        ("payments", "uk_payments_order", true, "order_id"),
        ("outbox", "idx_outbox_unpublished", false, "published_at,id"),
    ];
    for (table, index, unique, columns) in expected {
        let (is_unique, actual) = index_columns(pool, table, index).await;
        assert_eq!(
            (is_unique, actual.as_str()),
            (unique, columns),
            "{table}.{index}"
        );
    }
}

async fn seed_event(pool: &MySqlPool) -> (u64, u64) {
    let user =
        sqlx::query("INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x')")
            .execute(pool)
            .await
            .unwrap()
            .last_insert_id();
    let product =
        sqlx::query("INSERT INTO products (title, description, price) VALUES ('p', '', '9.99')")
            .execute(pool)
            .await
            .unwrap()
            .last_insert_id();
    let event = sqlx::query(
        "INSERT INTO spike_events (product_id, title, spike_price, total_stock, available_stock, start_at, end_at) \
         VALUES (?, 'e', '1.00', 10, 10, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 1 HOUR)",
    )
    .bind(product)
    .execute(pool)
    .await
    .unwrap()
    .last_insert_id();
    (user, event)
}

async fn insert_order(pool: &MySqlPool, user: u64) -> u64 {
    sqlx::query(
        "INSERT INTO orders (user_id, total_amount, kind, pay_deadline) \
         VALUES (?, '1.00', 'spike', UTC_TIMESTAMP(3) + INTERVAL 15 MINUTE)",
    )
    .bind(user)
    .execute(pool)
    .await
    .unwrap()
    .last_insert_id()
}

fn is_duplicate_key(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[tokio::test]
async fn one_flash_sale_order_per_buyer_and_event_is_enforced_by_the_database() {
    let app = spawn_app().await;
    let pool = &app.infra.db;
    let (user, event) = seed_event(pool).await;
    let first = insert_order(pool, user).await;
    let second = insert_order(pool, user).await;

    sqlx::query("INSERT INTO spike_orders (spike_event_id, user_id, order_id, ticket) VALUES (?, ?, ?, 't1')")
        .bind(event)
        .bind(user)
        .bind(first)
        .execute(pool)
        .await
        .unwrap();
    let duplicate = sqlx::query(
        "INSERT INTO spike_orders (spike_event_id, user_id, order_id, ticket) VALUES (?, ?, ?, 't2')",
    )
    .bind(event)
    .bind(user)
    .bind(second)
    .execute(pool)
    .await
    .expect_err("a second order for the same buyer and event");
    assert!(is_duplicate_key(&duplicate), "{duplicate}");
}

#[tokio::test]
async fn stock_can_never_go_negative() {
    let app = spawn_app().await;
    let pool = &app.infra.db;
    let product =
        sqlx::query("INSERT INTO products (title, description, price) VALUES ('p', '', '1.00')")
            .execute(pool)
            .await
            .unwrap()
            .last_insert_id();
    sqlx::query("INSERT INTO inventory (product_id, stock) VALUES (?, 1)")
        .bind(product)
        .execute(pool)
        .await
        .unwrap();
    // Even an unconditional decrement past zero fails instead of wrapping or going negative.
    let error = sqlx::query("UPDATE inventory SET stock = stock - 2 WHERE product_id = ?")
        .bind(product)
        .execute(pool)
        .await
        .expect_err("stock below zero");
    assert!(
        error.to_string().to_lowercase().contains("out of range"),
        "{error}"
    );
    let negative_price =
        sqlx::query("INSERT INTO products (title, description, price) VALUES ('p', '', '-1.00')")
            .execute(pool)
            .await;
    assert!(negative_price.is_err(), "negative price refused by CHECK");
}

#[tokio::test]
async fn lock_wait_timeouts_count_as_retryable_outages() {
    use sqlx::{Connection, Executor};
    let app = spawn_app().await;
    let url = app.config.database.url.expose();
    let mut holder = sqlx::MySqlConnection::connect(url).await.unwrap();
    let mut waiter = sqlx::MySqlConnection::connect(url).await.unwrap();
    holder
        .execute("INSERT INTO users (email, password_hash) VALUES ('lock@example.com', 'x')")
        .await
        .unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("SELECT id FROM users WHERE email = 'lock@example.com' FOR UPDATE")
        .await
        .unwrap();
    waiter
        .execute("SET SESSION innodb_lock_wait_timeout = 1")
        .await
        .unwrap();
    let error = waiter
        .execute("UPDATE users SET role = 'admin' WHERE email = 'lock@example.com'")
        .await
        .expect_err("the row is locked");
    let error = spike::repo::RepoError::from(error);
    assert_eq!(
        error.unavailable_dependency(),
        Some(spike::repo::Dependency::Mysql),
        "{error}"
    );
    holder.execute("ROLLBACK").await.unwrap();
}
