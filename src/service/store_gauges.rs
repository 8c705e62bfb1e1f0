//! The gauges that describe what the stores hold rather than what this process did: MySQL pool
//! use (every role), and for the worker the depth of each queue and the outbox backlog.
//! Sampled on a timer by one supervised task per process (`api_gauges`, `worker_gauges`), so a
//! scrape costs nothing and a slow store never slows a scrape.

use crate::repo::Infra;
use crate::repo::mysql::outbox;
use crate::telemetry::metrics::names;

/// What a process samples: the pool always; queues and outbox where the worker runs (one
/// worker's view is the broker's and the database's, so every worker reports the same figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampled {
    Pool,
    PoolQueuesAndOutbox,
}

fn sample_pool(pool_name: &'static str, pool: &sqlx::MySqlPool) {
    let open = f64::from(pool.size());
    let idle = pool.num_idle() as f64;
    let max = f64::from(pool.options().get_max_connections());
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "pool" => pool_name, "state" => "open").set(open);
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "pool" => pool_name, "state" => "idle").set(idle);
    metrics::gauge!(names::DB_POOL_MAX, "pool" => pool_name).set(max);
}

/// One sample. A store that does not answer leaves its gauges at their last value (they age out
/// of `/metrics` if it stays down; the readiness probe and the logs say why).
pub async fn sample(infra: &Infra, what: Sampled) {
    sample_pool("primary", &infra.db);
    if let Some(replica) = &infra.db_replica {
        sample_pool("replica", replica);
    }
    if what == Sampled::Pool {
        return;
    }
    for queue in infra.topology.queue_names() {
        match infra.amqp.queue_depth(&queue).await {
            Ok(depth) => {
                metrics::gauge!(names::QUEUE_DEPTH, "queue" => queue)
                    .set(f64::from(depth.messages));
            }
            Err(error) => {
                tracing::debug!(queue, %error, "queue depth not sampled");
            }
        }
    }
    match outbox::backlog(&infra.db).await {
        Ok((pending, oldest)) => {
            metrics::gauge!(names::OUTBOX_BACKLOG).set(pending as f64);
            metrics::gauge!(names::OUTBOX_OLDEST_AGE).set(oldest.as_secs_f64());
        }
        Err(error) => tracing::debug!(%error, "outbox backlog not sampled"),
    }
}
