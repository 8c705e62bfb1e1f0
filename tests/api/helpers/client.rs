//! Talking to the test app over HTTP: requests, sign-in, common admin and buyer steps, and the
//! envelope checks every answer goes through.

use std::time::Duration;

use super::app::{ADMIN_EMAIL, ADMIN_PASSWORD, TEST_PASSWORD, TestApp};

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// GET with one extra request header.
    pub async fn get_with_header(&self, path: &str, name: &str, value: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(name, value)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs a raw body with `Content-Type: application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs a JSON value.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_authed(&self, path: &str, access_token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/register",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/auth/login",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers a new user with a unique email and signs in; returns the login `data`
    /// (`access_token`, `refresh_token`, …) and the email.
    pub async fn signed_in_user(&self) -> (serde_json::Value, String) {
        let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
        let registered = self.register(&email, TEST_PASSWORD).await;
        assert_eq!(registered.status(), 201, "register {email}");
        let response = self.login(&email, TEST_PASSWORD).await;
        assert_eq!(response.status(), 200, "login {email}");
        (envelope(response).await["data"].clone(), email)
    }

    /// Creates a product as the admin; returns its id.
    pub async fn create_product(&self, admin_token: &str, price: &str, stock: u32) -> u64 {
        let body = serde_json::json!({"title": "product", "price": price, "stock": stock});
        let response = self
            .send_authed(
                reqwest::Method::POST,
                "/api/v1/products",
                admin_token,
                Some(&body),
            )
            .await;
        assert_eq!(response.status(), 201, "create product");
        envelope(response).await["data"]["id"].as_u64().unwrap()
    }

    /// POST /orders with an optional Idempotency-Key.
    pub async fn place_order(
        &self,
        token: &str,
        items: serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/api/v1/orders"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "items": items }));
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("request sent")
    }

    /// An access token of the bootstrap admin.
    pub async fn admin_token(&self) -> String {
        let response = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(response.status(), 200, "admin login");
        envelope(response).await["data"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sends `method path` with a bearer token and an optional JSON body.
    pub async fn send_authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request sent")
    }

    /// The order's status as its owner sees it.
    pub async fn order_status(&self, token: &str, order_id: u64) -> String {
        let body = envelope(
            self.get_authed(&format!("/api/v1/orders/{order_id}"), token)
                .await,
        )
        .await;
        body["data"]["status"].as_str().unwrap().to_owned()
    }

    /// The event's ledger as the admin endpoint shows it.
    pub async fn ledger(&self, admin: &str, event_id: u64) -> serde_json::Value {
        let response = self
            .get_authed(&format!("/api/v1/spike/events/{event_id}/ledger"), admin)
            .await;
        assert_eq!(response.status(), 200);
        envelope(response).await["data"].clone()
    }

    /// MySQL's `available_stock` of a flash-sale event.
    pub async fn event_stock(&self, event_id: u64) -> u32 {
        sqlx::query_scalar("SELECT available_stock FROM spike_events WHERE id = ?")
            .bind(event_id)
            .fetch_one(&self.infra.db)
            .await
            .unwrap()
    }

    /// An access token for `user_id` minted with the app's secret (no login, no password hash).
    pub fn mint_token(&self, user_id: u64) -> String {
        let user = spike::domain::user::User {
            id: user_id,
            email: format!("user{user_id}@example.com"),
            role: spike::domain::user::Role::User,
        };
        spike::service::auth::tokens::AccessTokens::new(
            self.config.auth.jwt_secret.expose().as_bytes(),
            Duration::from_secs(600),
        )
        .unwrap()
        .issue(&user, uuid::Uuid::new_v4())
        .unwrap()
    }
}

/// A response body as JSON, asserting the envelope's shape on the way.
pub async fn envelope(response: reqwest::Response) -> serde_json::Value {
    let header_id = response
        .headers()
        .get("x-request-id")
        .expect("every response has X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert!(body["code"].is_u64(), "code missing: {body}");
    assert!(body["message"].is_string(), "message missing: {body}");
    assert!(body.get("data").is_some(), "data missing: {body}");
    assert_eq!(
        body["request_id"],
        header_id.as_str(),
        "body and header request ids differ"
    );
    body
}

/// Status, envelope code and body of a response.
pub async fn code(response: reqwest::Response) -> (u16, Option<u64>, serde_json::Value) {
    let status = response.status().as_u16();
    let body = envelope(response).await;
    (status, body["code"].as_u64(), body)
}
