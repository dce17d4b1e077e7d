//! End-to-end latency benchmark against real Prometheus replicas on loopback:
//! the same queries sent to each replica directly and through the proxy
//! (coverage-aware merge on, and off), medians and ratios printed as a table.
//!
//! `cargo run --release --example e2e [-- ROUNDS]` (default 200 rounds per query).
//! A benchmark, not a test: it asserts nothing about time.

#[path = "harness.rs"]
mod harness;

use harness::*;
use prom_ha_proxy::config::{Config, Overrides};
use std::path::Path;
use std::time::Duration;

fn start_proxy(upstreams: &[&str], coverage: bool) -> String {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = vec![(
        "PROM_HA_PROXY__COVERAGE__ENABLED".to_string(),
        coverage.to_string(),
    )];
    let overrides = Overrides {
        listen: Some(listen.clone()),
        upstream_urls: upstreams.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let config = Config::load_from(None, env, &overrides).expect("config");
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(prom_ha_proxy::http::serve(config))
    });
    let url = format!("http://{listen}");
    wait_until("proxy", Duration::from_secs(30), || {
        http_get(&format!("{url}/api/v1/query?query=1")).is_ok_and(|(s, _)| s == 200)
    });
    url
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let tl = Timeline::recent();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    let (a, b) = start_replicas(&root, &tl);
    let with = start_proxy(&[&a.url, &b.url], true);
    let plain = start_proxy(&[&a.url, &b.url], false);
    let t = tl.end - 60;
    let range = |q: &str| range_path(&tl, q);
    let instant = |q: &str| instant_path(q, t);
    let cases = [
        ("instant 1+1", instant("1+1")),
        ("instant 16-series vector", instant("http_requests_total")),
        (
            "instant sum by rate",
            instant("sum by (code) (rate(http_requests_total[5m]))"),
        ),
        ("range 16 series x 720 steps", range("http_requests_total")),
        (
            "range rate 16 x 720",
            range("rate(http_requests_total[5m])"),
        ),
        (
            "range histogram_quantile",
            range(
                "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
            ),
        ),
    ];
    println!(
        "{rounds} sequential rounds per row; medians in ms; slowest = the slower replica queried directly\n"
    );
    println!(
        "| query | bytes | a | b | proxy, coverage on | proxy, coverage off | on / slowest | off / slowest | on / off |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, pq) in cases {
        let (ma, bytes) = median_ms(&a.url, &pq, rounds);
        let (mb, _) = median_ms(&b.url, &pq, rounds);
        let (mw, _) = median_ms(&with, &pq, rounds);
        let (mp, _) = median_ms(&plain, &pq, rounds);
        let slowest = ma.max(mb);
        println!(
            "| {name} | {bytes} | {ma:.2} | {mb:.2} | {mw:.2} | {mp:.2} | {:.2} | {:.2} | {:.2} |",
            mw / slowest,
            mp / slowest,
            mw / mp
        );
    }
}
