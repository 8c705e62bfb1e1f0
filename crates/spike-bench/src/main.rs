//! The `spike-bench` binary: the load tool against a running server (docs/benchmarks.md). It
//! reads the server's configuration (`SPIKE_*`, `configs/<env>.toml`, a `.env`) to seed buyers,
//! mint their tokens and check the stores.

use std::process::ExitCode;

use clap::Parser;

use spike::config::Config;
use spike::telemetry;
use spike_bench::BenchArgs;

/// Prints the report (text, or JSON with `--json`) on stdout and writes the HTML page when asked.
/// Exit codes: 0 all good, 1 an invariant check failed, 2 the run could not be made.
fn main() -> ExitCode {
    let args = BenchArgs::parse();
    // A `.env` in the working directory sets what the environment does not, as for the server.
    dotenvy::dotenv().ok();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("spike-bench: {error}");
            return ExitCode::from(2);
        }
    };
    // Only warnings, on stderr: stdout is the report's.
    telemetry::init_with_writer(config.telemetry.log_format, "warn", std::io::stderr, None);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("spike-bench: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(spike_bench::run(&args, &config)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("spike-bench: {error}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("spike-bench: cannot write JSON: {error}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", report.text());
    }
    if let Some(path) = &args.report
        && let Err(error) = std::fs::write(path, report.html())
    {
        eprintln!("spike-bench: cannot write {}: {error}", path.display());
        return ExitCode::from(2);
    }
    if report.any_check_failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
