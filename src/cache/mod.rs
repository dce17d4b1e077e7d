//! The cache of settled history: merged, hole-correct answers for the steps
//! whose data can no longer change, so that a dashboard refreshing its
//! ranges asks the upstreams (and their coverage) only for the fresh edge.
//!
//! - `plan.rs`: what of a query may be cached, and its key (pure);
//! - `join.rs`: a cached answer's settled steps joined with the fresh ones
//!   (pure: the merge itself, over two answers);
//! - `memory.rs`: the in-memory store, least recently used out first;
//! - `shared.rs`: the store in Redis, shared by several proxies;
//! - `edge.rs`: a query answered through the cache (asks the supervisor).
//!
//! Only answers without warnings are kept: an upstream that failed, was
//! down or timed out leaves a warning, and its holes may be filled once it
//! is back. Never a step inside the fresh edge, never a query the analysis
//! cannot read.

mod edge;
mod join;
mod memory;
mod plan;
mod shared;

pub use edge::answer;
pub use join::join;
pub use memory::{Entry, Memory};
pub use plan::{Asked, Plan, fresh_start, plan};

use crate::config::{CacheBackend, CacheConfig};
use crate::metrics::Metrics;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The cache a proxy's queries share.
pub struct Cache {
    store: Store,
    settle: Duration,
    ttl: Duration,
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

enum Store {
    Memory(Mutex<Memory>),
    Shared(shared::Shared),
}

impl Cache {
    /// The cache `config` describes; an error (a Redis URL that does not
    /// read) is the configuration's.
    pub fn new(config: &CacheConfig, metrics: Arc<Metrics>) -> Result<Cache, String> {
        let store = match &config.backend {
            CacheBackend::Memory => {
                Store::Memory(Mutex::new(Memory::new(config.max_bytes, config.ttl)))
            }
            CacheBackend::Redis { url } => {
                Store::Shared(shared::Shared::start(url, metrics.clone())?)
            }
        };
        Ok(Cache {
            store,
            settle: config.settle,
            ttl: config.ttl,
            max_bytes: config.max_bytes,
            metrics,
        })
    }

    /// The plan for `asked`, now.
    pub fn plan(&self, asked: &Asked<'_>) -> Plan {
        plan(asked, crate::time::now_ms(), self.settle.as_millis() as i64)
    }

    async fn get(&self, key: &str) -> Option<Entry> {
        let now_ms = crate::time::now_ms();
        match &self.store {
            // It forgets what is past the ttl itself.
            Store::Memory(m) => m.lock().unwrap_or_else(|e| e.into_inner()).get(key, now_ms),
            // Redis keeps an entry for what was left of the ttl when it was
            // stored, by its own clock.
            Store::Shared(s) => {
                (s.get(key).await).filter(|e| now_ms - e.asked_at_ms < self.ttl.as_millis() as i64)
            }
        }
    }

    fn put(&self, key: String, entry: Entry) {
        match &self.store {
            Store::Memory(m) => {
                let mut memory = m.lock().unwrap_or_else(|e| e.into_inner());
                memory.put(key, entry);
                self.metrics.cache_bytes(memory.bytes());
            }
            Store::Shared(s) => {
                let age = crate::time::now_ms() - entry.asked_at_ms;
                let left = self
                    .ttl
                    .saturating_sub(Duration::from_millis(age.max(0) as u64));
                if !left.is_zero() {
                    s.put(key, entry, left);
                }
            }
        }
    }

    /// The largest answer worth gathering to keep: an eighth of
    /// `max_bytes` (see `Memory::put`), in Redis too.
    fn largest_entry(&self) -> usize {
        self.max_bytes / 8
    }

    fn counted(&self, result: &str, saved_steps: u64) {
        self.metrics.cache_request(result, saved_steps);
    }
}
