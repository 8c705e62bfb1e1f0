//! A Redis Cluster master killed mid-sale, its replica promoted (`scripts/redis-cluster.sh
//! --replicas 1`, a cluster of each test's own): buyers meanwhile are told `503` and try again,
//! the sale goes on on the promoted replica, and every invariant holds — also when the failover
//! lost writes the old master had acknowledged (docs/reliability.md).

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use spike::repo::redis::flash_sale::EventKeys;

use crate::helpers::{Script, ScriptedService, TestApp, TestOptions, spawn_app_with, wait_for};

/// How long a silent node takes to count as failed (the script's default is 5 s).
const NODE_TIMEOUT_MS: &str = "2000";

/// A test's own cluster of three masters and three replicas (masters first), on its own ports:
/// the tests run at once.
struct ReplicatedCluster {
    ports: [u16; 6],
}

/// One line of `cluster nodes`.
struct Node {
    id: String,
    port: u16,
    flags: String,
    master_id: String,
    slots: Vec<String>,
}

impl ReplicatedCluster {
    fn script(&self) -> Script {
        Script::new(
            "redis-cluster.sh",
            &[
                (
                    "REDIS_CLUSTER_PORTS",
                    self.ports.map(|port| port.to_string()).join(" "),
                ),
                ("REDIS_CLUSTER_NODE_TIMEOUT", NODE_TIMEOUT_MS.to_owned()),
            ],
        )
    }

    fn seeds(&self) -> String {
        self.ports
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .join(",")
    }

    /// `redis-cli -p <node N> args…` (N 1-based, as the script counts).
    fn cli(&self, node: usize, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.ports[node - 1].to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8(out.stdout).expect("text")
    }

    /// The cluster's nodes as node N sees them.
    fn nodes(&self, node: usize) -> Vec<Node> {
        self.cli(node, &["cluster", "nodes"])
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                Node {
                    id: fields[0].to_owned(),
                    port: fields[1].split([':', '@']).nth(1).unwrap().parse().unwrap(),
                    flags: fields[2].to_owned(),
                    master_id: fields[3].to_owned(),
                    slots: fields[8..].iter().map(|range| range.to_string()).collect(),
                }
            })
            .collect()
    }

    fn index_of(&self, port: u16) -> usize {
        self.ports.iter().position(|&p| p == port).unwrap() + 1
    }

    /// The node that is master of `key`'s slot now.
    fn master_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .cli(1, &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        for node in self.nodes(1) {
            if !node.flags.contains("master") || node.flags.contains("fail") {
                continue;
            }
            let serves = node.slots.iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(low), Ok(high)) if (low..=high).contains(&slot))
            });
            if serves {
                return self.index_of(node.port);
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// The replica of master node `master`, as the replica itself says (the master's view of
    /// it may lag behind by a gossip round).
    fn replica_of(&self, master: usize) -> usize {
        let port = self.ports[master - 1];
        let master_id = self
            .nodes(master)
            .into_iter()
            .find(|n| n.port == port)
            .expect("itself")
            .id;
        (1..=self.ports.len())
            .find(|&node| {
                self.nodes(node).iter().any(|n| {
                    n.flags.contains("myself")
                        && n.flags.contains("slave")
                        && n.master_id == master_id
                })
            })
            .expect("a replica of the master")
    }

    /// Node N's replication offset (`master_repl_offset` of a master, what a replica applied).
    fn replication_offset(&self, node: usize) -> Option<u64> {
        let info = self.cli(node, &["info", "replication"]);
        info.lines().find_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            matches!(key, "master_repl_offset" | "slave_repl_offset")
                .then(|| value.parse().ok())
                .flatten()
        })
    }

    /// Starts the cluster (stopped when the returned service drops) and an app with a worker on
    /// it whose reconciler looks every 200 ms and republishes after 1 s.
    async fn start_with_app(&self) -> (ScriptedService, TestApp) {
        let service = ScriptedService::start(self.script(), &["start", "--replicas", "1"]);
        let app = spawn_app_with(
            TestOptions::default()
                .with_worker()
                .env("SPIKE_REDIS_MODE", "cluster")
                .env("SPIKE_REDIS_URL", self.seeds())
                .env("SPIKE_FLASH_SALE_RECONCILE_AFTER", "1s")
                .env("SPIKE_FLASH_SALE_SCHEDULER_INTERVAL", "200ms"),
        )
        .await;
        (service, app)
    }

    /// Sends `signal` (`STOP`, `CONT`) to node N's process.
    fn signal(&self, node: usize, signal: &str) {
        let pid_file = format!(
            "{}/target/redis-cluster/{}/redis.pid",
            env!("CARGO_MANIFEST_DIR"),
            self.ports[node - 1]
        );
        let pid = std::fs::read_to_string(&pid_file).expect("the node's pid file");
        let status = Command::new("kill")
            .args([format!("-{signal}").as_str(), pid.trim()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} node {node}");
    }
}

#[tokio::test]
async fn a_master_killed_mid_sale_fails_over_and_every_invariant_holds() {
    let cluster = ReplicatedCluster {
        ports: [7120, 7121, 7122, 7123, 7124, 7125],
    };
    let (service, app) = cluster.start_with_app().await;
    let admin = app.admin_token().await;
    // A unit for everyone: the sale is still on when the master dies, and every buyer who
    // keeps trying must get one.
    let event = app.active_event(&admin, 300).await;
    let people = app.buyers(300).await;
    let stock_key = EventKeys::new(&app.config.redis.prefix, event).stock();
    let victim = cluster.master_of(&stock_key);

    // Buyers arrive over three seconds; a second in, the event's master dies.
    let victim = victim.to_string();
    let (attempts, killed_at) = app
        .burst_through(&people, event, &service.script, &["kill", &victim])
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
    // A buyer told `409 / 50005` on a retry holds a reservation an attempt answered `503` made
    // (its script ran on the master, the answer was lost to the failover): told, not promised.
    let told: HashSet<u64> = people
        .iter()
        .zip(&attempts)
        .filter(|(_, attempts)| attempts.already_holding)
        .map(|((id, _), _)| *id)
        .collect();
    assert!(
        attempts
            .iter()
            .filter(|a| a.already_holding)
            .all(|a| a.unavailable > 0),
        "50005 without an earlier 503"
    );
    let owners = app.owners_in(event).await;
    let unpromised: Vec<&u64> = owners
        .iter()
        .filter(|id| !accepted.contains(id) && !told.contains(id))
        .collect();
    assert!(
        unpromised.is_empty(),
        "orders nobody was promised or told of: {unpromised:?}"
    );
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
    service.script.run_blocking(&["revive", &victim]).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn writes_a_failover_lost_are_repaired_and_nothing_is_oversold() {
    let cluster = ReplicatedCluster {
        ports: [7140, 7141, 7142, 7143, 7144, 7145],
    };
    let (service, app) = cluster.start_with_app().await;
    let admin = app.admin_token().await;
    const STOCK: u64 = 40;
    let event = app.active_event(&admin, STOCK as u32).await;
    let people = app.buyers(45).await;
    let (first, rest) = people.split_at(10);
    let (second, late) = rest.split_at(30);
    let stock_key = EventKeys::new(&app.config.redis.prefix, event).stock();
    let victim = cluster.master_of(&stock_key);
    let replica = cluster.replica_of(victim);

    // Once the replica has everything so far (the event's keys), it stops reading and its master
    // drops the link: what the master acknowledges from now on exists nowhere else (replication
    // is asynchronous).
    wait_for("the replica caught up", Duration::from_secs(10), || async {
        let master = cluster.replication_offset(victim);
        master.is_some() && master == cluster.replication_offset(replica)
    })
    .await;
    cluster.signal(replica, "STOP");
    let dropped = cluster.cli(victim, &["client", "kill", "type", "replica"]);
    assert_eq!(
        dropped.trim(),
        "1",
        "the master had one replica link to drop"
    );
    let mut orders = Vec::new();
    for (_, token) in first {
        assert_eq!(app.buy(token, event).await.status(), 202);
    }
    for (_, token) in first {
        orders.push(app.wait_for_success(token, event).await);
    }

    // The master dies with those ten reservations; the replica wakes and takes over.
    service
        .script
        .run_blocking(&["kill", &victim.to_string()])
        .await;
    cluster.signal(replica, "CONT");
    // Promoted, the cluster whole again, and the slot served (a node may answer a moment after
    // its promotion with a redirection).
    wait_for("the replica took over", Duration::from_secs(30), || async {
        cluster.cli(replica, &["role"]).starts_with("master")
            && cluster
                .cli(replica, &["cluster", "info"])
                .contains("cluster_state:ok")
            && cluster
                .cli(replica, &["get", &stock_key])
                .trim()
                .parse::<u64>()
                .is_ok()
    })
    .await;
    let stock: u64 = cluster
        .cli(replica, &["get", &stock_key])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        stock, STOCK,
        "the promoted replica never saw the ten reservations (else nothing was lost)"
    );

    // Half of the forgotten buyers buy again: each is accepted (the replica does not know them)
    // and gets the order they already have, never a second one.
    for ((_, token), order) in first[..5].iter().zip(&orders) {
        assert!(app.buy_until_answered(token, event).await.accepted());
        assert_eq!(app.wait_for_success(token, event).await, *order);
    }
    // Thirty more buyers take the thirty units MySQL has left. Redis, five units too many,
    // would take five more.
    for (_, token) in second {
        assert!(app.buy_until_answered(token, event).await.accepted());
        app.wait_for_success(token, event).await;
    }
    // Once the queue is quiet the reconciler takes the five phantom units away.
    wait_for(
        "the phantom units taken away",
        Duration::from_secs(30),
        || async {
            let ledger = app.ledger(&admin, event).await;
            ledger["drift"] == 0 && ledger["redis_stock"] == 0
        },
    )
    .await;
    for (_, token) in late {
        assert_eq!(app.buy(token, event).await.status(), 409, "sold out");
    }
    let ledger = app.ledger(&admin, event).await;
    assert_eq!(ledger["live_orders"], STOCK, "{ledger}");
    assert_eq!(ledger["mysql_drift"], 0, "{ledger}");
    assert_eq!(
        app.owners_in(event).await.len() as u64,
        STOCK,
        "one order each"
    );

    service
        .script
        .run_blocking(&["revive", &victim.to_string()])
        .await;
}
