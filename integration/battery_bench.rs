//! The first-ask battery benchmark: the generated query battery (the one
//! `generated.rs` checks against the reference) asked once each, the cache
//! empty for every one of them, of one gap-free Prometheus directly and then
//! through the release proxy in front of two replicas with holes (a misses 20
//! minutes, b 15, as in the test cluster). Prints the CPU each side's
//! Prometheus servers spent (user + system, from /proc), ranges and instants
//! apart, and how many requests the replicas were asked.
//!
//! `scripts/bench-battery [QUERIES] [INSTANCES] [ROUNDS]` (defaults 1000, 4
//! and 3: the test data set, each round a battery of its own seed;
//! `BATTERY_QUERY_LOG=1` has each server log its queries). A
//! benchmark, not a test: it asserts only that every answer was a 200
//! without warnings, and that no query was asked twice.

#[path = "harness.rs"]
mod harness;
#[path = "promql_gen.rs"]
mod promql_gen;

use harness::*;
use promql_gen::{Gen, instants_around};
use std::collections::HashSet;
use std::path::Path;

/// One query as asked: its path and parameters.
type Ask = (&'static str, Vec<(&'static str, String)>);

/// The battery of `seed`, each query once: ranges, then instants.
fn battery(seed: u64, count: usize, tl: &Timeline) -> (Vec<Ask>, Vec<Ask>) {
    let mut g = Gen {
        rng: fastrand::Rng::with_seed(seed),
        ranged: false,
    };
    let mut instants_ms = instants_around(&[tl.hole_a, tl.hole_b]);
    instants_ms.extend([(tl.hole_a.end + 1800) * 1000, (tl.hole_b.end + 200) * 1000]);
    let mut seen = HashSet::new();
    let (mut ranges, mut instants) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let (_, path, params) = g.ask(tl, &instants_ms);
        if seen.insert((path, params.clone())) {
            match path {
                "/api/v1/query_range" => ranges.push((path, params)),
                _ => instants.push((path, params)),
            }
        }
    }
    (ranges, instants)
}

/// Asks `base` every query of `asks` in turn; every answer a 200 without
/// warnings, or one Prometheus rejects alike (a 400 from either side).
fn ask_all(base: &str, asks: &[Ask]) {
    for (path, params) in asks {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = format!("{base}{path}?{}", query_string(&params));
        let (status, body) = http_get(&url).unwrap();
        assert!(matches!(status, 200 | 400 | 422), "{url}: {status} {body}");
        assert!(!body.contains("\"warnings\""), "{url}: {body}");
    }
}

/// How many API requests a Prometheus has answered.
fn api_requests(base: &str) -> f64 {
    let (_, text) = http_get(&format!("{base}/metrics")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("prometheus_http_requests_total{"))
        .filter(|l| l.contains("handler=\"/api/v1/query"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What one side spent on one class of queries.
#[derive(Default, Clone, Copy)]
struct Spent {
    /// CPU seconds of the servers asked.
    cpu: f64,
    /// CPU seconds of the servers not asked meanwhile, per server.
    idle: f64,
    /// API requests the servers asked answered.
    requests: f64,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, o: Spent) {
        self.cpu += o.cpu;
        self.idle += o.idle;
        self.requests += o.requests;
    }
}

/// Asks `base` the queries, measuring the `asked` servers against the `idle` ones.
fn measure(base: &str, asks: &[Ask], asked: &[&Prometheus], idle: &[&Prometheus]) -> Spent {
    let cpu = |ps: &[&Prometheus]| -> f64 { ps.iter().map(|p| cpu_s(p.process.child.id())).sum() };
    let requests = || -> f64 { asked.iter().map(|p| api_requests(&p.url)).sum() };
    let (cpu_before, idle_before, requests_before) = (cpu(asked), cpu(idle), requests());
    ask_all(base, asks);
    Spent {
        cpu: cpu(asked) - cpu_before,
        idle: (cpu(idle) - idle_before) / idle.len() as f64,
        // Reading /metrics (as here) is no API request.
        requests: requests() - requests_before,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count = next_number(&mut args, 1000);
    let instances = next_number(&mut args, INSTANCES);
    let rounds = next_number(&mut args, 3) as u64;
    let binary = release_binary("scripts/bench-battery");
    let tl = Timeline::recent();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/battery-bench");
    let start = |name: &str, holes: &[Hole]| {
        let om = openmetrics_of(&tl, holes, PHASE_S, instances);
        let dir = root.join(name);
        // With BATTERY_QUERY_LOG set, each server logs every query it
        // evaluates, with its timings, to NAME.queries.log beside its data
        // (which costs each query a write: not for the figures).
        let config = match std::env::var_os("BATTERY_QUERY_LOG") {
            Some(_) => format!(
                "global:\n  query_log_file: {}\n",
                root.join(format!("{name}.queries.log")).display()
            ),
            None => NO_SCRAPES.to_string(),
        };
        Prometheus::start_with(name, &dir, &om, &config, &[])
    };
    let (a, (b, reference)) = std::thread::scope(|s| {
        let start = &start;
        let a = s.spawn(|| start("a", &[tl.hole_a]));
        let b = s.spawn(|| start("b", &[tl.hole_b]));
        let r = start("reference", &[]);
        (a.join().unwrap(), (b.join().unwrap(), r))
    });
    let mut binaries = vec![("now", binary)];
    if let Ok(before) = std::env::var("BATTERY_BEFORE") {
        binaries.insert(0, ("before", before.into()));
    }
    let proxies: Vec<(&str, Proxy)> = binaries
        .iter()
        .map(|(name, binary)| (*name, Proxy::start(binary, &[&a.url, &b.url], &[])))
        .collect();
    // Every server reads each series once before anything is measured.
    let (warm, _) = battery(1, 200, &tl);
    for p in [&a, &b, &reference] {
        ask_all(&p.url, &warm);
    }
    let mut direct = [Spent::default(); 2];
    let mut proxied = vec![[Spent::default(); 2]; proxies.len()];
    let mut asked = [0; 2];
    for round in 0..rounds {
        let (ranges, instants) = battery(20261205 + round, count, &tl);
        eprintln!(
            "round {round}: {} ranges, {} instants…",
            ranges.len(),
            instants.len()
        );
        for (class, asks) in [ranges, instants].iter().enumerate() {
            asked[class] += asks.len();
            direct[class] += measure(&reference.url, asks, &[&reference], &[&a, &b]);
            for ((_, proxy), spent) in proxies.iter().zip(&mut proxied) {
                spent[class] += measure(&proxy.url, asks, &[&a, &b], &[&reference]);
            }
        }
    }
    let names: Vec<&str> = proxies.iter().map(|(name, _)| *name).collect();
    report(&asked, &direct, &names, &proxied, instances, rounds);
}

fn report(
    asked: &[usize; 2],
    direct: &[Spent; 2],
    names: &[&str],
    proxied: &[[Spent; 2]],
    instances: usize,
    rounds: u64,
) {
    println!(
        "The generated battery, {rounds} rounds of a seed of their own, each query asked once \
         (the proxy's cache empty for it); {instances} instances over 3 h at 15 s, replica a missing \
         20 minutes and b 15; CPU is user + system from /proc, the servers not asked meanwhile \
         spending {:.2} s each in all (taken off in *above idle*); requests per query are the \
         replicas' API requests\n",
        direct.iter().map(|d| d.idle).sum::<f64>(),
    );
    let mut head = String::from("| queries | asked | one Prometheus directly, CPU s |");
    let mut rule = String::from("|---|---|---|");
    for name in names {
        head.push_str(&format!(
            " proxy ({name}), both replicas' CPU s | ratio (above idle) | requests per query |"
        ));
        rule.push_str("---|---|---|");
    }
    println!("{head}\n{rule}");
    // Ranges, instants, and both together.
    let of = |s: &[Spent; 2], class: usize| match class {
        2 => {
            let mut all = s[0];
            all += s[1];
            all
        }
        _ => s[class],
    };
    for (class, name) in ["ranges", "instants", "all"].into_iter().enumerate() {
        let n = if class == 2 {
            asked[0] + asked[1]
        } else {
            asked[class]
        };
        let d = of(direct, class);
        let mut line = format!("| {name} | {n} | {:.2} |", d.cpu);
        for p in proxied {
            let p = of(p, class);
            let (d_above, p_above) = (d.cpu - d.idle, p.cpu - 2.0 * p.idle);
            line.push_str(&format!(
                " {:.2} | {:.2} ({:.2}) | {:.2} |",
                p.cpu,
                p.cpu / d.cpu,
                p_above / d_above,
                p.requests / n as f64
            ));
        }
        println!("{line}");
    }
}
