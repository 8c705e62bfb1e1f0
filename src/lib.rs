//! spike: a flash-sale (秒杀) shopping backend.
//!
//! Layers, each depending only on the ones below it:
//! - [`api`]: HTTP routing, middleware, extractors, DTOs and the response envelope;
//! - [`service`]: business rules and transactions;
//! - [`repo`]: MySQL, Redis and RabbitMQ access; [`domain`]: value types valid by construction;
//! - [`util`]: domain-free helpers any layer may use (single-flight loading).
//!
//! [`config`] reads the settings, one section per area; [`startup`] is the composition root: it
//! builds the services once and wires them into a running HTTP server; [`worker`] is the background role;
//! [`background`] supervises every periodic and consuming task of a process. The load tool is
//! its own crate (`crates/spike-bench`), so the server links none of it.

pub mod api;
pub mod background;
pub mod config;
pub mod domain;
pub mod repo;
pub mod service;
pub mod startup;
pub mod telemetry;
pub mod util;
pub mod worker;
