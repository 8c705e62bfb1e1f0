//! The `crowd` scenario: a sale as the buyers live it (docs/benchmarks.md, "The waiting line").
//!
//! N buyers arrive at a constant rate (open loop: each at its own instant, whatever the server
//! answered the others), each one a small client that behaves like a person's app: buy once;
//! on `202` (queued or waiting) long-poll `/result?wait=30` until the outcome; on `429` wait for
//! `Retry-After` and buy again — which is what every buyer does when the server has no waiting
//! line (`SPIKE_FLASH_SALE_WAITING_LINE_MAX=0`). A `409` is an outcome (sold out, ended).
//!
//! Per run it reports what the line is for: requests per buyer, the time from arrival to the
//! outcome, and fairness — the share of the first S arrivals (S = stock) that won, and the rank
//! correlation between arrival order and admission order (the order ids, which the worker
//! hands out as it creates the orders).

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use hyper::Method;
use hyper::header::HeaderValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::BenchError;
use crate::checks::Check;
use crate::client::{Answer, Call, Connection, Target, parse_path};
use crate::load::{self, LoadResult, Outcome, Recorder};
use crate::seed::Buyer;

/// How long a buyer keeps trying before the tool gives up on them (reported, not hidden).
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);
/// Pause after a transport error or an answer the tool does not expect.
const ERROR_PAUSE: Duration = Duration::from_millis(200);
/// A request with no answer by then counts as a transport error (a held result request is
/// answered within 30 s plus the server's own timeout).
const REQUEST_LIMIT: Duration = Duration::from_secs(60);

/// What one simulated buyer went through.
#[derive(Debug, Clone)]
pub struct BuyerRun {
    /// Arrival order, 0 first.
    pub arrival: usize,
    pub requests: u32,
    pub answers_429: u32,
    /// `503`s to a buy (nothing reserved; the buyer tried again).
    pub answers_503: u32,
    /// Told to wait in line by the buy answer.
    pub waited: bool,
    /// The `202`'s ticket, if one came.
    pub ticket: Option<String>,
    pub outcome: BuyerOutcome,
    /// From the buyer's arrival to the answer that settled it.
    pub time_to_outcome: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuyerOutcome {
    Won {
        order_id: u64,
    },
    /// `failed` (sold out, ended) or a `409` refusal.
    Lost,
    /// No outcome within [`GIVE_UP_AFTER`], or an answer no client should get.
    GaveUp,
}

/// The crowd's figures (docs/benchmarks.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CrowdSummary {
    pub event_id: u64,
    pub buyers: u64,
    pub stock: u64,
    /// Arrivals per second.
    pub arrival_rate: f64,
    /// Buyers whose buy answered `202 waiting`: the server has a line (and used it).
    pub waited: u64,
    pub answers_429: u64,
    /// `503`s to buys: the outage answers the buyers rode out.
    #[serde(default)]
    pub answers_503: u64,
    pub winners: u64,
    pub losers: u64,
    pub gave_up: u64,
    pub requests_per_buyer: f64,
    pub max_requests_of_a_buyer: u32,
    /// Arrival to outcome, milliseconds.
    pub time_to_outcome_p50_ms: f64,
    pub time_to_outcome_p99_ms: f64,
    pub time_to_outcome_max_ms: f64,
    /// Of the first `stock` arrivals, the share that won (1.0: first come, first served).
    pub first_arrivals_won: f64,
    /// Spearman's rank correlation between arrival and admission (order id) among the winners.
    pub arrival_admission_correlation: f64,
}

/// Whether every buyer got an outcome (a buyer the tool gave up on was left without one).
pub fn everyone_settled(summary: &CrowdSummary) -> Check {
    Check::new(
        "every buyer learned the outcome",
        summary.gave_up == 0,
        format!(
            "{} won, {} lost, {} without an outcome",
            summary.winners, summary.losers, summary.gave_up
        ),
    )
}

/// How the simulated buyers behave beyond buying once and waiting for the outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conduct {
    /// Send an `Idempotency-Key` with every buy, the same on each retry: a buyer retrying through
    /// faults (the `soak`) then never turns a `202` it missed into a refusal of its own.
    pub idempotency_keys: bool,
}

/// Sends the crowd: buyer `i` arrives at `i / rate` seconds, talking to `targets[i % n]` (the
/// API processes behind a load balancer); every buyer runs to an outcome. Also returns the buy
/// requests' answers over time (latency from each request's sending; result requests are not
/// in it: they are held on purpose).
pub async fn run(
    targets: &[Target],
    event: u64,
    buyers: &[Buyer],
    rate: f64,
    conduct: Conduct,
) -> (Vec<BuyerRun>, LoadResult) {
    let start = Instant::now();
    let buy_path = Arc::new(format!("/api/v1/spike/events/{event}/orders"));
    let result_path = Arc::new(format!("/api/v1/spike/events/{event}/result?wait=30"));
    let tasks: Vec<_> = buyers
        .iter()
        .enumerate()
        .map(|(arrival, buyer)| {
            let arrives_at = start + Duration::from_secs_f64(arrival as f64 / rate);
            let target = targets[arrival % targets.len()].clone();
            let buyer = buyer.clone();
            let (buy_path, result_path) = (buy_path.clone(), result_path.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(arrives_at).await;
                let paths = Paths {
                    buy: &buy_path,
                    result: &result_path,
                };
                one_buyer(target, &buyer, arrival, paths, conduct, start).await
            })
        })
        .collect();
    let mut runs = Vec::with_capacity(tasks.len());
    // One recorder for the crowd (a histogram each would be ~100 KB per buyer).
    let mut recorder = Recorder::new();
    for task in tasks {
        if let Ok((run, answers)) = task.await {
            runs.push(run);
            for (outcome, latency, at) in answers {
                recorder.record(outcome, latency, at);
            }
        }
    }
    let mut buys = LoadResult::empty();
    load::merge(&mut buys, recorder);
    buys.elapsed = start.elapsed();
    (runs, buys)
}

/// One buy's answer: what it came to, how long it took, when it was sent (from the start).
type BuyAnswer = (Outcome, Duration, Duration);

#[derive(Clone, Copy)]
struct Paths<'a> {
    buy: &'a str,
    result: &'a str,
}

async fn one_buyer(
    target: Target,
    buyer: &Buyer,
    arrival: usize,
    paths: Paths<'_>,
    conduct: Conduct,
    start: Instant,
) -> (BuyerRun, Vec<BuyAnswer>) {
    let arrived = Instant::now();
    let give_up_at = arrived + GIVE_UP_AFTER;
    let mut connection = Connection::new(target);
    let mut answers = Vec::new();
    let mut run = BuyerRun {
        arrival,
        requests: 0,
        answers_429: 0,
        answers_503: 0,
        waited: false,
        ticket: None,
        outcome: BuyerOutcome::GaveUp,
        time_to_outcome: Duration::ZERO,
    };
    let idempotency_key = conduct
        .idempotency_keys
        .then(|| HeaderValue::from_str(&format!("soak-{arrival}-{}", uuid::Uuid::new_v4())).ok())
        .flatten();
    let call = |method: Method, path: &str| -> Option<Call> {
        Some(Call {
            idempotency_key: (method == Method::POST)
                .then(|| idempotency_key.clone())
                .flatten(),
            method,
            path: parse_path(path).ok()?,
            authorization: Some(buyer.authorization.clone()),
            purchase_token: None,
            body: None,
        })
    };
    // Buy until accepted or refused for good.
    while run.ticket.is_none() && Instant::now() < give_up_at {
        let Some(buy) = call(Method::POST, paths.buy) else {
            return (run, answers);
        };
        run.requests += 1;
        let sent = Instant::now();
        let answer = send_within(&mut connection, buy).await;
        let outcome = answer.as_ref().map_or(Outcome::Transport, Outcome::of);
        answers.push((outcome, sent.elapsed(), sent - start));
        match answer {
            Ok(answer) if answer.status == 202 => {
                let data = data_of(&answer);
                run.waited = data["status"] == "waiting";
                run.ticket = Some(data["ticket"].as_str().unwrap_or_default().to_owned());
            }
            // The key's first request may still be running: ask again in a second.
            Ok(_)
                if outcome
                    == (Outcome::Answered {
                        status: 409,
                        code: Some(10005),
                    }) =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(answer) if answer.status == 409 => {
                run.outcome = BuyerOutcome::Lost;
                run.time_to_outcome = arrived.elapsed();
                return (run, answers);
            }
            Ok(answer) if answer.status == 429 || answer.status == 503 => {
                run.answers_429 += u32::from(answer.status == 429);
                run.answers_503 += u32::from(answer.status == 503);
                let pause = Duration::from_secs(answer.retry_after.unwrap_or(1).max(1));
                tokio::time::sleep(pause).await;
            }
            _ => tokio::time::sleep(ERROR_PAUSE).await,
        }
    }
    // Long-poll the result until it settles.
    while run.ticket.is_some() && Instant::now() < give_up_at {
        let Some(ask) = call(Method::GET, paths.result) else {
            return (run, answers);
        };
        run.requests += 1;
        let asked = Instant::now();
        match send_within(&mut connection, ask).await {
            Ok(answer) if answer.status == 200 => {
                let data = data_of(&answer);
                let settled = match data["status"].as_str() {
                    Some("success") => Some(BuyerOutcome::Won {
                        order_id: data["order_id"].as_u64().unwrap_or_default(),
                    }),
                    Some("failed") => Some(BuyerOutcome::Lost),
                    Some("waiting" | "queued") => None,
                    // `none` after a 202 breaks a promise: the checks count it.
                    _ => Some(BuyerOutcome::GaveUp),
                };
                if let Some(outcome) = settled {
                    run.outcome = outcome;
                    run.time_to_outcome = arrived.elapsed();
                    return (run, answers);
                }
                // Answered at once although not settled (the server holds no more requests, or
                // its notifications are down): do not ask again in a tight loop.
                if asked.elapsed() < ERROR_PAUSE {
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
            _ => tokio::time::sleep(ERROR_PAUSE).await,
        }
    }
    (run, answers)
}

/// One request, given up after [`REQUEST_LIMIT`] (a transport error then, and a new connection).
async fn send_within(connection: &mut Connection, call: Call) -> Result<Answer, BenchError> {
    match tokio::time::timeout(REQUEST_LIMIT, connection.send(call)).await {
        Ok(answer) => answer,
        Err(_) => {
            *connection = connection.fresh();
            Err(BenchError::Transport("no answer in time".into()))
        }
    }
}

fn data_of(answer: &Answer) -> Value {
    serde_json::from_slice::<Value>(&answer.body)
        .map(|envelope| envelope["data"].clone())
        .unwrap_or(Value::Null)
}

/// The figures of a finished crowd.
pub fn summarize(
    event_id: u64,
    stock: u64,
    arrival_rate: f64,
    runs: &[BuyerRun],
) -> Result<CrowdSummary, BenchError> {
    let mut times = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|error| BenchError::Setup(error.to_string()))?;
    let mut summary = CrowdSummary {
        event_id,
        buyers: runs.len() as u64,
        stock,
        arrival_rate,
        ..CrowdSummary::default()
    };
    let mut requests = 0u64;
    for run in runs {
        requests += u64::from(run.requests);
        summary.max_requests_of_a_buyer = summary.max_requests_of_a_buyer.max(run.requests);
        summary.answers_429 += u64::from(run.answers_429);
        summary.answers_503 += u64::from(run.answers_503);
        summary.waited += u64::from(run.waited);
        match run.outcome {
            BuyerOutcome::Won { .. } => summary.winners += 1,
            BuyerOutcome::Lost => summary.losers += 1,
            BuyerOutcome::GaveUp => summary.gave_up += 1,
        }
        if run.outcome != BuyerOutcome::GaveUp {
            let _ = times.record((run.time_to_outcome.as_micros() as u64).max(1));
        }
    }
    if !runs.is_empty() {
        summary.requests_per_buyer = requests as f64 / runs.len() as f64;
    }
    let ms = |micros: u64| micros as f64 / 1e3;
    if !times.is_empty() {
        summary.time_to_outcome_p50_ms = ms(times.value_at_quantile(0.50));
        summary.time_to_outcome_p99_ms = ms(times.value_at_quantile(0.99));
        summary.time_to_outcome_max_ms = ms(times.max());
    }
    let first: Vec<&BuyerRun> = runs
        .iter()
        .filter(|run| (run.arrival as u64) < stock)
        .collect();
    if !first.is_empty() {
        let won = first
            .iter()
            .filter(|run| matches!(run.outcome, BuyerOutcome::Won { .. }))
            .count();
        summary.first_arrivals_won = won as f64 / first.len() as f64;
    }
    let winners: Vec<(usize, u64)> = runs
        .iter()
        .filter_map(|run| match run.outcome {
            BuyerOutcome::Won { order_id } => Some((run.arrival, order_id)),
            _ => None,
        })
        .collect();
    summary.arrival_admission_correlation = rank_correlation(&winners);
    Ok(summary)
}

/// Spearman's ρ of the pairs (both sides distinct): 1 when the second orders them exactly as
/// the first does, 0 when unrelated, -1 reversed.
fn rank_correlation(pairs: &[(usize, u64)]) -> f64 {
    let n = pairs.len();
    if n < 2 {
        return 1.0;
    }
    let ranks = |mut keyed: Vec<(u64, usize)>| {
        keyed.sort_unstable();
        let mut rank = vec![0usize; n];
        for (r, (_, i)) in keyed.into_iter().enumerate() {
            rank[i] = r;
        }
        rank
    };
    let by_arrival = ranks(
        pairs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.0 as u64, i))
            .collect(),
    );
    let by_admission = ranks(pairs.iter().enumerate().map(|(i, p)| (p.1, i)).collect());
    let squared: f64 = by_arrival
        .iter()
        .zip(&by_admission)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let n = n as f64;
    1.0 - 6.0 * squared / (n * (n * n - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(arrival: usize, outcome: BuyerOutcome, requests: u32) -> BuyerRun {
        BuyerRun {
            arrival,
            requests,
            answers_429: 0,
            answers_503: 0,
            waited: false,
            ticket: Some(format!("t{arrival}")),
            outcome,
            time_to_outcome: Duration::from_millis(10 * (arrival as u64 + 1)),
        }
    }

    #[test]
    fn the_rank_correlation_reads_the_order_only() {
        assert!((rank_correlation(&[(0, 10), (1, 20), (2, 35)]) - 1.0).abs() < 1e-9);
        assert!((rank_correlation(&[(0, 30), (1, 20), (2, 10)]) + 1.0).abs() < 1e-9);
        let shuffled = rank_correlation(&[(0, 20), (1, 10), (2, 30), (3, 40)]);
        assert!(shuffled > 0.0 && shuffled < 1.0, "{shuffled}");
    }

    #[test]
    fn fairness_counts_the_first_arrivals_that_won() {
        let runs = [
            run(0, BuyerOutcome::Won { order_id: 7 }, 2),
            run(1, BuyerOutcome::Lost, 4),
            run(2, BuyerOutcome::Won { order_id: 5 }, 2),
            run(3, BuyerOutcome::GaveUp, 9),
        ];
        let summary = summarize(1, 2, 100.0, &runs).unwrap();
        assert_eq!(
            (summary.winners, summary.losers, summary.gave_up),
            (2, 1, 1)
        );
        assert!((summary.first_arrivals_won - 0.5).abs() < 1e-9);
        assert!((summary.requests_per_buyer - 4.25).abs() < 1e-9);
        assert_eq!(summary.max_requests_of_a_buyer, 9);
        assert!((summary.arrival_admission_correlation + 1.0).abs() < 1e-9);
        assert!(summary.time_to_outcome_p99_ms >= 29.0);
    }
}
