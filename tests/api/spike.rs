//! Flash-sale events, the admin side: creation moves stock out of the product, changes only
//! before the start, listing by derived status.

use reqwest::Method;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::helpers::{TestApp, envelope, spawn_app};

fn at(offset: Duration) -> String {
    (OffsetDateTime::now_utc() + offset)
        .format(&Rfc3339)
        .unwrap()
}

fn event_body(product: u64, stock: u32, start: Duration, end: Duration) -> Value {
    json!({
        "product_id": product,
        "title": "Midnight sale",
        "spike_price": "9.90",
        "stock": stock,
        "start_at": at(start),
        "end_at": at(end),
        "per_user_limit": 1
    })
}

async fn create(app: &TestApp, admin: &str, body: &Value) -> reqwest::Response {
    app.send_authed(Method::POST, "/api/v1/spike/events", admin, Some(body))
        .await
}

async fn code(response: reqwest::Response) -> (u16, Option<u64>, Value) {
    let status = response.status().as_u16();
    let body = envelope(response).await;
    (status, body["code"].as_u64(), body)
}

#[tokio::test]
async fn creating_an_event_moves_its_stock_out_of_the_product() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "99.00", 10).await;

    let response = create(
        &app,
        &admin,
        &event_body(product, 4, Duration::hours(1), Duration::hours(2)),
    )
    .await;
    assert_eq!(response.status(), 201);
    let event = envelope(response).await["data"].clone();
    assert_eq!(event["product_id"], product);
    assert_eq!(event["spike_price"], "9.90");
    assert_eq!(event["total_stock"], 4);
    assert_eq!(event["remaining_stock"], 4);
    assert_eq!(event["per_user_limit"], 1);
    assert_eq!(event["status"], "upcoming");
    assert_eq!(app.stock_of(product).await, 6);

    let fetched = envelope(
        app.get(&format!("/api/v1/spike/events/{}", event["id"]))
            .await,
    )
    .await;
    assert_eq!(fetched["data"], event);

    // More than the product has left: nothing moves.
    let (status, code_, body) = code(
        create(
            &app,
            &admin,
            &event_body(product, 7, Duration::hours(1), Duration::hours(2)),
        )
        .await,
    )
    .await;
    assert_eq!((status, code_), (409, Some(30002)), "{body}");
    assert_eq!(app.stock_of(product).await, 6);
    let (status, code_, _) = code(
        create(
            &app,
            &admin,
            &event_body(987654, 1, Duration::hours(1), Duration::hours(2)),
        )
        .await,
    )
    .await;
    assert_eq!((status, code_), (404, Some(30001)));
}

#[tokio::test]
async fn only_admins_create_and_change_events() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "1.00", 10).await;
    let (user, _) = app.signed_in_user().await;
    let user = user["access_token"].as_str().unwrap();
    let body = event_body(product, 1, Duration::hours(1), Duration::hours(2));
    let (status, code_, _) = code(create(&app, user, &body).await).await;
    assert_eq!((status, code_), (403, Some(10003)));
    let anonymous = app
        .client
        .post(app.url("/api/v1/spike/events"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let event = envelope(create(&app, &admin, &body).await).await["data"]["id"].clone();
    let (status, code_, _) = code(
        app.send_authed(
            Method::PATCH,
            &format!("/api/v1/spike/events/{event}"),
            user,
            Some(&json!({"title": "x"})),
        )
        .await,
    )
    .await;
    assert_eq!((status, code_), (403, Some(10003)));
    assert_eq!(app.stock_of(product).await, 9);
}

#[tokio::test]
async fn invalid_events_name_the_field() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "1.00", 10).await;
    let valid = event_body(product, 1, Duration::hours(1), Duration::hours(2));
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases = [
        (without("title"), "title"),
        (without("start_at"), "start_at"),
        (with("spike_price", json!(9.9)), "spike_price"),
        (with("spike_price", json!("-1.00")), "spike_price"),
        (with("stock", json!(0)), "stock"),
        (with("start_at", json!("tomorrow")), "start_at"),
        (with("end_at", json!(at(Duration::minutes(30)))), "end_at"),
        (with("per_user_limit", json!(2)), "per_user_limit"),
        (with("product_id", json!("one")), "product_id"),
    ];
    for (body, field) in cases {
        let (status, code_, error) = code(create(&app, &admin, &body).await).await;
        assert_eq!((status, code_), (400, Some(10001)), "{body}");
        assert!(
            error["data"]["fields"][field].is_string(),
            "{field}: {error}"
        );
    }
    assert_eq!(
        app.stock_of(product).await,
        10,
        "no invalid event took stock"
    );
}

#[tokio::test]
async fn events_change_only_before_they_start() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "1.00", 10).await;
    let upcoming = envelope(
        create(
            &app,
            &admin,
            &event_body(product, 4, Duration::hours(1), Duration::hours(2)),
        )
        .await,
    )
    .await["data"]["id"]
        .as_u64()
        .unwrap();
    let path = format!("/api/v1/spike/events/{upcoming}");
    let patch = |body: Value| {
        let app = &app;
        let admin = admin.clone();
        let path = path.clone();
        async move {
            app.send_authed(Method::PATCH, &path, &admin, Some(&body))
                .await
        }
    };

    let more = envelope(patch(json!({"stock": 6, "title": "Bigger sale"})).await).await;
    assert_eq!(more["data"]["total_stock"], 6);
    assert_eq!(more["data"]["remaining_stock"], 6);
    assert_eq!(more["data"]["title"], "Bigger sale");
    assert_eq!(app.stock_of(product).await, 4);
    let fewer = envelope(patch(json!({"stock": 2})).await).await;
    assert_eq!(fewer["data"]["total_stock"], 2);
    assert_eq!(app.stock_of(product).await, 8);
    let (status, code_, _) = code(patch(json!({"stock": 11})).await).await;
    assert_eq!((status, code_), (409, Some(30002)));
    let (status, code_, _) = code(patch(json!({"end_at": at(Duration::minutes(10))})).await).await;
    assert_eq!((status, code_), (400, Some(10001)), "end before start");

    let started = envelope(
        create(
            &app,
            &admin,
            &event_body(product, 1, Duration::minutes(-1), Duration::hours(1)),
        )
        .await,
    )
    .await["data"]["id"]
        .as_u64()
        .unwrap();
    let (status, code_, _) = code(
        app.send_authed(
            Method::PATCH,
            &format!("/api/v1/spike/events/{started}"),
            &admin,
            Some(&json!({"title": "too late"})),
        )
        .await,
    )
    .await;
    assert_eq!((status, code_), (409, Some(10005)));
    let (status, code_, _) = code(app.get("/api/v1/spike/events/424242").await).await;
    assert_eq!((status, code_), (404, Some(50001)));
}

#[tokio::test]
async fn events_are_listed_by_status() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "1.00", 10).await;
    for (start, end) in [
        (Duration::hours(1), Duration::hours(2)),
        (Duration::minutes(-5), Duration::hours(1)),
        (Duration::hours(-2), Duration::hours(-1)),
    ] {
        let response = create(&app, &admin, &event_body(product, 1, start, end)).await;
        assert_eq!(response.status(), 201);
    }
    for status in ["upcoming", "active", "ended"] {
        let page = envelope(
            app.get(&format!("/api/v1/spike/events?status={status}"))
                .await,
        )
        .await;
        assert_eq!(page["data"]["total"], 1, "{status}");
        assert_eq!(page["data"]["items"][0]["status"], status);
    }
    let all = envelope(app.get("/api/v1/spike/events?page_size=2").await).await;
    assert_eq!(all["data"]["total"], 3);
    assert_eq!(all["data"]["items"].as_array().unwrap().len(), 2);
    let (status, code_, body) = code(app.get("/api/v1/spike/events?status=soon").await).await;
    assert_eq!((status, code_), (400, Some(10001)));
    assert!(body["data"]["fields"]["status"].is_string());
}
