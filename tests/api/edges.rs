//! What an outside probe of the release build found at the edges of the contract (issue 23):
//! the OpenAPI document and the server must agree on ids, money, list lengths, paging spellings,
//! unknown fields and invisible characters, and the docs page carries its browser protections.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, code, envelope, spawn_app};

/// The status, code and `data.fields` of an answer.
async fn refusal(response: reqwest::Response) -> (u16, Option<u64>, Value) {
    let (status, code_, body) = code(response).await;
    (status, code_, body["data"]["fields"].clone())
}

async fn post(app: &TestApp, token: &str, path: &str, body: &Value) -> reqwest::Response {
    app.send_authed(Method::POST, path, token, Some(body)).await
}

#[tokio::test]
async fn ids_beyond_int64_and_other_spellings_of_numbers_are_400() {
    let app = spawn_app().await;
    // The document says int64: one past it is not a product that is missing, it is bad input.
    let (status, code_, _) = code(app.get("/api/v1/products/9223372036854775808").await).await;
    assert_eq!((status, code_), (400, Some(10001)));
    let (status, code_, _) = code(app.get("/api/v1/products/9223372036854775807").await).await;
    assert_eq!((status, code_), (404, Some(30001)));
    for query in [
        "page=01",
        "page=%2B1",
        "page=%201",
        "page_size=020",
        "page_size=1.0",
    ] {
        let (status, code_, _) = code(app.get(&format!("/api/v1/products?{query}")).await).await;
        assert_eq!((status, code_), (400, Some(10001)), "{query}");
    }
    assert_eq!(
        app.get("/api/v1/products?page=1&page_size=20")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn money_has_at_most_ten_digits_before_the_point_however_padded() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let body = json!({"title": "Padded", "price": "00000000000000000001.00", "stock": 1});
    let (status, code_, fields) =
        refusal(post(&app, &admin, "/api/v1/products", &body).await).await;
    assert_eq!((status, code_), (400, Some(10001)));
    assert!(fields["price"].is_string(), "{fields}");
    let ten = json!({"title": "Ten digits", "price": "0000000001.00", "stock": 1});
    let created = envelope(post(&app, &admin, "/api/v1/products", &ten).await).await;
    assert_eq!(created["data"]["price"], "1.00");
}

#[tokio::test]
async fn an_order_has_at_most_fifty_lines_as_sent() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "1.00", 100).await;
    let (user, _) = app.signed_in_user().await;
    let token = user["access_token"].as_str().unwrap();
    let lines = |n: usize| json!({"items": vec![json!({"product_id": product, "quantity": 1}); n]});
    // 100 identical lines once passed a documented maxItems of 50.
    let (status, code_, fields) =
        refusal(post(&app, token, "/api/v1/orders", &lines(100)).await).await;
    assert_eq!((status, code_), (400, Some(10001)));
    assert!(fields["items"].as_str().unwrap().contains("50"), "{fields}");
    assert_eq!(app.stock_of(product).await, 100);
    let placed = post(&app, token, "/api/v1/orders", &lines(50)).await;
    assert_eq!(
        placed.status(),
        201,
        "50 lines of one product merge into 50 units"
    );
    assert_eq!(app.stock_of(product).await, 50);
}

#[tokio::test]
async fn unknown_body_fields_are_refused_not_ignored() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, "1.00", 10).await;
    let (user, _) = app.signed_in_user().await;
    let token = user["access_token"].as_str().unwrap();
    let cases = [
        (
            Method::POST,
            "/api/v1/auth/register".to_owned(),
            json!({"email": "new@example.com", "password": "long enough", "role": "admin"}),
            token,
        ),
        (
            Method::POST,
            "/api/v1/auth/login".to_owned(),
            json!({"email": "new@example.com", "password": "long enough", "remember": true}),
            token,
        ),
        (
            Method::POST,
            "/api/v1/auth/refresh".to_owned(),
            json!({"refresh_token": "x", "scope": "admin"}),
            token,
        ),
        (
            Method::POST,
            "/api/v1/products".to_owned(),
            json!({"title": "T", "price": "1.00", "discount": "0.50"}),
            admin.as_str(),
        ),
        (
            Method::PATCH,
            format!("/api/v1/products/{product}"),
            json!({"title": "T", "titel": "typo"}),
            admin.as_str(),
        ),
        (
            Method::POST,
            "/api/v1/spike/events".to_owned(),
            json!({"product_id": product, "title": "T", "spike_price": "1.00", "stock": 1,
                   "start_at": "2026-12-05T00:00:00Z", "end_at": "2026-12-06T00:00:00Z",
                   "per_user_limit": 1, "featured": true}),
            admin.as_str(),
        ),
        (
            Method::POST,
            "/api/v1/orders".to_owned(),
            json!({"items": [{"product_id": product, "quantity": 1}], "coupon": "FREE"}),
            token,
        ),
    ];
    for (method, path, body, bearer) in cases {
        let response = app
            .send_authed(method.clone(), &path, bearer, Some(&body))
            .await;
        let (status, code_, error) = code(response).await;
        assert_eq!(
            (status, code_),
            (400, Some(10001)),
            "{method} {path} {body}: {error}"
        );
    }
    // Inside an order line, the field is named.
    let body = json!({"items": [{"product_id": product, "quantity": 1, "price": "0.01"}]});
    let (status, _, fields) = refusal(post(&app, token, "/api/v1/orders", &body).await).await;
    assert_eq!(status, 400);
    assert!(fields["items[0].price"].is_string(), "{fields}");
    assert_eq!(app.stock_of(product).await, 10, "nothing was sold");
}

#[tokio::test]
async fn titles_and_descriptions_refuse_invisible_and_bidi_characters() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for hidden in ["\u{202e}", "\u{200b}", "\u{feff}", "\u{2028}", "\u{2066}"] {
        let title = json!({"title": format!("Phone{hidden}X"), "price": "1.00"});
        let (status, code_, fields) =
            refusal(post(&app, &admin, "/api/v1/products", &title).await).await;
        assert_eq!((status, code_), (400, Some(10001)), "{hidden:?}");
        assert!(fields["title"].is_string(), "{hidden:?}: {fields}");
        let description =
            json!({"title": "Phone", "price": "1.00", "description": format!("fine{hidden}print")});
        let (status, _, fields) =
            refusal(post(&app, &admin, "/api/v1/products", &description).await).await;
        assert_eq!(status, 400, "{hidden:?}");
        assert!(fields["description"].is_string(), "{hidden:?}: {fields}");
    }
    let joined = json!({"title": "Family 👨\u{200d}👩\u{200d}👧 pack", "price": "1.00"});
    assert_eq!(
        post(&app, &admin, "/api/v1/products", &joined)
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn the_document_says_what_the_server_now_refuses() {
    let app = spawn_app().await;
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let result = &doc["paths"]["/api/v1/spike/events/{id}/result"]["get"]["responses"];
    assert!(result["404"].is_object(), "result's 404: {result}");
    let id = &doc["paths"]["/api/v1/products/{id}"]["get"]["parameters"][0]["schema"];
    assert_eq!(id["maximum"], json!(i64::MAX), "{id}");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for body in [
        "Registration",
        "Login",
        "RefreshToken",
        "NewProduct",
        "ProductChanges",
        "NewEvent",
        "EventChanges",
        "OrderLine",
        "NewOrder",
    ] {
        assert_eq!(
            schemas[body]["additionalProperties"],
            json!(false),
            "{body}: {}",
            schemas[body]
        );
    }
    let title_pattern = schemas["NewProduct"]["properties"]["title"]["pattern"]
        .as_str()
        .unwrap();
    assert!(title_pattern.contains(r"\u202e") || title_pattern.contains(r"\u2028-\u202e"));
    assert!(doc["paths"].get("/metrics").is_none(), "internal only");
}

#[tokio::test]
async fn the_docs_page_cannot_be_framed_and_loads_only_its_own_code() {
    let app = spawn_app().await;
    for path in ["/docs/", "/docs/swagger-ui-bundle.js"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
}
