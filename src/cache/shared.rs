//! The cache in Redis, shared by every proxy that names the same server:
//! the scale-out path, where several proxies behind one Service answer a
//! dashboard one of them warmed.
//!
//! Redis is spoken to from a thread of its own (the client needs a tokio
//! runtime that lives as long as its connection; the proxy's workers each
//! have one of their own). Every operation is bounded: a lookup waits at
//! most `WAIT`, a store is not waited for, and an unreachable server is a
//! miss, a warning when it goes and when it comes back, and a count in
//! `cache_store_errors_total`.

use super::Entry;
use crate::metrics::Metrics;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The longest Redis is given to connect or to answer; past it the
/// operation fails and is counted.
const REDIS_TIMEOUT: Duration = Duration::from_millis(200);

/// The longest a query waits for a lookup: Redis's time and a margin, so
/// that a slow Redis is counted on its thread before a query gives up.
const WAIT: Duration = Duration::from_millis(250);

/// Keys are the cache's own under this prefix.
const PREFIX: &str = "prom-ha-proxy:cache:";

enum Op {
    Get(String, oneshot::Sender<Option<Entry>>),
    Put(String, Entry, Duration),
}

pub struct Shared {
    ops: mpsc::Sender<Op>,
}

impl Shared {
    /// Starts the Redis thread for `url` (checked to parse); the connection
    /// is made on first use, and again whenever it broke.
    pub fn start(url: &str, metrics: Arc<Metrics>) -> Result<Shared, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let (ops, rx) = mpsc::channel(1024);
        let url = url.to_string();
        std::thread::Builder::new()
            .name("cache-redis".into())
            .spawn(move || serve(client, rx, url, metrics))
            .map_err(|e| e.to_string())?;
        Ok(Shared { ops })
    }

    /// The entry under `key`, or None: absent, or Redis slower than `WAIT`
    /// or gone.
    pub async fn get(&self, key: &str) -> Option<Entry> {
        let (tx, rx) = oneshot::channel();
        self.ops.try_send(Op::Get(key.to_string(), tx)).ok()?;
        tokio::time::timeout(WAIT, rx).await.ok()?.ok()?
    }

    /// Stores `entry` under `key` for `ttl`, without waiting; dropped if the
    /// Redis thread is behind by a thousand operations.
    pub fn put(&self, key: String, entry: Entry, ttl: Duration) {
        let _ = self.ops.try_send(Op::Put(key, entry, ttl));
    }
}

fn serve(client: redis::Client, mut rx: mpsc::Receiver<Op>, url: String, metrics: Arc<Metrics>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return log::error!("cache: no runtime for Redis: {e}"),
    };
    runtime.block_on(async move {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager = match redis::aio::ConnectionManager::new_lazy_with_config(client, config) {
            Ok(m) => m,
            Err(e) => return log::error!("cache: Redis at {url}: {e}"),
        };
        let up = Arc::new(AtomicBool::new(true));
        while let Some(op) = rx.recv().await {
            let (mut conn, url, metrics, up) =
                (manager.clone(), url.clone(), metrics.clone(), up.clone());
            tokio::spawn(async move {
                let outcome = run(&mut conn, op).await;
                reached(&url, &metrics, &up, outcome);
            });
        }
    });
}

async fn run(conn: &mut redis::aio::ConnectionManager, op: Op) -> redis::RedisResult<()> {
    match op {
        Op::Get(key, reply) => {
            let found: Option<Vec<u8>> = redis::cmd("GET")
                .arg(format!("{PREFIX}{key}"))
                .query_async(conn)
                .await?;
            let _ = reply.send(found.and_then(decode));
        }
        Op::Put(key, entry, ttl) => {
            let ms = ttl.as_millis().max(1) as u64;
            redis::cmd("SET")
                .arg(format!("{PREFIX}{key}"))
                .arg(encode(&entry))
                .arg("PX")
                .arg(ms)
                .query_async::<()>(conn)
                .await?;
        }
    }
    Ok(())
}

/// Notes Redis gone or back (a warning at each change) and counts failures.
fn reached(url: &str, metrics: &Metrics, up: &AtomicBool, outcome: redis::RedisResult<()>) {
    match outcome {
        Ok(()) => {
            if !up.swap(true, Ordering::Relaxed) {
                log::warn!("cache: Redis at {url} is back; the cache is shared again");
            }
        }
        Err(e) => {
            metrics.cache_store_error();
            if up.swap(false, Ordering::Relaxed) {
                log::warn!("cache: Redis at {url} failed ({e}); answering without the cache");
            }
        }
    }
}

/// An entry as Redis keeps it: its three times (big-endian), then the body.
fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + entry.body.len());
    for n in [entry.from_ms, entry.settled_to_ms, entry.asked_at_ms] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&entry.body);
    out
}

fn decode(bytes: Vec<u8>) -> Option<Entry> {
    if bytes.len() < 24 {
        return None;
    }
    let n = |i: usize| i64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let (from_ms, settled_to_ms, asked_at_ms) = (n(0), n(1), n(2));
    let mut bytes = Bytes::from(bytes);
    let body = bytes.split_off(24);
    Some(Entry {
        body,
        from_ms,
        settled_to_ms,
        asked_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_comes_back_as_it_went_and_a_short_value_is_none() {
        let entry = Entry {
            body: Bytes::from_static(b"{\"status\":\"success\"}"),
            from_ms: -5,
            settled_to_ms: 1_700_000_000_000,
            asked_at_ms: 42,
        };
        let back = decode(encode(&entry)).unwrap();
        assert_eq!(
            (
                back.body,
                back.from_ms,
                back.settled_to_ms,
                back.asked_at_ms
            ),
            (
                entry.body,
                entry.from_ms,
                entry.settled_to_ms,
                entry.asked_at_ms
            )
        );
        assert!(decode(vec![0; 23]).is_none());
    }
}
