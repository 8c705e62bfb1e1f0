//! The order queue's bound as a RabbitMQ policy (`SPIKE_AMQP_MANAGEMENT_URL`): the broker enforces
//! it, and a process started with another bound updates it instead of failing with
//! PRECONDITION_FAILED on the existing queue.

use crate::helpers::{TestOptions, closed_port, code, spawn_app_with};
use crate::process::{Running, spawn_spike_with, wait_until_healthy};

const MANAGEMENT: &str = "http://guest:guest@127.0.0.1:15672";

/// The policy's `max-length` as the management API reports it.
async fn policy_bound(name: &str) -> serde_json::Value {
    let policy: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:15672/api/policies/%2F/{name}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    policy["definition"]["max-length"].clone()
}

#[tokio::test]
async fn the_order_queue_bound_is_a_policy_and_a_new_bound_needs_no_recreated_queue() {
    let app = spawn_app_with(
        TestOptions::default()
            .env("SPIKE_AMQP_MANAGEMENT_URL", MANAGEMENT)
            .env("SPIKE_FLASH_SALE_QUEUE_MAX_LENGTH", "3"),
    )
    .await;
    let policy = format!("{}spike.order.create.bound", app.resources.amqp_prefix);
    assert_eq!(policy_bound(&policy).await, 3);
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 10).await;
    let people = app.buyers(6).await;

    // No worker: three reservations fill the queue and the broker refuses the fourth.
    for (_, token) in &people[..3] {
        assert_eq!(app.buy(token, event).await.status(), 202);
    }
    let (status, code_, _) = code(app.buy(&people[3].1, event).await).await;
    assert_eq!((status, code_), (503, Some(10008)), "the bound holds");

    // A process with a bound of 5 starts on the same queue and raises the policy's bound.
    let port = closed_port().await;
    let secret = app.config.auth.jwt_secret.expose().to_owned();
    let api = Running::new(spawn_spike_with(
        "serve",
        &app.resources,
        port,
        &[
            ("SPIKE_AMQP_MANAGEMENT_URL", MANAGEMENT),
            ("SPIKE_FLASH_SALE_QUEUE_MAX_LENGTH", "5"),
            ("SPIKE_JWT_SECRET", secret.as_str()),
        ],
    ));
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&base).await;
    assert_eq!(policy_bound(&policy).await, 5);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for (_, token) in &people[3..] {
        let answer = client
            .post(format!("{base}/api/v1/spike/events/{event}/orders"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(
        statuses,
        [202, 202, 503],
        "two more fit under the new bound"
    );

    assert!(api.terminate().await.success());
    let deleted = client
        .delete(format!("http://127.0.0.1:15672/api/policies/%2F/{policy}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
}

/// Issue 25: without the policy, a changed bound once crashed the next start with a raw
/// `PRECONDITION_FAILED … inequivalent arg 'x-max-length'`. The start still stops (the broker
/// will not change a declared queue), saying which setting, which queue, both values and the
/// ways out.
#[tokio::test]
async fn a_changed_bound_without_the_policy_stops_the_start_with_a_clear_error() {
    let app = spawn_app_with(TestOptions::default()).await;
    assert!(
        app.config.amqp.management_url.is_none(),
        "declared, not a policy"
    );
    let declared = app.config.flash_sale.queue_max_length;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_spike"))
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SPIKE_ENV", "dev")
        .env("SPIKE_HTTP_ADDR", "127.0.0.1:0")
        .env("SPIKE_INTERNAL_HTTP_ADDR", "127.0.0.1:0")
        .env("SPIKE_DATABASE_URL", &app.resources.database_url)
        .envs(app.resources.redis_env())
        .env("SPIKE_AMQP_PREFIX", &app.resources.amqp_prefix)
        .env("SPIKE_AMQP_QUEUE_TYPE", "classic")
        .env("SPIKE_AMQP_MANAGEMENT_URL", "")
        .env("SPIKE_FLASH_SALE_QUEUE_MAX_LENGTH", "7")
        .env("SPIKE_LOG_FORMAT", "json")
        .output()
        .expect("run spike serve");
    assert!(!output.status.success(), "the start stops");
    let said = String::from_utf8_lossy(&output.stderr);
    let queue = format!("{}spike.order.create", app.resources.amqp_prefix);
    for words in [
        queue.as_str(),
        &format!("x-max-length = {declared}"),
        "declares 7",
        "SPIKE_FLASH_SALE_QUEUE_MAX_LENGTH",
        "SPIKE_AMQP_MANAGEMENT_URL",
        "docs/runbook.md",
    ] {
        assert!(said.contains(words), "{words:?} in:\n{said}");
    }
}
