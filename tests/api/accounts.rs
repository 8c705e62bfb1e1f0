//! Tokens that outlive what they say: a deleted user and a demoted admin lose access within
//! `SPIKE_USER_CHECK_TTL`, a missing user is always 401/10002 (never a 500), and a deleted
//! buyer's flash-sale reservation fails at once with its unit given back.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, TestOptions, code, envelope, spawn_app, spawn_app_with, wait_for};

async fn delete_user(app: &TestApp, id: u64) {
    sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(id)
        .execute(&app.infra.db)
        .await
        .unwrap();
}

async fn user_id(app: &TestApp, token: &str) -> u64 {
    let me = app.get_authed("/api/v1/users/me", token).await;
    envelope(me).await["data"]["id"].as_u64().unwrap()
}

#[tokio::test]
async fn a_deleted_users_token_is_401_on_reads_and_writes() {
    let app = spawn_app_with(TestOptions::default().env("SPIKE_USER_CHECK_TTL", "200ms")).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "5.00", 10).await;
    let (user, _) = app.signed_in_user().await;
    let token = user["access_token"].as_str().unwrap();
    let id = user_id(&app, token).await;
    assert_eq!(app.get_authed("/api/v1/orders", token).await.status(), 200);

    delete_user(&app, id).await;
    wait_for(
        "the deletion to be seen",
        Duration::from_secs(10),
        || async { app.get_authed("/api/v1/orders", token).await.status() == 401 },
    )
    .await;
    let (status, code_, _) = code(app.get_authed("/api/v1/orders", token).await).await;
    assert_eq!((status, code_), (401, Some(10002)));
    let order = json!({"items": [{"product_id": product, "quantity": 1}]});
    let placed = app
        .send_authed(reqwest::Method::POST, "/api/v1/orders", token, Some(&order))
        .await;
    let (status, code_, _) = code(placed).await;
    assert_eq!((status, code_), (401, Some(10002)));
    let (status, code_, _) = code(app.get_authed("/api/v1/users/me", token).await).await;
    assert_eq!((status, code_), (401, Some(10002)));
    assert_eq!(app.stock_of(product).await, 10, "nothing was taken");
}

#[tokio::test]
async fn an_order_from_a_user_deleted_within_the_check_ttl_is_401_not_500() {
    // The replica still believes in the user: the database's foreign key is the last guard.
    let app = spawn_app_with(TestOptions::default().env("SPIKE_USER_CHECK_TTL", "1h")).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "5.00", 10).await;
    let (user, _) = app.signed_in_user().await;
    let token = user["access_token"].as_str().unwrap();
    let id = user_id(&app, token).await;
    delete_user(&app, id).await;

    let order = json!({"items": [{"product_id": product, "quantity": 1}]});
    let placed = app
        .send_authed(reqwest::Method::POST, "/api/v1/orders", token, Some(&order))
        .await;
    let (status, code_, body) = code(placed).await;
    assert_eq!((status, code_), (401, Some(10002)), "{body}");
    assert_eq!(app.stock_of(product).await, 10);
}

#[tokio::test]
async fn a_demoted_admin_loses_the_admin_routes_before_the_token_expires() {
    let app = spawn_app_with(TestOptions::default().env("SPIKE_USER_CHECK_TTL", "200ms")).await;
    let (user, email) = app.signed_in_user().await;
    let id = user_id(&app, user["access_token"].as_str().unwrap()).await;
    let set_role = |role: &'static str| {
        let db = app.infra.db.clone();
        async move {
            sqlx::query("UPDATE users SET role = ? WHERE id = ?")
                .bind(role)
                .bind(id)
                .execute(&db)
                .await
                .unwrap();
        }
    };
    set_role("admin").await;
    let login = app.login(&email, crate::helpers::TEST_PASSWORD).await;
    let token = envelope(login).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let create = |token: String| {
        let app = &app;
        async move {
            let body = json!({"title": "p", "price": "1.00", "stock": 1});
            app.send_authed(
                reqwest::Method::POST,
                "/api/v1/products",
                &token,
                Some(&body),
            )
            .await
            .status()
        }
    };
    // The role is the one MySQL has, so the promotion too shows within the TTL.
    wait_for("the promotion to be seen", Duration::from_secs(10), || {
        let status = create(token.clone());
        async move { status.await == 201 }
    })
    .await;

    set_role("user").await;
    wait_for("the demotion to be seen", Duration::from_secs(10), || {
        let status = create(token.clone());
        async move { status.await == 403 }
    })
    .await;
}

#[tokio::test]
async fn a_deleted_buyers_reservation_fails_at_once_and_its_unit_returns() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 1).await;
    let people = app.buyers(2).await;
    let ((gone, gone_token), (_, other)) = (&people[0], &people[1]);
    delete_user(&app, *gone).await;

    // The buy path checks the token's signature only (it stays off MySQL) ...
    assert_eq!(app.buy(gone_token, event).await.status(), 202);
    // ... and the worker's first attempt refuses the reservation without retrying it.
    assert_eq!(app.drain_orders().await, 1);
    let result = app.result_of(gone_token, event).await;
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["reason"], "buyer_unknown", "{result}");
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(ledger["redis_stock"], 1, "{ledger}");
    assert_eq!(ledger["drift"], 0, "{ledger}");
    // The unit is there for someone else.
    assert_eq!(app.buy(other, event).await.status(), 202);
}
