//! `GET /metrics`: every family is exported with its HELP text, its counts match what a scenario
//! did, and no label carries an id. Exact counts need a process of their own (the `metrics`
//! recorder is global and every in-process test app shares it), so the scenario runs against a
//! real `spike serve` and `spike worker`.

use std::time::Duration;

use crate::helpers::{TestApp, TestOptions, closed_port, spawn_app, spawn_app_with, wait_for};
use crate::process::{Running, spawn_spike_with, wait_until_healthy};

/// The value of the sample of `name` whose labels include every one of `labels`, summed over the
/// samples that match (a family may carry more labels than the test names).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, number)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let all = labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
        if all {
            *found.get_or_insert(0.0) += number.parse::<f64>().expect("a number");
        }
    }
    found
}

async fn scrape(base: &str) -> String {
    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

fn env_of(app: &TestApp) -> Vec<(&'static str, String)> {
    vec![
        (
            "SPIKE_JWT_SECRET",
            app.config.auth.jwt_secret.expose().to_owned(),
        ),
        ("SPIKE_FLASH_SALE_SCHEDULER_INTERVAL", "200ms".to_owned()),
        ("SPIKE_METRICS_SAMPLE_INTERVAL", "200ms".to_owned()),
    ]
}

#[tokio::test]
async fn metrics_count_exactly_what_a_small_flash_sale_did() {
    // The test app sets up data and mints tokens; the processes under test do the work.
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 3).await;
    let product = app.create_product(&admin, "12.50", 10).await;
    let buyers = app.buyers(5).await;

    let env = env_of(&app);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (api_port, api_internal_port, worker_port) = (
        closed_port().await,
        closed_port().await,
        closed_port().await,
    );
    let api_internal_addr = format!("127.0.0.1:{api_internal_port}");
    let mut api_env = env.clone();
    api_env.push(("SPIKE_INTERNAL_HTTP_ADDR", &api_internal_addr));
    let api = Running::new(spawn_spike_with(
        "serve",
        &app.resources,
        api_port,
        &api_env,
    ));
    let worker_addr = format!("127.0.0.1:{worker_port}");
    let mut worker_env = env.clone();
    worker_env.push(("SPIKE_INTERNAL_HTTP_ADDR", &worker_addr));
    let worker = Running::new(spawn_spike_with(
        "worker",
        &app.resources,
        closed_port().await,
        &worker_env,
    ));
    let (api_base, api_internal, worker_base) = (
        format!("http://127.0.0.1:{api_port}"),
        format!("http://{api_internal_addr}"),
        format!("http://127.0.0.1:{worker_port}"),
    );
    wait_until_healthy(&api_base).await;
    wait_until_healthy(&worker_base).await;
    // Issue 23: the shop's metrics are not on the public port.
    let public = reqwest::get(format!("{api_base}/metrics")).await.unwrap();
    assert_eq!(public.status(), 404, "/metrics on the public port");
    let ready = reqwest::get(format!("{worker_base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "the worker's readiness probe");

    // The scenario: one product read twice (a miss, then a hit), five buyers for three units,
    // one after the other (so each reservation is its own message).
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let read = client
            .get(format!("{api_base}/api/v1/products/{product}"))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
    }
    let mut statuses = Vec::new();
    // The first buyer sends an Idempotency-Key, for the replay at the end.
    let buy = |token: &str, key: Option<&str>| {
        let mut request = client
            .post(format!("{api_base}/api/v1/spike/events/{event}/orders"))
            .bearer_auth(token);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send()
    };
    for (i, (_, token)) in buyers.iter().enumerate() {
        let bought = buy(token, (i == 0).then_some("metrics-replay"))
            .await
            .unwrap();
        statuses.push(bought.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 409, 409]);

    // The worker makes three orders and the relay publishes their close timers; its gauges
    // follow within a sampling interval.
    wait_for("three orders", Duration::from_secs(20), || async {
        app.orders_in(event).await == 3
    })
    .await;
    let order_queue = format!("{}spike.order.create", app.resources.amqp_prefix);
    let settled = |text: &str| {
        value(
            text,
            "spike_consumer_messages_total",
            &[("queue", "spike.order.create"), ("outcome", "processed")],
        ) == Some(3.0)
            && value(text, "spike_queue_depth", &[("queue", &order_queue)]) == Some(0.0)
            && value(text, "spike_outbox_backlog", &[]) == Some(0.0)
            && value(
                text,
                "spike_reconciler_drift",
                &[("event_id", &event.to_string())],
            ) == Some(0.0)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut worker_text = scrape(&worker_base).await;
    while !settled(&worker_text) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker's counters and gauges:\n{worker_text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        worker_text = scrape(&worker_base).await;
    }
    let api_text = scrape(&api_internal).await;

    let buy_route = [
        ("route", "/api/v1/spike/events/{id}/orders"),
        ("method", "POST"),
    ];
    let buys = |outcome| value(&api_text, "spike_buy_total", &[("outcome", outcome)]);
    assert_eq!(buys("queued"), Some(3.0), "{api_text}");
    assert_eq!(buys("sold_out"), Some(2.0), "{api_text}");
    let answered = |status| {
        let mut labels = buy_route.to_vec();
        labels.push(("status", status));
        value(&api_text, "spike_http_requests_total", &labels)
    };
    assert_eq!(answered("202"), Some(3.0));
    assert_eq!(answered("409"), Some(2.0));
    assert_eq!(
        value(
            &api_text,
            "spike_http_request_duration_seconds_count",
            &buy_route
        ),
        Some(5.0)
    );
    assert_eq!(
        value(
            &api_text,
            "spike_http_requests_total",
            &[("route", "/api/v1/products/{id}"), ("status", "200")]
        ),
        Some(2.0)
    );
    let cache = |result| {
        value(
            &api_text,
            "spike_cache_requests_total",
            &[("cache", "product"), ("result", result)],
        )
    };
    assert_eq!(cache("miss"), Some(1.0), "{api_text}");
    assert_eq!(cache("hit"), Some(1.0), "{api_text}");
    assert_eq!(value(&api_text, "spike_cache_loads_total", &[]), Some(1.0));
    // Each of the three reservations went out as its own confirmed message.
    assert_eq!(
        value(
            &api_text,
            "spike_amqp_publishes_total",
            &[("result", "confirmed")]
        ),
        Some(3.0)
    );
    assert!(value(&api_text, "spike_db_pool_max_connections", &[]).is_some_and(|n| n > 0.0));
    assert!(value(&api_text, "spike_db_pool_connections", &[("state", "open")]).is_some());
    assert!(
        value(
            &api_text,
            "spike_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ) == Some(1.0),
        "{api_text}"
    );

    // The worker: its own counters, the outbox gauges, no retry or dead letter.
    assert_eq!(
        value(
            &worker_text,
            "spike_consumer_messages_total",
            &[("queue", "spike.order.create"), ("outcome", "retried")]
        ),
        Some(0.0),
        "started at zero, never retried"
    );
    assert_eq!(value(&worker_text, "spike_outbox_backlog", &[]), Some(0.0));
    assert_eq!(
        value(&worker_text, "spike_outbox_oldest_age_seconds", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &worker_text,
            "spike_http_requests_total",
            &[("route", "/readyz"), ("status", "200")]
        ),
        Some(1.0),
        "the worker counts its probe requests too"
    );

    // Every attempt is counted once: a replayed retry is not a second queued buy.
    let retry = buy(&buyers[0].1, Some("metrics-replay")).await.unwrap();
    assert_eq!(retry.status(), 202);
    let api_text = scrape(&api_internal).await;
    let buys = |outcome| value(&api_text, "spike_buy_total", &[("outcome", outcome)]);
    assert_eq!(buys("replayed"), Some(1.0), "{api_text}");
    assert_eq!(buys("queued"), Some(3.0), "{api_text}");
    assert_eq!(buys("error"), Some(0.0), "exported from zero: {api_text}");

    // Every family says what it is.
    for family in [
        "spike_http_requests_total",
        "spike_http_request_duration_seconds",
        "spike_buy_total",
        "spike_cache_requests_total",
        "spike_cache_loads_total",
        "spike_amqp_publishes_total",
        "spike_db_pool_connections",
        "spike_db_pool_max_connections",
        "spike_build_info",
    ] {
        assert!(
            api_text.contains(&format!("# HELP {family} ")),
            "HELP for {family}"
        );
    }
    for family in [
        "spike_consumer_messages_total",
        "spike_queue_depth",
        "spike_outbox_backlog",
        "spike_outbox_oldest_age_seconds",
        "spike_reconciler_drift",
    ] {
        assert!(
            worker_text.contains(&format!("# HELP {family} ")),
            "HELP for {family}"
        );
    }

    // The dashboard and the alert rules ask only for families the processes export.
    let exported: Vec<&str> = api_text
        .lines()
        .chain(worker_text.lines())
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    for file in [
        "deploy/grafana/dashboards/spike.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let asked = metric_names_in(&text);
        assert!(asked.len() >= 5, "{file} asks for {asked:?}");
        for name in asked {
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|family| exported.contains(family))
                .unwrap_or(&name);
            assert!(
                exported.contains(&family),
                "{file} queries {name}, which /metrics does not export"
            );
        }
    }

    assert!(api.terminate().await.success());
    assert!(worker.terminate().await.success());
}

/// Every `spike_…` metric name a query text mentions.
fn metric_names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("spike_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // `spike_` inside a longer word (a job named spike-api is not a metric) is skipped.
        let preceded_by_word = rest[..start]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !preceded_by_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn route_labels_are_templates_never_ids() {
    let app = spawn_app_with(TestOptions::default()).await;
    let (login, _) = app.signed_in_user().await;
    let token = login["access_token"].as_str().unwrap();
    // Ids and junk in paths: a real order id shape, an unknown product, paths no route matches.
    let unknown_order = app.get_authed("/api/v1/orders/987654321", token).await;
    assert_eq!(unknown_order.status(), 404);
    app.get("/api/v1/products/876543219").await;
    app.get("/api/v1/no-such-route/765432198").await;
    app.get("/wp-admin/654321987.php").await;

    let public = app.get("/metrics").await;
    assert_eq!(
        public.status(),
        404,
        "/metrics is on the internal listener only"
    );
    let text = reqwest::get(format!("{}/metrics", app.internal_address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for id in ["987654321", "876543219", "765432198", "654321987"] {
        assert!(!text.contains(id), "{id} became a label:\n{text}");
    }
    assert!(
        value(
            &text,
            "spike_http_requests_total",
            &[("route", "/api/v1/orders/{id}")]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        value(
            &text,
            "spike_http_requests_total",
            &[("route", "unmatched")]
        )
        .is_some(),
        "{text}"
    );
    // Every route label is a template of the router or `unmatched`: no raw path slipped in.
    for line in text
        .lines()
        .filter(|l| l.starts_with("spike_http_requests_total{"))
    {
        let route = line
            .split("route=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a route label");
        let digits = route.replacen("/api/v1", "", 1);
        assert!(
            route == "unmatched" || !digits.chars().any(|c| c.is_ascii_digit()),
            "{route}"
        );
    }
}
