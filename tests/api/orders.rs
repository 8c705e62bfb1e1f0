//! Regular orders: placement, stock, idempotency, payment, cancellation, access control,
//! timeout close through the delay queue, and the outbox.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOptions, code, envelope, spawn_app, spawn_app_with, wait_for};

async fn token(app: &TestApp) -> String {
    let (tokens, _) = app.signed_in_user().await;
    tokens["access_token"].as_str().unwrap().to_owned()
}

async fn post(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.send_authed(Method::POST, path, token, Some(&json!({})))
        .await
}

/// Places an order of `quantity` units of `product`; returns the order (`data`).
async fn place(app: &TestApp, token: &str, product: u64, quantity: u32) -> Value {
    let items = json!([{"product_id": product, "quantity": quantity}]);
    let response = app.place_order(token, items, None).await;
    assert_eq!(response.status(), 201, "place order");
    envelope(response).await["data"].clone()
}

async fn orders_in_db(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&app.infra.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn place_pay_and_read_an_order() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "19.90", 5).await;
    let buyer = token(&app).await;

    let response = app
        .place_order(
            &buyer,
            json!([{"product_id": product, "quantity": 2}]),
            None,
        )
        .await;
    assert_eq!(response.status(), 201);
    let order = envelope(response).await["data"].clone();
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["kind"], "regular");
    assert_eq!(order["total_amount"], "39.80");
    assert_eq!(
        order["items"],
        json!([{"product_id": product, "quantity": 2, "price": "19.90"}])
    );
    assert!(order["paid_at"].is_null());
    let deadline = time::OffsetDateTime::parse(
        order["pay_deadline"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let minutes = (deadline - time::OffsetDateTime::now_utc()).whole_minutes();
    assert!((14..=15).contains(&minutes), "deadline {minutes} min ahead");
    assert_eq!(app.stock_of(product).await, 3);

    let id = order["id"].as_u64().unwrap();
    let paid = post(&app, &buyer, &format!("/api/v1/orders/{id}/pay")).await;
    assert_eq!(paid.status(), 200);
    let paid = envelope(paid).await["data"].clone();
    assert_eq!(paid["status"], "paid");
    assert!(paid["paid_at"].is_string());
    // Paying again is harmless and records no second payment.
    let again = envelope(post(&app, &buyer, &format!("/api/v1/orders/{id}/pay")).await).await;
    assert_eq!(again["data"], paid);
    let payments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE order_id = ?")
        .bind(id)
        .fetch_one(&app.infra.db)
        .await
        .unwrap();
    assert_eq!(payments, 1);

    let fetched = envelope(
        app.get_authed(&format!("/api/v1/orders/{id}"), &buyer)
            .await,
    )
    .await;
    assert_eq!(fetched["data"], paid);
    let list = envelope(app.get_authed("/api/v1/orders", &buyer).await).await;
    assert_eq!(list["data"]["total"], 1);
    assert_eq!(list["data"]["items"][0]["id"], id);
    let paid_only = envelope(app.get_authed("/api/v1/orders?status=paid", &buyer).await).await;
    assert_eq!(paid_only["data"]["total"], 1);
    let closed = envelope(app.get_authed("/api/v1/orders?status=closed", &buyer).await).await;
    assert_eq!(closed["data"]["total"], 0);
    let (status, code_, body) = code(
        app.get_authed("/api/v1/orders?status=shipped", &buyer)
            .await,
    )
    .await;
    assert_eq!((status, code_), (400, Some(10001)));
    assert!(body["data"]["fields"]["status"].is_string());
}

#[tokio::test]
async fn insufficient_stock_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let plenty = app.create_product(&admin, "1.00", 5).await;
    let scarce = app.create_product(&admin, "2.00", 1).await;
    let buyer = token(&app).await;
    let items = json!([
        {"product_id": plenty, "quantity": 2},
        {"product_id": scarce, "quantity": 2}
    ]);
    let (status, code_, body) = code(app.place_order(&buyer, items, None).await).await;
    assert_eq!((status, code_), (409, Some(30002)));
    assert_eq!(body["data"]["product_id"], scarce);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&scarce.to_string())
    );
    assert_eq!(
        app.stock_of(plenty).await,
        5,
        "the first line was rolled back"
    );
    assert_eq!(app.stock_of(scarce).await, 1);
    assert_eq!(orders_in_db(&app).await, 0);
    let outbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(&app.infra.db)
        .await
        .unwrap();
    assert_eq!(outbox, 0);
}

#[tokio::test]
async fn a_hundred_concurrent_orders_for_ten_units_sell_exactly_ten() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "5.00", 10).await;
    let mut buyers = Vec::new();
    for _ in 0..5 {
        buyers.push(token(&app).await);
    }
    let attempts = (0..100).map(|i| {
        app.place_order(
            &buyers[i % 5],
            json!([{"product_id": product, "quantity": 1}]),
            None,
        )
    });
    let responses = futures_util::future::join_all(attempts).await;
    let mut created = 0;
    let mut sold_out = 0;
    for response in responses {
        match code(response).await {
            (201, Some(0), _) => created += 1,
            (409, Some(30002), _) => sold_out += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((created, sold_out), (10, 90));
    assert_eq!(app.stock_of(product).await, 0);
    assert_eq!(orders_in_db(&app).await, 10);
    let sold: i64 = sqlx::query_scalar(
        "SELECT CAST(SUM(quantity) AS SIGNED) FROM order_items WHERE product_id = ?",
    )
    .bind(product)
    .fetch_one(&app.infra.db)
    .await
    .unwrap();
    assert_eq!(sold, 10);
}

#[tokio::test]
async fn idempotency_key_replays_the_same_order() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let a = app.create_product(&admin, "1.00", 10).await;
    let b = app.create_product(&admin, "2.00", 10).await;
    let buyer = token(&app).await;
    let items = json!([{"product_id": a, "quantity": 1}, {"product_id": b, "quantity": 2}]);

    let first = app.place_order(&buyer, items.clone(), Some("key-1")).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = envelope(first).await["data"].clone();

    let replay = app.place_order(&buyer, items, Some("key-1")).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(envelope(replay).await["data"], first);
    // The same lines in another order are the same request.
    let reordered = json!([{"product_id": b, "quantity": 2}, {"product_id": a, "quantity": 1}]);
    let replay = envelope(app.place_order(&buyer, reordered, Some("key-1")).await).await;
    assert_eq!(replay["data"]["id"], first["id"]);
    assert_eq!(
        (app.stock_of(a).await, app.stock_of(b).await),
        (9, 8),
        "stock taken once"
    );

    let other_body = json!([{"product_id": a, "quantity": 3}]);
    let (status, code_, _) = code(app.place_order(&buyer, other_body, Some("key-1")).await).await;
    assert_eq!((status, code_), (409, Some(10009)));

    // Keys belong to a user: another buyer may use the same key for their own order.
    let other_buyer = token(&app).await;
    let theirs = app
        .place_order(
            &other_buyer,
            json!([{"product_id": a, "quantity": 1}]),
            Some("key-1"),
        )
        .await;
    assert_eq!(theirs.status(), 201);
    assert_ne!(envelope(theirs).await["data"]["id"], first["id"]);

    let too_long = "k".repeat(129);
    let (status, code_, _) = code(
        app.place_order(
            &buyer,
            json!([{"product_id": a, "quantity": 1}]),
            Some(&too_long),
        )
        .await,
    )
    .await;
    assert_eq!((status, code_), (400, Some(10001)));
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_order() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "3.00", 50).await;
    let buyer = token(&app).await;
    let attempts = (0..10).map(|_| {
        app.place_order(
            &buyer,
            json!([{"product_id": product, "quantity": 2}]),
            Some("same-key"),
        )
    });
    let mut ids = Vec::new();
    for response in futures_util::future::join_all(attempts).await {
        let (status, code_, body) = code(response).await;
        assert_eq!((status, code_), (201, Some(0)), "{body}");
        ids.push(body["data"]["id"].as_u64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one order for one key: {ids:?}");
    assert_eq!(orders_in_db(&app).await, 1);
    assert_eq!(app.stock_of(product).await, 48);
}

#[tokio::test]
async fn cancel_returns_stock_and_settled_orders_refuse_changes() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "4.00", 3).await;
    let buyer = token(&app).await;
    let order = place(&app, &buyer, product, 3).await;
    let id = order["id"].as_u64().unwrap();
    assert_eq!(app.stock_of(product).await, 0);

    let cancelled = post(&app, &buyer, &format!("/api/v1/orders/{id}/cancel")).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled = envelope(cancelled).await["data"].clone();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["closed_at"].is_string());
    assert_eq!(app.stock_of(product).await, 3);

    for action in ["pay", "cancel"] {
        let (status, code_, _) =
            code(post(&app, &buyer, &format!("/api/v1/orders/{id}/{action}")).await).await;
        assert_eq!(
            (status, code_),
            (409, Some(40002)),
            "{action} a cancelled order"
        );
    }
    assert_eq!(app.stock_of(product).await, 3, "stock returned once");

    // A paid order cannot be cancelled.
    let order = place(&app, &buyer, product, 1).await["id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        post(&app, &buyer, &format!("/api/v1/orders/{order}/pay"))
            .await
            .status(),
        200
    );
    let (status, code_, _) =
        code(post(&app, &buyer, &format!("/api/v1/orders/{order}/cancel")).await).await;
    assert_eq!((status, code_), (409, Some(40002)));
}

#[tokio::test]
async fn other_users_orders_are_invisible_but_admins_see_them() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "1.00", 5).await;
    let alice = token(&app).await;
    let bob = token(&app).await;
    let order = place(&app, &alice, product, 1).await["id"]
        .as_u64()
        .unwrap();

    let (status, code_, _) = code(
        app.get_authed(&format!("/api/v1/orders/{order}"), &bob)
            .await,
    )
    .await;
    assert_eq!((status, code_), (404, Some(40001)));
    for action in ["pay", "cancel"] {
        let (status, code_, _) =
            code(post(&app, &bob, &format!("/api/v1/orders/{order}/{action}")).await).await;
        assert_eq!((status, code_), (404, Some(40001)), "bob may not {action}");
    }
    let bobs = envelope(app.get_authed("/api/v1/orders", &bob).await).await;
    assert_eq!(bobs["data"]["total"], 0);
    // Nothing changed for Alice.
    let alices = envelope(
        app.get_authed(&format!("/api/v1/orders/{order}"), &alice)
            .await,
    )
    .await;
    assert_eq!(alices["data"]["status"], "pending_payment");
    let seen_by_admin = app
        .get_authed(&format!("/api/v1/orders/{order}"), &admin)
        .await;
    assert_eq!(seen_by_admin.status(), 200);
    let (status, code_, _) = code(app.get_authed("/api/v1/orders/987654", &alice).await).await;
    assert_eq!((status, code_), (404, Some(40001)));
}

#[tokio::test]
async fn invalid_orders_are_refused() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "1.00", 5).await;
    let buyer = token(&app).await;
    let cases = [
        (json!([]), "items"),
        (json!("nope"), "items"),
        (
            json!([{"product_id": product, "quantity": 0}]),
            "items[0].quantity",
        ),
        (
            json!([{"product_id": product, "quantity": 101}]),
            "items[0].quantity",
        ),
        (json!([{"product_id": product}]), "items[0].quantity"),
        (json!([{"quantity": 1}]), "items[0].product_id"),
        (
            json!([{"product_id": -4, "quantity": 1}]),
            "items[0].product_id",
        ),
        (
            json!([{"product_id": product, "quantity": 60}, {"product_id": product, "quantity": 60}]),
            "items",
        ),
    ];
    for (items, field) in cases {
        let (status, code_, body) = code(app.place_order(&buyer, items.clone(), None).await).await;
        assert_eq!((status, code_), (400, Some(10001)), "{items}");
        assert!(
            body["data"]["fields"][field].is_string(),
            "{field} for {items}: {body}"
        );
    }
    let (status, code_, _) = code(
        app.place_order(&buyer, json!([{"product_id": 424242, "quantity": 1}]), None)
            .await,
    )
    .await;
    assert_eq!((status, code_), (404, Some(30001)));
    app.send_authed(
        Method::DELETE,
        &format!("/api/v1/products/{product}"),
        &admin,
        None,
    )
    .await;
    let (status, code_, _) = code(
        app.place_order(
            &buyer,
            json!([{"product_id": product, "quantity": 1}]),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, code_),
        (404, Some(30001)),
        "deleted products cannot be ordered"
    );
    assert_eq!(orders_in_db(&app).await, 0);
    let anonymous = app
        .client
        .post(app.url("/api/v1/orders"))
        .json(&json!({"items": [{"product_id": product, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn unpaid_orders_close_after_the_pay_timeout_and_paid_ones_stay_paid() {
    let app = spawn_app_with(
        TestOptions::default()
            .with_worker()
            .env("SPIKE_ORDER_PAY_TIMEOUT", "2s")
            .env("SPIKE_OUTBOX_POLL_INTERVAL", "100ms"),
    )
    .await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "2.00", 4).await;
    let buyer = token(&app).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let order = app
            .place_order(
                &buyer,
                json!([{"product_id": product, "quantity": 2}]),
                None,
            )
            .await;
        ids.push(envelope(order).await["data"]["id"].as_u64().unwrap());
    }
    assert_eq!(app.stock_of(product).await, 0);
    let (unpaid, paid) = (ids[0], ids[1]);
    assert_eq!(
        post(&app, &buyer, &format!("/api/v1/orders/{paid}/pay"))
            .await
            .status(),
        200
    );

    wait_for(
        "the unpaid order to close",
        Duration::from_secs(15),
        || async { app.order_status(&buyer, unpaid).await == "closed" },
    )
    .await;
    assert_eq!(
        app.stock_of(product).await,
        2,
        "the closed order's stock is back"
    );
    assert_eq!(app.order_status(&buyer, paid).await, "paid");
    let (status, code_, _) =
        code(post(&app, &buyer, &format!("/api/v1/orders/{unpaid}/pay")).await).await;
    assert_eq!(
        (status, code_),
        (409, Some(40002)),
        "a closed order cannot be paid"
    );

    // A redelivered close message changes nothing.
    let report = app
        .state
        .orders
        .close_expired_many(&[unpaid])
        .await
        .unwrap();
    assert_eq!(
        report,
        spike::service::orders::CloseReport::default(),
        "already settled: nothing closed, nothing due later, nothing unknown"
    );
    assert_eq!(app.stock_of(product).await, 2);
}

#[tokio::test]
async fn the_close_message_goes_out_once_the_relay_can_publish() {
    // No worker yet: the outbox relay is down, as if RabbitMQ were unreachable at commit time.
    let app = spawn_app_with(TestOptions::default().env("SPIKE_ORDER_PAY_TIMEOUT", "2s")).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "2.00", 1).await;
    let buyer = token(&app).await;
    let order = place(&app, &buyer, product, 1).await["id"]
        .as_u64()
        .unwrap();
    let pending = || async {
        spike::repo::mysql::outbox::backlog(&app.infra.db)
            .await
            .unwrap()
            .0
    };
    assert_eq!(
        pending().await,
        1,
        "the order committed with its close message in the outbox"
    );
    // Its pay deadline passes while the relay is down; the close happens once it runs: the
    // relay's step publishes the message into the delay queue…
    assert_eq!(app.drain_outbox().await, 1);
    assert_eq!(pending().await, 0);
    // …which hands it to `order.close` at the deadline, and the close consumer's step closes it.
    let close_queue = app.topology().queue(spike::repo::amqp::ORDER_CLOSE);
    app.expect_queue_len(&close_queue, 1).await;
    assert_eq!(app.drain_closes().await, 1);
    assert_eq!(app.order_status(&buyer, order).await, "closed");
    assert_eq!(app.stock_of(product).await, 1);
}

#[tokio::test]
async fn two_relays_publish_each_message_once() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "1.00", 100).await;
    let buyer = token(&app).await;
    for _ in 0..30 {
        app.place_order(
            &buyer,
            json!([{"product_id": product, "quantity": 1}]),
            None,
        )
        .await;
    }
    // Two workers' relay steps side by side, as two worker processes would run them.
    let (sent_a, sent_b) = tokio::join!(app.drain_outbox(), app.drain_outbox());
    assert_eq!(
        sent_a + sent_b,
        30,
        "each row published by exactly one relay"
    );
    let queue = app.topology().queue(spike::repo::amqp::ORDER_CLOSE_DELAY);
    app.expect_queue_len(&queue, 30).await;
}

#[tokio::test]
async fn order_routes_are_documented() {
    let app = spawn_app().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let orders = &doc["paths"]["/api/v1/orders"];
    assert!(orders["get"].is_object() && orders["post"].is_object());
    assert!(doc["paths"]["/api/v1/orders/{id}"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/orders/{id}/pay"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/orders/{id}/cancel"]["post"].is_object());
}
