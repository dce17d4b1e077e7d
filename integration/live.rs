//! Live scrapes and a real crash: an exporter of the test's own serving
//! values computed from the wall clock, two real Prometheus replicas
//! scraping it every second at their own offsets (other `external_labels`,
//! so other scrape offsets), one killed with SIGKILL and restarted on its
//! data directory (WAL replay, no staleness markers: a real hole). No
//! backfilled data can show this: the replicas read other values at other
//! moments, as real ones do.

use crate::harness::*;
use crate::{points, proxy_binary};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Serves counters, a gauge and a histogram computed from the wall clock.
pub fn exporter() -> String {
    exporter_of(exposition)
}

fn exposition() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut out = String::from("# TYPE live_requests_total counter\n");
    for (i, path) in ["/a", "/b", "/c"].iter().enumerate() {
        let n = (now * (i + 1) as f64 * 3.0).floor();
        out.push_str(&format!("live_requests_total{{path=\"{path}\"}} {n}\n"));
    }
    out.push_str("# TYPE live_temperature gauge\n");
    for room in 0..3 {
        let v = 20.0 + (now / 7.0 + room as f64).sin() * 5.0;
        out.push_str(&format!("live_temperature{{room=\"r{room}\"}} {v:.3}\n"));
    }
    out.push_str("# TYPE live_duration_seconds histogram\n");
    let total = (now * 10.0).floor();
    for (le, share) in [("0.1", 0.5), ("0.5", 0.8), ("1", 0.95), ("+Inf", 1.0)] {
        let c = (total * share).floor();
        out.push_str(&format!(
            "live_duration_seconds_bucket{{le=\"{le}\"}} {c}\n"
        ));
    }
    out.push_str(&format!(
        "live_duration_seconds_count {total}\nlive_duration_seconds_sum {}\n",
        total * 0.2
    ));
    out
}

/// A replica scraping `target` every second, labelled `replica`.
pub fn replica(root: &Path, name: &str, target: &str) -> Prometheus {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    replica: {name}\n\
             scrape_configs:\n- job_name: live\n  static_configs:\n  - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    on_a_free_port(|port| {
        Ok::<_, String>(Prometheus::spawn_flagged(
            name,
            &dir,
            port,
            &[LOOKBACK_FLAG],
        ))
    })
}

const LOOKBACK_FLAG: &str = "--query.lookback-delta=10s";

/// The battery, each with how far back it reads at a step (seconds): the
/// 10 s look-back for plain selectors, plus ranges and subqueries.
const BATTERY: &[(&str, i64)] = &[
    ("live_temperature", 10),
    ("rate(live_requests_total[5s])", 5),
    ("sum(rate(live_requests_total[5s]))", 5),
    ("avg_over_time(live_temperature[5s])", 5),
    ("max_over_time(live_temperature[4s])", 4),
    ("count_over_time(live_temperature[5s])", 5),
    (
        "histogram_quantile(0.9, sum by (le) (rate(live_duration_seconds_bucket[5s])))",
        5,
    ),
    ("absent(live_temperature)", 10),
    ("absent(no_such_metric)", 10),
    ("count_values(\"v\", live_requests_total)", 10),
    ("max_over_time(rate(live_requests_total[3s])[6s:1s])", 9),
    ("sum by (path) (increase(live_requests_total[5s]))", 5),
    // Windows narrower than two scrapes hold one replica's sample at some
    // steps and the other's at others; the proxy counts them over two
    // scrape intervals, so that is how far they read here.
    ("max_over_time(live_temperature[1s])", 2),
    ("absent_over_time(live_temperature[1s])", 2),
    ("changes(live_temperature[1s])", 2),
];

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn range_at(base: &str, q: &str, start: i64, end: i64) -> Value {
    let url = format!(
        "{base}/api/v1/query_range?{}",
        query_string(&[
            ("query", q),
            ("start", &start.to_string()),
            ("end", &end.to_string()),
            ("step", "1")
        ])
    );
    let (status, body) = http_get(&url).unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// a's gaps over [from, to]: every stretch of over 1.5 s between two of its
/// own raw `up` samples (seconds: the sample before, the one after), the
/// longest (its outage) first; the others are scrapes it missed, late under
/// a busy machine.
fn gaps(a: &Prometheus, from: i64, to: i64) -> Vec<(i64, i64)> {
    let url = format!(
        "{}/api/v1/query?{}",
        a.url,
        query_string(&[
            ("query", &format!("up[{}s]", to - from)),
            ("time", &to.to_string())
        ])
    );
    let (_, body) = http_get(&url).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let times: Vec<f64> = v["data"]["result"][0]["values"]
        .as_array()
        .expect("a's raw samples")
        .iter()
        .map(|p| p[0].as_f64().unwrap())
        .collect();
    let mut gaps: Vec<(f64, f64)> = times
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(x, y)| y - x > 1.5)
        .collect();
    gaps.sort_by(|p, q| (q.1 - q.0).total_cmp(&(p.1 - p.0)));
    gaps.iter()
        .map(|(x, y)| (x.floor() as i64, y.ceil() as i64))
        .collect()
}

/// The steps (seconds) at which a holds fewer scrapes than b in the
/// `reach` seconds the step reads: a scrape late under a busy machine, not
/// missed, leaves a one short of b at a few steps.
fn scrapes_short(
    a: &Prometheus,
    b: &Prometheus,
    reach: i64,
    start: i64,
    end: i64,
) -> BTreeSet<i64> {
    let q = format!("count_over_time(up[{reach}s])");
    // Each replica's one `up` series: count by time (ms).
    let counts = |p: &Prometheus| {
        points(&range_at(&p.url, &q, start, end))
            .values()
            .next()
            .cloned()
    };
    let (of_a, of_b) = (counts(a).unwrap_or_default(), counts(b).unwrap_or_default());
    let at = |c: &BTreeMap<i64, f64>, t: i64| c.get(&(t * 1000)).copied().unwrap_or(0.0);
    (start..=end)
        .filter(|&t| at(&of_a, t) < at(&of_b, t))
        .collect()
}

#[test]
fn a_replica_killed_and_restarted_under_live_scrapes_answers_as_one_prometheus() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live");
    let target = exporter();
    let (mut a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| replica(&root, "a", &target));
        (a.join().unwrap(), replica(&root, "b", &target))
    });
    let proxy = Proxy::start_with_env(
        proxy_binary(),
        &[&a.url, &b.url],
        &[],
        &[
            ("PROM_HA_PROXY__COVERAGE__LOOKBACK_DELTA", "10s"),
            ("PROM_HA_PROXY__COVERAGE__SCRAPE_INTERVAL", "1s"),
            ("PROM_HA_PROXY__HEALTH__PROBE_INTERVAL", "500ms"),
        ],
    );
    let started = now_s();
    let queries = QueryLoop::default();
    std::thread::scope(|s| {
        let _stop = queries.stopper();
        s.spawn(|| {
            let q = urlencode("sum(rate(live_requests_total[5s]))");
            let url = format!("{}/api/v1/query?query={q}", proxy.url);
            queries.run("across the crash", Duration::from_millis(50), || {
                http_get(&url)
            });
        });
        let ready_for = |secs: i64| {
            let from = now_s();
            wait_until(
                "time to pass",
                Duration::from_secs(secs as u64 + 30),
                || now_s() >= from + secs,
            )
        };
        ready_for(25);
        a.kill();
        ready_for(25);
        a.restart();
        wait_until("a used again", Duration::from_secs(60), || {
            let (_, text) = http_get(&format!("{}/metrics", proxy.url)).unwrap();
            text.contains(&format!(
                "prom_ha_proxy_upstream_up{{upstream=\"{}\"}} 1",
                a.url
            ))
        });
        ready_for(25);
        queries.stop();
    });
    assert!(queries.ok() > 100);
    assert_eq!(queries.failed(), 0);

    let (start, end) = (started + 12, now_s() - 2);
    let gaps = gaps(&a, start, end);
    let (gap_from, gap_to) = *gaps.first().expect("a's outage");
    assert!(gap_to - gap_from >= 20, "a's outage {gap_from}..{gap_to}");
    // A scrape a missed is a hole too, where b's answer may go out.
    let missed = &gaps[1..];
    let mut judged = crate::oracle::Judged::default();
    let mut skipped_short = 0;
    // Per reach, the steps where a holds a scrape fewer than b.
    let mut short = BTreeMap::new();
    for (q, reach) in BATTERY {
        let (got, of_a, of_b) = (
            points(&range_at(&proxy.url, q, start, end)),
            points(&range_at(&a.url, q, start, end)),
            points(&range_at(&b.url, q, start, end)),
        );
        let a_short = short
            .entry(*reach)
            .or_insert_with(|| scrapes_short(&a, &b, *reach, start, end));
        for t in start..=end {
            // What the step reads: [t - reach, t].
            let reads_missed = missed.iter().any(|&(x, y)| t - reach < y && t > x);
            let against_a = if reads_missed {
                continue;
            } else if t < gap_from || t - reach > gap_to {
                // A scrape of a's late under load leaves it a sample short
                // there, where b's answer is as right.
                if a_short.contains(&t) {
                    skipped_short += 1;
                    continue;
                }
                true
            } else if t - reach > gap_from && t < gap_to {
                false
            } else {
                continue;
            };
            let want = if against_a { &of_a } else { &of_b };
            let what = format!("{q} at {t} (outage {gap_from}..{gap_to})");
            judged.step(&got, want, against_a, t, &what);
        }
    }
    println!(
        "{} requests across the crash, none failed; a's outage {}s, {} scrapes missed besides, \
         {skipped_short} steps with a scrape short; \
         {} steps judged against a, {} against b, {} wrong",
        queries.ok(),
        gap_to - gap_from,
        missed.len(),
        judged.against_a,
        judged.against_b,
        judged.wrong.len()
    );
    judged.assert_right(200, 50);
}
