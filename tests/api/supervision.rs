//! Supervised background work (docs/design.md §9a): one bad event never stops the safety net of
//! the others, a task that dies is started again, and `/readyz` says so while it is down.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{TestOptions, code, envelope, spawn_app, spawn_app_with};

/// The value of one counter series in this test process's metrics (every app of the test binary
/// shares one recorder, so tests compare before and after, never absolute values).
fn counter(name: &str, task: &str) -> f64 {
    let series = format!("{name}{{task=\"{task}\"}} ");
    spike::telemetry::metrics::render()
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

const HOUSEKEEPING: &str = "flash_sale_housekeeping";

#[tokio::test]
async fn a_bad_event_row_is_skipped_while_a_healthy_event_is_rewarmed_pass_after_pass() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let healthy = app.active_event(&admin, 5).await;
    let bad = app.active_event(&admin, 5).await;
    // A row as an older release (or a manual fix) could have left it: a sale that never ends.
    sqlx::query("UPDATE spike_events SET end_at = '9999-12-31 23:59:59' WHERE id = ?")
        .bind(bad)
        .execute(&app.infra.db)
        .await
        .unwrap();
    app.forget_event_keys(bad).await;
    let failures_before = counter("spike_background_failures_total", HOUSEKEEPING);

    for pass in 1..=3 {
        // Redis lost the healthy event's keys (a flush, a failover): the pass warms it again.
        app.forget_event_keys(healthy).await;
        let report = app.housekeep().await;
        assert!(report.failed_steps.is_empty(), "pass {pass}: {report:?}");
        assert_eq!(report.warmed, 1, "pass {pass}: only the healthy event");
        assert_eq!(
            app.ledger(&admin, healthy).await["redis_stock"],
            5,
            "pass {pass}: warm again"
        );
        let skipped = app.services.flash_sale.warmup.unwarmable_events();
        let reason = skipped.get(&bad).expect("the bad event is reported");
        assert!(reason.contains("longer than 31 days"), "{reason}");
        assert!(!skipped.contains_key(&healthy));
    }
    assert!(
        counter("spike_background_failures_total", HOUSEKEEPING) >= failures_before + 3.0,
        "each pass counts the skipped event"
    );

    // Buyers of the healthy event are served; the bad one answers a clear 409, never a 500.
    let (login, _) = app.signed_in_user().await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.buy(&token, healthy).await.status(), 202);
    let (status, error_code, body) = code(app.buy(&token, bad).await).await;
    assert_eq!((status, error_code), (409, Some(10005)), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("longer than 31 days"), "{message}");
    // The admin's warm-up says the same.
    let warmed = app
        .send_authed(
            Method::POST,
            &format!("/api/v1/spike/events/{bad}/warmup"),
            &admin,
            None,
        )
        .await;
    assert_eq!(code(warmed).await.0, 409);
    // Reading it still works: an operator must see it to fix it.
    let shown = envelope(app.get(&format!("/api/v1/spike/events/{bad}")).await).await;
    assert_eq!(shown["data"]["status"], "active");
}

#[tokio::test]
async fn an_event_that_starts_before_the_epoch_is_skipped_until_an_operator_fixes_it() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let broken = app.active_event(&admin, 3).await;
    let healthy = app.active_event(&admin, 3).await;
    // A start a thousand years ago: no release writes it, but a manual fix might (the schema's
    // check only asks for the end to follow the start).
    sqlx::query("UPDATE spike_events SET start_at = '1000-01-01 00:00:00' WHERE id = ?")
        .bind(broken)
        .execute(&app.infra.db)
        .await
        .unwrap();
    app.forget_event_keys(broken).await;
    app.forget_event_keys(healthy).await;
    let report = app.housekeep().await;
    assert!(report.failed_steps.is_empty(), "{report:?}");
    assert_eq!(report.warmed, 1, "{report:?}");
    assert_eq!(app.ledger(&admin, healthy).await["redis_stock"], 3);
    let skipped = app.services.flash_sale.warmup.unwarmable_events();
    assert!(skipped[&broken].contains("before 1970"), "{skipped:?}");
    // Fixed by an operator: the next pass warms it and forgets the report.
    sqlx::query(
        "UPDATE spike_events SET start_at = UTC_TIMESTAMP() - INTERVAL 1 MINUTE WHERE id = ?",
    )
    .bind(broken)
    .execute(&app.infra.db)
    .await
    .unwrap();
    let report = app.housekeep().await;
    assert_eq!(report.warmed, 1, "{report:?}");
    assert!(
        app.services
            .flash_sale
            .warmup
            .unwarmable_events()
            .is_empty()
    );
}

#[tokio::test]
async fn a_task_that_panics_is_started_again_and_readyz_names_it_while_it_is_down() {
    let restarts_before = counter("spike_background_restarts_total", HOUSEKEEPING);
    let app = spawn_app_with(
        TestOptions::default()
            .env("SPIKE_BACKGROUND_FAULT_PANICS", format!("{HOUSEKEEPING}:3"))
            .with_worker(),
    )
    .await;
    let readyz = || async {
        let response = reqwest::get(format!("{}/readyz", app.internal_address))
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    // Three panics in a row: down for 1 + 2 + 4 s of backoff.
    let deadline = Instant::now() + Duration::from_secs(20);
    let down = loop {
        let (status, body) = readyz().await;
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never named the dead task"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let message = down["message"].as_str().unwrap();
    assert!(message.contains(HOUSEKEEPING), "{message}");
    assert_eq!(
        down["data"]["stalled_tasks"][HOUSEKEEPING], "down, restarting",
        "{down}"
    );
    assert_eq!(down["data"]["checks"]["mysql"], "ok", "the stores are fine");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz().await;
        if status == 200 {
            assert_eq!(body["data"]["stalled_tasks"], serde_json::json!({}));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task never came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        counter("spike_background_restarts_total", HOUSEKEEPING) >= restarts_before + 3.0,
        "three restarts counted"
    );
    // Back for good: the live worker's passes warm a cold event again.
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 2).await;
    app.forget_event_keys(event).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.ledger(&admin, event).await["redis_stock"].is_null() {
        assert!(
            Instant::now() < deadline,
            "the worker never re-warmed the event"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_fault_hook_is_refused_outside_dev() {
    let app = spawn_app().await;
    let mut overrides = std::collections::HashMap::new();
    overrides.insert("SPIKE_ENV".to_owned(), "prod".to_owned());
    overrides.insert(
        "SPIKE_BACKGROUND_FAULT_PANICS".to_owned(),
        format!("{HOUSEKEEPING}:1"),
    );
    let error = crate::helpers::test_config(&app.resources, &overrides)
        .expect_err("prod refuses the fault hook")
        .to_string();
    assert!(error.contains("background_fault_panics"), "{error}");
    assert!(error.contains("only allowed with SPIKE_ENV=dev"), "{error}");
}
