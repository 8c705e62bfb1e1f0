//! A Redis Cluster master killed mid-sale, its replica promoted (`scripts/redis-cluster.sh
//! --replicas 1`, a cluster of the test's own): buyers meanwhile are told `503` and try again,
//! the sale goes on on the promoted replica, and every invariant holds (docs/reliability.md).

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use spike::repo::redis::flash_sale::EventKeys;

use crate::helpers::{Script, ScriptedService, TestOptions, spawn_app_with, wait_for};

const PORTS: [u16; 6] = [7120, 7121, 7122, 7123, 7124, 7125];
/// How long a silent node takes to count as failed (the script's default is 5 s).
const NODE_TIMEOUT_MS: &str = "2000";

/// The test's own cluster of three masters and three replicas.
struct ReplicatedCluster;

impl ReplicatedCluster {
    fn script() -> Script {
        Script::new(
            "redis-cluster.sh",
            &[
                (
                    "REDIS_CLUSTER_PORTS",
                    PORTS.map(|port| port.to_string()).join(" "),
                ),
                ("REDIS_CLUSTER_NODE_TIMEOUT", NODE_TIMEOUT_MS.to_owned()),
            ],
        )
    }

    fn seeds() -> String {
        PORTS
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .join(",")
    }

    /// The node (1-based, as the script counts) that is master of `key`'s slot now.
    fn master_of(key: &str) -> usize {
        let cli = |args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-p", &PORTS[0].to_string()])
                .args(args)
                .output()
                .expect("redis-cli");
            String::from_utf8(out.stdout).expect("text")
        };
        let slot: u16 = cli(&["cluster", "keyslot", key]).trim().parse().unwrap();
        for line in cli(&["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(low), Ok(high)) if (low..=high).contains(&slot))
            });
            if serves {
                let port: u16 = fields[1].split([':', '@']).nth(1).unwrap().parse().unwrap();
                return PORTS.iter().position(|&p| p == port).unwrap() + 1;
            }
        }
        panic!("no master serves slot {slot}");
    }
}

#[tokio::test]
async fn a_master_killed_mid_sale_fails_over_and_every_invariant_holds() {
    let cluster =
        ScriptedService::start(ReplicatedCluster::script(), &["start", "--replicas", "1"]);
    let app = spawn_app_with(
        TestOptions::default()
            .with_worker()
            .env("SPIKE_REDIS_MODE", "cluster")
            .env("SPIKE_REDIS_URL", ReplicatedCluster::seeds())
            .env("SPIKE_FLASH_SALE_RECONCILE_AFTER", "1s")
            .env("SPIKE_FLASH_SALE_SCHEDULER_INTERVAL", "200ms"),
    )
    .await;
    let admin = app.admin_token().await;
    // A unit for everyone: the sale is still on when the master dies, and every buyer who
    // keeps trying must get one.
    let event = app.active_event(&admin, 300).await;
    let people = app.buyers(300).await;
    let stock_key = EventKeys::new(&app.config.redis.prefix, event).stock();
    let victim = ReplicatedCluster::master_of(&stock_key);

    // Buyers arrive over three seconds; a second in, the event's master dies.
    let victim = victim.to_string();
    let (attempts, killed_at) = app
        .burst_through(&people, event, &cluster.script, &["kill", &victim])
        .await;

    let accepted: HashSet<u64> = people
        .iter()
        .zip(&attempts)
        .filter(|(_, attempts)| attempts.accepted())
        .map(|((id, _), _)| *id)
        .collect();
    let refused_meanwhile: u32 = attempts.iter().map(|a| a.unavailable).sum();
    let back_after = attempts
        .iter()
        .filter_map(|a| a.accepted_at)
        .filter(|at| *at > killed_at)
        .min()
        .map(|at| at - killed_at);
    eprintln!(
        "failover: {} accepted, {refused_meanwhile} answers 503 while the master was away, the first 202 {back_after:?} after it stopped answering",
        accepted.len()
    );
    assert!(refused_meanwhile > 0, "the kill fell inside the sale");
    assert!(back_after.is_some(), "the sale went on after the failover");

    // Every 202 becomes an order, or (a reservation the failover lost, sold again) a `failed`
    // result; no order without a 202, no unit twice; the ledger balances once the reconciler
    // has looked.
    wait_for(
        "every reservation settled",
        Duration::from_secs(30),
        || async { app.ledger(&admin, event).await["pending_reservations"] == 0 },
    )
    .await;
    let owners = app.owners_in(event).await;
    assert!(owners.is_subset(&accepted), "an order nobody was promised");
    assert!(owners.len() <= 300, "oversold: {}", owners.len());
    for ((id, token), attempts) in people.iter().zip(&attempts) {
        if attempts.accepted() && !owners.contains(id) {
            let result = app.result_of(token, event).await;
            assert_eq!(result["status"], "failed", "buyer {id}: {result}");
        }
    }
    wait_for("drift 0", Duration::from_secs(30), || async {
        let ledger = app.ledger(&admin, event).await;
        ledger["drift"] == 0 && ledger["pending_reservations"] == 0
    })
    .await;

    // The old master comes back as a replica; the cluster is whole.
    cluster.script.run_blocking(&["revive", &victim]).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
}
