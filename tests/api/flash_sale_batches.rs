//! Group commit (docs/flash-sale.md): the worker turns reservations into orders a batch per
//! transaction and closes unpaid orders a message per batch. Raced, redelivered, poisoned and
//! killed on the real services: exactly one order per winning buyer, no oversell, nothing lost.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use spike::repo::amqp::ORDER_CREATE;
use spike::service::messages::ReservationMessage;

use crate::helpers::{
    CapturedLogs, TestApp, TestOptions, closed_port, code, envelope, spawn_app, spawn_app_with,
    wait_for,
};
use crate::process::{spawn_spike_with, terminate};

/// Every flash-sale order of the event is whole: its row carries its reservation's ticket, it
/// has one line, and exactly one close message names it. Returns how many orders there are.
async fn assert_orders_are_whole(app: &TestApp, event: u64) -> usize {
    let linked: Vec<u64> = sqlx::query_scalar(
        "SELECT o.id FROM spike_orders s JOIN orders o ON o.id = s.order_id AND o.ticket = s.ticket \
         JOIN order_items i ON i.order_id = o.id WHERE s.spike_event_id = ?",
    )
    .bind(event)
    .fetch_all(&app.infra.db)
    .await
    .unwrap();
    let orders = app.orders_in(event).await as usize;
    assert_eq!(linked.len(), orders, "orders without ticket or line");
    let payloads: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE topic = 'order.close.delay'")
            .fetch_all(&app.infra.db)
            .await
            .unwrap();
    let mut closing = Vec::new();
    for payload in &payloads {
        let ids = serde_json::from_str::<Value>(payload).unwrap()["order_ids"].clone();
        closing.extend(
            ids.as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_u64().unwrap()),
        );
    }
    let scheduled: HashSet<u64> = closing.iter().copied().collect();
    assert_eq!(
        scheduled.len(),
        closing.len(),
        "an order with two close messages"
    );
    assert_eq!(
        scheduled,
        linked.iter().copied().collect::<HashSet<u64>>(),
        "every order has its close message"
    );
    assert!(
        payloads.len() <= orders,
        "one close message per batch, not more"
    );
    orders
}

/// Every buyer buys once, 500 requests in flight; each must be queued.
async fn buy_once_each(app: &TestApp, people: &[(u64, String)], event: u64) {
    let statuses: Vec<u16> = futures_util::stream::iter(people)
        .map(|(_, token)| async move { app.buy(token, event).await.status().as_u16() })
        .buffer_unordered(500)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|status| *status == 202),
        "every buyer queued"
    );
}

#[tokio::test]
async fn end_to_end_two_thousand_buyers_racing_twice_for_500_units_get_exactly_500_orders_in_batches()
 {
    let app = spawn_app_with(TestOptions::default().with_worker()).await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 500).await;
    let people = app.buyers(2000).await;
    // Each buyer's two attempts side by side, 500 requests in flight (4,000 connections opened
    // at once would overflow the listen backlog of a test box, not test the sale).
    let attempts = people.iter().flat_map(|(id, token)| {
        [app.buy(token, event), app.buy(token, event)].map(|f| async move { (*id, f.await) })
    });
    let answers: Vec<_> = futures_util::stream::iter(attempts)
        .buffer_unordered(500)
        .collect()
        .await;
    let mut winners = HashSet::new();
    let mut refused = 0;
    for (buyer, response) in answers {
        match code(response).await {
            (202, Some(0), _) => assert!(winners.insert(buyer), "two tickets for {buyer}"),
            (409, Some(50004 | 50005), _) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((winners.len(), refused), (500, 3500));

    wait_for("500 orders", Duration::from_secs(60), || async {
        let orders = app.orders_in(event).await;
        assert!(orders <= 500, "oversold: {orders}");
        orders == 500
    })
    .await;
    assert_eq!(
        app.owners_in(event).await,
        winners,
        "exactly the ticket holders"
    );
    assert_eq!(assert_orders_are_whole(&app, event).await, 500);
    assert_eq!(app.event_stock(event).await, 0);
    wait_for("every outcome settled", Duration::from_secs(10), || async {
        app.ledger(&admin, event).await["drift"] == 0
    })
    .await;
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(ledger["redis_stock"], 0, "{ledger}");
    assert_eq!(ledger["live_orders"], 500, "{ledger}");
    for (_, token) in people
        .iter()
        .filter(|(id, _)| winners.contains(id))
        .take(20)
    {
        assert_eq!(app.result_of(token, event).await["status"], "success");
    }
}

#[tokio::test]
async fn a_batch_with_a_redelivery_and_a_bad_reservation_commits_the_rest_and_dead_letters_the_bad_one()
 {
    // No worker yet: the reservations wait in the queue and the worker's first batch takes them
    // all (the wait gives the broker time to deliver every one).
    let app = spawn_app_with(
        TestOptions::default()
            .env("SPIKE_FLASH_SALE_RETRY_DELAYS", "100ms")
            .env("SPIKE_FLASH_SALE_BATCH_WAIT", "500ms"),
    )
    .await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 10).await;
    let mut people = app.buyers(6).await;
    // A buyer whose order MySQL refuses, whatever the batch (a trigger stands in for a row the
    // database cannot take).
    let (refused, ghost) = people.pop().unwrap();
    app.refuse_orders_of(refused).await;
    let mut tickets = Vec::new();
    for (_, token) in &people {
        let answer = app.buy(token, event).await;
        assert_eq!(answer.status(), 202);
        tickets.push(
            envelope(answer).await["data"]["ticket"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(app.buy(&ghost, event).await.status(), 202);
    // The broker delivers the first buyer's reservation twice.
    let again = ReservationMessage {
        ticket: tickets[0].clone(),
        event_id: event,
        user_id: people[0].0,
        reserved_at_ms: 0,
        request_id: None,
    };
    app.infra
        .amqp
        .publish(
            &app.topology().exchange(),
            ORDER_CREATE,
            &serde_json::to_vec(&again).unwrap(),
            None,
        )
        .await
        .unwrap();
    app.expect_queue_len(&app.topology().queue(ORDER_CREATE), 7)
        .await;

    let (logs, _guard) = CapturedLogs::start(tracing::Level::WARN);
    app.start_worker();
    for (_, token) in &people {
        app.wait_for_success(token, event).await;
    }
    wait_for(
        "the bad reservation to fail",
        Duration::from_secs(15),
        || async { app.result_of(&ghost, event).await["status"] == "failed" },
    )
    .await;
    app.expect_queue_len(&app.topology().dead_queue(), 1).await;
    assert!(
        logs.text().contains("splitting it"),
        "the bad reservation was in a batch with the others"
    );

    assert_eq!(app.orders_in(event).await, 5, "one order per buyer");
    assert_eq!(
        app.owners_in(event).await,
        people.iter().map(|(id, _)| *id).collect::<HashSet<_>>()
    );
    assert_eq!(assert_orders_are_whole(&app, event).await, 5);
    assert_eq!(app.event_stock(event).await, 5);
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(
        ledger["redis_stock"], 5,
        "the bad one's unit is back: {ledger}"
    );
    assert_eq!(ledger["drift"], 0, "{ledger}");
}

#[tokio::test]
async fn a_worker_killed_twice_mid_batch_loses_and_duplicates_nothing() {
    let app = spawn_app().await; // the API only: the worker is a real process, killed below
    let admin = app.admin_token().await;
    let total = 3000;
    let event = app.active_event(&admin, total).await;
    let people = app.buyers(total as usize).await;
    buy_once_each(&app, &people, event).await;

    // Small batches, so the kill lands between commits with many batches still to go.
    let env = [
        ("SPIKE_FLASH_SALE_BATCH_MAX", "10"),
        ("SPIKE_FLASH_SALE_BATCH_WAIT", "1ms"),
    ];
    // Killed twice: the second worker picks up the first one's unacknowledged batches, and is
    // killed in turn.
    let mut kills = Vec::new();
    for kill in 1..=2 {
        let mut worker = spawn_spike_with("worker", &app.resources, closed_port().await, &env);
        let before = app.orders_in(event).await;
        wait_for(
            "the worker's first batches",
            Duration::from_secs(60),
            || async { app.orders_in(event).await >= before + 100 },
        )
        .await;
        worker.kill().expect("SIGKILL the worker");
        worker.wait().expect("the killed worker is reaped");
        let at_kill = app.orders_in(event).await;
        assert!(
            at_kill < i64::from(total),
            "the worker finished before kill {kill} ({at_kill} orders)"
        );
        kills.push(at_kill);
    }

    let worker = spawn_spike_with("worker", &app.resources, closed_port().await, &env);
    wait_for(
        "every reservation's order",
        Duration::from_secs(120),
        || async {
            let orders = app.orders_in(event).await;
            assert!(orders <= i64::from(total), "oversold: {orders}");
            orders == i64::from(total)
        },
    )
    .await;
    assert_eq!(
        app.owners_in(event).await,
        people.iter().map(|(id, _)| *id).collect::<HashSet<_>>(),
        "every buyer exactly once"
    );
    assert_eq!(assert_orders_are_whole(&app, event).await, total as usize);
    let orphans: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders o LEFT JOIN spike_orders s ON s.order_id = o.id \
         WHERE o.kind = 'spike' AND s.id IS NULL",
    )
    .fetch_one(&app.infra.db)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "an order without its link");
    assert_eq!(app.event_stock(event).await, 0);
    wait_for("every outcome settled", Duration::from_secs(20), || async {
        app.ledger(&admin, event).await["drift"] == 0
    })
    .await;
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(ledger["redis_stock"], 0, "{ledger}");
    assert_eq!(ledger["live_orders"], i64::from(total), "{ledger}");
    assert!(terminate(worker).await.success());
    eprintln!("killed the worker at {kills:?} of {total} orders");
}

#[tokio::test]
async fn two_thousand_unpaid_orders_close_at_their_deadline_and_every_unit_sells_again() {
    let app = spawn_app_with(
        TestOptions::default()
            .with_worker()
            .env("SPIKE_ORDER_PAY_TIMEOUT", "2s")
            .env("SPIKE_OUTBOX_POLL_INTERVAL", "100ms"),
    )
    .await;
    let admin = app.admin_token().await;
    let total = 2000;
    let event = app.active_event(&admin, total).await;
    let people = app.buyers(total as usize + 1).await;
    let (latecomer, people) = people.split_last().unwrap();
    buy_once_each(&app, people, event).await;

    let closed = || async {
        let closed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM spike_orders s JOIN orders o ON o.id = s.order_id \
             WHERE s.spike_event_id = ? AND o.status = 'closed'",
        )
        .bind(event)
        .fetch_one(&app.infra.db)
        .await
        .unwrap();
        closed
    };
    wait_for(
        "every unpaid order closed",
        Duration::from_secs(120),
        || async { closed().await == i64::from(total) },
    )
    .await;
    assert_eq!(app.orders_in(event).await, i64::from(total));
    assert_eq!(
        app.event_stock(event).await,
        total,
        "every unit back in MySQL"
    );
    wait_for(
        "every unit back in Redis",
        Duration::from_secs(10),
        || async { app.ledger(&admin, event).await["redis_stock"] == i64::from(total) },
    )
    .await;

    let (status, code_, _) = code(app.buy(&latecomer.1, event).await).await;
    assert_eq!(
        (status, code_),
        (202, Some(0)),
        "a returned unit sells again"
    );
    app.wait_for_success(&latecomer.1, event).await;
    let (status, code_, _) = code(app.buy(&people[0].1, event).await).await;
    assert_eq!((status, code_), (409, Some(50005)), "one chance per buyer");
}

#[tokio::test]
async fn a_publish_group_the_broker_refuses_undoes_exactly_its_own_reservations() {
    // The queue takes one message; the groups after it are nacked (reject-publish).
    let app = spawn_app_with(
        TestOptions::default()
            .env("SPIKE_FLASH_SALE_QUEUE_MAX_LENGTH", "1")
            .env("SPIKE_FLASH_SALE_PUBLISH_GROUPS_IN_FLIGHT", "1"),
    )
    .await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 50).await;
    let people = app.buyers(31).await;
    let (first, rest) = people.split_first().unwrap();
    assert_eq!(app.buy(&first.1, event).await.status(), 202);

    // Thirty buyers at once: they share a few groups, each refused as a whole.
    let shared = &app;
    let answers: Vec<_> = futures_util::stream::iter(rest)
        .map(|(_, token)| async move { code(shared.buy(token, event).await).await })
        .buffer_unordered(30)
        .collect()
        .await;
    for (status, code_, _) in &answers {
        assert_eq!((*status, *code_), (503, Some(10008)));
    }
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(
        ledger["redis_stock"], 49,
        "every refused unit is back: {ledger}"
    );
    assert_eq!(
        ledger["pending_reservations"], 1,
        "the queued one stays: {ledger}"
    );
    assert_eq!(
        ledger["redis_buyers"], 1,
        "refused buyers are not marked: {ledger}"
    );
    for (_, token) in rest.iter().take(5) {
        assert_eq!(app.result_of(token, event).await["status"], "none");
    }

    // Once the queue drains, the refused buyers buy again.
    app.start_worker();
    app.wait_for_success(&first.1, event).await;
    let (status, code_, _) = code(app.buy(&rest[0].1, event).await).await;
    assert_eq!((status, code_), (202, Some(0)));
    app.wait_for_success(&rest[0].1, event).await;
}
