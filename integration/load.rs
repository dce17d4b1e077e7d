//! A bounded load run on loopback: many clients sending a Grafana-like mix of
//! range and instant queries through the proxy (its release binary, as its
//! own process) for a fixed time, while one replica is killed and restarted.
//! Prints requests, failures, p50/p99 latency and the proxy's RSS before and after.
//!
//! `scripts/load [CLIENTS] [SECONDS]` (default 32 clients, 60 s). A benchmark:
//! it exits non-zero only if a request failed.

#[path = "harness.rs"]
mod harness;

use harness::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/prom-ha-proxy");
    assert!(
        binary.exists(),
        "build the release binary first (scripts/build-release)"
    );
    let tl = Timeline::recent();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load");
    let om = openmetrics(&tl, &[], PHASE_S);
    let mut x = Prometheus::start("x", &root.join("x"), &om);
    let y = Prometheus::start("y", &root.join("y"), &om);
    let proxy = Proxy::start_with_env(
        &binary,
        &[&x.url, &y.url],
        &[],
        &[("PROM_HA_PROXY__HEALTH__PROBE_INTERVAL", "1s")],
    );
    let pid = proxy.process.child.id();
    let (start, end) = (tl.start.to_string(), tl.end.to_string());
    let mut queries: Vec<String> = Vec::new();
    for (q, step) in [
        ("sum by (code) (rate(http_requests_total[5m]))", "60"),
        ("http_requests_total", "15"),
        (
            "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
            "30",
        ),
        ("avg_over_time(temperature_celsius[10m])", "60"),
    ] {
        let params = [
            ("query", q),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("step", step),
        ];
        queries.push(format!(
            "{}/api/v1/query_range?{}",
            proxy.url,
            query_string(&params)
        ));
    }
    for q in [
        "sum(up)",
        "topk(3, rate(http_requests_total[5m]))",
        "count(temperature_celsius)",
    ] {
        queries.push(format!(
            "{}/api/v1/query?{}",
            proxy.url,
            query_string(&[("query", q), ("time", end.as_str())])
        ));
    }
    // Warm up, then measure the resting size.
    for q in &queries {
        assert_eq!(http_get(q).unwrap().0, 200);
    }
    let rss_before = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let queries = Arc::new(queries);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, latencies, failures, queries) = (
                stop.clone(),
                latencies.clone(),
                failures.clone(),
                queries.clone(),
            );
            std::thread::spawn(move || {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let url = &queries[i % queries.len()];
                    i += 1;
                    let t = Instant::now();
                    let result = http_get(url);
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    match result {
                        Ok((200, body)) if body.starts_with(r#"{"status":"success""#) => {
                            latencies.lock().unwrap().push(ms)
                        }
                        Ok((status, body)) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{status}: {}", &body[..body.len().min(200)])),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    // RSS every tenth of the run: a leak climbs, an allocator's high-water mark levels off.
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            for _ in 0..10 {
                std::thread::sleep(Duration::from_secs(seconds) / 10);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                samples.push(rss_kib(pid) / 1024);
            }
            samples
        })
    };
    let third = Duration::from_secs(seconds) / 3;
    std::thread::sleep(third);
    x.kill();
    println!(
        "{:>5.1}s: replica x killed (SIGKILL)",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(third);
    x.restart();
    println!(
        "{:>5.1}s: replica x restarted and ready",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(seconds).saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = rss_kib(pid);
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    let failures = failures.lock().unwrap();
    println!(
        "\n{clients} clients, {elapsed:.0} s: {} requests ({:.0}/s), {} failed; latency p50 {:.1} ms, p99 {:.1} ms; proxy RSS {} MiB before, {} MiB after",
        lat.len() + failures.len(),
        (lat.len() + failures.len()) as f64 / elapsed,
        failures.len(),
        pct(0.5),
        pct(0.99),
        rss_before / 1024,
        rss_after / 1024
    );
    println!(
        "proxy RSS (MiB) at each tenth of the run: {:?}",
        sampler.join().unwrap()
    );
    for f in failures.iter().take(5) {
        println!("  failed: {f}");
    }
    drop(y);
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
