//! Queries nobody here wrote: PromQL expressions drawn at random (from a
//! seed, so a failure can be replayed) from the data set's metrics and
//! Prometheus's functions, aggregations and operators, asked through the
//! proxy as range queries at odd and even steps and as instant queries in and
//! around both holes, and compared point for point with the reference.
//!
//! `PROMQL_SEED` and `PROMQL_QUERIES` change the seed and the count
//! (`PROMQL_QUERIES=20000 cargo test --test integration generated` for a long run).
//!
//! Left out on purpose: `topk`, `bottomk` and `limitk`. Among tied values
//! Prometheus picks arbitrarily (one server asked twice answers differently),
//! so no reference can tell right from wrong there. And `sort`/`sort_desc`
//! anywhere but outermost: under an aggregation they make Prometheus 2.42's
//! range answers differ in their last bits from one ask to the next
//! (`stdvar by (code) (sort_desc(x))` asked of the reference 3 times: up to
//! 85 of 213 points differ, 6.5 against 6.500000000000001; without the sort,
//! none), which a `round` or a threshold above turns into whole numbers
//! (seed 38: 426 against 427).
//!
//! A query whose answer differs is asked of the reference three times more;
//! where the reference does not answer alike each time (an aggregation over
//! a function's output, see [`steadily`]), it is not compared, but listed,
//! and more than one in a hundred such fails the run.

use crate::promql_gen::{Gen, instants_around};
use crate::*;
use fastrand::Rng;
use harness::Hole;
use std::collections::BTreeSet;
use std::time::Duration;

/// Whether `got` equals one of the reference's answers to `path`, asked up
/// to three times more. Prometheus 2.42's range evaluation hands a
/// function's output series to the aggregation above it in map order, so
/// sums of large values differ in their last bits from one ask to the
/// next, and `% 1` or `round` above make those whole (seed 45: `stdvar by
/// (le) (label_replace(…)) % 1`, 87 of 260 points differing between two
/// asks of the reference): an answer is right if the reference gives it.
fn another_ask_agrees(
    layout: &Layout,
    path: &str,
    params: &[(&str, String)],
    got: &Points,
) -> bool {
    (0..3).any(|_| {
        let (status, again) = get(layout.reference, path, params);
        status == 200 && differences(got, &points(&again)).is_empty()
    })
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The status and JSON body of a GET; errors are answers too here.
fn get(base: &str, path: &str, params: &[(&str, String)]) -> (u16, Value) {
    let (status, body) = get_text(base, path, params);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, v)
}

/// The status and body bytes of a GET.
fn get_text(base: &str, path: &str, params: &[(&str, String)]) -> (u16, String) {
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http_get(&format!("{base}{path}?{}", query_string(&params))).unwrap()
}

/// The status and body bytes of a form POST, as Grafana sends queries.
fn post_text(base: &str, path: &str, params: &[(&str, String)]) -> (u16, String) {
    let form: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http_post_form(&format!("{base}{path}"), &form).unwrap()
}

/// Where a layout's replicas have holes, and what answers for them.
struct Layout<'a> {
    name: &'a str,
    tl: Timeline,
    holes: &'a [Hole],
    proxy: &'a str,
    reference: &'a str,
}

#[test]
fn generated_queries_through_the_proxy_equal_the_reference() {
    let c = cluster();
    let (ha, hb) = (c.tl.hole_a, c.tl.hole_b);
    // Two more instants well after each hole (b's second is near the data's end).
    let holes = [ha, hb];
    let layout = Layout {
        name: "a and b",
        tl: c.tl,
        holes: &holes,
        proxy: &c.proxy.url,
        reference: &c.reference.url,
    };
    let extra = [(ha.end + 1800) * 1000, (hb.end + 200) * 1000];
    run(&layout, &extra, env_or("PROMQL_QUERIES", 1000));
}

/// Three replicas, as a team adding one would have: `late` was started 40
/// minutes after the others; `restarted` misses three scrapes (a quick
/// restart) and the last 5 minutes (it still answers, but its scrapes
/// fail); `upgraded` misses 10 minutes. Priority in that order.
#[test]
fn generated_queries_through_three_replicas_with_other_holes_equal_the_reference() {
    let c = cluster();
    let tl = c.tl;
    let hole = |start: i64, end: i64| Hole { start, end };
    let late = [hole(tl.start - 60, tl.start + 2400)];
    // With `@ start()` reading late's missing first minutes, late is out
    // at every step: restarted's and upgraded's holes lie more than the
    // longest window (55 minutes) apart, so one of them is whole.
    let restarted = [
        hole(tl.start + 3000, tl.start + 3045),
        hole(tl.end - 300, tl.end + 60),
    ];
    let upgraded = [hole(tl.start + 6400, tl.start + 7000)];
    let replicas = [
        ("late", &late[..]),
        ("restarted", &restarted),
        ("upgraded", &upgraded),
    ];
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("three");
    let replicas: Vec<Prometheus> = std::thread::scope(|s| {
        let started: Vec<_> = replicas
            .iter()
            .map(|(name, holes)| {
                let dir = root.join(name);
                s.spawn(move || Prometheus::start(name, &dir, &openmetrics(&tl, holes, PHASE_S)))
            })
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let urls: Vec<&str> = replicas.iter().map(|p| p.url.as_str()).collect();
    let proxy = Proxy::start(proxy_binary(), &urls, &[]);
    let holes = [restarted[0], restarted[1], upgraded[0]];
    let layout = Layout {
        name: "three replicas",
        tl,
        holes: &holes,
        proxy: &proxy.url,
        reference: &c.reference.url,
    };
    // The late start: instants in its first minutes of data and just after.
    let extra = [
        (tl.start + 600) * 1000,
        (tl.start + 2400 - 15) * 1000,
        (tl.start + 2400 + 1) * 1000,
        (tl.start + 2400 + 90) * 1000,
        (tl.start + 2400 + 300) * 1000,
    ];
    run(&layout, &extra, env_or("PROMQL_QUERIES", 1000) / 2);
}

/// `openmetrics` text without the samples of series matching `labels` (a
/// substring of their label set) inside `hole`: one target unscraped.
pub fn without_target(om: &str, labels: &str, hole: Hole) -> String {
    om.lines()
        .filter(|line| {
            let t = line.rsplit(' ').next().and_then(|t| t.parse::<i64>().ok());
            !(line.contains(labels) && t.is_some_and(|t| hole.contains(t)))
        })
        .flat_map(|line| [line, "\n"])
        .collect()
}

/// Two replicas each missing some targets only, as when one replica cannot
/// reach a host for a while: `a` loses `host-1` for 20 minutes and, near the
/// end, room-2 for 5; `b` loses `host-0` for 10 minutes, then `host-2` for 5.
/// An hour apart, so no window sees a hole of each.
#[test]
fn generated_queries_through_replicas_missing_single_targets_equal_the_reference() {
    let c = cluster();
    let tl = c.tl;
    let hole = |from: i64, minutes: i64| Hole {
        start: tl.start + from,
        end: tl.start + from + minutes * 60,
    };
    let full = openmetrics(&tl, &[], PHASE_S);
    let a_holes = [hole(1200, 20), hole(10200, 5)];
    let b_holes = [hole(6000, 10), hole(6600, 5)];
    let om_a = without_target(
        &without_target(&full, r#"instance="host-1:9100""#, a_holes[0]),
        r#"room="room-2""#,
        a_holes[1],
    );
    let om_b = without_target(
        &without_target(&full, r#"instance="host-0:9100""#, b_holes[0]),
        r#"instance="host-2:9100""#,
        b_holes[1],
    );
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("targets");
    let (a, b) = start_pair(&root, &om_a, &om_b);
    let proxy = Proxy::start(proxy_binary(), &[&a.url, &b.url], &[]);
    let holes = [a_holes[0], a_holes[1], b_holes[0], b_holes[1]];
    let layout = Layout {
        name: "single targets",
        tl,
        holes: &holes,
        proxy: &proxy.url,
        reference: &c.reference.url,
    };
    run(&layout, &[], env_or("PROMQL_QUERIES", 1000) / 2);
}

/// The core layout's holes in data that has no `up` series at all, as a data
/// set backfilled by hand may well have: the coverage counts the query's own
/// selectors, not a scrape's `up`.
#[test]
fn generated_queries_through_replicas_without_up_equal_the_reference() {
    let c = cluster();
    let tl = c.tl;
    let without_up = |holes: &[Hole]| -> String {
        openmetrics(&tl, holes, PHASE_S)
            .lines()
            .filter(|l| !l.starts_with("up{") && !l.starts_with("# TYPE up "))
            .flat_map(|l| [l, "\n"])
            .collect()
    };
    let (om_a, om_b) = (without_up(&[tl.hole_a]), without_up(&[tl.hole_b]));
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-up");
    let (a, b) = start_pair(&root, &om_a, &om_b);
    // The reference without `up` too, so queries of `up` compare alike.
    let reference = Prometheus::start("reference", &root.join("reference"), &without_up(&[]));
    let proxy = Proxy::start(proxy_binary(), &[&a.url, &b.url], &[]);
    let holes = [tl.hole_a, tl.hole_b];
    let layout = Layout {
        name: "without up",
        tl,
        holes: &holes,
        proxy: &proxy.url,
        reference: &reference.url,
    };
    run(&layout, &[], env_or("PROMQL_QUERIES", 1000) / 2);
}

fn run(layout: &Layout, extra_instants_ms: &[i64], count: u64) {
    let tl = layout.tl;
    let seed = env_or("PROMQL_SEED", 20261202);
    let mut g = Gen {
        rng: Rng::with_seed(seed),
        ranged: false,
    };
    let mut instants_ms = instants_around(layout.holes);
    instants_ms.extend_from_slice(extra_instants_ms);
    let (mut points_compared, mut rejected, mut differing) = (0usize, 0, Vec::new());
    let (mut not_identical, mut reading) = (Vec::new(), 0);
    let hits = |base| metric(base, r#"prom_ha_proxy_cache_requests_total{result="hit"}"#);
    let hits_before = hits(layout.proxy);
    // Answers that differ from the reference's first answer but equal
    // another of its answers to the same query.
    let mut unsteady = 0;
    for i in 0..count {
        let (q, path, params) = g.ask(&tl, &instants_ms);
        // A third go as Grafana's form POST; the reference is always asked by GET.
        let (status, first) = if g.rng.usize(..3) == 0 {
            post_text(layout.proxy, path, &params)
        } else {
            get_text(layout.proxy, path, &params)
        };
        let got_v: Value =
            serde_json::from_str(&first).unwrap_or_else(|e| panic!("{q}: {e}: {first}"));
        let (want_status, want_v) = get(layout.reference, path, &params);
        if want_status != 200 {
            // An expression Prometheus rejects: the proxy passes the same error on.
            assert_eq!(
                (status, &got_v["errorType"]),
                (want_status, &want_v["errorType"]),
                "{q}: {got_v}"
            );
            rejected += 1;
            continue;
        }
        // Asked again, as a dashboard refreshing asks: a range's coverage
        // counts remembered now, the upstreams after the first asked only
        // over the spans that differ, if any; an instant's window counted,
        // the others asked nothing or the query at once.
        // The first answer is kept in the cache (settled, as all of the
        // data set is), and the second comes from it: the very bytes.
        let (again_status, again) = get_text(layout.proxy, path, &params);
        let shape = prom_ha_proxy::query::analyse(&q, Duration::from_secs(300), Duration::ZERO);
        reading += matches!(shape.reads, prom_ha_proxy::query::Reads::Stretches(_)) as usize;
        if again != first {
            not_identical.push(format!("#{i} {path} {params:?}"));
        }
        let mut answers = vec![("", status, got_v)];
        let again = serde_json::from_str(&again).unwrap_or_else(|e| panic!("{q}: {e}: {again}"));
        answers.push((" (asked again)", again_status, again));
        let want = points(&want_v);
        for (asked, status, got_v) in answers {
            assert_eq!(status, 200, "{q}{asked}: {got_v}");
            assert!(
                got_v.get("warnings").is_none(),
                "{q}{asked}: nothing degraded, yet warnings: {got_v}"
            );
            let got = points(&got_v);
            points_compared += want.values().map(BTreeMap::len).sum::<usize>();
            if let Some(d) = order_differs(&q, &got_v, &want_v) {
                differing.push(format!("#{i}{asked} {path} {params:?}: {d}"));
            }
            let mut diffs = differences(&got, &want);
            if !diffs.is_empty() && another_ask_agrees(layout, path, &params, &got) {
                unsteady += 1;
                diffs.clear();
            }
            if let Some((key, t)) = diffs.first() {
                let near = |p: &Points| {
                    p.get(key).map(|s| {
                        s.range((t - 1) * 1000..(t + 1) * 1000)
                            .map(|(t, v)| (*t, *v))
                            .collect::<Vec<_>>()
                    })
                };
                differing.push(format!(
                    "#{i}{asked} {path} {params:?}: {} points differ, first {key} at {t}: got {:?}, want {:?}",
                    diffs.len(),
                    near(&got),
                    near(&want),
                ));
            }
        }
    }
    println!(
        "{}: seed {seed}: {count} generated queries ({rejected} rejected alike, {unsteady} equal to another of the reference's answers), {points_compared} reference points compared; {} asked again not byte-identical",
        layout.name,
        not_identical.len(),
    );
    // Each second ask of a query reading stored data a hit: the first was
    // kept (`1+1`, `vector(time())` read none, and are not).
    let hit = hits(layout.proxy) - hits_before;
    assert!(
        hit >= reading as f64 * 0.95,
        "{}: {hit} of {reading} asked again came from the cache",
        layout.name,
    );
    assert!(
        not_identical.is_empty(),
        "{}: asked again, not the same bytes:\n{}",
        layout.name,
        not_identical.join("\n")
    );
    assert!(
        rejected * 5 < count,
        "{rejected} of {count} generated queries are invalid: the generator is off"
    );
    assert!(
        points_compared > count as usize * 50,
        "too few points ({points_compared}) for the check to mean much"
    );
    assert!(
        differing.is_empty(),
        "{}: seed {seed}: {} of {count} queries differ from the reference:\n{}",
        layout.name,
        differing.len(),
        differing.join("\n")
    );
}

/// Two gap-free replicas as live ones are: b scrapes 7 s after a and reads
/// other values (one higher). a is complete everywhere, so every answer
/// must be a's own, series set included: the reference is a itself.
#[test]
fn generated_queries_through_offset_replicas_with_other_values_are_the_first_replicas() {
    let tl = cluster().tl;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("offset-generated");
    let om_b = crate::coverage::read_later(&openmetrics(&tl, &[], PHASE_S + 7));
    let (a, b) = start_pair(&root, &openmetrics(&tl, &[], PHASE_S), &om_b);
    let proxy = Proxy::start(proxy_binary(), &[&a.url, &b.url], &[]);
    let layout = Layout {
        name: "offset, other values",
        tl,
        holes: &[],
        proxy: &proxy.url,
        reference: &a.url,
    };
    // Instants on a's scrapes, on b's, and between.
    let instants: Vec<i64> = [0, PHASE_S, PHASE_S + 7, 3]
        .iter()
        .flat_map(|d| [tl.end - 3600 + d, tl.end - 1800 + d, tl.end - 600 + d])
        .map(|t| t * 1000)
        .collect();
    run(&layout, &instants, env_or("PROMQL_QUERIES", 1000) / 2);
}

/// A partial hole in a large fleet: one of 30 targets (`host-17`) missing
/// from the first replica for ten minutes, as a network partition between
/// that replica and one host leaves it. Its samples are a small part of
/// every window; that target's series must still come from the replica
/// that has them. The reference holds all 30 throughout.
#[test]
fn generated_queries_through_a_replica_missing_one_of_thirty_targets_equal_the_reference() {
    let tl = cluster().tl;
    let hole = Hole {
        start: tl.start + 5400,
        end: tl.start + 6000,
    };
    let full = openmetrics_of(&tl, &[], PHASE_S, 30);
    let om_a = without_target(&full, r#"instance="host-17:9100""#, hole);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("one-of-thirty");
    let (a, b) = start_pair(&root, &om_a, &full);
    let reference = Prometheus::start("reference", &root.join("reference"), &full);
    let proxy = Proxy::start(proxy_binary(), &[&a.url, &b.url], &[]);
    // a alone misses the host inside its hole; the proxy does not.
    let count = |base: &str| {
        let t = (hole.start + 300).to_string();
        let (_, v) = get(
            base,
            "/api/v1/query",
            &[("query", "count(up)".into()), ("time", t)],
        );
        v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        (count(&a.url), count(&proxy.url)),
        ("29".into(), "30".into())
    );
    // The battery, as ranges across the hole and instants in and around it.
    let mut wrong = Vec::new();
    for q in crate::coverage::BROAD {
        let (from, to) = (hole.start - 1800, hole.end + 1800);
        let range = |base: &str| {
            let params = [
                ("query", q.to_string()),
                ("start", from.to_string()),
                ("end", to.to_string()),
                ("step", "30".to_string()),
            ];
            points(&get(base, "/api/v1/query_range", &params).1)
        };
        if !differences(&range(&proxy.url), &range(&reference.url)).is_empty() {
            wrong.push(format!("range {q}"));
        }
        for t in [
            hole.start + 7,
            hole.start + 300,
            hole.end + 8,
            hole.end + 200,
        ] {
            let params = [("query", q.to_string()), ("time", t.to_string())];
            let (got, want) = (
                get(&proxy.url, "/api/v1/query", &params).1,
                get(&reference.url, "/api/v1/query", &params).1,
            );
            if !differences(&points(&got), &points(&want)).is_empty()
                || order_differs(q, &got, &want).is_some()
            {
                wrong.push(format!("{q} at {t}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let holes = [hole];
    let layout = Layout {
        name: "one of thirty",
        tl,
        holes: &holes,
        proxy: &proxy.url,
        reference: &reference.url,
    };
    run(&layout, &[], env_or("PROMQL_QUERIES", 1000) / 2);
}

/// The stretch (ms from the step) a query reads of the metrics named in
/// `lacking` (those the hole takes a target's series of), as the proxy counts
/// it (windows at least two 15 s scrapes wide); None if it reads none of them.
fn window_over(q: &str, lacking: &BTreeSet<String>) -> Option<(i64, i64)> {
    let narrowest = prom_ha_proxy::query::narrowest_counted(Duration::from_secs(15));
    let shape = prom_ha_proxy::query::analyse(q, Duration::from_secs(300), narrowest);
    let prom_ha_proxy::query::Reads::Stretches(stretches) = shape.reads else {
        panic!("{q}: read no stretches");
    };
    let name = |selector: &str| selector.split('{').next().unwrap_or_default().to_string();
    let read = stretches
        .iter()
        .filter(|s| lacking.contains(&name(&s.selector)));
    read.fold(None, |acc, s| match (acc, &s.at) {
        // Pinned: read at no step in particular, never judged.
        (_, Some(_)) => Some((i64::MIN / 2, i64::MAX / 2)),
        (None, None) => Some((s.from_ms, s.to_ms)),
        (Some((f, t)), None) => Some((f.min(s.from_ms), t.max(s.to_ms))),
    })
}

/// Offset replicas that read other values, the first missing one target of
/// thirty for ten minutes: where the first's data is complete for what a
/// step reads, the answer is the first's own, series set included; where the
/// step reads only the stretch it lacks that target, the second's own. Steps
/// whose windows reach over the hole's edges are not judged.
#[test]
fn offset_replicas_with_a_partial_hole_answer_as_the_complete_one_at_each_step() {
    let tl = cluster().tl;
    let hole = Hole {
        start: tl.start + 5400,
        end: tl.start + 6000,
    };
    let om_a = openmetrics_of(&tl, &[], PHASE_S, 30);
    let om_a = without_target(&om_a, r#"instance="host-17:9100""#, hole);
    let om_b = crate::coverage::read_later(&openmetrics_of(&tl, &[], PHASE_S + 7, 30));
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("offset-one-of-thirty");
    let (a, b) = start_pair(&root, &om_a, &om_b);
    let proxy = Proxy::start(proxy_binary(), &[&a.url, &b.url], &[]);
    // The metrics host-17 has series of, from b (up, the requests; not the
    // rooms' temperatures, nor the histogram of the first few hosts).
    let names = get(
        &b.url,
        "/api/v1/query",
        &[
            (
                "query",
                r#"count by (__name__) ({instance="host-17:9100"})"#.into(),
            ),
            ("time", hole.start.to_string()),
        ],
    )
    .1;
    let lacking: BTreeSet<String> = names["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"]["__name__"].as_str().unwrap().to_string())
        .collect();
    assert!(lacking.contains("up") && lacking.len() == 2, "{lacking:?}");
    let mut judged = crate::oracle::Judged::default();
    let queries = crate::coverage::BROAD
        .iter()
        .chain(crate::coverage::VALUE_SHAPED);
    for q in queries {
        let window = window_over(q, &lacking);
        for first in [hole.start - 3600, hole.start - 3600 + PHASE_S + 7] {
            let (last, step) = (hole.end + 3600, 30);
            let [got, of_a, of_b] = [&proxy.url, &a.url, &b.url]
                .map(|base| points(&crate::range(base, q, first, last, step)));
            for t in (first..=last).step_by(step as usize) {
                let reads = window.map(|(from, to)| (t * 1000 + from, t * 1000 + to));
                // Two scrapes' margin past each edge of the hole: within a
                // scrape of it, the first's deficit from scraping earlier and
                // the hole's are one ramp, and either answer is whole.
                let margin = 2 * STEP_S * 1000;
                let (hole_from, hole_to) = (hole.start * 1000, hole.end * 1000);
                let against_a = match reads {
                    None => true,
                    Some((from, to)) if to < hole_from - margin || from > hole_to + margin => true,
                    Some((from, to)) if from > hole_from && to < hole_to => false,
                    Some(_) => continue,
                };
                let want = if against_a { &of_a } else { &of_b };
                judged.step(&got, want, against_a, t, &format!("{q} at {t}"));
            }
        }
    }
    println!(
        "{} steps judged against a, {} against b, {} wrong",
        judged.against_a,
        judged.against_b,
        judged.wrong.len()
    );
    judged.assert_right(5000, 150);
}
