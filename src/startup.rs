//! The composition root: connects the stores, builds every service once ([`Services`]), and
//! binds the HTTP application. `main` and the integration tests use the same builders, so tests
//! run the real wiring; `spike all` hands the same [`Services`] to the HTTP API and the worker.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::serve::{self, ConnectionLimits};
use crate::api::{self, AppState, Handlers};
use crate::background::Supervisor;
use crate::config::{Config, Environment};
use crate::repo::redis::flash_sale::EventStore;
use crate::repo::{Infra, RepoError, Topology, mysql};
use crate::service::ServiceError;
use crate::service::auth::AuthService;
use crate::service::catalog::CatalogService;
use crate::service::flash_sale::purchase_token::PurchaseTokens;
use crate::service::flash_sale::{FlashSale, Surroundings};
use crate::service::flash_sale_units::FlashSaleUnits;
use crate::service::health::HealthService;
use crate::service::orders::OrderService;
use crate::service::store_gauges::{self, Sampled};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("http server failed: {0}")]
    Serve(io::Error),
}

/// Connects MySQL, Redis and RabbitMQ (retrying until each store's `startup_timeout`) and
/// declares the RabbitMQ topology.
pub async fn connect(config: &Config) -> Result<Infra, RepoError> {
    Infra::connect(
        &config.database,
        &config.redis,
        &config.amqp,
        topology(config),
    )
    .await
}

/// The exchanges and queues `config` names.
pub fn topology(config: &Config) -> Topology {
    Topology::new(&config.amqp, config.orders.pay_timeout, &config.flash_sale)
}

/// Every service of one process, each built once; cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub health: HealthService,
    pub auth: AuthService,
    pub catalog: CatalogService,
    pub orders: OrderService,
    pub flash_sale: FlashSale,
    /// Every background task the services and the roles start; shutdown waits for them
    /// before the connections close.
    pub tasks: TaskTracker,
    /// Runs and watches the periodic and consuming tasks (on `tasks`); `/readyz` reads it.
    pub supervisor: Supervisor,
}

impl Services {
    pub fn build(config: &Config, infra: &Infra) -> Result<Services, ServiceError> {
        let prefix = &config.redis.prefix;
        let tasks = TaskTracker::new();
        let supervisor = Supervisor::new(tasks.clone(), &config.telemetry.background);
        let auth = AuthService::new(&config.auth, prefix, infra.db.clone(), infra.redis.clone())?;
        let catalog = CatalogService::new(
            &config.catalog,
            prefix,
            infra.db.clone(),
            infra.catalog_reads().clone(),
            infra.redis.clone(),
            tasks.clone(),
        );
        let orders = OrderService::new(
            infra.db.clone(),
            catalog.clone(),
            FlashSaleUnits::new(EventStore::new(infra.redis.clone(), prefix.clone())),
            config.orders.pay_timeout,
        );
        let flash_sale = FlashSale::new(
            &config.flash_sale,
            prefix,
            Surroundings {
                pay_timeout: config.orders.pay_timeout,
                prefetch: config
                    .flash_sale
                    .order_create_prefetch(config.amqp.prefetch),
                request_timeout: config.http.request_timeout,
            },
            infra,
            catalog.clone(),
            PurchaseTokens::new(
                config.auth.jwt_secret.expose().as_bytes(),
                config.flash_sale.purchase_token_ttl,
            ),
        );
        Ok(Services {
            health: HealthService::new(infra.clone(), supervisor.clone()),
            auth,
            catalog,
            orders,
            flash_sale,
            tasks,
            supervisor,
        })
    }
}

/// What a 403 for the admin role tells the caller: in dev, the admin to log in as; elsewhere,
/// that an operator grants the role (no account names leave a production server).
fn admin_hint(config: &Config) -> String {
    const CLI: &str = "`spike admin create --email … --password-stdin`";
    match (config.env, &config.auth.bootstrap_admin) {
        (Environment::Dev, Some(admin)) => format!(
            "admin role required: in dev, log in as the bootstrap admin {} (README, \"Run it\"), or make one with {CLI}",
            admin.email
        ),
        (Environment::Dev, None) => format!("admin role required: make an admin with {CLI}"),
        _ => format!("admin role required: an operator grants it with {CLI}"),
    }
}

/// A bound, not yet running, HTTP server: the public API and the internal listener.
pub struct Application {
    listener: TcpListener,
    router: Router,
    internal: InternalListener,
    infra: Infra,
    services: Services,
    state: AppState,
    config: Config,
}

impl Application {
    /// Connects every dependency (retrying until `startup_timeout`), runs migrations when
    /// `auto_migrate` is on, builds the services, and binds `http_addr` (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        Application::build_with_routes(config, Router::new()).await
    }

    /// [`Application::build`] with extra routes mounted inside the middleware stack (tests).
    pub async fn build_with_routes(
        config: Config,
        extra: Router<AppState>,
    ) -> Result<Application, StartupError> {
        crate::telemetry::metrics::install();
        let infra = connect(&config).await?;
        if config.database.auto_migrate {
            mysql::migrate(&infra.db).await?;
        }
        let services = Services::build(&config, &infra)?;
        if let Some(admin) = &config.auth.bootstrap_admin {
            services.auth.bootstrap_admin(admin).await?;
        }
        let state = AppState::new(Handlers {
            health: services.health.clone(),
            auth: services.auth.clone(),
            catalog: services.catalog.clone(),
            orders: services.orders.clone(),
            flash_sale: services.flash_sale.clone(),
            trusted_proxy_hops: config.http.trusted_proxy_hops,
            admin_hint: admin_hint(&config),
        });
        let router = api::router(
            state.clone(),
            &config.http,
            config.telemetry.request_log_sample,
            extra,
        );
        let addr = config.http.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let internal = InternalListener::bind(&config, services.health.clone()).await?;
        Ok(Application {
            listener,
            router,
            internal,
            infra,
            services,
            state,
            config,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    /// The port the internal listener (`/healthz`, `/readyz`, `/metrics`) actually bound.
    pub fn internal_port(&self) -> u16 {
        self.internal.port()
    }

    /// The connections this application holds (shared with the worker in `spike all`).
    pub fn infra(&self) -> &Infra {
        &self.infra
    }

    /// The services behind the routes (shared with the worker in `spike all`).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// What the handlers see (tests read the services' counters through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops accepting connections and lets in-flight
    /// requests finish for up to `shutdown_grace`. The background tasks it starts are tracked by
    /// `services().tasks`, which the caller waits for.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let address = self.listener.local_addr().map_err(StartupError::Serve)?;
        tracing::info!(%address, "http server listening");
        let http = &self.config.http;
        let limits = ConnectionLimits {
            max_connections: serve::raise_file_limit(http.max_connections),
            max_per_address: http.max_connections_per_ip,
            header_timeout: http.header_timeout,
            head_limit: http.head_limit,
        };
        let server = serve::serve(self.listener, self.router, limits, shutdown.clone());
        self.internal.start(&self.services.supervisor, &shutdown);
        start_api_tasks(&self.services, &self.infra, &self.config, &shutdown);
        let grace = self.config.http.shutdown_grace;
        tokio::select! {
            () = server => {}
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
            }
        }
        tracing::info!("http server stopped");
        Ok(())
    }
}

/// The API role's background tasks, under the process's supervisor: the listener that clears
/// this replica's sold-out flags when another process announces returned stock, the sweep of
/// buyers whose rate limit has recovered, and the pool gauge.
fn start_api_tasks(
    services: &Services,
    infra: &Infra,
    config: &Config,
    shutdown: &CancellationToken,
) {
    let supervisor = &services.supervisor;
    services
        .flash_sale
        .start_buyer_tasks(supervisor, &infra.announcements, shutdown);
    let infra = infra.clone();
    supervisor.periodic(
        "api_gauges",
        config.telemetry.metrics_sample_interval,
        shutdown,
        move || {
            let infra = infra.clone();
            async move {
                store_gauges::sample(&infra, Sampled::Pool).await;
                Ok::<(), Infallible>(())
            }
        },
    );
}

/// The internal listener on `internal_http_addr`, bound: `/healthz`, `/readyz` and `/metrics`
/// (`api::internal_router`) for probes and scrapes, kept off the public port so the shop's
/// metrics (live event ids, drift, outcomes as a sale sells out) are not a competitor's
/// dashboard. Every role opens one; bound at start-up, so a taken port fails the start.
pub struct InternalListener {
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
}

impl InternalListener {
    pub async fn bind(
        config: &Config,
        health: HealthService,
    ) -> Result<InternalListener, StartupError> {
        let addr = config.http.internal_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let address = listener.local_addr().map_err(StartupError::Serve)?;
        tracing::info!(%address, "internal listener (probes and metrics) up");
        let router =
            api::internal_router(health, &config.http, config.telemetry.request_log_sample);
        let limits = ConnectionLimits {
            // Probes and scrapes only: a few connections at a time.
            max_connections: 64,
            max_per_address: 64,
            header_timeout: config.http.header_timeout,
            head_limit: config.http.head_limit,
        };
        Ok(InternalListener {
            listener,
            router,
            limits,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    /// Serves until `shutdown` (on the supervisor's tracker), and keeps the metrics' upkeep
    /// (histograms folded, idle series dropped) running under the supervisor.
    pub fn start(self, supervisor: &Supervisor, shutdown: &CancellationToken) {
        supervisor.tracker().spawn(serve::serve(
            self.listener,
            self.router,
            self.limits,
            shutdown.clone(),
        ));
        supervisor.periodic(
            "metrics_upkeep",
            crate::telemetry::metrics::UPKEEP_EVERY,
            shutdown,
            || {
                crate::telemetry::metrics::upkeep();
                std::future::ready(Ok::<(), Infallible>(()))
            },
        );
    }
}
