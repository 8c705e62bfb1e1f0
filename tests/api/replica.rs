//! The read/write split: with `SPIKE_DATABASE_READ_URL` the catalog's reads go to the replica,
//! and every write, order and flash sale stays on the primary. A test stands a proxy in for the
//! replica (it reaches the same database) and takes it away.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{OutageProxy, TestOptions, code, spawn_app_with, wait_for};

#[tokio::test]
async fn catalog_reads_go_to_the_replica_and_writes_and_orders_to_the_primary() {
    let replica = OutageProxy::start("127.0.0.1:3306").await;
    let app = spawn_app_with(TestOptions::default().replica_through(replica.port)).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "19.90", 10).await;
    let (login, _) = app.signed_in_user().await;
    let buyer = login["access_token"].as_str().unwrap().to_owned();

    let listed = app.get("/api/v1/products").await;
    assert_eq!(listed.status(), 200, "the list reads through the replica");

    replica.go_down();
    // The catalog's reads fail over to nothing: 503, with the envelope.
    let (status, code_, _) = code(app.get("/api/v1/products").await).await;
    assert_eq!((status, code_), (503, Some(10008)));
    let (status, _, _) = code(app.get(&format!("/api/v1/products/{product}/stock")).await).await;
    assert_eq!(status, 503, "the stock figure reads the replica too");
    // Writes and orders do not touch it.
    let ordered = app
        .place_order(
            &buyer,
            json!([{"product_id": product, "quantity": 2}]),
            None,
        )
        .await;
    assert_eq!(ordered.status(), 201, "an order is placed on the primary");
    let renamed = app
        .send_authed(
            reqwest::Method::PATCH,
            &format!("/api/v1/products/{product}"),
            &admin,
            Some(&json!({"title": "renamed while the replica is away"})),
        )
        .await;
    assert_eq!(renamed.status(), 200, "a product write goes to the primary");
    // A replica outage does not make the shop unready: buying does not need it.
    assert_eq!(app.get("/readyz").await.status(), 200);

    replica.come_back();
    wait_for("catalog reads again", Duration::from_secs(10), || async {
        app.get("/api/v1/products").await.status() == 200
    })
    .await;
    let stock = app
        .get(&format!("/api/v1/products/{product}/stock"))
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(stock["data"]["stock"], 8, "{stock}");
}
