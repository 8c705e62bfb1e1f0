//! The catalog's cache and the regular order flow.

use std::time::Duration;

use super::Environment;
use super::reader::Reader;

#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Lifetime of a cached product detail (± 10 % jitter).
    pub product_cache_ttl: Duration,
    /// Lifetime of the "no such product" marker.
    pub product_cache_missing_ttl: Duration,
}

impl CatalogSettings {
    pub(super) fn read(r: &mut Reader<'_>, _env: Environment) -> Option<CatalogSettings> {
        r.section("Catalog");
        let product_cache_ttl = r.duration(
            "product_cache_ttl",
            "lifetime of a cached product detail (± 10 % jitter)",
            Duration::from_secs(60),
        );
        let product_cache_missing_ttl = r.duration(
            "product_cache_missing_ttl",
            "lifetime of the \"no such product\" marker",
            Duration::from_secs(30),
        );
        Some(CatalogSettings {
            product_cache_ttl: product_cache_ttl?,
            product_cache_missing_ttl: product_cache_missing_ttl?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct OrderSettings {
    /// Unpaid orders close after this (regular and flash-sale ones).
    pub pay_timeout: Duration,
    /// How often an idle outbox relay looks for new messages.
    pub outbox_poll_interval: Duration,
}

impl OrderSettings {
    pub(super) fn read(r: &mut Reader<'_>, _env: Environment) -> Option<OrderSettings> {
        r.section("Orders");
        let pay_timeout = r.duration(
            "order_pay_timeout",
            "unpaid orders close after this",
            Duration::from_secs(15 * 60),
        );
        let outbox_poll_interval = r.duration(
            "outbox_poll_interval",
            "how often an idle outbox relay looks for messages",
            Duration::from_millis(500),
        );
        Some(OrderSettings {
            pay_timeout: pay_timeout?,
            outbox_poll_interval: outbox_poll_interval?,
        })
    }
}
