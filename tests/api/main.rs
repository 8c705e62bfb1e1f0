//! Integration tests through HTTP against the real MariaDB, Redis and RabbitMQ.
//! One test binary (faster to link than one per file); each test gets its own app, database,
//! Redis prefix and AMQP prefix from `helpers::spawn_app`, so tests run in parallel.

mod accounts;
mod auth;
mod bench;
mod config;
mod connections;
mod contract;
mod edges;
mod envelope;
mod failover_rabbitmq;
mod failover_redis;
mod failover_replica;
mod faults;
mod flash_sale;
mod flash_sale_batches;
mod flash_sale_recovery;
mod health;
mod helpers;
mod identities;
mod lifecycle;
mod logging;
mod metrics;
mod newcomer;
mod orders;
mod process;
mod products;
mod purchase_token;
mod queue_policy;
mod redis_cluster;
mod replica;
mod scale;
mod schema;
mod supervision;
mod traces;
mod waiting_line;
