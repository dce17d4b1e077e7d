//! The cache of settled history: merged, hole-correct answers for the steps
//! whose data can no longer change, so that a dashboard refreshing its
//! ranges asks the upstreams (and their coverage) only for the fresh edge.
//!
//! - `plan.rs`: what of a query may be cached, and its key (pure);
//! - `join.rs`: a cached answer's settled steps joined with the fresh ones
//!   (pure: the merge itself, over two answers);
//! - `memory.rs`: the in-memory store, least recently used out first;
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

pub use edge::answer;
pub use join::join;
pub use memory::{Entry, Memory};
pub use plan::{Asked, Plan, fresh_start, plan};

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cache a proxy's queries share.
pub struct Cache {
    memory: Mutex<Memory>,
    settle: Duration,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(config: &CacheConfig, metrics: Arc<Metrics>) -> Cache {
        Cache {
            memory: Mutex::new(Memory::new(config.max_bytes, config.ttl)),
            settle: config.settle,
            metrics,
        }
    }

    /// The plan for `asked`, now.
    pub fn plan(&self, asked: &Asked<'_>) -> Plan {
        plan(asked, crate::time::now_ms(), self.settle.as_millis() as i64)
    }

    fn get(&self, key: &str) -> Option<Entry> {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.get(key, Instant::now())
    }

    fn put(&self, key: String, entry: Entry) {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.put(key, entry);
        self.metrics.cache_bytes(memory.bytes());
    }

    /// The largest answer worth gathering to keep (see `Memory::put`).
    fn largest_entry(&self) -> usize {
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.largest_entry()
    }

    fn counted(&self, result: &str, saved_steps: u64) {
        self.metrics.cache_request(result, saved_steps);
    }
}
