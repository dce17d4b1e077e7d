//! The in-memory store: answers by key, least recently used out first once
//! their bytes pass `max_bytes`, and none older than `ttl`. Pure: the clock
//! comes in as an argument.

use bytes::Bytes;
use std::time::Duration;

/// One cached answer.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The answer, as the proxy sent it.
    pub body: Bytes,
    /// A range's first step and the last settled one; an instant's time twice.
    pub from_ms: i64,
    pub settled_to_ms: i64,
    /// When the oldest part of it was asked of the upstreams (Unix ms, so
    /// that proxies sharing it agree): a join keeps its cached part's, so
    /// `ttl` bounds how long any sample is served.
    pub asked_at_ms: i64,
}

pub struct Memory {
    entries: lru::LruCache<String, Entry, ahash::RandomState>,
    bytes: usize,
    max_bytes: usize,
    ttl: Duration,
}

impl Memory {
    pub fn new(max_bytes: usize, ttl: Duration) -> Memory {
        Memory {
            entries: lru::LruCache::unbounded_with_hasher(ahash::RandomState::new()),
            bytes: 0,
            max_bytes,
            ttl,
        }
    }

    /// Bytes held: every entry's body and key.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The entry under `key`, if younger than `ttl` (an older one goes).
    pub fn get(&mut self, key: &str, now_ms: i64) -> Option<Entry> {
        let entry = self.entries.get(key)?;
        if now_ms - entry.asked_at_ms < self.ttl.as_millis() as i64 {
            return Some(entry.clone());
        }
        self.remove(key);
        None
    }

    /// The largest entry kept: an eighth of `max_bytes`, so one answer
    /// never empties the cache.
    pub fn largest_entry(&self) -> usize {
        self.max_bytes / 8
    }

    /// Keeps `entry` under `key`, in place of any before; one larger than
    /// [`Memory::largest_entry`] is not kept.
    pub fn put(&mut self, key: String, entry: Entry) {
        self.remove(&key);
        let size = cost(&key, &entry);
        if size > self.largest_entry() {
            return;
        }
        self.bytes += size;
        self.entries.put(key, entry);
        while self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((k, e)) => self.bytes -= cost(&k, &e),
                None => break,
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((k, e)) = self.entries.pop_entry(key) {
            self.bytes -= cost(&k, &e);
        }
    }
}

fn cost(key: &str, entry: &Entry) -> usize {
    key.len() + entry.body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: usize, at: i64) -> Entry {
        Entry {
            body: Bytes::from(vec![b'x'; len]),
            from_ms: 0,
            settled_to_ms: 0,
            asked_at_ms: at,
        }
    }

    #[test]
    fn the_least_recently_used_go_first_once_past_max_bytes() {
        let now = 1_700_000_000_000;
        let mut m = Memory::new(8_000, Duration::from_secs(60));
        for k in ["a", "b", "c"] {
            m.put(k.into(), entry(999, now));
        }
        assert_eq!(m.bytes(), 3_000);
        // a used: b is now the least recently used.
        assert!(m.get("a", now).is_some());
        for k in ["d", "e", "f", "g", "h", "i"] {
            m.put(k.into(), entry(999, now));
        }
        assert!(m.bytes() <= 8_000);
        assert!(m.get("b", now).is_none() && m.get("a", now).is_some());
        // Replacing an entry counts it once.
        let before = m.bytes();
        m.put("a".into(), entry(999, now));
        assert_eq!(m.bytes(), before);
    }

    #[test]
    fn entries_older_than_the_ttl_or_too_large_are_not_served() {
        let now = 1_700_000_000_000;
        let mut m = Memory::new(8_000, Duration::from_secs(60));
        m.put("old".into(), entry(10, now));
        assert!(m.get("old", now + 59_000).is_some());
        assert!(m.get("old", now + 60_000).is_none());
        assert_eq!(m.bytes(), 0);
        m.put("big".into(), entry(1_001, now));
        assert!(m.get("big", now).is_none());
    }
}
