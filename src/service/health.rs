//! Readiness: whether this process can serve traffic, i.e. every dependency answers and none of
//! its background tasks is stalled (`background`).

use std::time::Duration;

use crate::background::{Stalled, Supervisor};
use crate::repo::{Dependency, Infra};

/// How long one dependency may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of probing every dependency.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// One entry per dependency, in declaration order of [`Dependency`]: `Ok` or the failure reason.
    pub checks: Vec<(Dependency, Result<(), String>)>,
    /// This process's background tasks that are down or have not passed for too long.
    pub stalled: Vec<Stalled>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|(_, result)| result.is_ok()) && self.stalled.is_empty()
    }

    pub fn failing(&self) -> Vec<Dependency> {
        self.checks
            .iter()
            .filter(|(_, result)| result.is_err())
            .map(|(dependency, _)| *dependency)
            .collect()
    }
}

#[derive(Clone)]
pub struct HealthService {
    infra: Infra,
    supervisor: Supervisor,
}

impl HealthService {
    pub fn new(infra: Infra, supervisor: Supervisor) -> HealthService {
        HealthService { infra, supervisor }
    }

    /// Probes MySQL, Redis and RabbitMQ concurrently, each bounded by a short timeout, so a hung
    /// dependency makes the probe fail fast instead of hanging the orchestrator's check.
    pub async fn readiness(&self) -> Readiness {
        let probe = |dependency| async move {
            let result = self.infra.ping(dependency, PROBE_TIMEOUT).await;
            if let Err(error) = &result {
                tracing::warn!(%dependency, %error, "readiness probe failed");
            }
            (dependency, result.map_err(|e| e.to_string()))
        };
        let (mysql, redis, rabbitmq) = tokio::join!(
            probe(Dependency::Mysql),
            probe(Dependency::Redis),
            probe(Dependency::Rabbitmq)
        );
        let stalled = self.supervisor.stalled();
        for task in &stalled {
            tracing::warn!(
                task = task.task,
                reason = task.reason,
                "readiness: background task stalled"
            );
        }
        Readiness {
            checks: vec![mysql, redis, rabbitmq],
            stalled,
        }
    }
}
