//! The burst benchmark: N range queries sent at once, as a dashboard's first
//! load sends them, to one replica directly and through the release proxy
//! (just started, nothing remembered) in front of two; the slowest answer of
//! each, their ratio, and the proxy's peak RSS (`VmHWM`).
//!
//! `scripts/bench-burst [SERIES] [ROUNDS]` (defaults 800 series, 3 rounds;
//! medians of the rounds). A benchmark, not a test: it asserts only that
//! every answer was a 200.

#[path = "harness.rs"]
mod harness;

use harness::*;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// Milliseconds until the slowest of `n` requests for `url`, sent at once.
fn slowest_ms(url: &str, n: usize) -> f64 {
    let start = Arc::new(Barrier::new(n));
    let asks: Vec<_> = (0..n)
        .map(|_| {
            let (url, start) = (url.to_string(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let t = Instant::now();
                let (status, body) = get_identity(&agent(), &url);
                assert_eq!(status, 200, "{url}: {body}");
                t.elapsed().as_secs_f64() * 1000.0
            })
        })
        .collect();
    asks.into_iter()
        .map(|a| a.join().unwrap())
        .fold(0.0, f64::max)
}

/// The peak resident memory of a process so far, in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let series = next_number(&mut args, 800);
    let rounds = next_number(&mut args, 3);
    let binary = release_binary("scripts/bench-burst");
    let tl = Timeline::recent();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/burst-bench");
    eprintln!("backfilling two replicas with {series} series each…");
    let om = big_openmetrics(&tl, series, &[]);
    let (a, b) = start_pair(&root, &om, &om);
    println!(
        "{series} series over 3 h, ranges at 15 s steps; {rounds} rounds, medians of the slowest answer in ms; \
         the proxy started afresh each round (nothing remembered)\n"
    );
    println!(
        "| burst | one replica directly | through the proxy | proxy / direct | proxy peak RSS MB |"
    );
    println!("|---|---|---|---|---|");
    for (n, q) in [
        (40, "{__name__=~\"big_.+\",shard=\"1\"}"),
        (64, "sum by (shard) (rate(big_series[5m]))"),
        (40, "rate(big_series{shard=~\"[23]\"}[5m])"),
        (128, "big_series{shard=\"1\",instance=~\"host-[0-9]:9100\"}"),
    ] {
        let path = range_path(&tl, q);
        let (mut direct, mut proxied, mut peak) = (Vec::new(), Vec::new(), 0.0f64);
        for _ in 0..rounds {
            direct.push(slowest_ms(&format!("{}{path}", a.url), n));
            let proxy = Proxy::start(&binary, &[&a.url, &b.url], &[]);
            proxied.push(slowest_ms(&format!("{}{path}", proxy.url), n));
            peak = peak.max(peak_rss_mb(proxy.process.child.id()));
        }
        let (d, p) = (median(direct), median(proxied));
        println!(
            "| {n} × `{q}` | {d:.0} | {p:.0} | {:.2} | {peak:.1} |",
            p / d
        );
    }
}
