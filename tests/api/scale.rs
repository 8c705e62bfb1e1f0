//! Many processes on one data set: two `spike serve` replicas and two `spike worker`s (each
//! with its warm-up scheduler, reconciler and outbox relay) share one MariaDB, a 3-master Redis
//! Cluster (`scripts/redis-cluster.sh`) and RabbitMQ. A sale spread over both APIs, with one
//! worker SIGKILLed in the middle, ends with exactly the stock sold, each winner once, and the
//! ledger balanced; a unit given back reaches buyers on every replica at once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::helpers::{TestApp, TestOptions, closed_port, code, spawn_app_with, wait_for};
use crate::process::{Running, spawn_spike_with, wait_until_healthy};

const UNITS: u32 = 300;
const BUYERS: usize = 2_000;

#[tokio::test]
async fn two_apis_and_two_workers_sell_exactly_the_stock_with_a_worker_killed_midway() {
    // The test app sets up the data and serves the admin's ledger; it runs no worker.
    let app = spawn_app_with(TestOptions::default().on_redis_cluster()).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, UNITS).await;
    let people = app.buyers(BUYERS).await;

    let secret = app.config.auth.jwt_secret.expose().to_owned();
    let env = [
        ("SPIKE_JWT_SECRET", secret.as_str()),
        // Each reconciler and warm-up scheduler runs often, so the two workers' passes overlap,
        // and a reservation still queued after 1 s counts as stale: both reconcilers may
        // republish the same ones, which must still make one order each.
        ("SPIKE_FLASH_SALE_SCHEDULER_INTERVAL", "100ms"),
        ("SPIKE_FLASH_SALE_RECONCILE_AFTER", "1s"),
        // One reservation per transaction: the workers take a while, so the kill lands mid-drain.
        ("SPIKE_FLASH_SALE_BATCH_MAX", "1"),
        ("SPIKE_FLASH_SALE_USER_RATE_LIMIT", "100/1s"),
        ("SPIKE_FLASH_SALE_EVENT_RATE_LIMIT", "1000000/1s"),
    ];
    let (apis, bases) = start_apis(&app, &env).await;
    let mut workers: Vec<Running> = (0..2)
        .map(|_| Running::new(spawn_spike_with("worker", &app.resources, 0, &env)))
        .collect();

    // Every buyer tries twice, once on each API, 64 requests in flight.
    let client = reqwest::Client::new();
    let attempts: Vec<(u64, String, String)> = people
        .iter()
        .enumerate()
        .flat_map(|(i, (id, token))| {
            [
                (*id, bases[i % 2].clone(), token.clone()),
                (*id, bases[(i + 1) % 2].clone(), token.clone()),
            ]
        })
        .collect();
    let sale = tokio::spawn(async move {
        futures_util::stream::iter(attempts)
            .map(|(id, base, token)| {
                let request = client
                    .post(format!("{base}/api/v1/spike/events/{event}/orders"))
                    .bearer_auth(token)
                    .send();
                async move { (id, request.await.expect("answered").status().as_u16()) }
            })
            .buffer_unordered(64)
            .collect::<Vec<(u64, u16)>>()
            .await
    });
    // One worker dies without a word once orders are being made: its unacknowledged batches go
    // back to the queue and the other worker makes their orders.
    wait_for(
        "the workers' first orders",
        Duration::from_secs(60),
        || async { app.orders_in(event).await >= 20 },
    )
    .await;
    drop(workers.remove(0));
    let at_kill = app.orders_in(event).await;
    assert!(
        at_kill < i64::from(UNITS),
        "the kill came after the last order ({at_kill})"
    );
    let answers = sale.await.expect("the sale ran");
    eprintln!(
        "scale: {} answers, {at_kill} of {UNITS} orders made when a worker was killed",
        answers.len()
    );

    let winners: Vec<u64> = answers
        .iter()
        .filter(|(_, status)| *status == 202)
        .map(|(id, _)| *id)
        .collect();
    let unexpected: Vec<_> = answers
        .iter()
        .filter(|(_, status)| ![202, 409].contains(status))
        .collect();
    assert!(unexpected.is_empty(), "only 202 and 409: {unexpected:?}");
    assert_eq!(
        winners.len(),
        UNITS as usize,
        "exactly the stock was reserved"
    );
    let winners: HashSet<u64> = winners.into_iter().collect();
    assert_eq!(winners.len(), UNITS as usize, "no buyer reserved twice");

    wait_for(
        "the surviving worker to make every order",
        Duration::from_secs(120),
        || async {
            let orders = app.orders_in(event).await;
            assert!(orders <= i64::from(UNITS), "oversold: {orders}");
            orders == i64::from(UNITS)
        },
    )
    .await;
    app.wait_until_settled(&admin, event).await;
    assert_eq!(
        app.owners_in(event).await,
        winners,
        "the orders are the winners', one each"
    );
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(ledger["drift"], 0, "{ledger}");
    assert_eq!(ledger["redis_stock"], 0, "{ledger}");
    assert_eq!(app.event_stock(event).await, 0, "MySQL's stock");
    app.expect_queue_len(&app.topology().dead_queue(), 0).await;

    // A few more passes of the surviving reconciler and warm-up change nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.orders_in(event).await, i64::from(UNITS));
    assert_eq!(app.ledger(&admin, event).await["redis_stock"], 0);

    for api in apis {
        assert!(api.terminate().await.success());
    }
    for worker in workers {
        assert!(worker.terminate().await.success());
    }
}

/// Starts two `spike serve` replicas on the app's resources; returns them with their base URLs
/// once both answer.
async fn start_apis(app: &TestApp, env: &[(&str, &str)]) -> (Vec<Running>, Vec<String>) {
    let mut apis = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let port = closed_port().await;
        apis.push(Running::new(spawn_spike_with(
            "serve",
            &app.resources,
            port,
            env,
        )));
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    for base in &bases {
        wait_until_healthy(base).await;
    }
    (apis, bases)
}

#[tokio::test]
async fn units_given_back_clear_the_sold_out_flag_of_every_replica() {
    // The test app runs the worker and takes the cancellations; buyers come to two replicas.
    let app = spawn_app_with(TestOptions::default().on_redis_cluster().with_worker()).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 2).await;
    let people = app.buyers(4).await;
    let secret = app.config.auth.jwt_secret.expose().to_owned();
    let env = [
        ("SPIKE_JWT_SECRET", secret.as_str()),
        // The buyers below retry every 20 ms until they get a unit.
        ("SPIKE_FLASH_SALE_USER_RATE_LIMIT", "100/1s"),
    ];
    let (apis, bases) = start_apis(&app, &env).await;
    let client = reqwest::Client::new();
    let buy_on = |base: &str, token: &str| {
        client
            .post(format!("{base}/api/v1/spike/events/{event}/orders"))
            .bearer_auth(token)
            .send()
    };

    // Two holders take both units; then a buyer on each replica hears "sold out" from Redis,
    // which sets that replica's flag: until it expires, the replica answers without Redis.
    let mut holders = Vec::new();
    for (_, token) in &people[..2] {
        assert_eq!(buy_on(&bases[0], token).await.unwrap().status(), 202);
        let order = app.wait_for_success(token, event).await;
        holders.push((token.clone(), order));
    }
    let flagged = Instant::now();
    for (base, (_, token)) in bases.iter().zip(&people[2..]) {
        let answer = code(buy_on(base, token).await.unwrap()).await;
        assert_eq!((answer.0, answer.1), (409, Some(50004)), "{base}");
    }

    // Both holders cancel their unpaid orders on the test app: the units go back to Redis and
    // are announced on the cluster's bus.
    for (token, order) in &holders {
        let cancelled = app
            .send_authed(
                reqwest::Method::POST,
                &format!("/api/v1/orders/{order}/cancel"),
                token,
                None,
            )
            .await;
        assert_eq!(cancelled.status(), 200);
    }

    // Each replica sells a unit well before its own flag would have expired: only the
    // announcement clears a flag that soon.
    let flag_ttl = spike::service::flash_sale::sold_out::FLAG_TTL;
    for (base, (_, token)) in bases.iter().zip(&people[2..]) {
        loop {
            let status = buy_on(base, token).await.unwrap().status();
            if status == 202 {
                break;
            }
            assert_eq!(status, 409, "{base}");
            assert!(
                flagged.elapsed() < flag_ttl,
                "{base} still answers sold out from its flag"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        flagged.elapsed() < flag_ttl,
        "a flag expired by itself first"
    );
    for api in apis {
        assert!(api.terminate().await.success());
    }
}
