//! Services of the test's own that one of `scripts/` runs — a Redis Cluster, a RabbitMQ
//! cluster, a replicated MariaDB pair — on ports no other test uses: started with the script's
//! environment, driven by its actions (`kill N`, `revive N`, `lag on`), stopped on drop.

use std::process::{Command, Stdio};

/// One script and the environment that picks the test's instance of it.
#[derive(Debug, Clone)]
pub struct Script {
    path: String,
    env: Vec<(&'static str, String)>,
}

impl Script {
    /// `name` in `scripts/`, with `env` (the ports, a timeout).
    pub fn new(name: &str, env: &[(&'static str, String)]) -> Script {
        Script {
            path: format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR")),
            env: env.to_vec(),
        }
    }

    /// Runs the script with `args` (blocking); false when it failed.
    pub fn try_run(&self, args: &[&str]) -> bool {
        Command::new(&self.path)
            .args(args)
            .envs(self.env.iter().map(|(key, value)| (*key, value)))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// [`Script::try_run`], failing the test when the script fails.
    pub fn run(&self, args: &[&str]) {
        assert!(self.try_run(args), "{} {args:?} failed", self.path);
    }

    /// [`Script::run`] off the test's runtime (a start or a kill takes seconds).
    pub async fn run_blocking(&self, args: &[&str]) {
        let script = self.clone();
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            script.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        })
        .await
        .expect("the script ran");
    }
}

/// A running instance: `script start_args` now, `script stop` on drop.
pub struct ScriptedService {
    pub script: Script,
}

impl ScriptedService {
    pub fn start(script: Script, start_args: &[&str]) -> ScriptedService {
        script.run(start_args);
        ScriptedService { script }
    }
}

impl Drop for ScriptedService {
    fn drop(&mut self) {
        // Not asserted: a failing test is already unwinding through here.
        self.script.try_run(&["stop"]);
    }
}
