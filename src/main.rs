//! The `spike` binary: parses the command line, loads the configuration, starts the chosen role.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use spike::config::{Config, redact_url};
use spike::repo::{Infra, mysql};
use spike::startup::Application;
use spike::{telemetry, worker};

#[derive(Parser)]
#[command(name = "spike", version, about = "Flash-sale shopping backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Clone, Copy)]
enum Command {
    /// Serve the HTTP API.
    Serve,
    /// Run the background consumers and schedulers.
    Worker,
    /// Serve the HTTP API and run the worker in one process.
    All,
    /// Apply database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("spike: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format, &config.log_level);
    log_config(&config);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("spike: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "spike stopped with an error");
            eprintln!("spike: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match command {
        Command::Migrate => {
            let pool = mysql::connect(&config).await?;
            mysql::migrate(&pool).await?;
            tracing::info!("migrations applied");
            pool.close().await;
        }
        Command::Serve => {
            let app = Application::build(config).await?;
            let infra = app.infra().clone();
            app.run_until_stopped(shutdown).await?;
            infra.close().await;
        }
        Command::Worker => {
            let infra = Infra::connect(&config).await?;
            worker::run(config, infra.clone(), shutdown).await?;
            infra.close().await;
        }
        Command::All => {
            let app = Application::build(config.clone()).await?;
            let infra = app.infra().clone();
            let worker = tokio::spawn(worker::run(config, infra.clone(), shutdown.clone()));
            let served = app.run_until_stopped(shutdown.clone()).await;
            shutdown.cancel();
            let worked = worker.await.context("worker task failed")?;
            infra.close().await;
            served?;
            worked?;
        }
    }
    Ok(())
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight work");
    shutdown.cancel();
}

fn log_config(config: &Config) {
    for key in &config.unknown_keys {
        tracing::warn!(key, "unknown configuration key ignored (typo?)");
    }
    tracing::info!(
        env = config.env.as_str(),
        file = ?config.source_file,
        http_addr = %config.http_addr,
        database = redact_url(config.database_url.expose()),
        redis = redact_url(config.redis_url.expose()),
        amqp = redact_url(config.amqp_url.expose()),
        redis_prefix = config.redis_prefix,
        amqp_prefix = config.amqp_prefix,
        auto_migrate = config.auto_migrate,
        "configuration loaded"
    );
}
