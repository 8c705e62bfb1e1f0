//! spike on a Redis Cluster (three masters, `scripts/redis-cluster.sh`). A cluster refuses a
//! script or a command whose keys lie in several slots (CROSSSLOT), and a pipeline spanning
//! slots: here every key of an event is checked to lie in its hash tag's slot, and every
//! flash-sale script and pipeline runs against the cluster. The whole product path on a cluster
//! is `scale.rs`.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use spike::config::Secret;
use spike::domain::flash_sale::BuyerOutcome;
use spike::repo::redis::RedisConnection;
use spike::repo::redis::announcements::Announcements;
use spike::repo::redis::flash_sale::{
    EventKeys, EventStore, Reservation, ReserveRules, Standing, WarmMode, WarmState,
};

use crate::helpers::{
    Script, ScriptedService, TestOptions, code, envelope, spawn_app_with, wait_for,
};

async fn slot_of(redis: &mut RedisConnection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(redis)
        .await
        .expect("CLUSTER KEYSLOT")
}

fn every_key(keys: &EventKeys) -> Vec<String> {
    vec![
        keys.stock(),
        keys.meta(),
        keys.buyers(),
        keys.reservations(),
        keys.result(7),
        keys.admission(),
        keys.idempotency(7, "a-key"),
    ]
}

#[tokio::test]
async fn every_key_of_an_event_lies_in_the_slot_of_the_event_id() {
    let app = spawn_app_with(TestOptions::default().on_redis_cluster()).await;
    let mut redis = app.infra.redis.clone();
    let mut event_slots = HashSet::new();
    for event_id in [1_u64, 3, 42, 16_384, 987_654_321] {
        let tag_slot = slot_of(&mut redis, &event_id.to_string()).await;
        for key in every_key(&EventKeys::new(&app.config.redis.prefix, event_id)) {
            assert_eq!(
                slot_of(&mut redis, &key).await,
                tag_slot,
                "{key} is not in the slot of its event's hash tag"
            );
        }
        event_slots.insert(tag_slot);
    }
    assert!(event_slots.len() > 1, "events spread over slots");
}

#[tokio::test]
async fn every_flash_sale_script_and_pipeline_runs_on_a_redis_cluster() {
    let app = spawn_app_with(TestOptions::default().on_redis_cluster()).await;
    let store = EventStore::new(app.infra.redis.clone(), app.config.redis.prefix.clone());
    let mut redis = app.infra.redis.clone();
    let (first, second) = (1_u64, 3_u64);
    assert_ne!(
        slot_of(&mut redis, &first.to_string()).await,
        slot_of(&mut redis, &second.to_string()).await,
        "the two events must lie in different slots"
    );
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let state = |free| WarmState {
        free,
        start_ms: now_ms - 1_000,
        end_ms: now_ms + 3_600_000,
        expire_at_ms: now_ms + 7_200_000,
        buyers: &[],
    };
    let admission = app.config.flash_sale.event_rate_limit;

    assert!(store.warm(first, &state(2), WarmMode::Keep).await.unwrap());
    assert!(!store.warm(first, &state(9), WarmMode::Keep).await.unwrap());
    assert!(
        store
            .warm(second, &state(1), WarmMode::Reset)
            .await
            .unwrap()
    );
    assert_eq!(
        store.window(first).await.unwrap(),
        Some((now_ms - 1_000, now_ms + 3_600_000))
    );

    // A key left pending longer than 10 s belongs to a request that is over.
    let rules = ReserveRules {
        admission,
        line_max: 0,
        pending_key_limit: std::time::Duration::from_secs(10),
    };
    let reserve = |event: u64, user: u64, ticket: &'static str, key: Option<&'static str>| {
        let store = &store;
        async move {
            store
                .reserve(event, user, ticket, key, rules)
                .await
                .unwrap()
        }
    };
    let reserved = reserve(first, 10, "t-10", Some("key-10")).await;
    assert!(
        matches!(reserved, Reservation::Reserved { .. }),
        "{reserved:?}"
    );
    // Not yet confirmed: a retry within the limit is told the first request is still running;
    // past the limit the request that set the key is over, and its reservation stands.
    assert_eq!(
        reserve(first, 10, "t-10x", Some("key-10")).await,
        Reservation::InProgress
    );
    assert_eq!(
        store
            .reserve(
                first,
                10,
                "t-10y",
                Some("key-10"),
                ReserveRules {
                    pending_key_limit: std::time::Duration::ZERO,
                    ..rules
                },
            )
            .await
            .unwrap(),
        Reservation::Replay {
            ticket: "t-10".into()
        }
    );
    store
        .confirm_idempotency(first, 10, "key-10", "t-10")
        .await
        .unwrap();
    assert_eq!(
        reserve(first, 10, "t-10b", Some("key-10")).await,
        Reservation::Replay {
            ticket: "t-10".into()
        }
    );
    assert_eq!(
        reserve(first, 10, "t-10c", None).await,
        Reservation::Duplicate
    );
    let reserved = reserve(first, 11, "t-11", None).await;
    assert!(
        matches!(reserved, Reservation::Reserved { .. }),
        "{reserved:?}"
    );
    assert_eq!(reserve(first, 12, "t-12", None).await, Reservation::SoldOut);
    let reserved = reserve(second, 10, "t-2-10", None).await;
    assert!(
        matches!(reserved, Reservation::Reserved { .. }),
        "{reserved:?}"
    );

    assert_eq!(store.pending_count(first).await.unwrap(), 2);
    assert_eq!(
        store.standing(first, 11).await.unwrap(),
        Standing::Reserved {
            ticket: "t-11".into()
        }
    );
    let pending = store.pending_reservations(first).await.unwrap();
    let held = pending
        .iter()
        .find(|p| p.user_id == 10)
        .expect("user 10's reservation");
    assert!(
        store
            .touch_reservation(first, held, now_ms + 5)
            .await
            .unwrap()
    );
    assert!(store.unreserve(first, 11, "t-11", None).await.unwrap());
    assert_eq!(store.stock(first).await.unwrap(), Some(1));
    assert!(store.return_units(first, 1).await.unwrap());
    assert_eq!(store.stock(first).await.unwrap(), Some(2));
    assert_eq!(store.buyer_count(first).await.unwrap(), 1);

    // The cluster refuses one pipeline spanning both events' slots; a batch settling buyers of
    // both goes through anyway (one pipeline per event).
    let prefix = &app.config.redis.prefix;
    let mut spanning = redis::pipe();
    spanning
        .get(EventKeys::new(prefix, first).stock())
        .get(EventKeys::new(prefix, second).stock());
    let refused = spanning
        .query_async::<(Option<i64>, Option<i64>)>(&mut redis)
        .await;
    assert!(refused.is_err(), "a pipeline across slots: {refused:?}");
    store
        .settle_many(
            &[
                (first, 10, BuyerOutcome::Success { order_id: 100 }),
                (second, 10, BuyerOutcome::Success { order_id: 200 }),
            ],
            60,
        )
        .await
        .unwrap();
    assert_eq!(
        store.standing(first, 10).await.unwrap(),
        Standing::Settled(BuyerOutcome::Success { order_id: 100 })
    );
    assert_eq!(
        store.standing(second, 10).await.unwrap(),
        Standing::Settled(BuyerOutcome::Success { order_id: 200 })
    );
    assert_eq!(store.pending_count(first).await.unwrap(), 0);
    assert_eq!(store.pending_count(second).await.unwrap(), 0);
    assert!(store.correct_stock(second, 0, 1).await.unwrap());
    assert_eq!(store.stock(second).await.unwrap(), Some(1));
}

#[tokio::test]
async fn a_unit_given_back_is_announced_to_subscribers_on_every_node() {
    let app = spawn_app_with(TestOptions::default().on_redis_cluster()).await;
    let store = EventStore::new(app.infra.redis.clone(), app.config.redis.prefix.clone());
    let channel = store.stock_returned_channel();
    // One subscriber on each master: the script publishes on the node that owns the event's
    // slot, so at least two of them hear it from another node.
    let mut heard = Vec::new();
    for seed in app.config.redis.urls() {
        let mut one_node = app.config.redis.clone();
        one_node.url = Secret::new(seed.to_owned());
        let announcements = Announcements::new(&one_node).unwrap();
        heard.push(announcements.stock_returned(&channel).await.unwrap());
    }
    assert_eq!(heard.len(), 3, "one subscriber per master");

    let event = 3;
    let warm = WarmState {
        free: 0,
        start_ms: 0,
        end_ms: i64::MAX / 2,
        expire_at_ms: i64::MAX / 2,
        buyers: &[],
    };
    store.warm(event, &warm, WarmMode::Reset).await.unwrap();
    assert!(store.return_units(event, 1).await.unwrap());
    for (node, stream) in heard.iter_mut().enumerate() {
        let announced = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap_or_else(|_| panic!("node {node} heard nothing"));
        assert_eq!(announced, Some(event), "node {node}");
    }
}

/// A cluster of this test's own on 7100–7102 (`scripts/redis-cluster.sh`): the test takes a
/// master down, which the shared cluster's other users must not see.
fn private_cluster() -> Script {
    Script::new(
        "redis-cluster.sh",
        &[("REDIS_CLUSTER_PORTS", "7100 7101 7102".to_owned())],
    )
}

#[tokio::test]
async fn readyz_is_503_while_the_cluster_has_lost_a_master_and_200_once_it_is_whole() {
    let cluster = ScriptedService::start(private_cluster(), &["start"]);
    let app = spawn_app_with(
        TestOptions::default()
            .env("SPIKE_REDIS_MODE", "cluster")
            .env(
                "SPIKE_REDIS_URL",
                "redis://127.0.0.1:7100,redis://127.0.0.1:7101,redis://127.0.0.1:7102",
            ),
    )
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let admin = app.admin_token().await;
    // Events 1 and 2 hash to slots of the master that goes down, event 3 to a master that stays
    // (`CLUSTER KEYSLOT` 9842, 5649 and 1584; redis-cli gives 7101 slots 5461–10922).
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(app.active_event(&admin, 5).await);
    }
    let people = app.buyers(2).await;
    assert_eq!(app.buy(&people[0].1, events[0]).await.status(), 202);

    // A master goes away with no replica to take over: the other two still answer PING, but
    // once they agree it is gone (the 5 s node timeout) the cluster refuses every command.
    let stopped = std::process::Command::new("redis-cli")
        .args(["-p", "7101", "shutdown", "nosave"])
        .status()
        .expect("redis-cli");
    assert!(stopped.success() || stopped.code() == Some(1));
    wait_for("readyz to fail", Duration::from_secs(30), || async {
        app.get("/readyz").await.status() == 503
    })
    .await;
    let body = envelope(app.get("/readyz").await).await;
    assert_eq!(body["code"], 10008);
    assert_ne!(body["data"]["checks"]["redis"], "ok", "{body}");
    assert_eq!(body["data"]["checks"]["mysql"], "ok", "{body}");
    // A buyer meanwhile is told to come back later, not that the server failed: whether the
    // event's master is the one gone (no connection) or one still up (it answers CLUSTERDOWN).
    for event in events {
        let (status, code_, _) = code(app.buy(&people[1].1, event).await).await;
        assert_eq!((status, code_), (503, Some(10008)), "event {event}");
    }

    // The cluster is whole again (started over: a new cluster on the same addresses).
    cluster.script.run(&["start"]);
    wait_for("readyz to recover", Duration::from_secs(30), || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
}
