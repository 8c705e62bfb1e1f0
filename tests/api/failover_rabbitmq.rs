//! A RabbitMQ node killed mid-burst on a 3-node cluster with quorum queues
//! (`scripts/rabbitmq-cluster.sh`, a cluster of the test's own): the app's connection moves to
//! the next node of `SPIKE_AMQP_URL`, publisher confirms decide every answer, and nothing is
//! lost or held (docs/reliability.md).

use std::collections::HashSet;
use std::time::Duration;

use crate::helpers::{Script, ScriptedService, TestOptions, spawn_app_with, wait_for};

/// Ports base + 1..3 (AMQP), + 10001..3 (management), + 20001..3 (distribution).
const BASE: u16 = 5690;

/// The test's own cluster.
struct BrokerCluster;

impl BrokerCluster {
    fn script() -> Script {
        Script::new(
            "rabbitmq-cluster.sh",
            &[("RABBITMQ_CLUSTER_BASE_PORT", BASE.to_string())],
        )
    }

    fn urls() -> String {
        (1..=3)
            .map(|n| format!("amqp://guest:guest@127.0.0.1:{}/%2f", BASE + n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Replicas of `queue` online, as node 2's management API sees them.
    async fn online_replicas(client: &reqwest::Client, queue: &str) -> Option<usize> {
        let url = format!("http://127.0.0.1:{}/api/queues/%2F/{queue}", BASE + 10_002);
        let queue: serde_json::Value = client
            .get(url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(queue["online"].as_array()?.len())
    }
}

#[tokio::test]
async fn a_broker_node_killed_mid_burst_loses_nothing_and_its_queues_recover() {
    let cluster = ScriptedService::start(BrokerCluster::script(), &["start"]);
    let app = spawn_app_with(
        TestOptions::default()
            .with_worker()
            .env("SPIKE_AMQP_URL", BrokerCluster::urls())
            .env("SPIKE_AMQP_QUEUE_TYPE", "quorum"),
    )
    .await;
    let admin = app.admin_token().await;
    let event = app.active_event(&admin, 300).await;
    let people = app.buyers(300).await;

    // Buyers arrive over three seconds; a second in, the node the app is connected to (the
    // first of the list) dies.
    let (answers, _) = app
        .burst_through(&people, event, &cluster.script, &["kill", "1"])
        .await;
    let accepted: HashSet<u64> = people
        .iter()
        .zip(&answers)
        .filter(|(_, attempts)| attempts.accepted())
        .map(|((id, _), _)| *id)
        .collect();
    let unavailable: u32 = answers.iter().map(|attempts| attempts.unavailable).sum();
    eprintln!(
        "broker failover: {} accepted, {unavailable} answers 503",
        accepted.len()
    );
    assert_eq!(accepted.len(), 300, "every buyer got a unit in the end");

    // Every 202 became an order, every 503 held nothing, the ledger balances.
    wait_for("every order made", Duration::from_secs(60), || async {
        app.orders_in(event).await == 300
    })
    .await;
    assert_eq!(app.owners_in(event).await, accepted);
    app.wait_until_settled(&admin, event).await;
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(ledger["drift"], 0, "{ledger}");
    assert_eq!(ledger["redis_buyers"], 300, "{ledger}");

    // The node comes back and its queue replicas with it.
    cluster.script.run_blocking(&["revive", "1"]).await;
    let order_queue = app.topology().queue(spike::repo::amqp::ORDER_CREATE);
    wait_for("three replicas online", Duration::from_secs(60), || async {
        BrokerCluster::online_replicas(&app.client, &order_queue).await == Some(3)
    })
    .await;
}
