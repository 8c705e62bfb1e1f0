//! The waiting line (排队, docs/flash-sale.md "The waiting line"): buyers beyond the event's
//! admission rate wait in turn instead of being refused, are admitted head first by the
//! worker(s), fail at once when the event sells out, and learn it from `/result?wait=N`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{TestApp, TestOptions, closed_port, code, envelope, spawn_app_with, wait_for};
use crate::process::{Running, spawn_spike_with, wait_until_healthy};

/// A buyer's standing, held by the server up to `wait` seconds.
async fn result_after(app: &TestApp, base: &str, token: &str, event: u64, wait: u64) -> Value {
    let response = app
        .client
        .get(format!(
            "{base}/api/v1/spike/events/{event}/result?wait={wait}"
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("the result request is answered");
    assert_eq!(response.status(), 200);
    envelope(response).await["data"].clone()
}

/// What one buyer learned by long-polling until the outcome: the outcome and how many
/// result requests it took.
async fn outcome_of(app: &TestApp, token: &str, event: u64) -> (Value, u32) {
    let mut requests = 0;
    loop {
        let standing = result_after(app, &app.address, token, event, 30).await;
        requests += 1;
        if standing["status"] == "success" || standing["status"] == "failed" {
            return (standing, requests);
        }
        assert!(requests < 100, "no outcome after {requests} requests");
    }
}

/// Buys for each token in turn (one after another); the answers' data.
async fn arrive_one_by_one(app: &TestApp, people: &[(u64, String)], event: u64) -> Vec<Value> {
    let mut answers = Vec::new();
    for (_, token) in people {
        let (status, _, body) = code(app.buy(token, event).await).await;
        assert_eq!(
            status, 202,
            "a buyer beyond the admission rate waits: {body}"
        );
        answers.push(body["data"].clone());
    }
    answers
}

/// The positions of the buyers who were told to wait, in arrival order, after those admitted
/// at once (who all arrived first).
fn waiting_positions(answers: &[Value]) -> Vec<u64> {
    let admitted_at_once = answers
        .iter()
        .take_while(|answer| answer["status"] == "queued")
        .count();
    answers[admitted_at_once..]
        .iter()
        .map(|answer| {
            assert_eq!(answer["status"], "waiting", "{answer}");
            assert!(answer["ticket"].is_string(), "{answer}");
            answer["position"]
                .as_u64()
                .expect("a waiting buyer's position")
        })
        .collect()
}

#[tokio::test]
async fn a_crowd_beyond_the_admission_rate_waits_and_the_first_arrivals_win() {
    // On the Redis Cluster: the line, its drain and the announcements stay in the event's slot.
    let app = spawn_app_with(
        TestOptions::default()
            .on_redis_cluster()
            .env("SPIKE_FLASH_SALE_EVENT_RATE_LIMIT", "20/1s"),
    )
    .await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 60).await;
    let people = app.buyers(150).await;

    // The crowd arrives before the worker comes up, so nobody is admitted from the line
    // meanwhile: each arrival stands right behind the one before.
    let answers = arrive_one_by_one(&app, &people, event).await;
    let positions = waiting_positions(&answers);
    let expected: Vec<u64> = (1..=positions.len() as u64).collect();
    assert_eq!(positions, expected, "each arrival joins at the back");
    // The burst of 20, and what refilled before the first buyer had to wait (more on a slow run).
    let admitted_at_once = 150 - positions.len();
    assert!(
        (20..60).contains(&admitted_at_once),
        "{admitted_at_once} admitted at once"
    );
    // Asking again keeps the place and the ticket.
    let again = envelope(app.buy(&people[149].1, event).await).await["data"].clone();
    assert_eq!(again["ticket"], answers[149]["ticket"]);
    assert_eq!(again["position"], answers[149]["position"]);

    app.start_worker();
    let outcomes = futures_util::future::join_all(
        people
            .iter()
            .map(|(_, token)| async { (outcome_of(&app, token, event).await, Instant::now()) }),
    )
    .await;
    let mut requests = 0;
    let mut last_success = None;
    let mut last_failure = None;
    for (arrival, ((outcome, asked), at)) in outcomes.iter().enumerate() {
        requests += asked;
        if arrival < 60 {
            assert_eq!(outcome["status"], "success", "arrival {arrival}: {outcome}");
            last_success = last_success.max(Some(*at));
        } else {
            assert_eq!(outcome["status"], "failed", "arrival {arrival}: {outcome}");
            assert_eq!(
                outcome["reason"], "sold_out",
                "arrival {arrival}: {outcome}"
            );
            last_failure = last_failure.max(Some(*at));
        }
    }
    let average = f64::from(requests) / 150.0;
    assert!(average <= 3.0, "{average} result requests per buyer");
    let (sold_out, failed) = (last_success.unwrap(), last_failure.unwrap());
    assert!(
        failed.saturating_duration_since(sold_out) < Duration::from_secs(5),
        "the line failed within seconds of the sell-out: {:?}",
        failed.saturating_duration_since(sold_out)
    );

    let winners: Vec<u64> = people[..60].iter().map(|(id, _)| *id).collect();
    assert_eq!(app.owners_in(event).await, winners.into_iter().collect());
    app.wait_until_settled(&admin, event).await;
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(ledger["live_orders"], 60, "{ledger}");
    assert_eq!(ledger["redis_stock"], 0, "{ledger}");
    assert_eq!(ledger["drift"], 0, "{ledger}");
}

#[tokio::test]
async fn two_workers_draining_one_line_admit_each_buyer_exactly_once() {
    let app =
        spawn_app_with(TestOptions::default().env("SPIKE_FLASH_SALE_EVENT_RATE_LIMIT", "100/1s"))
            .await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 1_000).await;
    let people = app.buyers(300).await;
    // All at once, so the line is long however slow the run: the burst of 100 goes first.
    let answers = futures_util::future::join_all(
        people
            .iter()
            .map(|(_, token)| async { code(app.buy(token, event).await).await }),
    )
    .await;
    let mut waiting = 0;
    for (status, _, body) in &answers {
        assert_eq!(*status, 202, "{body}");
        waiting += usize::from(body["data"]["status"] == "waiting");
    }
    assert!(waiting >= 100, "{waiting} waiting");

    // Two drainers at once, each until the line is empty.
    let drain_until_empty = |worker: spike::worker::Worker| async move {
        let mut admitted = 0;
        loop {
            let report = worker.drain_lines().await.expect("the line drains");
            admitted += report.admitted;
            if report.still_waiting == 0 {
                return admitted;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (first, second) = tokio::join!(
        drain_until_empty(app.worker()),
        drain_until_empty(app.worker())
    );
    assert_eq!(
        first + second,
        waiting as u64,
        "each waiting buyer admitted once"
    );
    assert!(first > 0 && second > 0, "both drained: {first} + {second}");

    // Each admitted buyer holds exactly one reservation, as a buyer admitted at once does.
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(ledger["pending_reservations"], 300, "{ledger}");
    assert_eq!(ledger["redis_stock"], 700, "{ledger}");
    wait_for("every order made", Duration::from_secs(30), || async {
        app.drain_orders().await;
        app.orders_in(event).await == 300
    })
    .await;
    let everyone: Vec<u64> = people.iter().map(|(id, _)| *id).collect();
    assert_eq!(app.owners_in(event).await, everyone.into_iter().collect());
    app.wait_until_settled(&admin, event).await;
    assert_eq!(app.ledger(&admin, event).await["drift"], 0);
}

#[tokio::test]
async fn a_worker_killed_mid_drain_leaves_the_line_to_the_next() {
    let rate = ("SPIKE_FLASH_SALE_EVENT_RATE_LIMIT", "20/1s");
    let reconcile = ("SPIKE_FLASH_SALE_RECONCILE_AFTER", "1s");
    let app = spawn_app_with(
        TestOptions::default()
            .env(rate.0, rate.1)
            .env(reconcile.0, reconcile.1)
            .env("SPIKE_FLASH_SALE_SCHEDULER_INTERVAL", "200ms"),
    )
    .await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 100).await;
    let people = app.buyers(60).await;
    let answers = arrive_one_by_one(&app, &people, event).await;
    let waiting = waiting_positions(&answers).len();
    assert!(waiting >= 20, "{waiting} waiting");

    // A worker that dies right after admitting its first buyers, before publishing them.
    let port = closed_port().await;
    let mut doomed = spawn_spike_with(
        "worker",
        &app.resources,
        port,
        &[
            rate,
            reconcile,
            ("SPIKE_FLASH_SALE_FAULT_ABORT_AFTER_RESERVE", "true"),
        ],
    );
    let status = tokio::task::spawn_blocking(move || doomed.wait())
        .await
        .unwrap()
        .expect("the worker exits");
    assert!(!status.success(), "it was killed, not stopped: {status}");
    let ledger = app.ledger(&admin, event).await;
    let reserved = 100 - ledger["redis_stock"].as_u64().unwrap() as usize;
    let admitted_then_killed = reserved - (60 - waiting);
    assert!(
        admitted_then_killed > 0 && admitted_then_killed < waiting,
        "the killed worker admitted some, not all: {ledger}"
    );

    // The next worker drains the rest; the reconciler publishes what the killed one admitted.
    app.start_worker();
    for (_, token) in &people {
        let (outcome, _) = outcome_of(&app, token, event).await;
        assert_eq!(outcome["status"], "success", "{outcome}");
    }
    assert_eq!(app.orders_in(event).await, 60);
    app.wait_until_settled(&admin, event).await;
    assert_eq!(app.ledger(&admin, event).await["drift"], 0);
}

/// `spike_result_waiters` of the process whose internal listener is at `internal`.
async fn held_requests(client: &reqwest::Client, internal: &str) -> Option<f64> {
    let text = client
        .get(format!("{internal}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("spike_result_waiters "))
        .and_then(|value| value.trim().parse().ok())
}

/// `spike serve` on the test's resources, with its public and internal addresses.
async fn replica(app: &TestApp, env: &[(&str, &str)]) -> (Running, String, String) {
    let (port, internal_port) = (closed_port().await, closed_port().await);
    let internal_addr = format!("127.0.0.1:{internal_port}");
    let mut env = env.to_vec();
    env.push(("SPIKE_INTERNAL_HTTP_ADDR", &internal_addr));
    let child = Running::new(spawn_spike_with("serve", &app.resources, port, &env));
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&base).await;
    (child, base, format!("http://{internal_addr}"))
}

/// Sends the buyer's `/result?wait=30` to the replica at `base`, which holds nothing yet, and
/// returns once the replica holds it (its `spike_result_waiters`, read at `internal`).
async fn hold_result(
    app: &TestApp,
    (base, internal): (&str, &str),
    token: &str,
    event: u64,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let request = app
        .client
        .get(format!("{base}/api/v1/spike/events/{event}/result?wait=30"))
        .bearer_auth(token)
        .send();
    let request = tokio::spawn(request);
    wait_for(
        "the request to be held",
        Duration::from_secs(10),
        || async { held_requests(&app.client, internal).await == Some(1.0) },
    )
    .await;
    request
}

#[tokio::test]
async fn held_requests_end_cleanly_at_shutdown_and_wake_across_replicas() {
    let rate = ("SPIKE_FLASH_SALE_EVENT_RATE_LIMIT", "1/1m");
    let app = spawn_app_with(TestOptions::default().env(rate.0, rate.1)).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 10).await;
    let people = app.buyers(2).await;
    let (queued, waiting) = (&people[0].1, &people[1].1);
    assert_eq!(
        envelope(app.buy(queued, event).await).await["data"]["status"],
        "queued"
    );
    assert_eq!(
        envelope(app.buy(waiting, event).await).await["data"]["status"],
        "waiting"
    );

    // A replica holding a waiting buyer's request is stopped: the request is answered.
    let (first, base, internal) = replica(&app, &[rate]).await;
    let held = hold_result(&app, (&base, &internal), waiting, event).await;
    let stopped_at = Instant::now();
    assert!(first.terminate().await.success());
    let answer = held.await.unwrap().expect("answered, not cut off");
    assert_eq!(answer.status(), 200);
    let standing = envelope(answer).await["data"].clone();
    assert_eq!(standing["status"], "waiting", "{standing}");
    assert_eq!(standing["position"], 1, "{standing}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(20),
        "answered at shutdown, not at the end of its wait"
    );

    // Its successor holds the admitted buyer's request; the worker here settles the order and
    // the announcement reaches the other process.
    let (_second, base, internal) = replica(&app, &[rate]).await;
    let held = hold_result(&app, (&base, &internal), queued, event).await;
    let settled_at = Instant::now();
    assert_eq!(app.drain_orders().await, 1);
    let answer = held.await.unwrap().expect("answered");
    let standing = envelope(answer).await["data"].clone();
    assert_eq!(standing["status"], "success", "{standing}");
    assert!(standing["order_id"].as_u64().is_some(), "{standing}");
    assert!(
        settled_at.elapsed() < Duration::from_secs(20),
        "woken by the announcement, not by the end of its wait"
    );
}

#[tokio::test]
async fn result_wait_takes_whole_seconds_up_to_thirty() {
    let app = spawn_app_with(TestOptions::default()).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 1).await;
    let (_, token) = app.buyers(1).await.remove(0);
    let mut answers = HashMap::new();
    for query in [
        "wait=31", "wait=-1", "wait=1.5", "wait=", "wait=abc", "wiat=3",
    ] {
        let response = app
            .get_authed(
                &format!("/api/v1/spike/events/{event}/result?{query}"),
                &token,
            )
            .await;
        answers.insert(query, code(response).await);
    }
    for (query, (status, code_, body)) in &answers {
        assert_eq!((*status, *code_), (400, Some(10001)), "{query}: {body}");
    }
    // A buyer with nothing to wait for is answered at once, whatever the wait.
    let asked = Instant::now();
    let standing = result_after(&app, &app.address, &token, event, 30).await;
    assert_eq!(standing["status"], "none");
    assert!(asked.elapsed() < Duration::from_secs(10));
    let (status, _, _) = code(
        app.get_authed("/api/v1/spike/events/999999999/result?wait=0", &token)
            .await,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn beyond_the_bound_of_held_requests_the_answer_comes_at_once() {
    let rate = ("SPIKE_FLASH_SALE_EVENT_RATE_LIMIT", "1/1m");
    let app = spawn_app_with(TestOptions::default().env(rate.0, rate.1)).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 10).await;
    let people = app.buyers(3).await;
    for (_, token) in &people {
        assert_eq!(app.buy(token, event).await.status(), 202);
    }
    let (_replica, base, internal) =
        replica(&app, &[rate, ("SPIKE_FLASH_SALE_RESULT_WAITERS_MAX", "1")]).await;

    // The replica holds one request (a waiting buyer's) ...
    let held = hold_result(&app, (&base, &internal), &people[2].1, event).await;
    // ... so another waiting buyer's is answered at once, while the first is still held.
    let standing = result_after(&app, &base, &people[1].1, event, 30).await;
    assert_eq!(standing["status"], "waiting", "{standing}");
    assert_eq!(standing["position"], 1, "{standing}");
    assert!(!held.is_finished(), "the first request is still held");
    held.abort();
}
