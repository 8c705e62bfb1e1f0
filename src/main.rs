//! The `spike` binary: parses the command line, loads the configuration, starts the chosen role.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use spike::background::Supervisor;
use spike::config::{Config, redact_url};
use spike::repo::mysql;
use spike::startup::{self, Application, Services};
use spike::telemetry::{self, traces};
use spike::worker::Worker;

#[derive(Parser)]
#[command(name = "spike", version, about = "Flash-sale shopping backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve,
    /// Run the background consumers and schedulers.
    Worker,
    /// Serve the HTTP API and run the worker in one process.
    All,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage admin accounts (MySQL only; the other stores need not run).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin account, or give an existing account the admin role (its password is
    /// then left as it is). The password is read from standard input, never from the command
    /// line (shell history, `ps`): `echo "$PASSWORD" | spike admin create --email … --password-stdin`.
    Create {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A `.env` in the working directory (`cp .env.example .env`) sets what the environment does
    // not; the environment wins.
    let dotenv = dotenvy::dotenv().ok();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("spike: {error}");
            return ExitCode::from(2);
        }
    };
    let role = match cli.command {
        Command::Admin(AdminCommand::Create { email, .. }) => return create_admin(&email, &config),
        Command::Serve => Role::Serve,
        Command::Worker => Role::Worker,
        Command::All => Role::All,
        Command::Migrate => Role::Migrate,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("spike: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The trace exporter runs on the runtime, so it is built inside it.
    let traces = match &config.telemetry.otlp_endpoint {
        Some(endpoint) => {
            let _inside = runtime.enter();
            let ratio = config.telemetry.trace_sample_ratio;
            match traces::Exporter::otlp(endpoint, ratio, role.name()) {
                Ok(exporter) => Some(exporter),
                Err(error) => {
                    eprintln!("spike: {error}");
                    return ExitCode::from(2);
                }
            }
        }
        None => None,
    };
    telemetry::init(
        config.telemetry.log_format,
        &config.telemetry.log_level,
        traces.as_ref(),
    );
    telemetry::metrics::install();
    log_config(&config);
    if let Some(path) = dotenv {
        tracing::info!(file = %path.display(), "settings read from a .env file (the environment wins)");
    }

    let outcome = runtime.block_on(run(role, config));
    if let Some(exporter) = traces
        && let Err(error) = exporter.shutdown()
    {
        eprintln!("spike: spans not flushed at exit: {error}");
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "spike stopped with an error");
            eprintln!("spike: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The long-running roles (and `migrate`), which share logging and signal handling.
#[derive(Clone, Copy)]
enum Role {
    Serve,
    Worker,
    All,
    Migrate,
}

impl Role {
    /// The role as traces name it (`spike.role`).
    fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Worker => "worker",
            Role::All => "all",
            Role::Migrate => "migrate",
        }
    }
}

async fn run(role: Role, config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match role {
        Role::Migrate => {
            let pool = mysql::connect(&config.database).await?;
            mysql::migrate(&pool).await?;
            tracing::info!("migrations applied");
            pool.close().await;
        }
        Role::Serve => {
            let app = Application::build(config).await?;
            let (infra, tasks) = (app.infra().clone(), app.services().tasks.clone());
            let given_up = stop_when_given_up(&app.services().supervisor, &shutdown);
            let served = app.run_until_stopped(shutdown.clone()).await;
            shutdown.cancel();
            close(&tasks, &infra).await;
            served?;
            fail_if_given_up(given_up).await?;
        }
        Role::Worker => {
            let infra = startup::connect(&config).await?;
            let services = Services::build(&config, &infra)?;
            let tasks = services.tasks.clone();
            // Kubernetes probes and Prometheus scrapes reach the worker here.
            startup::InternalListener::bind(&config, services.health.clone())
                .await?
                .start(&services.supervisor, &shutdown);
            let given_up = stop_when_given_up(&services.supervisor, &shutdown);
            Worker::build(&config, &infra, &services).start(&shutdown);
            shutdown.cancelled().await;
            close(&tasks, &infra).await;
            fail_if_given_up(given_up).await?;
        }
        Role::All => {
            // One set of services for both roles: one sold-out flag map, one cache.
            let app = Application::build(config.clone()).await?;
            let infra = app.infra().clone();
            let services = app.services().clone();
            let tasks = services.tasks.clone();
            let given_up = stop_when_given_up(&services.supervisor, &shutdown);
            Worker::build(&config, &infra, &services).start(&shutdown);
            let served = app.run_until_stopped(shutdown.clone()).await;
            shutdown.cancel();
            close(&tasks, &infra).await;
            served?;
            fail_if_given_up(given_up).await?;
        }
    }
    Ok(())
}

/// Stops the process (cancels `shutdown`) when the supervisor gives up on a task that keeps
/// dying; the handle yields the reason then, `None` after an ordinary shutdown.
fn stop_when_given_up(
    supervisor: &Supervisor,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<Option<String>> {
    let (supervisor, shutdown) = (supervisor.clone(), shutdown.clone());
    tokio::spawn(async move {
        tokio::select! {
            reason = supervisor.given_up() => {
                shutdown.cancel();
                Some(reason)
            }
            () = shutdown.cancelled() => None,
        }
    })
}

/// The process's error when the supervisor gave up (the exit is then non-zero, and the
/// orchestrator starts a fresh process).
async fn fail_if_given_up(given_up: tokio::task::JoinHandle<Option<String>>) -> anyhow::Result<()> {
    match given_up.await.context("give-up watcher failed")? {
        Some(reason) => anyhow::bail!(reason),
        None => Ok(()),
    }
}

/// Waits for the tracked background tasks, then closes the connections they used.
async fn close(tasks: &TaskTracker, infra: &spike::repo::Infra) {
    tasks.close();
    tasks.wait().await;
    infra.close().await;
}

/// `spike admin create`: the password from standard input, MySQL only. Exit codes: 0 done, 1 the
/// store failed, 2 bad input.
fn create_admin(email: &str, config: &Config) -> ExitCode {
    use spike::domain::user::{Email, Password};
    use spike::service::auth::password::PasswordHasher;
    use spike::service::auth::{AdminMade, create_or_promote_admin};

    telemetry::init_with_writer(config.telemetry.log_format, "warn", std::io::stderr, None);
    let email = match Email::parse(email) {
        Ok(email) => email,
        Err(problem) => {
            eprintln!("spike admin create: --email: {problem}");
            return ExitCode::from(2);
        }
    };
    let mut line = String::new();
    if let Err(error) = std::io::stdin().read_line(&mut line) {
        eprintln!("spike admin create: cannot read the password from standard input: {error}");
        return ExitCode::from(2);
    }
    let password = match Password::parse(line.trim_end_matches(['\r', '\n']).to_owned()) {
        Ok(password) => password,
        Err(problem) => {
            eprintln!("spike admin create: the password on standard input: {problem}");
            return ExitCode::from(2);
        }
    };
    let made = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                let db = mysql::connect(&config.database).await?;
                let hasher = PasswordHasher::new(config.auth.argon2, 1)?;
                let made = create_or_promote_admin(&db, &hasher, &email, &password).await?;
                db.close().await;
                anyhow::Ok(made)
            })
        });
    match made {
        Ok(AdminMade::Created(id)) => println!("admin {email} created (user {id})"),
        Ok(AdminMade::Promoted(id)) => {
            println!("{email} (user {id}) has the admin role now; its password is unchanged")
        }
        Err(error) => {
            eprintln!("spike admin create: {error:#}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
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
    for (old, new) in &config.renamed_keys {
        tracing::warn!(
            old = format!("{old} (SPIKE_{})", old.to_uppercase()),
            new = format!("{new} (SPIKE_{})", new.to_uppercase()),
            "deprecated configuration key (0.2's name): still read in 0.3, removed in 0.4; use the new name"
        );
    }
    tracing::info!(
        env = config.env.as_str(),
        file = ?config.source_file,
        http_addr = %config.http.addr,
        internal_http_addr = %config.http.internal_addr,
        database = redact_url(config.database.url.expose()),
        redis = config.redis.redacted(),
        redis_mode = %config.redis.mode,
        amqp = config.amqp.redacted(),
        redis_prefix = config.redis.prefix,
        amqp_prefix = config.amqp.prefix,
        auto_migrate = config.database.auto_migrate,
        "configuration loaded"
    );
}
