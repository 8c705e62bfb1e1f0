//! Single flight: concurrent callers asking for the same key share one load instead of each
//! running it. A cold cache key under a burst of reads then costs MySQL one query, not one per
//! request (cache breakdown).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub struct SingleFlight<K, V> {
    calls: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    /// Runs `load` for `key` unless a call for `key` is in flight, in which case waits for that
    /// call's value. If the running load fails (or its caller goes away), a waiting caller runs
    /// its own `load`; the error goes only to the caller whose load failed.
    pub async fn run<E, F, Fut>(&self, key: K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = self
            .calls
            .lock()
            .expect("single-flight map poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let result = cell.get_or_try_init(load).await.cloned();
        // The first caller back removes the finished flight, so a later call loads afresh (by
        // then the value is usually in the cache and the load is not reached at all).
        let mut calls = self.calls.lock().expect("single-flight map poisoned");
        if calls
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
            && cell.initialized()
        {
            calls.remove(&key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_load() {
        let flights = SingleFlight::<u64, u64>::default();
        let loads = AtomicUsize::new(0);
        let calls = (0..50).map(|_| {
            flights.run(7, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, ()>(42)
            })
        });
        let results = futures_util::future::join_all(calls).await;
        assert!(results.iter().all(|r| *r == Ok(42)));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(
            flights.calls.lock().unwrap().is_empty(),
            "finished flights are removed"
        );
    }

    #[tokio::test]
    async fn a_failed_load_is_retried_by_the_next_caller() {
        let flights = SingleFlight::<u64, u64>::default();
        let first: Result<u64, &str> = flights.run(1, || async { Err("boom") }).await;
        assert_eq!(first, Err("boom"));
        let second: Result<u64, &str> = flights.run(1, || async { Ok(5) }).await;
        assert_eq!(second, Ok(5));
    }

    #[tokio::test]
    async fn later_calls_load_again() {
        let flights = SingleFlight::<u64, u64>::default();
        assert_eq!(flights.run(1, || async { Ok::<_, ()>(1) }).await, Ok(1));
        assert_eq!(flights.run(1, || async { Ok::<_, ()>(2) }).await, Ok(2));
    }
}
