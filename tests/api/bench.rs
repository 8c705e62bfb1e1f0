//! The load tool (`spike-bench`, its own crate) against a real server: a small sale passes every invariant
//! check; a server whose worker is down, and stores holding an oversold event, fail them; the
//! CLI's exit code says which. Also the naive db mode the tool compares against, racing.

use std::collections::HashSet;
use std::process::{Command, Output};
use std::time::Duration;

use spike::repo::redis::flash_sale::EventKeys;
use spike_bench::checks::{self, Accepted};
use spike_bench::client::Target;
use spike_bench::{self as bench, BenchArgs, Scenario};

use crate::helpers::{TestApp, TestOptions, code, spawn_app_with};

fn sale(app: &TestApp, buyers: u64, stock: u64) -> BenchArgs {
    BenchArgs {
        url: Some(app.address.clone()),
        connections: 16,
        buyers: Some(buyers),
        stock,
        drain_timeout: Duration::from_secs(30),
        ..BenchArgs::new(Scenario::Sale)
    }
}

fn failed_checks(report: &bench::report::Report) -> Vec<&str> {
    report
        .checks
        .iter()
        .filter(|c| c.failed())
        .map(|c| c.name.as_str())
        .collect()
}

#[tokio::test]
async fn a_small_sale_through_the_load_tool_holds_every_invariant() {
    let app = spawn_app_with(TestOptions::default().with_worker()).await;
    let report = bench::run(&sale(&app, 500, 50), &app.config)
        .await
        .expect("the run completes");

    assert_eq!(report.requests, 1000, "500 buyers × 2 attempts");
    assert_eq!(report.mix.success, 50, "{:?}", report.mix);
    let refused: u64 = report.mix.conflict_by_code.values().sum();
    assert_eq!(refused, 950, "{:?}", report.mix);
    assert!(
        report
            .mix
            .conflict_by_code
            .keys()
            .all(|code| code == "50004" || code == "50005"),
        "{:?}",
        report.mix
    );
    let drain = report.drain.expect("a sale drains");
    assert!(drain.complete);
    assert_eq!(drain.orders, 50);
    assert_eq!(report.checks.len(), 6);
    assert!(
        report.checks.iter().all(|c| c.passed == Some(true)),
        "{}",
        report.text()
    );
    let facts = &report.sale.as_ref().expect("sale figures").facts;
    assert_eq!((facts.live_orders, facts.redis_stock), (50, Some(0)));
    assert!(report.latency.p50 > 0.0 && report.latency.p50 <= report.latency.max);
    let html = report.html();
    assert!(html.contains("invariants hold") && html.contains("<svg"));
}

/// A crowd of `buyers` arriving at 400/s against an event admitting 20/s, with the server's
/// line as `line_max` sets it.
async fn crowd_against(line_max: &str, buyers: u64, stock: u64) -> bench::report::Report {
    let app = spawn_app_with(
        TestOptions::default()
            .with_worker()
            .env("SPIKE_FLASH_SALE_EVENT_RATE_LIMIT", "20/1s")
            .env("SPIKE_FLASH_SALE_WAITING_LINE_MAX", line_max),
    )
    .await;
    let args = BenchArgs {
        url: Some(app.address.clone()),
        buyers: Some(buyers),
        stock,
        rate: Some(400.0),
        drain_timeout: Duration::from_secs(30),
        ..BenchArgs::new(Scenario::Crowd)
    };
    bench::run(&args, &app.config)
        .await
        .expect("the crowd completes")
}

#[tokio::test]
async fn a_crowd_waits_in_line_first_come_first_served_and_without_the_line_retries() {
    let (with_line, without) = tokio::join!(
        crowd_against("100000", 120, 40),
        crowd_against("0", 120, 40)
    );
    for report in [&with_line, &without] {
        assert!(
            report.checks.iter().all(|c| c.passed == Some(true)),
            "{}",
            report.text()
        );
    }
    let line = with_line.crowd.as_ref().expect("crowd figures");
    assert_eq!((line.winners, line.losers, line.gave_up), (40, 80, 0));
    assert!(
        line.waited > 0 && line.answers_429 == 0,
        "{}",
        with_line.text()
    );
    // Arrivals 2.5 ms apart, each on a new connection, may reach the server a place apart.
    assert!(line.first_arrivals_won >= 0.9, "{}", with_line.text());
    assert!(
        line.arrival_admission_correlation > 0.95,
        "{}",
        with_line.text()
    );
    assert!(line.requests_per_buyer <= 3.0, "{}", with_line.text());

    let retried = without.crowd.as_ref().expect("crowd figures");
    assert_eq!((retried.winners, retried.gave_up), (40, 0));
    assert!(
        retried.waited == 0 && retried.answers_429 > 0,
        "{}",
        without.text()
    );
    assert!(with_line.text().contains("fairness"));
    assert!(with_line.html().contains("<h2>Crowd</h2>"));
}

#[tokio::test]
async fn a_sale_behind_the_purchase_token_gate_runs_with_the_switch_and_fails_without_it() {
    let gated = TestOptions::default()
        .with_worker()
        .env("SPIKE_FLASH_SALE_REQUIRE_PURCHASE_TOKEN", "true");
    let app = spawn_app_with(gated).await;
    let with_tokens = BenchArgs {
        purchase_token: true,
        ..sale(&app, 200, 20)
    };
    let report = bench::run(&with_tokens, &app.config)
        .await
        .expect("the run completes");
    assert_eq!(report.mix.success, 20, "{:?}", report.mix);
    assert!(
        report.checks.iter().all(|c| c.passed == Some(true)),
        "{}",
        report.text()
    );

    let without = bench::run(&sale(&app, 50, 5), &app.config)
        .await
        .expect("the run completes");
    assert_eq!(
        without.mix.by_label.get("403/10003"),
        Some(&100),
        "every buy without a token is refused at the gate: {:?}",
        without.mix
    );
}

#[tokio::test]
async fn a_server_whose_worker_is_down_fails_the_every_202_check() {
    // No worker: the reservations are queued and never become orders.
    let app = spawn_app_with(TestOptions::default()).await;
    let args = BenchArgs {
        drain_timeout: Duration::from_secs(1),
        ..sale(&app, 100, 10)
    };
    let report = bench::run(&args, &app.config)
        .await
        .expect("the run completes");
    assert_eq!(report.mix.success, 10);
    assert!(!report.drain.expect("a sale drains").complete);
    assert!(report.any_check_failed());
    assert_eq!(
        failed_checks(&report),
        ["every 202 ends as an order or a failed result"],
        "{}",
        report.text()
    );
}

#[tokio::test]
async fn an_oversold_event_fails_the_oversell_and_conservation_checks() {
    let app = spawn_app_with(TestOptions::default().with_worker()).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 2).await;
    let people = app.buyers(3).await;
    for (_, token) in &people[..2] {
        assert_eq!(app.buy(token, event).await.status(), 202);
    }
    for (_, token) in &people[..2] {
        app.wait_for_success(token, event).await;
    }
    // A broken server sold a third unit: an order MySQL has no stock for.
    let db = &app.infra.db;
    let order_id = sqlx::query(
        "INSERT INTO orders (user_id, status, total_amount, kind, pay_deadline) \
         VALUES (?, 'pending_payment', 9.90, 'spike', NOW(3))",
    )
    .bind(people[2].0)
    .execute(db)
    .await
    .unwrap()
    .last_insert_id();
    sqlx::query(
        "INSERT INTO spike_orders (spike_event_id, user_id, order_id, ticket) VALUES (?, ?, ?, 'phantom')",
    )
    .bind(event)
    .bind(people[2].0)
    .bind(order_id)
    .execute(db)
    .await
    .unwrap();

    let promised: Vec<Accepted> = sqlx::query_as::<_, (u64, String)>(
        "SELECT user_id, ticket FROM spike_orders WHERE spike_event_id = ? AND ticket <> 'phantom'",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .map(|(user_id, ticket)| Accepted {
        user_id,
        token: people
            .iter()
            .find(|p| p.0 == user_id)
            .unwrap()
            .1
            .as_str()
            .into(),
        ticket,
    })
    .collect();
    let keys = EventKeys::new(&app.config.redis.prefix, event);
    let target = Target::parse(&app.address).unwrap();
    let facts = checks::gather(
        db,
        &mut app.infra.redis.clone(),
        &keys,
        &target,
        event,
        &promised,
    )
    .await
    .unwrap();
    assert_eq!(facts.live_orders, 3);
    let failed: Vec<String> = checks::evaluate(&facts)
        .into_iter()
        .filter(|c| c.failed())
        .map(|c| c.name)
        .collect();
    assert_eq!(
        failed,
        [
            "no oversell",
            "every order was promised by a 202",
            "stock conserved in MySQL",
            "stock conserved in Redis"
        ]
    );
}

#[tokio::test]
async fn the_cli_exits_non_zero_when_a_check_fails_and_writes_the_report() {
    let app = spawn_app_with(TestOptions::default()).await;
    let page = std::env::temp_dir().join(format!("spike-bench-{}.html", uuid::Uuid::new_v4()));
    let output = tokio::task::spawn_blocking({
        let args = [
            "sale",
            "--buyers",
            "40",
            "--stock",
            "4",
            "-c",
            "4",
            "--drain-timeout",
            "500ms",
            "--report",
            page.to_str().unwrap(),
        ];
        let app_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let cli = CliApp::of(&app);
        move || cli.run(&app_args)
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["mix"]["success"], 4);
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["passed"] == false)
    );
    let html = std::fs::read_to_string(&page).expect("the HTML report");
    std::fs::remove_file(&page).ok();
    assert!(html.contains("invariants violated"));

    let output = tokio::task::spawn_blocking({
        let cli = CliApp::of(&app);
        move || {
            cli.run(&[
                "healthz".into(),
                "-n".into(),
                "200".into(),
                "-c".into(),
                "2".into(),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["requests"], 200);
    assert_eq!(report["mix"]["by_label"]["200"], 200);
}

/// The `spike-bench` binary beside the server's: built by `cargo build --workspace` (and by
/// `scripts/test.sh` before the tests), not by `cargo test` of the server's package.
fn spike_bench_binary() -> std::path::PathBuf {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_spike")).with_file_name("spike-bench");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --workspace` (scripts/test.sh does) first",
        binary.display()
    );
    binary
}

/// The real `spike-bench` binary pointed at a test app and its stores; movable to a blocking
/// thread.
struct CliApp {
    address: String,
    config: spike::config::Config,
}

impl CliApp {
    fn of(app: &TestApp) -> CliApp {
        CliApp {
            address: app.address.clone(),
            config: app.config.clone(),
        }
    }

    fn run(&self, args: &[String]) -> Output {
        let config = &self.config;
        Command::new(spike_bench_binary())
            .args(args)
            .args(["--url", &self.address, "--json"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SPIKE_ENV", "dev")
            .env("SPIKE_DATABASE_URL", config.database.url.expose())
            .env("SPIKE_REDIS_URL", config.redis.url.expose())
            .env("SPIKE_REDIS_PREFIX", &config.redis.prefix)
            .env("SPIKE_JWT_SECRET", config.auth.jwt_secret.expose())
            .output()
            .expect("spike-bench runs")
    }
}

#[tokio::test]
async fn the_naive_db_mode_never_oversells_under_a_race() {
    // No worker and no queue: the request itself makes the order.
    let app = spawn_app_with(TestOptions::default().env("SPIKE_FLASH_SALE_MODE", "db")).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 20).await;
    let people = app.buyers(200).await;
    let attempts = people.iter().flat_map(|(id, token)| {
        [app.buy(token, event), app.buy(token, event)]
            .map(|f| async move { (*id, code(f.await).await) })
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut winners = HashSet::new();
    let mut refused = 0;
    for (buyer, answer) in answers {
        match answer {
            (202, Some(0), _) => assert!(winners.insert(buyer), "two tickets for {buyer}"),
            (409, Some(50004 | 50005), _) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((winners.len(), refused), (20, 380));
    let owners: HashSet<u64> =
        sqlx::query_scalar("SELECT user_id FROM spike_orders WHERE spike_event_id = ?")
            .bind(event)
            .fetch_all(&app.infra.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(
        owners, winners,
        "the orders exist already: no worker made them"
    );
    assert_eq!(app.event_stock(event).await, 0);
    let (winner, token) = people.iter().find(|p| winners.contains(&p.0)).unwrap();
    assert_eq!(
        app.result_of(token, event).await["status"],
        "success",
        "buyer {winner}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_an_error_not_a_report() {
    let app = spawn_app_with(TestOptions::default()).await;
    let port = crate::helpers::closed_port().await;
    let args = BenchArgs {
        url: Some(format!("http://127.0.0.1:{port}")),
        requests: Some(5),
        connections: 1,
        ..BenchArgs::new(Scenario::Healthz)
    };
    let error = bench::run(&args, &app.config)
        .await
        .expect_err("nobody answered");
    assert!(matches!(error, bench::BenchError::Transport(_)), "{error}");
}
