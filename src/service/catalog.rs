//! The catalog: products and their stock, with a hardened Redis cache for product detail.
//!
//! Cache-aside for `GET /products/{id}`:
//! - **avalanche**: entries live `SPIKE_PRODUCT_CACHE_TTL` ± 10 % (random jitter), so a batch
//!   cached together does not expire together;
//! - **penetration**: a missing id is cached as an empty marker for
//!   `SPIKE_PRODUCT_CACHE_MISSING_TTL`, so probing unknown ids does not reach MySQL each time;
//! - **breakdown**: concurrent misses of one key share one MySQL read ([`SingleFlight`]);
//! - **consistency**: writes delete the key after the MySQL commit, and once more shortly after
//!   (a reader that loaded the old row before the commit may have written it back meanwhile).
//!
//! A Redis failure never fails a read: the cache is skipped and MySQL answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::MySqlPool;
use tokio_util::task::TaskTracker;

use super::ServiceError;
use crate::config::CatalogSettings;
use crate::domain::product::{NewProduct, Product, ProductChanges, ProductQuery};
use crate::repo::mysql::{self, flash_sale_events, products};
use crate::repo::redis::product_cache::{self, Cached};
use crate::repo::redis::{Keys, RedisConnection};
use crate::telemetry::metrics::names;
use crate::util::single_flight::SingleFlight;

/// How long after a write the key is deleted a second time.
const SECOND_INVALIDATION_DELAY: Duration = Duration::from_millis(500);

/// Counters of the product cache (also exported as `metrics` counters).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Product reads that reached MySQL because of a miss.
    pub loads: AtomicU64,
    /// Second invalidations scheduled and not yet done.
    pub pending_invalidations: AtomicU64,
}

#[derive(Clone)]
pub struct CatalogService {
    inner: Arc<Inner>,
}

struct Inner {
    /// The primary: product writes.
    db: MySqlPool,
    /// Catalog reads that may be a moment old: the list and the stock figure (a replica when
    /// one is configured, docs/catalog.md). Not the detail cache's loads: a row loaded from a
    /// lagging replica would be served for the cache's whole TTL.
    db_read: MySqlPool,
    redis: RedisConnection,
    keys: Keys,
    ttl: Duration,
    missing_ttl: Duration,
    flights: SingleFlight<u64, Option<Product>>,
    stats: CacheStats,
    /// Where the delayed second invalidations run, so shutdown waits for them.
    tasks: TaskTracker,
}

impl CatalogService {
    /// Keys go under `redis_prefix`.
    pub fn new(
        config: &CatalogSettings,
        redis_prefix: &str,
        db: MySqlPool,
        db_read: MySqlPool,
        redis: RedisConnection,
        tasks: TaskTracker,
    ) -> CatalogService {
        CatalogService {
            inner: Arc::new(Inner {
                db,
                db_read,
                redis,
                keys: Keys::new(redis_prefix.to_owned()),
                ttl: config.product_cache_ttl,
                missing_ttl: config.product_cache_missing_ttl,
                flights: SingleFlight::default(),
                stats: CacheStats::default(),
                tasks,
            }),
        }
    }

    pub fn cache_stats(&self) -> &CacheStats {
        &self.inner.stats
    }

    #[tracing::instrument(level = "debug", name = "mysql.tx create_product", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn create(&self, product: NewProduct) -> Result<Product, ServiceError> {
        let mut tx = self.inner.db.begin().await?;
        let id = products::insert(&mut tx, &product).await?;
        let created = products::find_active(&mut *tx, id)
            .await?
            .ok_or_else(|| ServiceError::internal("product vanished inside its own transaction"))?;
        tx.commit().await?;
        // The id may have been probed before it existed: drop a cached "missing" marker.
        self.invalidate(id).await;
        tracing::info!(product_id = id, "product created");
        Ok(created)
    }

    #[tracing::instrument(level = "debug", name = "mysql.tx update_product", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn update(&self, id: u64, changes: ProductChanges) -> Result<Product, ServiceError> {
        let mut tx = self.inner.db.begin().await?;
        if !products::lock_active(&mut tx, id).await? {
            return Err(ServiceError::ProductNotFound(id));
        }
        if !changes.is_empty() {
            products::update(&mut tx, id, &changes).await?;
        }
        let updated = products::find_active(&mut *tx, id)
            .await?
            .ok_or(ServiceError::ProductNotFound(id))?;
        tx.commit().await?;
        self.invalidate(id).await;
        Ok(updated)
    }

    /// Soft-deletes a product, unless a flash-sale event of it is upcoming or active (it would
    /// go on selling a product readers cannot see): 409 then. The product's row lock orders this
    /// against a concurrent event creation, which takes the same lock first.
    #[tracing::instrument(level = "debug", name = "mysql.tx delete_product", skip_all, fields(otel.kind = "client", db.system = "mysql"))]
    pub async fn delete(&self, id: u64) -> Result<(), ServiceError> {
        let mut tx = self.inner.db.begin().await?;
        if !products::lock_active(&mut tx, id).await? {
            return Err(ServiceError::ProductNotFound(id));
        }
        if flash_sale_events::product_has_unfinished(&mut *tx, id, mysql::now_utc()).await? {
            return Err(ServiceError::Conflict(
                "the product has an upcoming or active flash-sale event".into(),
            ));
        }
        products::soft_delete(&mut *tx, id).await?;
        tx.commit().await?;
        self.invalidate(id).await;
        tracing::info!(product_id = id, "product deleted");
        Ok(())
    }

    pub async fn list(&self, query: &ProductQuery) -> Result<(Vec<Product>, u64), ServiceError> {
        Ok(products::list(&self.inner.db_read, query).await?)
    }

    /// Current stock, straight from MySQL (no cache; from the replica when there is one).
    pub async fn stock(&self, id: u64) -> Result<u32, ServiceError> {
        products::stock(&self.inner.db_read, id)
            .await?
            .ok_or(ServiceError::ProductNotFound(id))
    }

    /// One product, from the cache when warm.
    pub async fn get(&self, id: u64) -> Result<Product, ServiceError> {
        let key = self.inner.keys.product(id);
        match self.read_cache(&key).await {
            Cached::Hit(product) => return Ok(product),
            Cached::Missing => return Err(ServiceError::ProductNotFound(id)),
            Cached::Absent => {}
        }
        let loaded = self
            .inner
            .flights
            .run(id, || self.load_and_cache(id, &key))
            .await?;
        loaded.ok_or(ServiceError::ProductNotFound(id))
    }

    /// Drops the cached detail of `id` now and once more a moment later (see the module doc).
    /// Errors are logged, not returned: the TTL bounds how long a failed delete can matter.
    pub async fn invalidate(&self, id: u64) {
        let key = self.inner.keys.product(id);
        let mut redis = self.inner.redis.clone();
        if let Err(error) = product_cache::invalidate(&mut redis, &key).await {
            tracing::warn!(product_id = id, %error, "product cache invalidation failed");
        }
        let inner = self.inner.clone();
        inner
            .stats
            .pending_invalidations
            .fetch_add(1, Ordering::Relaxed);
        self.inner.tasks.spawn(async move {
            tokio::time::sleep(SECOND_INVALIDATION_DELAY).await;
            if let Err(error) = product_cache::invalidate(&mut redis, &key).await {
                tracing::warn!(product_id = id, %error, "delayed product cache invalidation failed");
            }
            inner
                .stats
                .pending_invalidations
                .fetch_sub(1, Ordering::Relaxed);
        });
    }

    async fn read_cache(&self, key: &str) -> Cached {
        let cached = product_cache::get(&mut self.inner.redis.clone(), key)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "product cache unavailable; reading MySQL");
                Cached::Absent
            });
        let (counter, label) = match cached {
            Cached::Absent => (&self.inner.stats.misses, "miss"),
            _ => (&self.inner.stats.hits, "hit"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::CACHE_REQUESTS, "cache" => "product", "result" => label)
            .increment(1);
        cached
    }

    async fn load_and_cache(&self, id: u64, key: &str) -> Result<Option<Product>, ServiceError> {
        // Another flight may have filled the key between our miss and this flight's start.
        match product_cache::get(&mut self.inner.redis.clone(), key).await {
            Ok(Cached::Hit(product)) => return Ok(Some(product)),
            Ok(Cached::Missing) => return Ok(None),
            Ok(Cached::Absent) | Err(_) => {}
        }
        self.inner.stats.loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::CACHE_LOADS, "cache" => "product").increment(1);
        // From the primary: a cached row outlives the replica's lag (single flight makes these
        // loads one per product per TTL per process, which the primary does not notice).
        let product = products::find_active(&self.inner.db, id).await?;
        let mut redis = self.inner.redis.clone();
        let written = match &product {
            Some(product) => {
                product_cache::put(&mut redis, key, product, jittered(self.inner.ttl)).await
            }
            None => product_cache::put_missing(&mut redis, key, self.inner.missing_ttl).await,
        };
        if let Err(error) = written {
            tracing::warn!(product_id = id, %error, "product cache write failed");
        }
        Ok(product)
    }
}

/// `ttl` ± 10 %, at random.
fn jittered(ttl: Duration) -> Duration {
    ttl.mul_f64(0.9 + fastrand::f64() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let ttl = Duration::from_secs(100);
        for _ in 0..1000 {
            let d = jittered(ttl);
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
