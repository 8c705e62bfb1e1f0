//! One email, one identity (issue 23): every spelling of an address that Unicode folds to the
//! same canonical form is one account with one login budget, a spelling that cannot be
//! normalised is a 400, and rows stored before the canonical form existed are migrated to it,
//! with what cannot be migrated reported by `spike migrate`.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{TEST_PASSWORD, TestApp, TestOptions, envelope, spawn_app, spawn_app_with};

/// The canonical address the tests register, and spellings of it that fold to it.
const VICTIM: &str = "victim@shop.test";
const SPELLINGS: [&str; 4] = [
    "VICTIM@SHOP.TEST",
    "ｖｉｃｔｉｍ@ｓｈｏｐ．ｔｅｓｔ", // fullwidth letters and full stop
    "Victim@Shop.Test",
    "victim@shop.test",
];

/// Spellings that look like the address but cannot be normalised to it.
const UNNORMALISABLE: [&str; 6] = [
    "victim@shop.tést",
    "VİCTIM@shop.test",
    "victim@shop.test\u{200b}",
    "victim@shop.test\u{0}",
    "victim@shop.tset\u{202e}",
    "\u{feff}victim@shop.test",
];

async fn login_status(app: &TestApp, email: &str, password: &str) -> (u16, Value) {
    let response = app.login(email, password).await;
    let status = response.status().as_u16();
    (status, envelope(response).await)
}

#[tokio::test]
async fn every_spelling_of_an_email_is_one_account_with_one_login_budget() {
    // Hour-long refill periods: no attempt comes back while the test runs.
    let app = spawn_app_with(
        TestOptions::default()
            .env("SPIKE_LOGIN_LIMIT_PER_EMAIL_IP", "6/1h")
            .env("SPIKE_LOGIN_LIMIT_PER_EMAIL", "6/1h"),
    )
    .await;
    assert_eq!(app.register(VICTIM, TEST_PASSWORD).await.status(), 201);
    for spelling in &SPELLINGS {
        let taken = envelope(app.register(spelling, TEST_PASSWORD).await).await;
        assert_eq!(
            taken["code"], 20001,
            "{spelling:?} is the same address: {taken}"
        );
    }
    for spelling in &UNNORMALISABLE {
        let refused = envelope(app.register(spelling, TEST_PASSWORD).await).await;
        assert_eq!(refused["code"], 10001, "{spelling:?}: {refused}");
        // Not even the right password reaches the password check under such a spelling.
        let (status, body) = login_status(&app, spelling, TEST_PASSWORD).await;
        assert_eq!(status, 400, "{spelling:?}: {body}");
        assert!(body["data"]["fields"]["email"].is_string(), "{body}");
    }

    // Any folding spelling logs in to the one account.
    let (status, body) = login_status(&app, SPELLINGS[1], TEST_PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["access_token"].as_str().unwrap().to_owned();
    let me = envelope(app.get_authed("/api/v1/users/me", &token).await).await;
    assert_eq!(me["data"]["email"], VICTIM);

    // Guesses spread over the spellings share one budget of six.
    let mut answers = Vec::new();
    for i in 0..8 {
        let spelling = SPELLINGS[i % SPELLINGS.len()];
        answers.push(login_status(&app, spelling, &format!("guess {i}")).await.0);
    }
    assert_eq!(answers, [401, 401, 401, 401, 401, 401, 429, 429]);
    for spelling in &SPELLINGS {
        assert_eq!(login_status(&app, spelling, TEST_PASSWORD).await.0, 429);
    }
}

async fn user_id(app: &TestApp, email: &str) -> u64 {
    let response = app.register(email, TEST_PASSWORD).await;
    assert_eq!(response.status(), 201, "{email}");
    envelope(response).await["data"]["id"].as_u64().unwrap()
}

/// Stores `email` as it is, as a row written before emails had one canonical form.
async fn store_email(app: &TestApp, id: u64, email: &str) {
    sqlx::query("UPDATE users SET email = ? WHERE id = ?")
        .bind(email)
        .bind(id)
        .execute(&app.infra.db)
        .await
        .unwrap();
}

async fn stored_email(app: &TestApp, id: u64) -> String {
    sqlx::query_scalar("SELECT email FROM users WHERE id = ?")
        .bind(id)
        .fetch_one(&app.infra.db)
        .await
        .unwrap()
}

/// Runs `spike migrate` on the test's database; returns its log lines as JSON.
fn migrate(app: &TestApp) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_spike"))
        .arg("migrate")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SPIKE_ENV", "dev")
        .env("SPIKE_DATABASE_URL", &app.resources.database_url)
        .env("SPIKE_LOG_FORMAT", "json")
        .output()
        .expect("run spike migrate");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "spike migrate failed:\n{text}");
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn lines_saying<'a>(logs: &'a [Value], words: &str) -> Vec<&'a Value> {
    logs.iter()
        .filter(|line| line["message"].as_str().is_some_and(|m| m.contains(words)))
        .collect()
}

#[tokio::test]
async fn stored_emails_are_migrated_to_their_canonical_form_and_what_cannot_be_is_reported() {
    let app = spawn_app().await;
    let mixed = user_id(&app, "mixed@example.com").await;
    let fullwidth = user_id(&app, VICTIM).await;
    let carol = user_id(&app, "carol@shop.test").await;
    let carols_twin = user_id(&app, "twin@shop.test").await;
    let hidden = user_id(&app, "zed@shop.test").await;
    store_email(&app, mixed, "Mixed@Example.COM").await;
    store_email(&app, fullwidth, "ｖｉｃｔｉｍ@shop.test").await;
    store_email(&app, carols_twin, "CAROL@shop.test").await;
    store_email(&app, hidden, "zed@shop.test\u{200b}").await;

    let logs = migrate(&app);
    assert_eq!(stored_email(&app, mixed).await, "mixed@example.com");
    assert_eq!(stored_email(&app, fullwidth).await, VICTIM);
    assert_eq!(
        stored_email(&app, carols_twin).await,
        "CAROL@shop.test",
        "a collision is left for an operator"
    );
    assert_eq!(stored_email(&app, hidden).await, "zed@shop.test\u{200b}");

    let collisions = lines_saying(&logs, "another account's");
    assert_eq!(collisions.len(), 1, "{logs:#?}");
    assert_eq!(collisions[0]["user_id"], carols_twin);
    assert_eq!(collisions[0]["other_user_id"], carol);
    assert_eq!(collisions[0]["level"], "WARN");
    let unreadable = lines_saying(&logs, "no canonical form");
    assert_eq!(unreadable.len(), 1, "{logs:#?}");
    assert_eq!(unreadable[0]["user_id"], hidden);
    let summary = lines_saying(&logs, "brought to their canonical form");
    assert_eq!(summary.len(), 1, "{logs:#?}");
    assert_eq!(summary[0]["rewritten"], 2);
    assert_eq!(summary[0]["collisions"], 1);
    assert_eq!(summary[0]["unreadable"], 1);
    let rendered = serde_json::to_string(&logs).unwrap();
    assert!(
        !rendered.contains("carol@") && !rendered.contains("CAROL"),
        "addresses stay out of the logs: {rendered}"
    );

    // The migrated accounts log in under any spelling; the collision's address is Carol's.
    for (spelling, id) in [
        ("MIXED@example.com", mixed),
        ("ＶＩＣＴＩＭ@shop.test", fullwidth),
        ("Carol@Shop.Test", carol),
    ] {
        let body = envelope(app.login(spelling, TEST_PASSWORD).await).await;
        let token = body["data"]["access_token"].as_str().expect(spelling);
        let me = envelope(app.get_authed("/api/v1/users/me", token).await).await;
        assert_eq!(me["data"]["id"], id, "{spelling}");
    }

    // Again: nothing left to rewrite; what could not be migrated is reported again.
    let again = migrate(&app);
    assert!(lines_saying(&again, "brought to their canonical form")[0]["rewritten"] == 0);
    assert_eq!(lines_saying(&again, "another account's").len(), 1);
}
