//! Flash-sale fixtures every test file uses: events, buyers, buys, results and what MySQL holds.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};
use time::Duration;
use time::format_description::well_known::Rfc3339;

use super::{Script, TestApp, code, envelope, wait_for};

/// `now + offset` as RFC 3339.
pub fn at(offset: Duration) -> String {
    (time::OffsetDateTime::now_utc() + offset)
        .format(&Rfc3339)
        .unwrap()
}

/// The body of `POST /spike/events`: `stock` units at 9.90, from `now + start` to `now + end`.
pub fn event_body(product: u64, stock: u32, start: Duration, end: Duration) -> Value {
    json!({
        "product_id": product,
        "title": "Midnight sale",
        "spike_price": "9.90",
        "stock": stock,
        "start_at": at(start),
        "end_at": at(end),
        "per_user_limit": 1
    })
}

impl TestApp {
    /// `POST /spike/events` as `admin`.
    pub async fn create_event(&self, admin: &str, body: &Value) -> reqwest::Response {
        self.send_authed(Method::POST, "/api/v1/spike/events", admin, Some(body))
            .await
    }

    /// An active event (started a minute ago, ends in an hour) with `stock` units; creating it
    /// warms it, so the explicit warm-up finds nothing to do.
    pub async fn active_event(&self, admin: &str, stock: u32) -> u64 {
        let product = self.create_product(admin, "100.00", stock).await;
        let body = event_body(product, stock, Duration::minutes(-1), Duration::hours(1));
        let event = envelope(self.create_event(admin, &body).await).await["data"]["id"]
            .as_u64()
            .unwrap();
        let warmed = self
            .send_authed(
                Method::POST,
                &format!("/api/v1/spike/events/{event}/warmup"),
                admin,
                None,
            )
            .await;
        assert_eq!(warmed.status(), 200);
        assert_eq!(envelope(warmed).await["data"]["warmed_now"], false);
        event
    }

    /// `POST /spike/events/{event}/orders` as the buyer.
    pub async fn buy(&self, token: &str, event: u64) -> reqwest::Response {
        self.send_authed(
            Method::POST,
            &format!("/api/v1/spike/events/{event}/orders"),
            token,
            None,
        )
        .await
    }

    /// The buyer's `GET /spike/events/{event}/result` data.
    pub async fn result_of(&self, token: &str, event: u64) -> Value {
        envelope(
            self.get_authed(&format!("/api/v1/spike/events/{event}/result"), token)
                .await,
        )
        .await["data"]
            .clone()
    }

    /// Orders the event has in MySQL.
    pub async fn orders_in(&self, event: u64) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM spike_orders WHERE spike_event_id = ?")
            .bind(event)
            .fetch_one(&self.infra.db)
            .await
            .unwrap()
    }

    /// The buyers holding an order in the event (each at most once: asserted).
    pub async fn owners_in(&self, event: u64) -> HashSet<u64> {
        let owners: Vec<u64> =
            sqlx::query_scalar("SELECT user_id FROM spike_orders WHERE spike_event_id = ?")
                .bind(event)
                .fetch_all(&self.infra.db)
                .await
                .unwrap();
        let distinct: HashSet<u64> = owners.iter().copied().collect();
        assert_eq!(distinct.len(), owners.len(), "a buyer with two orders");
        distinct
    }

    /// Creates `n` buyers straight in MySQL and mints their access tokens (as the load tool
    /// does: hashing a thousand passwords would dominate the test).
    pub async fn buyers(&self, n: usize) -> Vec<(u64, String)> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let mut insert =
                sqlx::QueryBuilder::<sqlx::MySql>::new("INSERT INTO users (email, password_hash) ");
            insert.push_values(chunk, |mut row, i| {
                row.push_bind(format!("buyer{i}-{tag}@example.com"))
                    .push_bind("x");
            });
            insert.build().execute(&self.infra.db).await.unwrap();
        }
        let ids: Vec<u64> =
            sqlx::query_scalar("SELECT id FROM users WHERE email LIKE ? ORDER BY id")
                .bind(format!("%-{tag}@example.com"))
                .fetch_all(&self.infra.db)
                .await
                .unwrap();
        assert_eq!(ids.len(), n);
        ids.into_iter()
            .map(|id| (id, self.mint_token(id)))
            .collect()
    }

    /// Waits until the worker has settled every reservation of the event in Redis: it records
    /// a buyer's result and then drops the reservation, so MySQL and the result show an order a
    /// moment before the ledger balances.
    pub async fn wait_until_settled(&self, admin: &str, event: u64) {
        wait_for(
            "every reservation settled",
            std::time::Duration::from_secs(20),
            || async { self.ledger(admin, event).await["pending_reservations"] == 0 },
        )
        .await;
    }

    /// Waits for the live worker to make the buyer's order; returns its id.
    pub async fn wait_for_success(&self, token: &str, event: u64) -> u64 {
        wait_for(
            "the buyer's order",
            std::time::Duration::from_secs(15),
            || async { self.result_of(token, event).await["status"] == "success" },
        )
        .await;
        self.result_of(token, event).await["order_id"]
            .as_u64()
            .unwrap()
    }
}

/// How a persistent buyer's attempts ended ([`TestApp::buy_until_answered`]).
#[derive(Debug, Clone, Copy)]
pub struct Attempts {
    /// When the `202` came; `None` for a `409`.
    pub accepted_at: Option<std::time::Instant>,
    /// `503`s met on the way.
    pub unavailable: u32,
    /// The final answer was `409 / 50005`: the buyer already holds a reservation — one an
    /// earlier attempt made although it was answered `503` (a Redis call that timed out may
    /// still have run: the server cannot tell).
    pub already_holding: bool,
}

impl Attempts {
    pub fn accepted(&self) -> bool {
        self.accepted_at.is_some()
    }
}

impl TestApp {
    /// A burst through a fault: `people` arrive 10 ms apart, each buying until answered
    /// ([`TestApp::buy_until_answered`]); one second in, `fault` runs (`script` with `args`,
    /// off the runtime). Each buyer's attempts, and when the fault had done its work.
    pub async fn burst_through(
        &self,
        people: &[(u64, String)],
        event: u64,
        script: &Script,
        args: &[&str],
    ) -> (Vec<Attempts>, std::time::Instant) {
        let buying = futures_util::future::join_all(people.iter().enumerate().map(
            |(i, (_, token))| async move {
                tokio::time::sleep(std::time::Duration::from_millis(10 * i as u64)).await;
                self.buy_until_answered(token, event).await
            },
        ));
        let fault = async {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            script.run_blocking(args).await;
            std::time::Instant::now()
        };
        tokio::join!(buying, fault)
    }

    /// Buys until the answer is final (`202` or `409`), as a buyer's app does through an
    /// outage: after a `503` (nothing held) it tries again 100 ms later, after a `429` (its own
    /// retries used up its rate) when `Retry-After` says. Fails the test after a minute.
    pub async fn buy_until_answered(&self, token: &str, event: u64) -> Attempts {
        let mut unavailable = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let (status, code_, body) = code(self.buy(token, event).await).await;
            match (status, code_) {
                (202, _) => {
                    return Attempts {
                        accepted_at: Some(std::time::Instant::now()),
                        unavailable,
                        already_holding: false,
                    };
                }
                (409, code_) => {
                    return Attempts {
                        accepted_at: None,
                        unavailable,
                        already_holding: code_ == Some(50005),
                    };
                }
                (503, Some(10008)) => {
                    unavailable += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                (429, Some(10006)) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                other => panic!("unexpected answer {other:?}: {body}"),
            }
        }
        panic!("no final answer within a minute");
    }
}
