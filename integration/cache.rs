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

fn range_text(base: &str, q: &str, start: i64, end: i64) -> (u16, String) {
    let params = [
        ("query", q),
        ("start", &start.to_string()),
        ("end", &end.to_string()),
        ("step", "1"),
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
    cached_env.push(("PROM_HA_PROXY__CACHE__SETTLE", "5s"));
    let cached = Proxy::start_with_env(proxy_binary(), &[&a.url, &b.url], &[], &cached_env);
    let mut uncached_env = LIVE.to_vec();
    uncached_env.push(NO_CACHE);
    let uncached = Proxy::start_with_env(proxy_binary(), &[&a.url, &b.url], &[], &uncached_env);
    let started = now_s();
    wait_until("40 s of scrapes", Duration::from_secs(80), || {
        now_s() >= started + 40
    });

    // Asked, then asked again one step on: the steps settled at the first
    // ask come from the cache, the rest from the replicas. Every step ends
    // 4 s or more before now, so its scrapes have all landed, and the
    // uncached proxy reads the same data.
    let partial_before = cache_requests(&cached.url, "partial");
    for q in BATTERY {
        let end = now_s() - 5;
        let (status, first) = range_text(&cached.url, q, end - 30, end);
        assert_eq!(status, 200, "{q}: {first}");
        let (status, shifted) = range_text(&cached.url, q, end - 29, end + 1);
        assert_eq!(status, 200, "{q}: {shifted}");
        let (_, want) = range_text(&uncached.url, q, end - 29, end + 1);
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
    let (status, _) = range_text(&cached.url, "live_temperature offset -1m", end - 30, end);
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
        let (status, body) = range_text(
            &cached.url,
            "min_over_time(live_temperature[4s])",
            end - 20,
            end,
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("warnings"), "{body}");
    }
    assert_eq!(cache_requests(&cached.url, "hit"), hits);
    assert_eq!(cache_requests(&cached.url, "miss"), misses + 2.0);
}
