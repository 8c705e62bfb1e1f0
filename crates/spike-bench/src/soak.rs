//! The `soak` scenario: a long sale through a schedule of faults (docs/reliability.md, "The chaos
//! soak"; `scripts/soak.sh` sets up the processes and clusters it needs).
//!
//! The buyers are a `crowd`'s ([`crate::crowd`]) that also send an `Idempotency-Key`, arriving at
//! a steady rate spread over several API processes. While they arrive, a fault schedule runs:
//! one fault every `--fault-every` (± a sixth of it), its kind and target drawn from `--seed`, so
//! the same seed gives the same schedule. The tool does not know how to break anything itself:
//! each fault is `<--fault-command> <kind> <target>`, run to its end (the command injects the
//! fault and waits until it is repaired: a killed node revived, a pause over), and reported with
//! its exit status. At the end the sale's invariant checks run, after the worker drained and
//! after the reconciler had its chance to repair what a fault left behind.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::time::Instant;

use crate::checks::Check;

/// Longest a fault command may take (inject, then wait for the repair) before it is stopped.
const FAULT_LIMIT: Duration = Duration::from_secs(180);
/// Lines of a fault command's output kept for the report.
const OUTPUT_LINES: usize = 6;

/// What the schedule can do to the system (the names `--faults` and the fault command take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL one `spike worker` (target 1 or 2); its supervisor starts it again.
    WorkerKill,
    /// SIGKILL one RabbitMQ node (1..3) and revive it once the others carry on.
    RabbitmqNodeKill,
    /// SIGKILL the Redis master of a third of the slots (1..3): its replica is promoted after the
    /// node timeout; the old master comes back as a replica.
    RedisMasterFailover,
    /// Restart the MySQL primary.
    MysqlRestart,
    /// Redis unreachable from the application for 5 s (every master stops answering clients).
    RedisPartition,
}

impl FaultKind {
    /// Every kind, in the order of the command line's help.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::WorkerKill,
        FaultKind::RabbitmqNodeKill,
        FaultKind::RedisMasterFailover,
        FaultKind::MysqlRestart,
        FaultKind::RedisPartition,
    ];

    /// The name on the command line and given to the fault command (`worker-kill`).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    }

    /// How many targets the kind chooses from (workers, RabbitMQ nodes, Redis masters).
    fn targets(self) -> u32 {
        match self {
            FaultKind::WorkerKill => 2,
            FaultKind::RabbitmqNodeKill | FaultKind::RedisMasterFailover => 3,
            FaultKind::MysqlRestart | FaultKind::RedisPartition => 1,
        }
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct PlannedFault {
    /// Seconds from the first arrival.
    pub at_secs: f64,
    pub kind: FaultKind,
    /// 1-based: which worker, node or master.
    pub target: u32,
}

/// The schedule for `seed`: a fault about every `every` while the buyers arrive (`span`), none in
/// the first `every` (the sale gets going) nor in the last half of it (the last fault is over
/// before the last arrivals). The kinds come in rounds, each round every kind once in a seeded
/// order, so a run of 5 × `every` meets each kind.
pub fn schedule(
    seed: u64,
    span: Duration,
    every: Duration,
    kinds: &[FaultKind],
) -> Vec<PlannedFault> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let every = every.as_secs_f64();
    let last = span.as_secs_f64() - every / 2.0;
    let mut round: Vec<FaultKind> = Vec::new();
    let mut planned = Vec::new();
    if kinds.is_empty() || every <= 0.0 {
        return planned;
    }
    for n in 1.. {
        let jitter = (rng.f64() - 0.5) * every / 3.0;
        let at_secs = n as f64 * every + jitter;
        if at_secs > last {
            break;
        }
        if round.is_empty() {
            round = kinds.to_vec();
            rng.shuffle(&mut round);
        }
        let kind = round.pop().expect("refilled above");
        let target = rng.u32(1..=kind.targets());
        planned.push(PlannedFault {
            at_secs: (at_secs * 10.0).round() / 10.0,
            kind,
            target,
        });
    }
    planned
}

/// What a fault came to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultRun {
    pub planned: PlannedFault,
    /// When the command started, seconds from the first arrival (late when the one before it
    /// was still repairing).
    pub started_secs: f64,
    /// How long it took to inject and repair.
    pub seconds: f64,
    pub succeeded: bool,
    /// The command's last lines (stdout and stderr).
    pub output: String,
}

/// Runs `schedule` from `start`, one fault at a time, each `<command> <kind> <target>` through
/// `sh -c`.
pub async fn run_faults(
    schedule: Vec<PlannedFault>,
    command: String,
    start: Instant,
) -> Vec<FaultRun> {
    let mut runs = Vec::with_capacity(schedule.len());
    for planned in schedule {
        tokio::time::sleep_until(start + Duration::from_secs_f64(planned.at_secs)).await;
        let started = Instant::now();
        let line = format!("{command} {} {}", planned.kind.name(), planned.target);
        eprintln!(
            "soak: {:>6.1} s  {} {}",
            (started - start).as_secs_f64(),
            planned.kind.name(),
            planned.target
        );
        let run = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .kill_on_drop(true)
            .output();
        let (succeeded, output) = match tokio::time::timeout(FAULT_LIMIT, run).await {
            Ok(Ok(output)) => {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                (output.status.success(), last_lines(&text))
            }
            Ok(Err(error)) => (false, format!("cannot run `{line}`: {error}")),
            Err(_) => (
                false,
                format!("`{line}` still running after {FAULT_LIMIT:?}: stopped"),
            ),
        };
        runs.push(FaultRun {
            planned,
            started_secs: (started - start).as_secs_f64(),
            seconds: started.elapsed().as_secs_f64(),
            succeeded,
            output,
        });
    }
    runs
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(OUTPUT_LINES)..].join("\n")
}

/// The soak's own figures, beside the crowd's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SoakSummary {
    pub seed: u64,
    pub fault_every_secs: f64,
    pub fault_command: String,
    pub faults: Vec<FaultRun>,
    /// After the drain, how long until every invariant held (the reconciler's repairs), or the
    /// limit if they never did.
    pub settled_after_secs: f64,
}

/// Whether every fault of the schedule was injected and repaired (a soak whose faults did not
/// happen proves nothing).
pub fn faults_injected(summary: &SoakSummary) -> Check {
    let failed: Vec<String> = summary
        .faults
        .iter()
        .filter(|f| !f.succeeded)
        .map(|f| {
            format!(
                "{} {} at {:.1} s",
                f.planned.kind.name(),
                f.planned.target,
                f.started_secs
            )
        })
        .collect();
    Check::new(
        "every scheduled fault was injected and repaired",
        !summary.faults.is_empty() && failed.is_empty(),
        if summary.faults.is_empty() {
            "no fault was scheduled (the run is shorter than two fault intervals)".to_owned()
        } else if failed.is_empty() {
            format!("{} faults", summary.faults.len())
        } else {
            format!(
                "{} of {} failed: {}",
                failed.len(),
                summary.faults.len(),
                failed.join(", ")
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_and_every_kind_per_round() {
        let span = Duration::from_secs(330);
        let every = Duration::from_secs(30);
        let first = schedule(7, span, every, &FaultKind::ALL);
        assert_eq!(first, schedule(7, span, every, &FaultKind::ALL));
        assert_ne!(first, schedule(8, span, every, &FaultKind::ALL));
        // Faults from 30 s ± 5 s on, none in the last 15 s.
        assert_eq!(first.len(), 10, "{first:?}");
        assert!(first[0].at_secs >= 25.0 && first[0].at_secs <= 35.0);
        assert!(first.iter().all(|f| f.at_secs <= 315.0));
        assert!(
            first
                .windows(2)
                .all(|w| w[1].at_secs - w[0].at_secs >= 19.9)
        );
        for round in first.chunks(5) {
            let mut kinds: Vec<String> = round.iter().map(|f| f.kind.name()).collect();
            kinds.sort();
            kinds.dedup();
            assert_eq!(kinds.len(), 5, "{round:?}");
        }
        assert!(
            first
                .iter()
                .all(|f| f.target >= 1 && f.target <= f.kind.targets())
        );
    }

    #[test]
    fn a_run_too_short_for_a_fault_has_none_and_fails_its_check() {
        let none = schedule(
            1,
            Duration::from_secs(40),
            Duration::from_secs(30),
            &FaultKind::ALL,
        );
        assert!(none.is_empty());
        let check = faults_injected(&SoakSummary::default());
        assert!(check.failed());
    }

    #[test]
    fn a_fault_that_did_not_happen_fails_the_check() {
        let planned = PlannedFault {
            at_secs: 30.0,
            kind: FaultKind::MysqlRestart,
            target: 1,
        };
        let run = |succeeded| FaultRun {
            planned,
            started_secs: 30.0,
            seconds: 4.0,
            succeeded,
            output: String::new(),
        };
        let mut summary = SoakSummary {
            faults: vec![run(true), run(true)],
            ..SoakSummary::default()
        };
        assert_eq!(faults_injected(&summary).passed, Some(true));
        summary.faults[1].succeeded = false;
        let check = faults_injected(&summary);
        assert!(check.failed());
        assert!(
            check.detail.contains("mysql-restart 1 at 30.0 s"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn fault_commands_run_in_order_and_report_their_status() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let planned = vec![
            PlannedFault {
                at_secs: 0.0,
                kind: FaultKind::WorkerKill,
                target: 2,
            },
            PlannedFault {
                at_secs: 0.1,
                kind: FaultKind::RedisPartition,
                target: 1,
            },
        ];
        // `echo`s its arguments; fails for the partition.
        let command = "f() { echo \"did $1 $2\"; [ \"$1\" != redis-partition ]; }; f".to_owned();
        let runs = runtime.block_on(run_faults(planned, command, Instant::now()));
        assert_eq!(runs.len(), 2);
        assert!(runs[0].succeeded, "{runs:?}");
        assert_eq!(runs[0].output, "did worker-kill 2");
        assert!(!runs[1].succeeded);
        assert_eq!(runs[1].output, "did redis-partition 1");
        assert!(runs[1].started_secs >= 0.1);
    }
}
