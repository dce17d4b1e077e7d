//! The dashboard benchmark. First the first ask of a large CPU-bound range
//! (`LARGE`) of each replica alone and through a proxy that remembers
//! nothing. Then a 12-panel dashboard over the last 6 hours at
//! 15 s steps, refreshed every 30 s as `now` moves, against real replicas
//! that hold 6 hours of history and keep scraping a live exporter (so the
//! fresh edge is real): first against one replica directly, then through
//! the release proxy (cache on, as by default) in front of two. Prints each
//! refresh's latency (all 12 panels asked at once, as Grafana asks them) and
//! the replicas' CPU (user + system, from /proc) in each phase. Then two
//! proxies sharing one Redis: the first refreshes once, the second every
//! 30 s, served from what the first kept; prints how much of its panels'
//! steps came from the shared cache.
//!
//! `scripts/bench-dashboard [MINUTES] [INSTANCES] [SHARED_MINUTES]`
//! (defaults 10, 20 and 3: 20 instances is about 400 series). A benchmark,
//! not a test: it asserts only that every answer was a 200 without warnings.

#[path = "harness.rs"]
mod harness;

use harness::*;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PANELS: [&str; 12] = [
    "sum by (path) (rate(dash_requests_total[1m]))",
    "sum by (code) (increase(dash_requests_total[5m]))",
    "histogram_quantile(0.99, sum by (le) (rate(dash_latency_seconds_bucket[5m])))",
    "histogram_quantile(0.5, sum by (le, instance) (rate(dash_latency_seconds_bucket[5m])))",
    "avg_over_time(dash_temperature[5m])",
    "max by (room) (dash_temperature)",
    "topk(5, sum by (instance) (rate(dash_requests_total[5m])))",
    "count(dash_temperature > 20)",
    "sum(rate(dash_requests_total{code=\"500\"}[5m])) / sum(rate(dash_requests_total[5m]))",
    "rate(dash_requests_total{path=\"/api\"}[1m])",
    "irate(dash_requests_total{instance=\"host-1\"}[1m])",
    "sum by (instance) (rate(dash_latency_seconds_count[5m]))",
];

const HOURS: i64 = 6;
const STEP_S: i64 = 15;
const REFRESH: Duration = Duration::from_secs(30);
const BUCKETS: [&str; 6] = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"];

/// Every series' value at `t` (seconds): counters that grow with time,
/// gauges that swing, as lines `name{labels} value` + `suffix`.
fn exposition(t: f64, instances: usize, suffix: &str) -> String {
    let mut out = String::new();
    let ticks = t / STEP_S as f64;
    for i in 0..instances {
        for (p, path) in ["/api", "/login", "/static", "/search"].iter().enumerate() {
            for (c, code) in ["200", "500"].iter().enumerate() {
                let per_tick = ((i + 1) * (p + 1)) as f64 * if c == 0 { 10.0 } else { 0.5 };
                let v = (ticks * per_tick).floor();
                let _ = writeln!(
                    out,
                    "dash_requests_total{{instance=\"host-{i}\",path=\"{path}\",code=\"{code}\"}} {v}{suffix}"
                );
            }
        }
        for (b, le) in BUCKETS.iter().enumerate() {
            let v = (ticks * ((b + 1) * (i + 2)) as f64).floor();
            let _ = writeln!(
                out,
                "dash_latency_seconds_bucket{{instance=\"host-{i}\",le=\"{le}\"}} {v}{suffix}"
            );
        }
        let count = (ticks * (BUCKETS.len() * (i + 2)) as f64).floor();
        let _ = writeln!(
            out,
            "dash_latency_seconds_count{{instance=\"host-{i}\"}} {count}{suffix}"
        );
        let room = (t / 600.0 + i as f64).sin() * 8.0 + 20.0;
        let _ = writeln!(
            out,
            "dash_temperature{{room=\"room-{i}\"}} {room:.3}{suffix}"
        );
    }
    out
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Serves the live exposition on a loopback port of its own.
fn exporter(instances: usize) -> String {
    exporter_of(move || exposition(now_s(), instances, ""))
}

/// The history before now: every 15 s from 6 h 10 min ago to 5 min ago,
/// each series' samples together, in time order (as OpenMetrics wants
/// them; without TYPE lines, so every family reads as untyped).
fn history(instances: usize) -> String {
    let now = now_s() as i64;
    let mut lines: Vec<String> = Vec::new();
    let mut t = (now - HOURS * 3600 - 600) / STEP_S * STEP_S + 7;
    while t < now - 300 {
        lines.extend(
            exposition(t as f64, instances, &format!(" {t}"))
                .lines()
                .map(str::to_string),
        );
        t += STEP_S;
    }
    // Stable: each series' samples stay in time order.
    lines.sort_by(|x, y| x.split('}').next().cmp(&y.split('}').next()));
    let mut out = lines.join("\n");
    out.push_str("\n# EOF\n");
    out
}

/// One refresh: every panel asked at once over the last 6 h, as Grafana
/// aligns it; returns how long the slowest took (ms).
fn refresh(base: &str) -> f64 {
    let end = (now_s() as i64) / STEP_S * STEP_S;
    let start = end - HOURS * 3600;
    let began = Instant::now();
    std::thread::scope(|s| {
        for q in PANELS {
            s.spawn(move || {
                let params = [
                    ("query", q),
                    ("start", &start.to_string()),
                    ("end", &end.to_string()),
                    ("step", &STEP_S.to_string()),
                ];
                let url = format!("{base}/api/v1/query_range?{}", query_string(&params));
                let (status, body) = http_get(&url).unwrap();
                assert_eq!(status, 200, "{q}: {body}");
                assert!(!body.contains("\"warnings\""), "{q}: {body}");
            });
        }
    });
    began.elapsed().as_secs_f64() * 1000.0
}

/// Refreshes `base` every 30 s for `minutes`; each refresh's latency (ms)
/// and the CPU seconds each of `pids` spent meanwhile.
fn phase(base: &str, minutes: u64, pids: &[u32]) -> (Vec<f64>, Vec<f64>) {
    let before: Vec<f64> = pids.iter().map(|&p| cpu_s(p)).collect();
    let began = Instant::now();
    let mut latencies = Vec::new();
    let mut next = began;
    while began.elapsed() < Duration::from_secs(minutes * 60) {
        latencies.push(refresh(base));
        next += REFRESH;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let cpu = pids
        .iter()
        .zip(before)
        .map(|(&p, b)| cpu_s(p) - b)
        .collect();
    (latencies, cpu)
}

/// The large CPU-bound range of the first ask: every bucket's rate over the
/// whole 6 hours at 15 s steps.
const LARGE: &str = "rate(dash_latency_seconds_bucket[5m])";

/// The large range asked of `base` once; how long it took (ms) and its size.
fn large_range(base: &str) -> (f64, usize) {
    let end = (now_s() as i64) / STEP_S * STEP_S;
    let params = [
        ("query", LARGE),
        ("start", &(end - HOURS * 3600).to_string()),
        ("end", &end.to_string()),
        ("step", &STEP_S.to_string()),
    ];
    let url = format!("{base}/api/v1/query_range?{}", query_string(&params));
    let began = Instant::now();
    let (status, body) = http_get(&url).unwrap();
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("\"warnings\""), "{body}");
    (ms, body.len())
}

/// The first ask of the large range, `rounds` times: of replica a, of b,
/// and through a proxy that remembers nothing (no cache of answers, no
/// coverage counts), each round asking all three in turn. The median of
/// each, the median of each round's proxy / slower replica, and the size.
fn first_ask(binary: &Path, a: &str, b: &str, rounds: usize) -> ([f64; 3], f64, usize) {
    let forgetful = [NO_CACHE, ("PROM_HA_PROXY__COVERAGE__REMEMBER_FOR", "0s")];
    let proxy = Proxy::start_with_env(binary, &[a, b], &[], &forgetful);
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut paired = Vec::new();
    let mut bytes = 0;
    // One round first, not counted: every server has read the data once.
    for round in 0..=rounds {
        let [ta, tb, tp] = [a, b, proxy.url.as_str()].map(large_range);
        bytes = tp.1;
        if round > 0 {
            for (t, v) in [ta.0, tb.0, tp.0].into_iter().zip(&mut times) {
                v.push(t);
            }
            paired.push(tp.0 / ta.0.max(tb.0));
        }
    }
    let median = |v: &[f64]| percentile(v, 0.5);
    (times.each_ref().map(|v| median(v)), median(&paired), bytes)
}

/// What the second of two proxies sharing one Redis did.
struct Shared {
    /// The first proxy's one refresh (ms), its cache and Redis empty.
    cold_ms: f64,
    /// The second's refreshes (ms).
    latencies: Vec<f64>,
    /// Its panels: from the cache whole, partly, not at all.
    hit: f64,
    partial: f64,
    miss: f64,
    /// Steps it answered from the cache, of all its panels' steps.
    saved_steps: f64,
    all_steps: f64,
    /// The replicas' CPU seconds while the second refreshed.
    cpu: Vec<f64>,
}

/// Two proxies sharing one Redis (`cache.backend = "redis"`), as two
/// behind one Service: the first refreshes the dashboard once (Redis
/// empty: a first load), then the second refreshes it every 30 s for
/// `minutes`, answering from what the first kept.
fn shared_phase(binary: &Path, upstreams: &[&str], minutes: u64, pids: &[u32]) -> Shared {
    let redis = Redis::start();
    let url = redis.url();
    let env = [
        ("PROM_HA_PROXY__CACHE__BACKEND", "redis"),
        ("PROM_HA_PROXY__CACHE__URL", url.as_str()),
    ];
    let [first, second] = [(); 2].map(|_| Proxy::start_with_env(binary, upstreams, &[], &env));
    let cold_ms = refresh(&first.url);
    wait_until(
        "the first's answers in redis",
        Duration::from_secs(30),
        || redis.keys() >= PANELS.len(),
    );
    let (latencies, cpu) = phase(&second.url, minutes, pids);
    let result = |r: &str| {
        metric(
            &second.url,
            &format!("prom_ha_proxy_cache_requests_total{{result=\"{r}\"}}"),
        )
    };
    let steps_per_panel = (HOURS * 3600 / STEP_S + 1) as f64;
    Shared {
        cold_ms,
        hit: result("hit"),
        partial: result("partial"),
        miss: result("miss"),
        saved_steps: metric(&second.url, "prom_ha_proxy_cache_saved_steps_total"),
        all_steps: latencies.len() as f64 * PANELS.len() as f64 * steps_per_panel,
        latencies,
        cpu,
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let minutes = next_number(&mut args, 10) as u64;
    let instances = next_number(&mut args, 20);
    let shared_minutes = next_number(&mut args, 3) as u64;
    let binary = release_binary("scripts/bench-dashboard");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-bench");
    let target = exporter(instances);
    eprintln!("backfilling two replicas with {HOURS} h of {instances} instances…");
    let om = history(instances);
    let replica = |name: &str| {
        let config = format!(
            "global:\n  scrape_interval: 15s\n  external_labels:\n    replica: {name}\n\
             scrape_configs:\n- job_name: dash\n  static_configs:\n  - targets: ['{target}']\n"
        );
        Prometheus::start_with(name, &root.join(name), &om, &config, &[])
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| replica("a"));
        (a.join().unwrap(), replica("b"))
    });
    eprintln!("the large range's first ask…");
    let large = first_ask(&binary, &a.url, &b.url, 11);
    let proxy = Proxy::start(&binary, &[&a.url, &b.url], &[]);
    let pids = [a.process.child.id(), b.process.child.id()];
    eprintln!("{minutes} min against replica a directly…");
    let (direct, direct_cpu) = phase(&a.url, minutes, &pids);
    eprintln!("{minutes} min through the proxy…");
    let (proxied, proxy_cpu) = phase(&proxy.url, minutes, &pids);
    let proxy_own = cpu_s(proxy.process.child.id());
    eprintln!("{shared_minutes} min through a second proxy sharing the first's Redis…");
    let shared = shared_phase(&binary, &[&a.url, &b.url], shared_minutes, &pids);
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.process.child.id()));
    let peak_mb = status
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0);
    let rows = [
        (
            "refresh p50, ms",
            percentile(&direct, 0.5),
            percentile(&proxied, 0.5),
        ),
        (
            "refresh p99, ms",
            percentile(&direct, 0.99),
            percentile(&proxied, 0.99),
        ),
        ("first refresh, ms", direct[0], proxied[0]),
        (
            "replicas' CPU, s",
            direct_cpu[0],
            proxy_cpu[0] + proxy_cpu[1],
        ),
        (
            "replicas' CPU above idle, s",
            direct_cpu[0] - direct_cpu[1],
            proxy_cpu[0] + proxy_cpu[1] - 2.0 * direct_cpu[1],
        ),
    ];
    println!(
        "{} panels over {HOURS} h at {STEP_S} s steps, refreshed every 30 s for {minutes} min per column \
         ({} refreshes each); {instances} instances ({} series), scraped every 15 s by both replicas; \
         CPU is user + system from /proc over each column's run; idle is replica b's while only a was asked \
         (scraping, compaction); the proxy's own CPU: {proxy_own:.1} s; its peak RSS: {peak_mb:.1} MB \
         (cache.max_bytes 128 MiB)\n",
        PANELS.len(),
        direct.len(),
        instances * (4 * 2 + BUCKETS.len() + 2),
    );
    println!("| | one replica directly | through the proxy (two replicas) | proxy / direct |");
    println!("|---|---|---|---|");
    for (name, d, p) in rows {
        println!("| {name} | {d:.1} | {p:.1} | {:.2} |", p / d);
    }
    report_shared(&shared, &direct, &direct_cpu, shared_minutes, minutes);
    report_first_ask(large);
}

fn report_first_ask(([a, b, proxy], paired, bytes): ([f64; 3], f64, usize)) {
    println!(
        "\nFirst ask of a large range: `{LARGE}` over the {HOURS} h at {STEP_S} s steps \
         ({:.1} MB), 11 rounds each asking replica a, replica b and a proxy that remembers \
         nothing (no cache of answers, `coverage.remember_for = \"0s\"`) in turn; medians, ms\n",
        bytes as f64 / 1e6
    );
    println!(
        "| a alone | b alone | proxy, first ask | proxy / slower alone | proxy / slower alone, paired |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {a:.1} | {b:.1} | {proxy:.1} | {:.3} | {paired:.3} |",
        proxy / a.max(b)
    );
}

fn report_shared(
    shared: &Shared,
    direct: &[f64],
    direct_cpu: &[f64],
    shared_minutes: u64,
    minutes: u64,
) {
    println!(
        "\nTwo proxies sharing one Redis (`cache.backend = \"redis\"`): the first refreshes the \
         dashboard once, Redis empty; then the second refreshes it every 30 s for {shared_minutes} min \
         ({} refreshes), answered from what the first kept; one replica directly as above for \
         comparison (its CPU scaled to these minutes)\n",
        shared.latencies.len()
    );
    let scaled = direct_cpu[0] * shared_minutes as f64 / minutes as f64;
    let both = shared.cpu[0] + shared.cpu[1];
    println!("| | one replica directly | second proxy, shared Redis | proxy / direct |");
    println!("|---|---|---|---|");
    let rows = [
        ("first refresh, ms", direct[0], shared.latencies[0]),
        (
            "refresh p50, ms",
            percentile(direct, 0.5),
            percentile(&shared.latencies, 0.5),
        ),
        ("replicas' CPU, s", scaled, both),
    ];
    for (name, d, p) in rows {
        println!("| {name} | {d:.1} | {p:.1} | {:.2} |", p / d);
    }
    println!(
        "\nThe first proxy's one refresh, cold: {:.0} ms. The second's panels: {} from the cache whole, \
         {} partly, {} not at all; {:.0} of their {:.0} steps ({:.1}%) answered from the shared cache, \
         the rest (the fresh edge) asked of the replicas.",
        shared.cold_ms,
        shared.hit,
        shared.partial,
        shared.miss,
        shared.saved_steps,
        shared.all_steps,
        100.0 * shared.saved_steps / shared.all_steps,
    );
}
