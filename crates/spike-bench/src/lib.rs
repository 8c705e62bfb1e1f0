//! `spike bench`: the load tool (docs/design.md §10, docs/benchmarks.md).
//!
//! A run sets up what its scenario needs before the clock starts (buyers seeded into MySQL with
//! tokens minted from the configured JWT secret, a product and an event created through the
//! admin API), fires the load ([`load`]), and reports throughput, latency percentiles and the
//! outcome mix ([`report`]). A `sale` then waits for the worker to drain and checks the
//! invariants of docs/design.md §1 in MySQL and Redis ([`checks`]). A `crowd` ([`crowd`]) sends
//! buyers who behave like people's apps (buy once, then long-poll; retry after `Retry-After`
//! when refused) and reports what each of them went through, fairness included.
//!
//! The tool reads the same configuration as the server (`SPIKE_*`, `configs/<env>.toml`): the
//! database and Redis it checks, the Redis prefix and the JWT secret must be the server's.

pub mod checks;
pub mod client;
pub mod crowd;
pub mod load;
pub mod report;
pub mod scenario;
pub mod seed;
pub mod soak;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use sqlx::MySqlPool;

use checks::{Accepted, Check, Drain};
use client::{Target, call_api};
use crowd::Conduct;
use load::{LoadResult, LoadSettings, RequestSource};
use report::{Report, SaleSummary};
use scenario::{BuyerOrder, Buys, Healthz, ProductDetail, RegularOrders, shared};
use seed::{Buyer, Seeder};
use soak::SoakSummary;
use spike::config::Config;
use spike::repo::redis::RedisConnection;
use spike::repo::redis::flash_sale::EventKeys;
use spike::repo::{RepoError, mysql};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("set-up failed: {0}")]
    Setup(String),
    #[error("no answer from the server: {0}")]
    Transport(String),
    #[error(transparent)]
    Store(#[from] RepoError),
}

impl From<sqlx::Error> for BenchError {
    fn from(error: sqlx::Error) -> BenchError {
        BenchError::Store(error.into())
    }
}

impl From<redis::RedisError> for BenchError {
    fn from(error: redis::RedisError) -> BenchError {
        BenchError::Store(error.into())
    }
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `GET /healthz`: the server's HTTP ceiling.
    Healthz,
    /// Flash-sale buys, every request a new buyer, stock for all of them (`202` path).
    Reserve,
    /// Flash-sale buys after the only unit is gone (`409/50004` path).
    SoldOut,
    /// The realistic burst: N buyers × k attempts against S units, then the drain and the
    /// invariant checks.
    Sale,
    /// `GET /api/v1/products/{id}` of one product (cache hits).
    Catalog,
    /// Regular orders of one unit.
    Orders,
    /// No load: watch an existing event's queued reservations become orders (`--event`).
    Drain,
    /// N buyers (`--buyers`, 1000) arriving at `--rate` per second (500) for `--stock` units,
    /// each buying once and long-polling the result (or retrying after `Retry-After` when
    /// refused); then the drain, fairness and the invariant checks.
    Crowd,
    /// A `crowd` of `--buyers` (30000) at `--rate` (200/s) through a seeded fault schedule (a
    /// fault every `--fault-every`, each run by `--fault-command`); then the drain, the
    /// reconciler's repairs and the invariant checks. `scripts/soak.sh` sets the stage.
    Soak,
}

impl Scenario {
    /// The name on the command line (`sold-out`).
    fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// `spike bench` options. (`Parser` as well as `Args`, so [`BenchArgs::new`] takes its defaults
/// from the same attributes the command line does.)
#[derive(Debug, Clone, clap::Parser)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// The server under test (default: the configured `SPIKE_HTTP_ADDR` on 127.0.0.1). A
    /// `crowd` or `soak` takes a comma-separated list of API processes and spreads the buyers
    /// over them in turn; the other scenarios use the first.
    #[arg(long)]
    pub url: Option<String>,
    /// Concurrent connections (one load task each).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub connections: usize,
    /// Stop after this long (`10s`, `1m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Open loop: send at this constant rate (requests/s) and measure latency from each
    /// request's intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Buyers to seed (sale: 20000; reserve: one per request, else 20000; sold-out: 10000;
    /// orders: 1000).
    #[arg(long)]
    pub buyers: Option<u64>,
    /// Attempts per buyer in a `sale`.
    #[arg(long, default_value_t = 2)]
    pub attempts: u32,
    /// Units of the `sale` event.
    #[arg(long, default_value_t = 2000)]
    pub stock: u64,
    /// The event `drain` watches.
    #[arg(long)]
    pub event: Option<u64>,
    /// How long to wait for the worker to turn every reservation into an order.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Fetch each buyer's purchase token after the start (before timing) and send it with every
    /// buy, for a server that requires one (`SPIKE_FLASH_SALE_REQUIRE_PURCHASE_TOKEN=true`).
    #[arg(long)]
    pub purchase_token: bool,
    /// `soak`: the seed of the fault schedule (the same seed, the same schedule).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `soak`: a fault about this often (± a sixth).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub fault_every: Duration,
    /// `soak`: the kinds of fault to schedule (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub faults: Vec<soak::FaultKind>,
    /// `soak`: the command that injects a fault and waits for its repair, called as
    /// `<command> <kind> <target>` through `sh -c` (`scripts/soak.sh fault`).
    #[arg(long)]
    pub fault_command: Option<String>,
    /// `soak`: after the drain, how long the invariants may take to hold (the reconciler
    /// republishing lost messages and releasing held-back units) before they count as failed.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

impl BenchArgs {
    /// Options for `scenario` with every default, as the CLI would give them.
    pub fn new(scenario: Scenario) -> BenchArgs {
        clap::Parser::parse_from(["bench", &scenario.name()])
    }
}

/// Without `--requests` or `--duration`, an open-ended scenario runs this long.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Runs one scenario against the server and returns what it measured and checked.
pub async fn run(args: &BenchArgs, config: &Config) -> Result<Report, BenchError> {
    if args
        .rate
        .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
    {
        return Err(BenchError::Usage("--rate must be a positive number".into()));
    }
    let url = args.url.clone().unwrap_or_else(|| {
        let addr = config.http.addr;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        format!("http://{host}:{}", addr.port())
    });
    let targets = url
        .split(',')
        .map(|one| Target::parse(one.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let bench = Bench {
        args,
        config,
        target: targets[0].clone(),
        targets,
        url,
    };
    let report = match args.scenario {
        Scenario::Healthz => bench.open_ended(shared(Healthz)).await?,
        Scenario::Catalog => bench.catalog().await?,
        Scenario::Reserve => bench.reserve().await?,
        Scenario::SoldOut => bench.sold_out().await?,
        Scenario::Sale => bench.sale().await?,
        Scenario::Orders => bench.orders().await?,
        Scenario::Drain => bench.drain().await?,
        Scenario::Crowd => bench.crowd().await?,
        Scenario::Soak => bench.soak().await?,
    };
    if report.requests > 0 && report.mix.transport_errors == report.requests {
        return Err(BenchError::Transport(format!(
            "none of {} requests got an answer: is the server at {} running?",
            report.requests, report.url
        )));
    }
    Ok(report)
}

struct Bench<'a> {
    args: &'a BenchArgs,
    config: &'a Config,
    url: String,
    /// The first of `targets`: set-up calls and the single-server scenarios.
    target: Target,
    targets: Vec<Target>,
}

impl Bench<'_> {
    async fn db(&self) -> Result<MySqlPool, BenchError> {
        Ok(mysql::connect(&self.config.database).await?)
    }

    async fn redis(&self) -> Result<RedisConnection, BenchError> {
        Ok(spike::repo::redis::connect(&self.config.redis).await?)
    }

    fn keys(&self, event_id: u64) -> EventKeys {
        EventKeys::new(&self.config.redis.prefix, event_id)
    }

    fn settings(&self, requests: Option<u64>, keep_tickets: bool) -> LoadSettings {
        let (requests, duration) = match (self.args.requests, self.args.duration, requests) {
            (Some(n), duration, _) => (Some(n), duration),
            (None, Some(duration), _) => (None, Some(duration)),
            (None, None, Some(n)) => (Some(n), None),
            (None, None, None) => (None, Some(DEFAULT_DURATION)),
        };
        LoadSettings {
            connections: self.args.connections,
            requests,
            duration,
            rate: self.args.rate,
            keep_tickets,
            progress: !self.args.json,
        }
    }

    fn report(&self, load: &LoadResult) -> Report {
        Report::new(
            &self.args.scenario.name(),
            &self.url,
            self.args.connections,
            self.args.rate,
            load,
        )
    }

    /// Runs until `--requests` or `--duration` (10 s by default).
    async fn open_ended(&self, source: Arc<dyn RequestSource>) -> Result<Report, BenchError> {
        let load = load::run(self.target.clone(), source, self.settings(None, false)).await;
        Ok(self.report(&load))
    }

    async fn catalog(&self) -> Result<Report, BenchError> {
        let seeder = Seeder::new(&self.config.auth, self.db().await?)?;
        let admin = seeder.admin().await?;
        let product = seed::create_product(&self.target, &admin, seeder.run_tag(), 1000).await?;
        let path = format!("/api/v1/products/{product}");
        // The first read fills the cache; the run measures hits.
        call_api(&self.target, Method::GET, &path, &admin, None, 200).await?;
        let path = client::parse_path(&path)?;
        self.open_ended(shared(ProductDetail { path })).await
    }

    async fn orders(&self) -> Result<Report, BenchError> {
        let seeder = Seeder::new(&self.config.auth, self.db().await?)?;
        let admin = seeder.admin().await?;
        let buyers = seeder.buyers(self.args.buyers.unwrap_or(1000)).await?;
        // Enough stock that no order is refused for the lack of it.
        let stock = self.args.requests.unwrap_or(5_000_000);
        let product = seed::create_product(&self.target, &admin, seeder.run_tag(), stock).await?;
        self.open_ended(shared(RegularOrders::new(product, &buyers)))
            .await
    }

    /// `buys` with every buyer's purchase token when the run passes the gate.
    async fn gated(&self, buys: Buys, event: u64, buyers: &[Buyer]) -> Result<Buys, BenchError> {
        if !self.args.purchase_token {
            return Ok(buys);
        }
        let tokens =
            seed::purchase_tokens(&self.target, event, buyers, self.args.connections).await?;
        Ok(buys.with_purchase_tokens(tokens))
    }

    /// An event of `stock` units of a new product, started.
    async fn started_event(&self, seeder: &Seeder, stock: u64) -> Result<u64, BenchError> {
        let admin = seeder.admin().await?;
        let run = seeder.run_tag();
        let product = seed::create_product(&self.target, &admin, run, stock).await?;
        let (event, start) = seed::create_event(&self.target, &admin, run, product, stock).await?;
        seed::wait_for_start(start).await;
        Ok(event)
    }

    async fn reserve(&self) -> Result<Report, BenchError> {
        let seeder = Seeder::new(&self.config.auth, self.db().await?)?;
        let count = self.args.buyers.or(self.args.requests).unwrap_or(20_000);
        let buyers = seeder.buyers(count).await?;
        let event = self.started_event(&seeder, count).await?;
        let buys = self
            .gated(
                Buys::new(event, &buyers, BuyerOrder::EachOnce)?,
                event,
                &buyers,
            )
            .await?;
        let source = shared(buys);
        let load = load::run(
            self.target.clone(),
            source,
            self.settings(Some(count), false),
        )
        .await;
        let mut report = self.report(&load);
        report.event_id = Some(event);
        Ok(report)
    }

    async fn sold_out(&self) -> Result<Report, BenchError> {
        let seeder = Seeder::new(&self.config.auth, self.db().await?)?;
        let buyers = seeder
            .buyers(self.args.buyers.unwrap_or(10_000).max(2))
            .await?;
        let event = self.started_event(&seeder, 1).await?;
        // The first buyer takes the only unit (the same request the load loop would send it);
        // everybody else is refused.
        let first = self
            .gated(
                Buys::new(event, &buyers[..1], BuyerOrder::EachOnce)?,
                event,
                &buyers[..1],
            )
            .await?;
        let call = first.call(0).expect("one buyer, one call");
        let answer = client::Connection::new(self.target.clone())
            .send(call)
            .await?;
        if answer.status != 202 {
            return Err(BenchError::Setup(format!(
                "the first buy answered {} (expected 202): {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )));
        }
        let buys = Buys::new(event, &buyers, BuyerOrder::Cycle { skip: 1 })?;
        let source = shared(self.gated(buys, event, &buyers).await?);
        let load = load::run(self.target.clone(), source, self.settings(None, false)).await;
        let mut report = self.report(&load);
        report.event_id = Some(event);
        Ok(report)
    }

    async fn sale(&self) -> Result<Report, BenchError> {
        let db = self.db().await?;
        let mut redis = self.redis().await?;
        let seeder = Seeder::new(&self.config.auth, db.clone())?;
        let count = self.args.buyers.unwrap_or(20_000);
        let attempts = self.args.attempts.max(1);
        let buyers = seeder.buyers(count).await?;
        let event = self.started_event(&seeder, self.args.stock).await?;
        let buys = Buys::new(event, &buyers, BuyerOrder::Rounds { attempts })?;
        let buys = Arc::new(self.gated(buys, event, &buyers).await?);
        let requests = count * u64::from(attempts);
        let source: Arc<dyn RequestSource> = buys.clone();
        let load = load::run(
            self.target.clone(),
            source,
            self.settings(Some(requests), true),
        )
        .await;

        let keys = self.keys(event);
        let drain =
            checks::wait_for_drain(&db, &mut redis, &keys, event, self.args.drain_timeout).await?;
        let accepted: Vec<Accepted> = load
            .tickets
            .iter()
            .filter_map(|(i, ticket)| {
                let buyer = &buyers[buys.buyer_of(*i)?];
                Some(Accepted {
                    user_id: buyer.user_id,
                    token: buyer.token.clone(),
                    ticket: ticket.clone(),
                })
            })
            .collect();
        let facts = checks::gather(&db, &mut redis, &keys, &self.target, event, &accepted).await?;
        let mut report = self.report(&load);
        report.event_id = Some(event);
        report.checks = checks::evaluate(&facts);
        report.drain = Some(drain);
        report.sale = Some(SaleSummary {
            event_id: event,
            stock: self.args.stock,
            buyers: count,
            attempts,
            // From the first request to the last order.
            pipeline_orders_per_sec: drain.orders as f64
                / (load.elapsed.as_secs_f64() + drain.seconds),
            facts,
        });
        db.close().await;
        Ok(report)
    }

    async fn crowd(&self) -> Result<Report, BenchError> {
        let db = self.db().await?;
        let seeder = Seeder::new(&self.config.auth, db.clone())?;
        let count = self.args.buyers.unwrap_or(1_000);
        let rate = self.args.rate.unwrap_or(500.0);
        let buyers = seeder.buyers(count).await?;
        let event = self.started_event(&seeder, self.args.stock).await?;
        let started = std::time::Instant::now();
        let (runs, buys) =
            crowd::run(&self.targets, event, &buyers, rate, Conduct::default()).await;
        let elapsed = started.elapsed();
        db.close().await;
        let accepted = accepted_of(&runs, &buyers);
        let (drain, checks, _) = self
            .drain_and_check(event, &accepted, Duration::ZERO)
            .await?;
        self.crowd_report(event, rate, &runs, &buys, elapsed, drain, checks)
    }

    /// A crowd through the fault schedule; then the drain and the checks, repeated until they
    /// hold or `--settle-timeout` passes.
    async fn soak(&self) -> Result<Report, BenchError> {
        let command = self.args.fault_command.clone().ok_or_else(|| {
            BenchError::Usage("soak needs --fault-command (scripts/soak.sh gives one)".into())
        })?;
        let seeder = Seeder::new(&self.config.auth, self.db().await?)?;
        let count = self.args.buyers.unwrap_or(30_000);
        let rate = self.args.rate.unwrap_or(200.0);
        let buyers = seeder.buyers(count).await?;
        let event = self.started_event(&seeder, self.args.stock).await?;
        let kinds = if self.args.faults.is_empty() {
            soak::FaultKind::ALL.to_vec()
        } else {
            self.args.faults.clone()
        };
        let span = Duration::from_secs_f64(count as f64 / rate);
        let plan = soak::schedule(self.args.seed, span, self.args.fault_every, &kinds);
        eprintln!(
            "soak: {count} buyers at {rate}/s ({:.0} s) for {} units, event {event}; seed {}: {} faults",
            span.as_secs_f64(),
            self.args.stock,
            self.args.seed,
            plan.len()
        );
        let started = tokio::time::Instant::now();
        let faults = tokio::spawn(soak::run_faults(plan, command.clone(), started));
        let conduct = Conduct {
            idempotency_keys: true,
        };
        let (runs, buys) = crowd::run(&self.targets, event, &buyers, rate, conduct).await;
        let elapsed = started.elapsed();
        let faults = faults
            .await
            .map_err(|error| BenchError::Setup(format!("the fault schedule failed: {error}")))?;

        let accepted = accepted_of(&runs, &buyers);
        let (drain, checks, settled_after) = self
            .drain_and_check(event, &accepted, self.args.settle_timeout)
            .await?;
        let summary = SoakSummary {
            seed: self.args.seed,
            fault_every_secs: self.args.fault_every.as_secs_f64(),
            fault_command: command,
            faults,
            settled_after_secs: settled_after.as_secs_f64(),
        };
        let mut report = self.crowd_report(event, rate, &runs, &buys, elapsed, drain, checks)?;
        report.checks.push(soak::faults_injected(&summary));
        report.soak = Some(summary);
        Ok(report)
    }

    /// After a crowd: waits for the drain, then runs the sale's checks, again every 2 s until they
    /// hold or `settle` has passed (the reconciler repairs on its own schedule; `ZERO`: once).
    /// The stores are opened here, anew: a connection made before a failover need not survive
    /// it. Returns the drain, the checks and how long after the drain they were last run.
    async fn drain_and_check(
        &self,
        event: u64,
        accepted: &[Accepted],
        settle: Duration,
    ) -> Result<(Drain, Vec<Check>, Duration), BenchError> {
        let db = self.db().await?;
        let mut redis = self.redis().await?;
        let keys = self.keys(event);
        let drain =
            checks::wait_for_drain(&db, &mut redis, &keys, event, self.args.drain_timeout).await?;
        let settling = std::time::Instant::now();
        let checks = loop {
            let facts =
                checks::gather(&db, &mut redis, &keys, &self.target, event, accepted).await?;
            let checks = checks::evaluate(&facts);
            if !checks.iter().any(Check::failed) || settling.elapsed() >= settle {
                break checks;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        db.close().await;
        Ok((drain, checks, settling.elapsed()))
    }

    /// The report of a `crowd` or `soak`: the buys' answers over time, what the buyers went
    /// through, and the checks.
    #[allow(clippy::too_many_arguments)]
    fn crowd_report(
        &self,
        event: u64,
        rate: f64,
        runs: &[crowd::BuyerRun],
        buys: &LoadResult,
        elapsed: Duration,
        drain: Drain,
        mut checks: Vec<Check>,
    ) -> Result<Report, BenchError> {
        let summary = crowd::summarize(event, self.args.stock, rate, runs)?;
        let mut report = self.report(buys);
        report.requests = runs.iter().map(|run| u64::from(run.requests)).sum();
        report.seconds = elapsed.as_secs_f64();
        report.throughput = report.requests as f64 / report.seconds.max(1e-9);
        report.rate = Some(rate);
        report.event_id = Some(event);
        checks.push(crowd::everyone_settled(&summary));
        report.checks = checks;
        report.drain = Some(drain);
        report.crowd = Some(summary);
        Ok(report)
    }

    async fn drain(&self) -> Result<Report, BenchError> {
        let event = self
            .args
            .event
            .ok_or_else(|| BenchError::Usage("drain needs --event <id>".into()))?;
        let db = self.db().await?;
        let mut redis = self.redis().await?;
        let drain: Drain = checks::wait_for_drain(
            &db,
            &mut redis,
            &self.keys(event),
            event,
            self.args.drain_timeout,
        )
        .await?;
        let mut report = self.report(&LoadResult::empty());
        report.event_id = Some(event);
        report.checks = vec![checks::drained(&drain)];
        report.drain = Some(drain);
        Ok(report)
    }
}

/// The `202`s the crowd received, and whose they were.
fn accepted_of(runs: &[crowd::BuyerRun], buyers: &[Buyer]) -> Vec<Accepted> {
    runs.iter()
        .filter_map(|run| {
            let buyer = &buyers[run.arrival];
            Some(Accepted {
                user_id: buyer.user_id,
                token: buyer.token.clone(),
                ticket: run.ticket.clone()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn options_built_in_code_are_the_command_line_defaults() {
        for &scenario in Scenario::value_variants() {
            let args = BenchArgs::new(scenario);
            assert_eq!(args.scenario, scenario);
            assert_eq!((args.connections, args.attempts, args.stock), (64, 2, 2000));
            assert_eq!(args.drain_timeout, Duration::from_secs(300));
        }
        assert_eq!(Scenario::SoldOut.name(), "sold-out");
    }
}
