//! A real MariaDB replica on the catalog's read path (`scripts/mysql-replica.sh`: binlog
//! replication from a primary of the test's own), and what the shop promises while it lags
//! (docs/catalog.md, "Read/write split"; docs/reliability.md): the product list and the stock
//! figure may be as old as the replica; a product's detail, an order's stock, a user's own
//! writes and the flash sale never are.

use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;

use crate::helpers::{
    ReplicatedMysql, TestApp, TestOptions, code, envelope, event_body, spawn_app_with,
};

async fn stock_figure(app: &TestApp, product: u64) -> Value {
    envelope(app.get(&format!("/api/v1/products/{product}/stock")).await).await["data"]["stock"]
        .clone()
}

async fn listed_title(app: &TestApp, product: u64) -> Value {
    let listed = envelope(app.get("/api/v1/products?page_size=100").await).await;
    listed["data"]["items"]
        .as_array()
        .expect("a page of products")
        .iter()
        .find(|item| item["id"] == product)
        .map_or(Value::Null, |item| item["title"].clone())
}

#[tokio::test]
async fn while_the_replica_lags_only_the_list_and_the_stock_figure_are_stale() {
    let pair = ReplicatedMysql::start().await;
    let app = spawn_app_with(TestOptions::default().on_replicated_mysql(&pair)).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "10.00", 5).await;
    pair.wait_until_caught_up().await;
    assert_eq!(stock_figure(&app, product).await, 5);

    pair.lag(true).await;
    let changed = app
        .send_authed(
            Method::PATCH,
            &format!("/api/v1/products/{product}"),
            &admin,
            Some(&json!({"title": "after the change", "stock": 2})),
        )
        .await;
    let changed = envelope(changed).await;
    assert_eq!(changed["data"]["title"], "after the change", "{changed}");
    assert_eq!(
        changed["data"]["stock"], 2,
        "the write answers from the primary"
    );

    // May be stale: the list and the stock figure read the replica, which has not applied it.
    assert_eq!(stock_figure(&app, product).await, 5, "the replica's figure");
    assert_ne!(listed_title(&app, product).await, "after the change");

    // Never stale: the detail (its cache loads from the primary) ...
    let detail = envelope(app.get(&format!("/api/v1/products/{product}")).await).await;
    assert_eq!(detail["data"]["title"], "after the change", "{detail}");
    // ... the stock an order takes (the replica still says 5) ...
    let (login, _) = app.signed_in_user().await;
    let buyer = login["access_token"].as_str().unwrap().to_owned();
    let (status, code_, _) = code(
        app.place_order(
            &buyer,
            json!([{"product_id": product, "quantity": 3}]),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, code_),
        (409, Some(30002)),
        "the primary has 2 units"
    );
    let ordered = app
        .place_order(
            &buyer,
            json!([{"product_id": product, "quantity": 2}]),
            None,
        )
        .await;
    assert_eq!(ordered.status(), 201);
    let order = envelope(ordered).await["data"]["id"].as_u64().unwrap();
    // ... the buyer's own writes: just registered, signed in, and their order listed ...
    let mine = envelope(app.get_authed("/api/v1/orders", &buyer).await).await;
    assert_eq!(mine["data"]["items"][0]["id"], order, "{mine}");
    assert_eq!(app.order_status(&buyer, order).await, "pending_payment");
    // ... and the flash sale, whose event takes its units from the primary's product row (the
    // replica has never seen this product).
    let fresh = app.create_product(&admin, "50.00", 3).await;
    let body = event_body(fresh, 3, Duration::minutes(-1), Duration::hours(1));
    let event = envelope(app.create_event(&admin, &body).await).await["data"]["id"]
        .as_u64()
        .expect("an event of a product only the primary has");
    assert_eq!(app.buy(&buyer, event).await.status(), 202);
    assert_eq!(
        app.get("/readyz").await.status(),
        200,
        "a lagging replica is no outage"
    );

    // Caught up, the stale reads agree again.
    pair.lag(false).await;
    pair.wait_until_caught_up().await;
    assert_eq!(stock_figure(&app, product).await, 0);
    assert_eq!(listed_title(&app, product).await, "after the change");
}
