//! The newcomer's path (issue 25): a fresh `spike all` in dev has an admin out of the box,
//! `spike admin create` makes one in any environment, and a 403 for the admin role says how to
//! become one.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::helpers::{
    ADMIN_EMAIL, TEST_PASSWORD, TestResources, closed_port, code, envelope, spawn_app,
};
use crate::process::{Running, spawn_spike_with, wait_until_healthy};

/// The dev admin of `configs/dev.toml` (README, "Run it").
const DEV_ADMIN: (&str, &str) = ("admin@example.com", "dev-admin-password");

async fn login(base: &str, email: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_fresh_dev_server_has_the_documented_admin() {
    let resources = TestResources::create().await;
    let port = closed_port().await;
    let server = Running::new(spawn_spike_with("all", &resources, port, &[]));
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&base).await;

    let signed_in = envelope(login(&base, DEV_ADMIN.0, DEV_ADMIN.1).await).await;
    let token = signed_in["data"]["access_token"]
        .as_str()
        .expect("the dev admin logs in");
    let product = reqwest::Client::new()
        .post(format!("{base}/api/v1/products"))
        .bearer_auth(token)
        .json(&json!({"title": "First product", "price": "9.90", "stock": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(product.status(), 201, "an admin route, out of the box");
    assert!(server.terminate().await.success());
}

/// Runs `spike admin create` on the test database with `password` on standard input.
fn admin_create(database_url: &str, email: &str, password: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["admin", "create", "--email", email, "--password-stdin"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SPIKE_ENV", "dev")
        .env("SPIKE_DATABASE_URL", database_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run spike admin create");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test]
async fn spike_admin_create_makes_or_promotes_an_admin_with_the_password_from_stdin() {
    let app = spawn_app().await;
    let url = &app.resources.database_url;

    let (ok, said) = admin_create(url, "Ops@Shop.Example", "a long ops password");
    assert!(ok, "{said}");
    assert!(said.contains("ops@shop.example created"), "{said}");
    assert!(
        !said.contains("a long ops password"),
        "the password is not echoed: {said}"
    );
    let token = envelope(app.login("ops@shop.example", "a long ops password").await).await["data"]
        ["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = envelope(app.get_authed("/api/v1/users/me", &token).await).await;
    assert_eq!(me["data"]["role"], "admin");

    // An existing account is promoted and keeps its password.
    let (_, email) = app.signed_in_user().await;
    let (ok, said) = admin_create(url, &email, "ignored for an existing account");
    assert!(ok && said.contains("has the admin role now"), "{said}");
    let token = envelope(app.login(&email, TEST_PASSWORD).await).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = envelope(app.get_authed("/api/v1/users/me", &token).await).await;
    assert_eq!(me["data"]["role"], "admin");

    // Bad input is refused with exit code 2 and nothing written.
    let (ok, said) = admin_create(url, "not an email", "a long ops password");
    assert!(!ok && said.contains("--email"), "{said}");
    let (ok, said) = admin_create(url, "short@shop.example", "short");
    assert!(!ok && said.contains("at least 8"), "{said}");
    let without_stdin = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(["admin", "create", "--email", "x@shop.example"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        !without_stdin.status.success(),
        "the password only ever comes from stdin"
    );
}

#[tokio::test]
async fn a_403_for_the_admin_role_says_how_to_become_one() {
    let app = spawn_app().await;
    let (user, _) = app.signed_in_user().await;
    let token = user["access_token"].as_str().unwrap();
    let response = app
        .send_authed(
            reqwest::Method::POST,
            "/api/v1/products",
            token,
            Some(&json!({"title": "T", "price": "1.00"})),
        )
        .await;
    let (status, code_, body) = code(response).await;
    assert_eq!((status, code_), (403, Some(10003)));
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(ADMIN_EMAIL),
        "in dev it names the admin: {message}"
    );
    assert!(message.contains("spike admin create"), "{message}");
}
