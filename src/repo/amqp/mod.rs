//! RabbitMQ: the connection (`connection`), confirmed publishing (`publisher`), the
//! exchange/queue topology of docs/design.md §6 (`topology`) and the consuming loop ([`consumer`]).
//!
//! Both `serve` and `worker` declare the whole topology at start-up; declarations are idempotent,
//! so whichever role starts first creates it. Every name carries `SPIKE_AMQP_PREFIX`, which lets
//! tests (and tenants) share one broker without seeing each other's messages.
//!
//! ```text
//! spike.direct ──spike.order.create──────────▶ spike.order.create ──(reject)──▶ spike.dlx ─▶ spike.order.create.dead
//!      │  ▲                                                   
//!      │  └──(TTL expiry)── spike.order.create.retry.<n> ◀──spike.order.create.retry.<n>──┘ (consumer republishes)
//!      ├──order.close.delay──▶ order.close.delay ──(TTL = pay timeout)──▶ spike.direct/order.close
//!      └──order.close────────▶ order.close
//! ```

mod connection;
pub mod consumer;
pub mod policies;
mod publisher;
mod topology;

pub use connection::{Amqp, QueueDepth};
pub use publisher::Refusal;
pub use topology::Topology;

/// Routing key (and unprefixed queue name) of flash-sale order creation.
pub const ORDER_CREATE: &str = "spike.order.create";
/// Routing key (and unprefixed queue name) of the pay-timeout delay queue.
pub const ORDER_CLOSE_DELAY: &str = "order.close.delay";
/// Routing key (and unprefixed queue name) of order closing.
pub const ORDER_CLOSE: &str = "order.close";

/// Header counting how many retries a flash-sale order message has been through.
pub const ATTEMPT_HEADER: &str = "x-spike-attempt";
