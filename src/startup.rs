//! Builds the HTTP application from a [`Config`]: connects the stores, migrates, binds the
//! listener. `main` and the integration tests use the same builder, so tests run the real wiring.

use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::repo::{Infra, RepoError, mysql};
use crate::service::ServiceError;
use crate::service::auth::AuthService;
use crate::service::catalog::CatalogService;
use crate::service::health::HealthService;
use crate::service::orders::OrderService;
use crate::service::spike::{SpikeService, SpikeUnits};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("http server failed: {0}")]
    Serve(io::Error),
}

/// A bound, not yet running, HTTP server.
pub struct Application {
    listener: TcpListener,
    router: Router,
    infra: Infra,
    state: AppState,
    config: Config,
}

impl Application {
    /// Connects every dependency (retrying until `startup_timeout`), runs migrations when
    /// `auto_migrate` is on, and binds `http_addr` (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        Application::build_with_routes(config, Router::new()).await
    }

    /// [`Application::build`] with extra routes mounted inside the middleware stack (tests).
    pub async fn build_with_routes(
        config: Config,
        extra: Router<AppState>,
    ) -> Result<Application, StartupError> {
        let infra = Infra::connect(&config).await?;
        if config.auto_migrate {
            mysql::migrate(&infra.db).await?;
        }
        let auth = AuthService::new(&config, infra.db.clone(), infra.redis.clone())?;
        if let Some(admin) = &config.bootstrap_admin {
            auth.bootstrap_admin(admin).await?;
        }
        let catalog = CatalogService::new(&config, infra.db.clone(), infra.redis.clone());
        let orders = OrderService::new(
            infra.db.clone(),
            catalog.clone(),
            SpikeUnits::new(infra.redis.clone(), config.redis_prefix.clone()),
            config.order_pay_timeout,
        );
        let spike = SpikeService::new(&config, &infra, catalog.clone());
        let state = AppState {
            health: HealthService::new(infra.clone()),
            auth,
            catalog,
            orders,
            spike,
            trusted_proxy_hops: config.trusted_proxy_hops,
        };
        let router = api::router(state.clone(), &config, extra);
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: config.http_addr,
                source,
            })?;
        Ok(Application {
            listener,
            router,
            infra,
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

    /// The connections this application holds (shared with the worker in `spike all`).
    pub fn infra(&self) -> &Infra {
        &self.infra
    }

    /// The services behind the routes (tests read their counters).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops accepting connections and lets in-flight
    /// requests finish for up to `shutdown_grace`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let address = self.listener.local_addr().map_err(StartupError::Serve)?;
        tracing::info!(%address, "http server listening");
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        // Clears this replica's sold-out flags when another process announces returned stock.
        let flags = self.state.spike.sold_out_flags();
        let channel = self.state.spike.stock_returned_channel();
        let client = self.infra.redis_client.clone();
        let listening = shutdown.clone();
        tokio::spawn(async move { flags.listen(client, channel, listening).await });
        let grace = self.config.shutdown_grace;
        tokio::select! {
            result = server => result.map_err(StartupError::Serve)?,
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
            }
        }
        tracing::info!("http server stopped");
        Ok(())
    }
}
