//! The anti-bot gate: purchase tokens bound to one buyer and one event, issued only while the
//! event is active, required on the buy request when the deployment says so.

use reqwest::Method;
use time::Duration;

use crate::helpers::event_body;
use crate::helpers::{TestApp, TestOptions, code, envelope, spawn_app, spawn_app_with};

fn gate_on() -> TestOptions {
    TestOptions::default().env("SPIKE_FLASH_SALE_REQUIRE_PURCHASE_TOKEN", "true")
}

async fn token_for(app: &TestApp, token: &str, event: u64) -> reqwest::Response {
    app.get_authed(
        &format!("/api/v1/spike/events/{event}/purchase-token"),
        token,
    )
    .await
}

async fn purchase_token(app: &TestApp, token: &str, event: u64) -> String {
    let response = token_for(app, token, event).await;
    assert_eq!(response.status(), 200);
    let body = envelope(response).await;
    assert!(body["data"]["expires_in"].as_u64().unwrap() > 0, "{body}");
    body["data"]["token"].as_str().unwrap().to_owned()
}

async fn buy_with(
    app: &TestApp,
    token: &str,
    event: u64,
    purchase: Option<&str>,
) -> (u16, Option<u64>) {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/spike/events/{event}/orders")))
        .bearer_auth(token);
    if let Some(purchase) = purchase {
        request = request.header("x-purchase-token", purchase);
    }
    let (status, code_, _) = code(request.send().await.unwrap()).await;
    (status, code_)
}

#[tokio::test]
async fn with_the_gate_on_only_the_buyers_own_fresh_token_for_this_event_buys() {
    let app = spawn_app_with(gate_on()).await;
    let admin = app.admin_token().await;
    let (event, other_event) = (
        app.active_event(&admin, 5).await,
        app.active_event(&admin, 5).await,
    );
    let people = app.buyers(2).await;
    let ((_, alice), (_, bob)) = (&people[0], &people[1]);

    assert_eq!(
        buy_with(&app, alice, event, None).await,
        (403, Some(10003)),
        "no token"
    );
    assert_eq!(
        buy_with(&app, alice, event, Some("garbage")).await,
        (403, Some(10003))
    );
    let bobs = purchase_token(&app, bob, event).await;
    assert_eq!(
        buy_with(&app, alice, event, Some(&bobs)).await,
        (403, Some(10003)),
        "another buyer's token"
    );
    let alices_other = purchase_token(&app, alice, other_event).await;
    assert_eq!(
        buy_with(&app, alice, event, Some(&alices_other)).await,
        (403, Some(10003)),
        "another event's token"
    );
    let alices = purchase_token(&app, alice, event).await;
    assert_eq!(buy_with(&app, alice, event, Some(&alices)).await.0, 202);
    assert_eq!(buy_with(&app, bob, event, Some(&bobs)).await.0, 202);

    let ledger = app.ledger(&admin, event).await;
    assert_eq!(
        ledger["redis_stock"], 3,
        "refused buys reserved nothing: {ledger}"
    );
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = spawn_app_with(gate_on().env("SPIKE_FLASH_SALE_PURCHASE_TOKEN_TTL", "1s")).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 5).await;
    let (buyer_id, buyer) = app.buyers(1).await.remove(0);
    // A token the app issued 1.1 s ago (signed with its secret): expired, without waiting.
    let tokens = spike::service::flash_sale::purchase_token::PurchaseTokens::new(
        app.config.auth.jwt_secret.expose().as_bytes(),
        app.config.flash_sale.purchase_token_ttl,
    );
    let now_ms = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp() * 1000).unwrap();
    let token = tokens.issue(buyer_id, event, now_ms - 1100);
    assert_eq!(
        buy_with(&app, &buyer, event, Some(&token)).await,
        (403, Some(10003))
    );
    // The same issuer's token of now is taken: the refusal was the expiry, not the signature.
    let fresh = tokens.issue(buyer_id, event, now_ms);
    assert_eq!(buy_with(&app, &buyer, event, Some(&fresh)).await.0, 202);
}

#[tokio::test]
async fn tokens_are_issued_only_while_the_event_is_active() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (_, buyer) = app.buyers(1).await.remove(0);
    let product = app.create_product(&admin, "100.00", 10).await;
    let upcoming = app
        .create_event(
            &admin,
            &event_body(product, 1, Duration::hours(1), Duration::hours(2)),
        )
        .await;
    let upcoming = envelope(upcoming).await["data"]["id"].as_u64().unwrap();
    let ended = app
        .create_event(
            &admin,
            &event_body(product, 1, Duration::hours(-2), Duration::hours(-1)),
        )
        .await;
    let ended = envelope(ended).await["data"]["id"].as_u64().unwrap();

    let (status, code_, _) = code(token_for(&app, &buyer, upcoming).await).await;
    assert_eq!((status, code_), (409, Some(50002)));
    let (status, code_, _) = code(token_for(&app, &buyer, ended).await).await;
    assert_eq!((status, code_), (409, Some(50003)));
    let (status, code_, _) = code(token_for(&app, &buyer, 999_999_999).await).await;
    assert_eq!((status, code_), (404, Some(50001)));
    // Without the gate (the dev default) a buy needs no token.
    let active = app.active_event(&admin, 1).await;
    assert_eq!(buy_with(&app, &buyer, active, None).await.0, 202);
}

#[tokio::test]
async fn the_result_of_an_unknown_event_is_404() {
    let app = spawn_app().await;
    let (_, buyer) = app.buyers(1).await.remove(0);
    let response = app
        .send_authed(
            Method::GET,
            "/api/v1/spike/events/999999999/result",
            &buyer,
            None,
        )
        .await;
    let (status, code_, _) = code(response).await;
    assert_eq!((status, code_), (404, Some(50001)));
}
