//! The real binary: `spike all` serves `/healthz` and `/readyz`, `spike worker` declares the
//! topology, and both stop cleanly (exit 0) on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::helpers::{TestResources, closed_port, wait_for};

/// How long a freshly started binary may take to answer (a cold debug build is slow to start).
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

fn spawn_spike(role: &str, resources: &TestResources, port: u16) -> Child {
    spawn_spike_with(role, resources, port, &[])
}

/// [`spawn_spike`] with more environment.
pub fn spawn_spike_with(
    role: &str,
    resources: &TestResources,
    port: u16,
    env: &[(&str, &str)],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_spike"))
        .arg(role)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SPIKE_ENV", "dev")
        .env("SPIKE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        // The internal listener (probes, metrics): any free port unless the test names one.
        .env("SPIKE_INTERNAL_HTTP_ADDR", "127.0.0.1:0")
        .env("SPIKE_DATABASE_URL", &resources.database_url)
        .envs(resources.redis_env())
        .env("SPIKE_AMQP_PREFIX", &resources.amqp_prefix)
        .env("SPIKE_LOG_FORMAT", "json")
        .env("SPIKE_AMQP_QUEUE_TYPE", "classic")
        // As in `test_config`: the queue bound declared, not a policy, unless a test asks.
        .env("SPIKE_AMQP_MANAGEMENT_URL", "")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start spike")
}

/// Waits until the process at `base` answers `/healthz`.
pub async fn wait_until_healthy(base: &str) {
    let client = reqwest::Client::new();
    wait_for("/healthz of the started process", STARTUP_LIMIT, || {
        let request = client.get(format!("{base}/healthz")).send();
        async move { matches!(request.await, Ok(r) if r.status() == 200) }
    })
    .await;
}

/// A started process that is killed if the test fails before stopping it, so a failed
/// assertion leaves no server running.
pub struct Running(Option<Child>);

impl Running {
    pub fn new(child: Child) -> Running {
        Running(Some(child))
    }

    /// Stops it with SIGTERM ([`terminate`]) and returns its exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        terminate(self.0.take().expect("running")).await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM and waits (without blocking the test's runtime) for the exit status.
pub async fn terminate(mut child: Child) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut status = None;
    wait_for(
        "spike to stop after SIGTERM",
        Duration::from_secs(20),
        || {
            status = status.or_else(|| child.try_wait().unwrap());
            let stopped = status.is_some();
            async move { stopped }
        },
    )
    .await;
    status.expect("stopped")
}

#[tokio::test]
async fn spike_all_answers_health_and_readiness_then_stops_on_sigterm() {
    let resources = TestResources::create().await;
    let port = closed_port().await;
    let child = spawn_spike("all", &resources, port);
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");

    wait_until_healthy(&base).await;
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let status = terminate(child).await;
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
}

#[tokio::test]
async fn spike_worker_declares_the_topology_then_stops_on_sigterm() {
    let resources = TestResources::create().await;
    // The worker does not migrate; give it a schema like a deployment would.
    let migrated = Command::new(env!("CARGO_BIN_EXE_spike"))
        .arg("migrate")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SPIKE_DATABASE_URL", &resources.database_url)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(migrated.success(), "spike migrate");

    let child = spawn_spike("worker", &resources, closed_port().await);
    let queue = format!("{}order.close.delay", resources.amqp_prefix);
    let amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned();
    let connection = lapin::Connection::connect(&amqp_url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    wait_for("the worker to declare its queues", STARTUP_LIMIT, || {
        let connection = &connection;
        let queue = queue.clone();
        async move {
            // A failed passive declare closes its channel: use a fresh one each time.
            let channel = connection.create_channel().await.unwrap();
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .is_ok()
        }
    })
    .await;
    connection.close(200, "done".into()).await.ok();

    let status = terminate(child).await;
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
}

/// A sale of one unit whose worker (in this test's process, with `options`) reconciles quickly,
/// and a `spike serve` that dies right after a reservation, before its publish (the dev-only
/// fault hook). Returns the app, the admin's token, the event, a buyer's token, the dying
/// process and its base URL.
async fn sale_with_an_api_that_dies_mid_buy(
    options: crate::helpers::TestOptions,
) -> (crate::helpers::TestApp, String, u64, String, Child, String) {
    let app = crate::helpers::spawn_app_with(
        options
            .with_worker()
            .env("SPIKE_FLASH_SALE_RECONCILE_AFTER", "1s")
            .env("SPIKE_FLASH_SALE_SCHEDULER_INTERVAL", "200ms"),
    )
    .await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 1).await;
    let (_, token) = app.buyers(1).await.remove(0);
    let port = closed_port().await;
    let api = spawn_spike_with(
        "serve",
        &app.resources,
        port,
        &[("SPIKE_FLASH_SALE_FAULT_ABORT_AFTER_RESERVE", "true")],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&base).await;
    (app, admin, event, token, api, base)
}

#[tokio::test]
async fn an_api_process_killed_between_reservation_and_publish_loses_nothing() {
    let (app, admin, event, token, mut api, base) =
        sale_with_an_api_that_dies_mid_buy(crate::helpers::TestOptions::default()).await;
    let client = reqwest::Client::new();

    let answer = client
        .post(format!("{base}/api/v1/spike/events/{event}/orders"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(
        answer.is_err(),
        "the process died before answering: {answer:?}"
    );
    let status = api.wait().expect("the API process exits");
    assert!(!status.success(), "it was killed, not stopped: {status}");
    assert_eq!(
        app.result_of(&token, event).await["status"],
        "queued",
        "the reservation is in Redis, its message never left"
    );

    // The reconciler finds the reservation without an order and publishes it again.
    let order = app.wait_for_success(&token, event).await;
    assert!(order > 0);
    app.wait_until_settled(&admin, event).await;
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(ledger["live_orders"], 1, "{ledger}");
    assert_eq!(ledger["drift"], 0, "{ledger}");
}

#[tokio::test]
async fn a_buyer_retrying_with_its_key_after_the_api_died_mid_buy_gets_the_first_ticket() {
    use crate::helpers::{TestOptions, code};

    // The API process dies between the reservation and its publish, leaving the buyer's
    // Idempotency-Key pending. The process answering the retries runs requests for at most 2 s:
    // a key pending for longer was left by a request that is over.
    let (app, admin, event, token, mut api, base) = sale_with_an_api_that_dies_mid_buy(
        TestOptions::default().env("SPIKE_HTTP_REQUEST_TIMEOUT", "2s"),
    )
    .await;
    let buy = |base: String| {
        let token = token.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/v1/spike/events/{event}/orders"))
                .bearer_auth(token)
                .header("idempotency-key", "phone-1")
                .send()
                .await
        }
    };
    assert!(
        buy(base).await.is_err(),
        "the process died before answering"
    );
    assert!(!api.wait().expect("the API process exits").success());

    // The buyer's app retries with the same key on the surviving process: told the first
    // request may still be running, then given its ticket — never a second purchase.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ticket = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the retry never got the first request's ticket"
        );
        let (status, code_, body) = code(buy(app.url("")).await.unwrap()).await;
        match (status, code_) {
            (202, _) => break body["data"]["ticket"].as_str().unwrap().to_owned(),
            (409, Some(10005)) => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    };
    // The reconciler publishes the reservation; the order carries the replayed ticket.
    app.wait_for_success(&token, event).await;
    let ordered: String =
        sqlx::query_scalar("SELECT ticket FROM spike_orders WHERE spike_event_id = ?")
            .bind(event)
            .fetch_one(&app.infra.db)
            .await
            .unwrap();
    assert_eq!(ordered, ticket);
    app.wait_until_settled(&admin, event).await;
    assert_eq!(app.ledger(&admin, event).await["drift"], 0);
}
