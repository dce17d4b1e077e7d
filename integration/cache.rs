//! The cache of settled history against live replicas: data keeps arriving,
//! so the settle edge is real. A range asked again, shifted on, is joined
//! from the cache and the fresh steps, byte for byte the answer an uncached
//! proxy gives; answers that must not be kept are not.

use crate::harness::*;
use crate::live::{exporter, now_s, replica};
use crate::proxy_binary;
use std::path::Path;
use std::time::Duration;

const BATTERY: &[&str] = &[
    "live_temperature",
    "rate(live_requests_total[5s])",
    "sum by (path) (increase(live_requests_total[5s]))",
    "max_over_time(live_temperature[3s])",
    "histogram_quantile(0.9, sum by (le) (rate(live_duration_seconds_bucket[5s])))",
    "count_values(\"v\", live_requests_total)",
    "absent(no_such_metric)",
];

/// The proxy settings both proxies share: the replicas' look-back and
/// scrape interval, a quick probe.
const LIVE: [(&str, &str); 3] = [
    ("PROM_HA_PROXY__COVERAGE__LOOKBACK_DELTA", "10s"),
    ("PROM_HA_PROXY__COVERAGE__SCRAPE_INTERVAL", "1s"),
    ("PROM_HA_PROXY__HEALTH__PROBE_INTERVAL", "500ms"),
];

fn range_text(base: &str, q: &str, (start, end): (i64, i64), step: i64) -> (u16, String) {
    let params = [
        ("query", q),
        ("start", &start.to_string()),
        ("end", &end.to_string()),
        ("step", &step.to_string()),
    ];
    http_get(&format!(
        "{base}/api/v1/query_range?{}",
        query_string(&params)
    ))
    .unwrap()
}

fn cache_requests(base: &str, result: &str) -> f64 {
    metric(
        base,
        &format!("prom_ha_proxy_cache_requests_total{{result=\"{result}\"}}"),
    )
}

#[test]
fn a_range_shifted_across_the_settle_edge_is_the_uncached_answer_byte_for_byte() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cache-live");
    let target = exporter();
    let (a, mut b) = std::thread::scope(|s| {
        let a = s.spawn(|| replica(&root, "a", &target));
        (a.join().unwrap(), replica(&root, "b", &target))
    });
    let mut cached_env = LIVE.to_vec();
    // Settled 10 s on: a scrape late by seconds on a busy machine still
    // lands before its step is kept.
    cached_env.push(("PROM_HA_PROXY__CACHE__SETTLE", "10s"));
    let cached = Proxy::start_with_env(proxy_binary(), &[&a.url, &b.url], &[], &cached_env);
    let mut uncached_env = LIVE.to_vec();
    uncached_env.push(NO_CACHE);
    let uncached = Proxy::start_with_env(proxy_binary(), &[&a.url, &b.url], &[], &uncached_env);
    let started = now_s();
    wait_until("40 s of scrapes", Duration::from_secs(80), || {
        now_s() >= started + 40
    });

    // Asked, then asked again one step on: the first ask's steps, all
    // settled, come from the cache, the last step from the replicas. Every
    // step ends 11 s or more before now, so its scrapes have all landed,
    // and the uncached proxy reads the same data.
    let partial_before = cache_requests(&cached.url, "partial");
    for q in BATTERY {
        let end = now_s() - 12;
        let (status, first) = range_text(&cached.url, q, (end - 30, end), 1);
        assert_eq!(status, 200, "{q}: {first}");
        let (status, shifted) = range_text(&cached.url, q, (end - 29, end + 1), 1);
        assert_eq!(status, 200, "{q}: {shifted}");
        let (_, want) = range_text(&uncached.url, q, (end - 29, end + 1), 1);
        assert!(shifted == want, "{q}: joined\n{shifted}\nuncached\n{want}");
        assert!(!shifted.contains("warnings"), "{q}: {shifted}");
    }
    let partial = cache_requests(&cached.url, "partial") - partial_before;
    assert_eq!(
        partial,
        BATTERY.len() as f64,
        "joined from the cache and fresh steps"
    );
    let saved = metric(&cached.url, "prom_ha_proxy_cache_saved_steps_total");
    assert!(saved >= 20.0 * BATTERY.len() as f64, "{saved} steps saved");

    // Reading past now from its first step on: never cached.
    let uncacheable = cache_requests(&cached.url, "uncacheable");
    let end = now_s() - 5;
    let (status, _) = range_text(
        &cached.url,
        "live_temperature offset -1m",
        (end - 30, end),
        1,
    );
    assert_eq!(status, 200);
    assert_eq!(
        cache_requests(&cached.url, "uncacheable"),
        uncacheable + 1.0
    );

    // b killed: its failure's warning keeps the answer out of the cache, so
    // a settled range asked twice is asked of the replicas twice.
    b.kill();
    let (hits, misses) = (
        cache_requests(&cached.url, "hit"),
        cache_requests(&cached.url, "miss"),
    );
    let end = now_s() - 15;
    for _ in 0..2 {
        let q = "min_over_time(live_temperature[4s])";
        let (status, body) = range_text(&cached.url, q, (end - 20, end), 1);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("warnings"), "{body}");
    }
    assert_eq!(cache_requests(&cached.url, "hit"), hits);
    assert_eq!(cache_requests(&cached.url, "miss"), misses + 2.0);
}

/// Every key the cache holds: `KEYS`' array of bulk strings, read by their
/// lengths (a key holds newlines).
fn cache_keys(port: u16) -> Vec<Vec<u8>> {
    let reply = command(port, &[b"KEYS", b"prom-ha-proxy:cache:*"]).unwrap_or_default();
    let mut keys = Vec::new();
    let mut rest = &reply[..];
    while let Some(at) = rest.iter().position(|&b| b == b'$') {
        let line_end = rest[at..].windows(2).position(|w| w == b"\r\n").unwrap() + at;
        let len: usize = std::str::from_utf8(&rest[at + 1..line_end])
            .unwrap()
            .parse()
            .unwrap();
        keys.push(rest[line_end + 2..line_end + 2 + len].to_vec());
        rest = &rest[line_end + 2 + len..];
    }
    keys
}

#[test]
fn two_proxies_share_one_redis_and_answer_without_it_while_it_is_gone() {
    let c = crate::cluster();
    let mut redis = Redis::start();
    let shared = [
        ("PROM_HA_PROXY__CACHE__BACKEND", "redis"),
        ("PROM_HA_PROXY__CACHE__URL", &redis.url()),
    ];
    let [first, second] =
        [(); 2].map(|_| Proxy::start_with_env(proxy_binary(), &[&c.a.url, &c.b.url], &[], &shared));
    let (start, end) = (c.tl.hole_a.start - 1800, c.tl.hole_a.end + 1800);
    let ask_range = |base: &str, q: &str| range_text(base, q, (start, end), 60);

    // The first proxy's answer, kept in Redis, is the second's: a hit.
    let q = "sum by (job) (rate(http_requests_total[5m]))";
    let warmed = ask_range(&first.url, q);
    assert_eq!(warmed.0, 200, "{warmed:?}");
    wait_until("the answer in redis", Duration::from_secs(10), || {
        redis.keys() >= 1
    });
    assert_eq!(ask_range(&second.url, q), warmed);
    assert_eq!(cache_requests(&second.url, "hit"), 1.0);

    // An entry that is not an answer (another program's value under the
    // key, a half-written one): not served; the query is asked, a miss.
    for key in cache_keys(redis.port) {
        // Its times say: from 0, settled to the range's end, asked now.
        let now_ms = (now_s() * 1000).to_be_bytes();
        let head = [0i64.to_be_bytes(), (end * 1000).to_be_bytes(), now_ms].concat();
        let garbage = [&head[..], b"{\"status\":\"succ"].concat();
        command(redis.port, &[b"SET", &key, &garbage]).unwrap();
    }
    let misses = cache_requests(&second.url, "miss");
    assert_eq!(ask_range(&second.url, q), warmed);
    assert_eq!(cache_requests(&second.url, "miss"), misses + 1.0);

    // Redis frozen (SIGSTOP): a lookup waits its bounded time, then the
    // query is answered without it.
    let pid = redis.process.as_ref().unwrap().child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let errors = |p: &Proxy| metric(&p.url, "prom_ha_proxy_cache_store_errors_total");
    let frozen = ask_range(&second.url, "min by (job) (rate(http_requests_total[5m]))");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(frozen.0, 200, "{frozen:?}");
    wait_until(
        "the timed-out lookup counted",
        Duration::from_secs(10),
        || errors(&second) >= 1.0,
    );

    // Redis killed under a query loop: nothing fails; queries go on uncached.
    let queries = QueryLoop::default();
    std::thread::scope(|s| {
        let _stop = queries.stopper();
        s.spawn(|| {
            let q = "avg by (job) (rate(http_requests_total[10m]))";
            queries.run("redis gone", Duration::from_millis(50), || {
                Ok(ask_range(&first.url, q))
            });
        });
        wait_until("a few answers", Duration::from_secs(30), || {
            queries.ok() >= 5
        });
        redis.process = None;
        wait_until("redis missed", Duration::from_secs(30), || {
            errors(&first) >= 1.0
        });
        let answered = queries.ok();
        wait_until("answers without it", Duration::from_secs(30), || {
            queries.ok() >= answered + 10
        });
        queries.stop();
    });
    assert_eq!(queries.failed(), 0);
    let misses = cache_requests(&first.url, "miss");
    assert_eq!(
        ask_range(&first.url, q),
        warmed,
        "answered uncached, the same"
    );
    assert_eq!(cache_requests(&first.url, "miss"), misses + 1.0);

    // Back on its port (empty): used again, by both.
    redis.spawn().unwrap();
    let q = "max by (job) (rate(http_requests_total[15m]))";
    wait_until("kept in redis again", Duration::from_secs(30), || {
        let _ = ask_range(&first.url, q);
        redis.keys() >= 1
    });
    // The second's connection broke with the old server: its next ask
    // finds that out and reconnects; one after, it is served from Redis.
    let hits = cache_requests(&second.url, "hit");
    let want = ask_range(&first.url, q);
    wait_until(
        "the second served from redis",
        Duration::from_secs(30),
        || {
            assert_eq!(ask_range(&second.url, q), want);
            cache_requests(&second.url, "hit") > hits
        },
    );
}
