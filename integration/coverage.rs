//! The coverage-aware merge against the reference, side by side with the
//! plain priority merge, over a broad battery of queries nobody tuned for.

use crate::*;
use harness::Hole;

/// Selectors with and without offsets, `*_over_time` from 1s to 1h, counter
/// functions, aggregations, topk, absent, histogram_quantile, subqueries.
pub const BROAD: &[&str] = &[
    "http_requests_total",
    "temperature_celsius",
    "temperature_celsius offset 10m",
    "http_requests_total offset -5m",
    "count_over_time(temperature_celsius[1s])",
    "sum_over_time(temperature_celsius[30s])",
    "avg_over_time(temperature_celsius[5m])",
    "min_over_time(temperature_celsius[15m])",
    "max_over_time(temperature_celsius[1h])",
    "count_over_time(http_requests_total[10m])",
    "rate(http_requests_total[1m])",
    "rate(http_requests_total[5m])",
    "increase(http_requests_total[15m])",
    "irate(http_requests_total[5m])",
    "resets(http_requests_total[30m])",
    "sum by (job, code) (rate(http_requests_total[5m]))",
    "count by (instance) (http_requests_total)",
    "avg by (room) (temperature_celsius)",
    "count(temperature_celsius)",
    "sum(up)",
    "topk(3, rate(http_requests_total[5m]))",
    "bottomk(2, temperature_celsius)",
    "absent(temperature_celsius)",
    "absent(no_such_metric)",
    "absent_over_time(temperature_celsius[10m])",
    "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(request_duration_seconds_bucket[10m]))",
    "max_over_time(rate(http_requests_total[5m])[30m:1m])",
    "avg_over_time(sum(temperature_celsius)[15m:30s])",
    "sum(rate(http_requests_total[5m])) / sum(rate(http_requests_total[5m] offset 1h))",
];

#[derive(Default)]
struct Tally {
    points: usize,
    differing_points: usize,
    queries: usize,
    differing_queries: Vec<String>,
}

impl Tally {
    fn add(&mut self, what: String, got: &Points, want: &Points) {
        let total: usize = {
            let keys: std::collections::BTreeSet<&String> = got.keys().chain(want.keys()).collect();
            keys.iter()
                .map(|k| {
                    let e = BTreeMap::new();
                    let (g, w) = (got.get(*k).unwrap_or(&e), want.get(*k).unwrap_or(&e));
                    g.keys()
                        .chain(w.keys())
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                })
                .sum()
        };
        let diffs = differences(got, want);
        self.points += total.max(1);
        self.queries += 1;
        if !diffs.is_empty() {
            self.differing_points += diffs.len();
            self.differing_queries.push(format!(
                "{what}: {} of {total} points, first at {:?}",
                diffs.len(),
                diffs[0]
            ));
        }
    }

    fn share_identical(&self) -> (f64, f64) {
        (
            1.0 - self.differing_points as f64 / self.points as f64,
            1.0 - self.differing_queries.len() as f64 / self.queries as f64,
        )
    }
}

/// Runs the battery through `base`, as range queries over all the data (both
/// holes and their edges) and as instant queries inside each hole and just after.
fn battery(c: &Cluster, base: &str) -> Tally {
    let tl = c.tl;
    let mut tally = Tally::default();
    let instants = [
        tl.hole_a.start + 30,
        tl.hole_a.start + 8 * 60,
        tl.hole_a.end - 15,
        tl.hole_a.end + 60,
        tl.hole_a.end + 10 * 60,
        tl.hole_b.start + 7 * 60,
        tl.hole_b.end + 2 * 60,
    ];
    // `@` pins a read to one time: here inside hole a, and at its start edge.
    let (inside, edge) = (tl.hole_a.start + 10 * 60, tl.hole_a.start + 2 * 60);
    let pinned = [
        format!("count(temperature_celsius @ {inside})"),
        format!("avg_over_time(temperature_celsius[10m] @ {edge})"),
        format!("max_over_time(rate(http_requests_total[5m])[20m:1m] @ {edge})"),
        format!("sum(http_requests_total @ {edge}) by (code)"),
    ];
    let all: Vec<&str> = BROAD
        .iter()
        .copied()
        .chain(pinned.iter().map(String::as_str))
        .collect();
    for q in all {
        let got_v = range(base, q, tl.start, tl.end, 60);
        assert!(
            got_v.get("warnings").is_none(),
            "{q}: nothing degraded, yet warnings: {got_v}"
        );
        let got = points(&got_v);
        let want = points(&range(&c.reference.url, q, tl.start, tl.end, 60));
        tally.add(format!("range {q}"), &got, &want);
        for t in instants {
            let (got_v, want_v) = (instant(base, q, t), instant(&c.reference.url, q, t));
            if let Some(d) = order_differs(q, &got_v, &want_v) {
                tally.differing_queries.push(d);
            }
            let (got, want) = (points(&got_v), points(&want_v));
            tally.add(
                format!("instant {q} @{}s into hole a", t - tl.hole_a.start),
                &got,
                &want,
            );
        }
    }
    tally
}

#[test]
fn coverage_merge_equals_the_reference_across_both_holes_where_plain_priority_does_not() {
    let c = cluster();
    let with = battery(c, &c.proxy.url);
    let plain = battery(c, &c.plain.url);
    let (wp, wq) = with.share_identical();
    let (pp, pq) = plain.share_identical();
    println!(
        "coverage-aware merge: {:.4} of {} points and {:.4} of {} queries identical to the reference",
        wp, with.points, wq, with.queries
    );
    println!(
        "plain priority merge: {:.4} of {} points and {:.4} of {} queries identical to the reference",
        pp, plain.points, pq, plain.queries
    );
    for d in &with.differing_queries {
        println!("  still differs: {d}");
    }
    // What the README claims: every query, every point.
    assert!(
        with.differing_queries.is_empty() && with.differing_points == 0,
        "coverage-aware merge: {wp:.4} of points and {wq:.4} of queries identical"
    );
    assert!(
        pq < wq,
        "the plain merge should do worse on this battery ({pq:.4} vs {wq:.4})"
    );
}

/// How many requests the proxy at `base` has sent its upstreams.
fn upstream_requests(base: &str) -> f64 {
    proxy_metric(
        base,
        "prom_ha_proxy_upstream_request_duration_seconds_count",
    )
}

/// How many answers the proxy at `base` has sent as one upstream gave them.
fn verbatim_answers(base: &str) -> f64 {
    proxy_metric(base, "prom_ha_proxy_verbatim_answers_total")
}

#[test]
fn a_query_clear_of_holes_is_settled_by_the_coarse_coverage_and_one_across_a_hole_is_not() {
    let c = cluster();
    let tl = c.tl;
    // A proxy of this test's own, so that no other test's requests are counted.
    let proxy = Proxy::start_with_env(proxy_binary(), &[&c.a.url, &c.b.url], &[], &[NO_CACHE]);
    // Clear: the coarse windows (the widest here 15 min, reaching one window
    // past the end at most) all end before hole a.
    let clear = (tl.start + 1200, tl.hole_a.start - 1200);
    let across = (tl.hole_a.start - 1800, tl.hole_a.end + 1800);
    // Each upstream is asked the coarse coverage, and the first the query.
    // Clear, the first's answer goes out as it came; the other is asked the
    // query beside it where the range is short (under twice one hole's span,
    // `CoarseRound::holds_two_spans`: the first four here, 20 minutes with a
    // 5-minute look-back or longer), else nothing more (the last). Across
    // the hole the coarse counts differ: each is asked the coverage over the
    // steps around it, and the other, if not asked the query already, the
    // query over those steps.
    for (q, step, clear_sent) in [
        ("temperature_celsius", STEP_S, 4.0),
        ("sum by (job) (rate(http_requests_total[5m]))", STEP_S, 4.0),
        ("max_over_time(temperature_celsius[15m])", STEP_S, 4.0),
        (
            "avg_over_time(temperature_celsius[5m] offset 10m)",
            STEP_S,
            4.0,
        ),
        ("sum by (job) (rate(http_requests_total[1m]))", 5, 3.0),
    ] {
        for ((from, to), sent, verbatim) in [(clear, clear_sent, 1.0), (across, 6.0, 0.0)] {
            let before = (upstream_requests(&proxy.url), verbatim_answers(&proxy.url));
            let got = range(&proxy.url, q, from, to, step);
            let asked = upstream_requests(&proxy.url) - before.0;
            let want = range(&c.reference.url, q, from, to, step);
            assert_eq!(
                differences(&points(&got), &points(&want)),
                vec![],
                "{q} over {from}..{to}"
            );
            assert_eq!(asked, sent, "{q} over {from}..{to}: requests sent");
            assert_eq!(
                verbatim_answers(&proxy.url) - before.1,
                verbatim,
                "{q} over {from}..{to}: verbatim"
            );
            if verbatim > 0.0 {
                assert_eq!(got, range(&c.a.url, q, from, to, step), "{q}: as a gave it");
            }
        }
    }
    // Steps too far apart for coarse windows to save anything: one coverage query.
    let before = upstream_requests(&proxy.url);
    range(&proxy.url, "temperature_celsius", clear.0, clear.1, 120);
    assert_eq!(upstream_requests(&proxy.url) - before, 4.0);
    // An instant's coarse round is its own window, asked of each with the
    // query asked of a, and of b only once the counts differ. Clear of holes,
    // its history is not asked, nor b the query (a's answer goes out alone);
    // where the window lies wholly in a's hole (b holds every sample there,
    // a none), b is asked the query, whose answer goes out alone; just after
    // the hole, b is asked the query and each the history. An answer of no
    // series from a (`absent_over_time` clear of holes) has b asked the
    // query if it comes in before the counts (its answer then dropped
    // unread): one request more, or not, as they race.
    // Asked again, the instants being long past, the window's counts are
    // remembered: clear, a alone is asked the query; inside a's hole, each
    // is asked it at once (b's goes out); just after, each the query and
    // the history. The instants lie off the 5-minute marks, where the
    // ranges above left counts of the same windows to remember.
    for (q, empty_when_clear) in [
        ("temperature_celsius", false),
        ("sum by (job) (rate(http_requests_total[5m]))", false),
        ("absent_over_time(temperature_celsius[10m])", true),
    ] {
        for (t, sent, again, verbatim) in [
            (tl.hole_a.start - 1193, 3.0, 1.0, 1.0),
            (tl.hole_a.start + 607, 4.0, 2.0, 1.0),
            (tl.hole_a.end + 67, 6.0, 4.0, 0.0),
        ] {
            let want = points(&instant(&c.reference.url, q, t));
            for (round, sent) in [("first", sent), ("again", again)] {
                let before = (upstream_requests(&proxy.url), verbatim_answers(&proxy.url));
                let got = points(&instant(&proxy.url, q, t));
                let asked = upstream_requests(&proxy.url) - before.0;
                assert_eq!(differences(&got, &want), vec![], "{q} at {t}, {round}");
                let raced = empty_when_clear && round == "first" && asked == sent + 1.0;
                assert!(
                    asked == sent || raced,
                    "{q} at {t}, {round}: {asked} requests sent, not {sent}"
                );
                assert_eq!(
                    verbatim_answers(&proxy.url) - before.1,
                    verbatim,
                    "{q} at {t}, {round}: verbatim"
                );
            }
        }
    }
    // An instant at now (its window from just after hole b): its count may
    // still grow, so it is never remembered, and asked each time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let q = format!(
        "max_over_time(temperature_celsius[{}s])",
        now - tl.hole_b.end - 60
    );
    let want = points(&instant(&c.reference.url, &q, now));
    assert!(!want.is_empty(), "{q} at {now} reads nothing");
    for round in ["first", "again"] {
        let before = upstream_requests(&proxy.url);
        let got = points(&instant(&proxy.url, &q, now));
        assert_eq!(differences(&got, &want), vec![], "{q} at {now}, {round}");
        assert_eq!(
            upstream_requests(&proxy.url) - before,
            3.0,
            "{q} at {now}, {round}: requests sent"
        );
    }
}

/// The coverage-over-steps queries an upstream logged in its query log
/// (Prometheus' `query_log_file`), as (start, end) in seconds, in the order asked.
fn fine_rounds_logged(log: &Path) -> Vec<(i64, i64)> {
    rounds_logged(log, true)
}

/// The coverage queries an upstream logged, as [`fine_rounds_logged`]: the
/// rounds over steps (`fine`), or the coarse ones.
fn rounds_logged(log: &Path, fine: bool) -> Vec<(i64, i64)> {
    logged(log, |q| {
        // The coarse round counts samples alone; the one over steps, series too.
        q.contains("__prom_ha_proxy_coverage__\", \"samples\"")
            && q.contains("__prom_ha_proxy_coverage__\", \"series\"") == fine
    })
}

/// The range queries an upstream logged whose text passes `pick`, as
/// (start, end) in seconds, in the order asked.
fn logged(log: &Path, pick: impl Fn(&str) -> bool) -> Vec<(i64, i64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let seconds = |v: &Value| {
        let t = chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
        t.timestamp_millis() / 1000
    };
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| pick(e["params"]["query"].as_str().unwrap_or_default()))
        .map(|e| (seconds(&e["params"]["start"]), seconds(&e["params"]["end"])))
        .collect()
}

/// `asked`: one span around the first replica's hole (a's), within the
/// range, under `most` of it; none around b's, where a's answer serves.
fn assert_a_span_around_the_first_replicas_hole(
    tl: &Timeline,
    asked: Vec<(i64, i64)>,
    most: f64,
    what: &str,
) {
    let hole = tl.hole_a;
    let [(from, to)] = asked[..] else {
        panic!("{what}: one span, not {asked:?}");
    };
    assert!(
        tl.start <= from && from < hole.start && hole.end < to && to <= tl.end,
        "{what}: span {from}..{to} should hold a's hole {hole:?} within the range"
    );
    let (span_s, asked): (i64, i64) = (tl.end - tl.start, asked.iter().map(|(f, t)| t - f).sum());
    assert!(
        (asked as f64) < most * span_s as f64,
        "{what}: {asked} s of the {span_s} s range asked"
    );
}

#[test]
fn across_two_holes_the_coverage_over_steps_is_asked_around_the_first_replicas_only() {
    let c = cluster();
    let tl = c.tl;
    // A pair of this test's own, each logging the queries it is asked.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("logged");
    let (log_a, log_b) = (root.join("a/queries.log"), root.join("b/queries.log"));
    let start = |name: &str, hole: Hole, log: &Path| {
        let config = format!(
            "global:\n  scrape_interval: 15s\n  query_log_file: {}\nscrape_configs: []\n",
            log.display()
        );
        let om = openmetrics(&tl, &[hole], PHASE_S);
        Prometheus::start_with(name, &root.join(name), &om, &config, &[])
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start("a", tl.hole_a, &log_a));
        let b = start("b", tl.hole_b, &log_b);
        (a.join().unwrap(), b)
    });
    let proxy = Proxy::start_with_env(proxy_binary(), &[&a.url, &b.url], &[], &[NO_CACHE]);
    // Each with the most of the range its spans may hold: the last at steps
    // half its window wide, coarse first only because the range holds many
    // of them (`coarse_pays`), its spans 16 steps wider each side.
    // The query itself, as each replica logs it: a the whole range, and b,
    // once the coarse counts are in, the query over the spans alone.
    let logged_as_asked = |log: &Path, q: &str| logged(log, |logged| logged == q);
    for (q, step, most) in [
        ("temperature_celsius", STEP_S, 0.5),
        ("sum by (job) (rate(http_requests_total[5m]))", STEP_S, 0.5),
        ("sum by (job) (rate(http_requests_total[1m]))", 30, 0.5),
    ] {
        let before =
            [&log_a, &log_b].map(|l| (fine_rounds_logged(l).len(), logged_as_asked(l, q).len()));
        let got = points(&range(&proxy.url, q, tl.start, tl.end, step));
        let want = points(&range(&c.reference.url, q, tl.start, tl.end, step));
        assert_eq!(differences(&got, &want), vec![], "{q}");
        for (log, before) in [(&log_a, before[0]), (&log_b, before[1])] {
            let rounds = fine_rounds_logged(log)[before.0..].to_vec();
            assert_a_span_around_the_first_replicas_hole(&tl, rounds, most, q);
        }
        let asked_a = logged_as_asked(&log_a, q)[before[0].1..].to_vec();
        assert_eq!(asked_a, vec![(tl.start, tl.end)], "{q}: a the whole range");
        let asked_b = logged_as_asked(&log_b, q)[before[1].1..].to_vec();
        assert_a_span_around_the_first_replicas_hole(
            &tl,
            asked_b,
            most,
            &format!("{q}: b in parts"),
        );
    }
    // Asked again, every coverage count remembered: where a lacks samples b
    // holds is known before the query goes out, so a is asked the whole
    // range and b the query over the span around a's hole alone.
    let q = "sum by (job) (rate(http_requests_total[5m]))";
    let logged_as_asked = |log: &Path| logged_as_asked(log, q);
    let before = (logged_as_asked(&log_a).len(), logged_as_asked(&log_b).len());
    let got = points(&range(&proxy.url, q, tl.start, tl.end, STEP_S));
    let want = points(&range(&c.reference.url, q, tl.start, tl.end, STEP_S));
    assert_eq!(differences(&got, &want), vec![], "{q} asked again");
    let asked_a = logged_as_asked(&log_a)[before.0..].to_vec();
    assert_eq!(asked_a, vec![(tl.start, tl.end)], "a: the whole range");
    let asked_b = logged_as_asked(&log_b)[before.1..].to_vec();
    assert_a_span_around_the_first_replicas_hole(&tl, asked_b, 0.5, "b asked in parts");

    // Clear of holes at steps a third of its window, but many of them (334):
    // the coarse round alone, and no coverage over steps.
    let (from, to) = (tl.hole_a.end + 600, tl.hole_b.start - 600);
    let q = "sum by (job) (rate(http_requests_total[30s]))";
    let before =
        [&log_a, &log_b].map(|l| (rounds_logged(l, false).len(), fine_rounds_logged(l).len()));
    let got = points(&range(&proxy.url, q, from, to, 9));
    let want = points(&range(&c.reference.url, q, from, to, 9));
    assert_eq!(differences(&got, &want), vec![], "{q}");
    for (log, (coarse, fine)) in [&log_a, &log_b].into_iter().zip(before) {
        assert_eq!(
            rounds_logged(log, false).len() - coarse,
            1,
            "{q}: one coarse round"
        );
        assert_eq!(
            fine_rounds_logged(log).len() - fine,
            0,
            "{q}: none over steps"
        );
    }
}

#[test]
fn a_hole_in_one_targets_series_is_seen_at_its_edges_however_few_samples_it_takes() {
    // a loses host-1 (4 of 16 `http_requests_total` series) for 20 minutes;
    // b is whole. Instants at the hole's edges, where its deficit is within
    // one sample per series of all the series read (generated seeds 14-16).
    let c = cluster();
    let tl = c.tl;
    let hole = Hole {
        start: tl.start + 1200,
        end: tl.start + 2400,
    };
    let full = openmetrics(&tl, &[], PHASE_S);
    let om_a = generated::without_target(&full, r#"instance="host-1:9100""#, hole);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("one-target");
    let (a, b) = start_pair(&root, &om_a, &full);
    let proxy = Proxy::start(proxy_binary(), &[&a.url, &b.url], &[]);
    for (q, t) in [
        ("http_requests_total", hole.start + 66),
        ("changes(http_requests_total[2m])", hole.end + 92),
        (
            "sum(delta(http_requests_total{code=\"200\"}[1m] offset 30s))",
            hole.end + 59,
        ),
    ] {
        let got = points(&instant(&proxy.url, q, t));
        let want = points(&instant(&c.reference.url, q, t));
        assert_eq!(differences(&got, &want), vec![], "{q} at {t}");
    }
}

/// Replica b scraping 5 seconds after a, as real replicas do.
struct Offset {
    b: Prometheus,
    proxy: Proxy,
}

fn offset_cluster() -> &'static Offset {
    static OFFSET: std::sync::OnceLock<Offset> = std::sync::OnceLock::new();
    OFFSET.get_or_init(|| {
        let c = cluster();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("cluster")
            .join("b-offset");
        let b = Prometheus::start(
            "b-offset",
            &dir,
            &openmetrics(&c.tl, &[c.tl.hole_b], PHASE_S + 5),
        );
        let proxy = Proxy::start(proxy_binary(), &[&c.a.url, &b.url], &[]);
        Offset { b, proxy }
    })
}

/// Whether the stretch `query` reads at step `t` (seconds) touches `hole`, give or take a scrape.
fn reads_hole(query: &str, t: i64, hole: Hole) -> bool {
    let lookback = std::time::Duration::from_secs(LOOKBACK as u64);
    // The proxy counts over the query's windows widened to two scrapes.
    let narrowest = prom_ha_proxy::query::narrowest_counted(std::time::Duration::from_secs(15));
    match prom_ha_proxy::query::analyse(query, lookback, narrowest).reads {
        prom_ha_proxy::query::Reads::Stretches(stretches) => stretches.iter().any(|s| {
            s.at.is_some()
                || (t * 1000 + s.from_ms < (hole.end + STEP_S) * 1000
                    && t * 1000 + s.to_ms >= hole.start * 1000)
        }),
        _ => true,
    }
}

#[test]
fn with_offset_scrapes_every_complete_step_comes_from_the_first_replica_without_flipping() {
    let c = cluster();
    let o = offset_cluster();
    let tl = c.tl;
    let (mut checked, mut a_differs_from_b) = (0, 0);
    for q in BROAD {
        let got = points(&range(&o.proxy.url, q, tl.start, tl.end, 60));
        let from_a = points(&range(&c.a.url, q, tl.start, tl.end, 60));
        let from_b = points(&range(&o.b.url, q, tl.start, tl.end, 60));
        for (key, series) in from_a.iter() {
            for (t_ms, a_value) in series {
                let t = t_ms / 1000;
                if reads_hole(q, t, tl.hole_a) {
                    continue;
                }
                checked += 1;
                let b_value = from_b.get(key).and_then(|s| s.get(t_ms));
                a_differs_from_b += b_value.is_none_or(|b| !same(*a_value, *b)) as usize;
                let got_value = got.get(key).and_then(|s| s.get(t_ms));
                assert!(
                    got_value.is_some_and(|g| same(*g, *a_value)),
                    "{q}: {key} at {t}s came from b ({got_value:?}) though a was complete ({a_value})"
                );
            }
        }
        // And where a has nothing, b fills in: no step is left empty.
        let want = points(&range(&c.reference.url, q, tl.start, tl.end, 60));
        let steps = |p: &Points| {
            p.values()
                .flat_map(|s| s.keys().copied())
                .collect::<std::collections::BTreeSet<i64>>()
        };
        assert_eq!(steps(&got), steps(&want), "{q}: steps with an answer");
    }
    println!(
        "{checked} points outside hole a checked; a and b disagree on {a_differs_from_b} of them"
    );
    // The check means something only if the replicas' answers do differ.
    assert!(
        a_differs_from_b > checked / 10,
        "only {a_differs_from_b} of {checked} points tell a from b"
    );
}

#[test]
fn steps_on_the_scrapes_themselves_equal_the_reference_at_the_holes_first_missing_scrape() {
    // Steps of one scrape interval landing exactly on the samples: the first
    // step inside a hole finds the replica short by just one sample per target.
    let c = cluster();
    let tl = c.tl;
    let (start, end) = (
        tl.hole_a.start - 600 + PHASE_S,
        tl.hole_a.end + 600 + PHASE_S,
    );
    for q in [
        "http_requests_total",
        "temperature_celsius",
        "rate(http_requests_total[1m])",
        "sum(up)",
    ] {
        let got = points(&range(&c.proxy.url, q, start, end, STEP_S));
        let want = points(&range(&c.reference.url, q, start, end, STEP_S));
        assert_eq!(differences(&got, &want), vec![], "{q}");
    }
}

#[test]
fn instant_queries_at_the_holes_first_missing_scrape_equal_the_reference() {
    // One scrape into a hole, a lockstep replica is short by just one sample
    // per target, like a replica that scrapes later. The instant coverage
    // query's earlier windows show that it is not usually short.
    let c = cluster();
    let tl = c.tl;
    let mut plain_differs = 0;
    for t in [tl.hole_a.start + PHASE_S, tl.hole_b.start + PHASE_S] {
        for q in BROAD {
            let want = points(&instant(&c.reference.url, q, t));
            let got = points(&instant(&c.proxy.url, q, t));
            assert_eq!(differences(&got, &want), vec![], "{q} @{t}");
            let plain = points(&instant(&c.plain.url, q, t));
            plain_differs += usize::from(!differences(&plain, &want).is_empty());
        }
    }
    assert!(
        plain_differs > 0,
        "the instants chosen do not test anything"
    );
}

/// A vector answer at `t` with one series only the fake has.
fn fake_vector(t: i64) -> String {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"instance":"fake"}},"value":[{t},"1"]}}]}}}}"#
    )
}

#[test]
fn an_upstream_whose_coverage_fails_ranks_last_with_a_warning() {
    let c = cluster();
    let t = c.tl.end;
    let f = fake::start(fake::Behaviour::fail_coverage(fake_vector(t)));
    let proxy = fake::start_proxy_without_readiness(proxy_binary(), &[&f.url, &c.reference.url]);
    let q = "count by (instance) (http_requests_total)";
    let got = instant(&proxy.url, q, t);
    // The fake answered first, in priority, but its completeness is unknown: the reference's answer stands alone.
    assert_eq!(
        differences(&points(&got), &points(&instant(&c.reference.url, q, t))),
        vec![]
    );
    let warnings = got["warnings"].to_string();
    assert!(
        warnings.contains(&format!("upstream {}: coverage query failed", f.url)),
        "{warnings}"
    );
}

#[test]
fn when_no_coverage_is_known_the_plain_merge_answers_with_a_warning() {
    let t = cluster().tl.end;
    let f = fake::start(fake::Behaviour::fail_coverage(fake_vector(t)));
    let proxy = fake::start_proxy_without_readiness(proxy_binary(), &[&f.url]);
    let got = instant(&proxy.url, "anything", t);
    assert_eq!(got["data"]["result"][0]["metric"]["instance"], "fake");
    assert!(
        got["warnings"]
            .to_string()
            .contains("completeness unknown on every upstream"),
        "{got}"
    );
}

/// An instant coverage answer (the coarse round's) counting `n` samples at `t`.
fn coverage_vector(t: i64, n: u32) -> String {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"__prom_ha_proxy_coverage__":"samples"}},"value":[{t},"{n}"]}}]}}}}"#
    )
}

#[test]
fn an_answer_picked_to_go_out_alone_that_fails_is_replaced_by_the_next_upstreams() {
    let t = cluster().tl.end;
    // Both count the same samples, so the second is not asked the query
    // once the first's answer is picked; that (late) then turns out to be
    // no answer.
    let split = |main: &str| fake::Behaviour::Split {
        coverage: Box::new(fake::Behaviour::Answer(200, coverage_vector(t, 10))),
        main: Box::new(fake::Behaviour::Delay(400, main.to_string())),
    };
    let broken = fake::start(split("garbage"));
    let good = fake::start(split(&fake_vector(t)));
    let proxy = fake::start_proxy_without_readiness(proxy_binary(), &[&broken.url, &good.url]);
    let got = instant(&proxy.url, "up", t);
    assert_eq!(got["status"], "success", "{got}");
    assert_eq!(got["data"]["result"][0]["metric"]["instance"], "fake");
    let warnings = got["warnings"].to_string();
    assert!(
        warnings.contains(&format!("upstream {}: body is not valid JSON", broken.url)),
        "{warnings}"
    );
    // The second was asked the query once: when the first's had failed.
    let mains = |f: &fake::Fake| query_mains(f, "/api/v1/query").len();
    assert_eq!((mains(&broken), mains(&good)), (1, 1));
    assert_eq!(verbatim_answers(&proxy.url), 0.0);
}

#[test]
fn an_instant_the_first_upstream_answers_empty_has_the_others_asked_before_the_counts() {
    let t = cluster().tl.end;
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    // a's answer, of no series, is in at once, and every count 600 ms
    // later; b answers the query 600 ms after it is asked. b must be asked
    // its query before a's counts are in, not once they are (the fakes'
    // timeline shows which).
    for (a_counts, want_series) in [
        // a counts nothing where b counts samples: b's answer is the answer.
        (empty.to_string(), 1),
        // Both count alike (the query matches nothing a holds, and a holds
        // the window): a's empty answer is the answer, b's dropped unread.
        (coverage_vector(t, 10), 0),
    ] {
        let a = fake::start(fake::Behaviour::Split {
            coverage: Box::new(fake::Behaviour::Delay(600, a_counts)),
            main: Box::new(fake::Behaviour::Answer(200, empty.into())),
        });
        let b = fake::start(fake::Behaviour::Split {
            coverage: Box::new(fake::Behaviour::Delay(600, coverage_vector(t, 10))),
            main: Box::new(fake::Behaviour::Delay(600, fake_vector(t))),
        });
        let proxy = fake::start_proxy_without_readiness(proxy_binary(), &[&a.url, &b.url]);
        let got = instant(&proxy.url, "up", t);
        let series = got["data"]["result"].as_array().map(Vec::len);
        assert_eq!(series, Some(want_series), "{got}");
        assert_eq!(query_mains(&b, "/api/v1/query").len(), 1);
        let b_asked = b
            .first("received", "/api/v1/query", false)
            .expect("b asked");
        let a_counted = a
            .first("answered", "/api/v1/query", true)
            .expect("a counted");
        assert!(
            b_asked < a_counted,
            "b was asked only once a's counts were in"
        );
        // Either way one answer went out as it came.
        assert_eq!(verbatim_answers(&proxy.url), 1.0);
    }
}

#[test]
fn an_answer_picked_to_go_out_alone_is_sent_as_the_upstream_gave_it() {
    let t = cluster().tl.end;
    // Not Prometheus' own encoding (spaces, a field of its own), so any
    // re-encoding would show.
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[ {{"metric":{{"instance":"fake"}},"value":[{t},"1.50"]}} ]}},"extra":true}}"#
    );
    let split = |main: &str| fake::Behaviour::Split {
        coverage: Box::new(fake::Behaviour::Answer(200, coverage_vector(t, 10))),
        main: Box::new(fake::Behaviour::Delay(200, main.to_string())),
    };
    let first = fake::start(split(&body));
    let second = fake::start(split(&fake_vector(t)));
    let proxy = fake::start_proxy_without_readiness(proxy_binary(), &[&first.url, &second.url]);
    let (status, got) = http_get(&format!("{}/api/v1/query?query=up&time={t}", proxy.url)).unwrap();
    assert_eq!((status, got), (200, body));
    assert_eq!(verbatim_answers(&proxy.url), 1.0);
}

#[test]
fn a_range_asked_again_has_its_settled_coverage_counts_remembered() {
    let c = cluster();
    let tl = c.tl;
    // Proxies of this test's own: one remembering (the default), one not.
    let remembering =
        Proxy::start_with_env(proxy_binary(), &[&c.a.url, &c.b.url], &[], &[NO_CACHE]);
    let forgetful = Proxy::start_with_env(
        proxy_binary(),
        &[&c.a.url, &c.b.url],
        &[],
        &[("PROM_HA_PROXY__COVERAGE__REMEMBER_FOR", "0s"), NO_CACHE],
    );
    let q = "sum by (job) (rate(http_requests_total[5m]))";
    let clear = (tl.start + 1200, tl.hole_a.start - 1200);
    let across = (tl.hole_a.start - 1800, tl.hole_a.end + 1800);
    // Requests to both upstreams, asked the first time and then again: the
    // coarse round to each and the query to a, and (a range of 20 minutes,
    // too short to wait for the counts) to b; across the hole, the coverage
    // over the steps around it to each and the query over them to b; then,
    // the counts all remembered, the query to a alone (clear: a's answer is
    // the answer, b is not asked), or to a and, over the span around the
    // hole alone, to b.
    for ((from, to), first, again) in [(clear, 4.0, 1.0), (across, 6.0, 2.0)] {
        let want = points(&range(&c.reference.url, q, from, to, STEP_S));
        for (proxy, asked) in [
            (&remembering, [first, again, again]),
            (&forgetful, [first, first, first]),
        ] {
            // The third time a minute narrower at each end: its windows,
            // on multiples of their width, are among those asked before.
            for (round, requests) in asked.into_iter().enumerate() {
                let shift = if round == 2 { 60 } else { 0 };
                let (from, to) = (from + shift, to - shift);
                let want = if shift == 0 {
                    want.clone()
                } else {
                    points(&range(&c.reference.url, q, from, to, STEP_S))
                };
                let before = upstream_requests(&proxy.url);
                let got = points(&range(&proxy.url, q, from, to, STEP_S));
                let sent = upstream_requests(&proxy.url) - before;
                assert_eq!(differences(&got, &want), vec![], "{q} over {from}..{to}");
                assert_eq!(
                    sent, requests,
                    "{q} over {from}..{to}, round {round}, {}: requests sent",
                    proxy.url
                );
            }
        }
    }
}

/// The start of an hour a day ago: its coverage counts settled, so remembered.
fn settled_hour() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now - 86_400) / 3600 * 3600
}

/// A fake's answer to the coarse coverage round of a range over the hour from
/// `t0` (5-minute windows): 40 samples in each, 20 in the one at `short_at`.
fn coarse_counts(t0: i64, short_at: Option<i64>) -> String {
    let values: Vec<String> = (0..=12)
        .map(|k| t0 + 300 * k)
        .map(|t| format!("[{t},\"{}\"]", if Some(t) == short_at { 20 } else { 40 }))
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"__prom_ha_proxy_coverage__":"samples"}},"values":[{}]}}]}}}}"#,
        values.join(",")
    )
}

/// A fake's answer to a range over the hour from `t0` at 15-second steps:
/// one series, every value `who`.
fn hour_of_samples(t0: i64, who: &str) -> String {
    let values: Vec<String> = (0..=240)
        .map(|k| format!("[{},\"{who}\"]", t0 + 15 * k))
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"i":"1"}},"values":[{}]}}]}}}}"#,
        values.join(",")
    )
}

/// The first lines of the range queries (not coverage) `fake` was sent.
fn range_mains(fake: &fake::Fake) -> Vec<String> {
    query_mains(fake, " /api/v1/query_range")
}

/// The first lines of the requests to a path starting `path` (not coverage) `fake` was sent.
fn query_mains(fake: &fake::Fake, path: &str) -> Vec<String> {
    fake.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains(path) && !r.contains("__prom_ha_proxy_coverage__"))
        .map(|r| r.lines().next().unwrap_or_default().to_string())
        .collect()
}

/// Two fakes `a` (first) and `b`, with a straggler timeout of one second.
fn proxy_with_straggler_timeout_1s(name: &str, a: &fake::Fake, b: &fake::Fake) -> Proxy {
    fake::start_proxy_with_config(
        proxy_binary(),
        name,
        &format!(
            "[health]\nstraggler_timeout = \"1s\"\n[upstreams.a]\nurl = \"{}\"\npriority = 1\n[upstreams.b]\nurl = \"{}\"\npriority = 2\n",
            a.url, b.url
        ),
    )
}

/// A range over the hour through a first fake `a` whose coverage answers as
/// `a_coverage` and whose answer to the query is 8 s late, and a second `b`
/// answering at once (straggler timeout 1 s): the answer is b's whole range,
/// with a warning naming a, in one straggler timeout and a margin, not a's
/// 8 s nor a second straggler timeout after b's answer. Returns b.
fn late_first_answered_by_the_second(name: &str, a_coverage: fake::Behaviour) -> fake::Fake {
    let t0 = settled_hour();
    let a = fake::start(fake::Behaviour::Split {
        coverage: Box::new(a_coverage),
        main: Box::new(fake::Behaviour::Delay(8_000, hour_of_samples(t0, "1"))),
    });
    let b = fake::start(fake::Behaviour::Split {
        coverage: Box::new(fake::Behaviour::Answer(200, coarse_counts(t0, None))),
        main: Box::new(fake::Behaviour::Answer(200, hour_of_samples(t0, "2"))),
    });
    let proxy = proxy_with_straggler_timeout_1s(name, &a, &b);
    let asked = std::time::Instant::now();
    let got = range(&proxy.url, "rate(x[5m])", t0, t0 + 3600, STEP_S);
    let took = asked.elapsed();
    // a's answer never came: the proxy gave it up, it did not wait for it.
    assert_eq!(a.first("answered", "/api/v1/query_range", false), None);
    let values = &got["data"]["result"][0]["values"];
    assert_eq!(values[0][1], "2", "{got}");
    assert_eq!(values.as_array().map(Vec::len), Some(241), "{got}");
    let warnings = got["warnings"].to_string();
    assert!(
        warnings.contains(&format!("upstream {}", a.url)),
        "{warnings}"
    );
    // A hang guard: a's answer is 8 s late.
    assert!(took < std::time::Duration::from_secs(6), "took {took:?}");
    b
}

#[test]
fn a_first_upstream_slow_to_answer_a_range_the_others_were_not_asked_costs_a_straggler_timeout() {
    // Counting alike: b is asked nothing once the counts are in; but a's
    // answer is late, so b is asked the whole range a second after them,
    // and a is given up once b's answer is in.
    let counts = fake::Behaviour::Answer(200, coarse_counts(settled_hour(), None));
    let b = late_first_answered_by_the_second("slow-first", counts);
    assert_eq!(range_mains(&b).len(), 1, "b asked the whole range once");
}

#[test]
fn a_first_upstream_hung_in_the_coarse_round_is_given_up_with_its_range() {
    // a answers nothing in time, the coarse round included: given up a
    // straggler timeout after b's count, when b is asked the whole range.
    let counts = fake::Behaviour::Delay(8_000, coarse_counts(settled_hour(), None));
    late_first_answered_by_the_second("hung-first", counts);
}

#[test]
fn a_range_whose_second_upstream_fails_its_coarse_count_asks_it_the_whole_range() {
    // b refuses every coverage query: with its count missing, b is asked
    // the whole range once the round is in, and ranks last with a warning.
    let t0 = settled_hour();
    let a = fake::start(fake::Behaviour::Split {
        coverage: Box::new(fake::Behaviour::Answer(200, coarse_counts(t0, None))),
        main: Box::new(fake::Behaviour::Answer(200, hour_of_samples(t0, "1"))),
    });
    let b = fake::start(fake::Behaviour::fail_coverage(hour_of_samples(t0, "2")));
    let proxy = proxy_with_straggler_timeout_1s("second-count-fails", &a, &b);
    let got = range(&proxy.url, "rate(x[5m])", t0, t0 + 3600, STEP_S);
    let values = &got["data"]["result"][0]["values"];
    assert_eq!(values.as_array().map(Vec::len), Some(241), "{got}");
    assert_eq!(values[0][1], "1", "{got}");
    let warnings = got["warnings"].to_string();
    assert!(
        warnings.contains(&format!("upstream {}: coverage query failed", b.url)),
        "{warnings}"
    );
    let mains = range_mains(&b);
    assert_eq!(mains.len(), 1, "{mains:#?}");
    assert!(mains[0].contains(&format!("start={t0}&")), "{mains:#?}");
}

#[test]
fn a_first_answer_that_fails_beside_parts_has_the_others_asked_again_whole() {
    // Two fakes counting the same samples but at one window, where a holds
    // fewer: a is asked the whole range and b the steps around that window
    // alone, once the coarse counts are in; asked again (every count
    // remembered), at once; then a fails.
    let t0 = settled_hour();
    let counts = |short_at| coarse_counts(t0, short_at);
    let answer = |who| hour_of_samples(t0, who);
    let failed = r#"{"status":"error","errorType":"internal","error":"boom"}"#;
    let a = fake::start(fake::Behaviour::Split {
        coverage: Box::new(fake::Behaviour::Answer(200, counts(Some(t0 + 1800)))),
        main: Box::new(fake::Behaviour::then(
            fake::Behaviour::Answer(200, answer("1")),
            1,
            fake::Behaviour::Answer(500, failed.into()),
        )),
    });
    let b = fake::start(fake::Behaviour::Split {
        coverage: Box::new(fake::Behaviour::Answer(200, counts(None))),
        main: Box::new(fake::Behaviour::Answer(200, answer("2"))),
    });
    let proxy = fake::start_proxy_without_readiness(proxy_binary(), &[&a.url, &b.url]);
    let ask = || range(&proxy.url, "rate(x[5m])", t0, t0 + 3600, STEP_S);
    let first = ask();
    assert_eq!(first["status"], "success", "{first}");
    let again = ask();
    // a failed: b's whole answer, and a warning naming a.
    assert_eq!(again["data"]["result"][0]["values"][0][1], "2", "{again}");
    assert_eq!(
        again["data"]["result"][0]["values"]
            .as_array()
            .map(Vec::len),
        Some(241),
        "{again}"
    );
    let warnings = again["warnings"].to_string();
    assert!(
        warnings.contains(&format!("upstream {}", a.url)),
        "{warnings}"
    );
    // b: a part, then (asked again) a part, then the whole range.
    let mains = range_mains(&b);
    let whole = format!("start={t0}&");
    assert_eq!(mains.len(), 3, "{mains:#?}");
    assert!(!mains[0].contains(&whole), "a part: {mains:#?}");
    assert!(!mains[1].contains(&whole), "a part: {mains:#?}");
    assert!(mains[2].contains(&whole), "{mains:#?}");
}

/// `om` as a replica that scrapes later reads it: every sample but `up`'s
/// one higher (counters a little further on, gauges moved).
pub fn read_later(om: &str) -> String {
    om.lines()
        .map(|line| {
            let mut parts: Vec<&str> = line.rsplitn(3, ' ').collect();
            if line.starts_with('#') || line.starts_with("up{") || parts.len() < 3 {
                return format!("{line}\n");
            }
            parts.reverse();
            let value: f64 = parts[1].parse().unwrap();
            format!("{} {} {}\n", parts[0], value + 1.0, parts[2])
        })
        .collect()
}

/// Queries whose series depend on the values or the scrape times read.
pub const VALUE_SHAPED: &[&str] = &[
    "count_values(\"value\", http_requests_total)",
    "count_values(\"v\", request_duration_seconds_bucket)",
    "temperature_celsius > 20",
    "http_requests_total > 500",
    "sort_desc(temperature_celsius)",
    "topk(2, temperature_celsius)",
    "changes(temperature_celsius[20s])",
];

#[test]
fn where_the_first_replica_is_complete_its_answer_is_the_answer_series_set_included() {
    let tl = cluster().tl;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("offset-values");
    // b scrapes 7 s after a and reads other values; neither has a hole.
    let om = openmetrics(&tl, &[], PHASE_S);
    let (a, b) = start_pair(&root, &om, &read_later(&openmetrics(&tl, &[], PHASE_S + 7)));
    let proxy = Proxy::start(proxy_binary(), &[&a.url, &b.url], &[]);
    let (mut compared, mut b_differs, mut wrong) = (0, 0, Vec::new());
    // `[1s]` windows included: a's holds its sample at some steps and b's
    // at others, which the counts see alike over two scrape intervals.
    for q in BROAD.iter().chain(VALUE_SHAPED) {
        // Steps on each replica's scrapes (a's window holds one sample more
        // than b's, then one fewer) and between them.
        for first in [
            tl.start + 3600,
            tl.start + 3600 + PHASE_S,
            tl.start + 3600 + PHASE_S + 7,
        ] {
            let (got, want) = (
                range(&proxy.url, q, first, tl.end, 60),
                range(&a.url, q, first, tl.end, 60),
            );
            if !differences(&points(&got), &points(&want)).is_empty() {
                wrong.push(format!("range {q} from {first}"));
            }
            let b_alone = points(&range(&b.url, q, first, tl.end, 60));
            b_differs += !differences(&b_alone, &points(&want)).is_empty() as usize;
            compared += 1;
        }
        for t in [
            tl.end - 1800,
            tl.end - 1800 + PHASE_S,
            tl.end - 900 + PHASE_S + 7,
        ] {
            let (got, want) = (instant(&proxy.url, q, t), instant(&a.url, q, t));
            if !differences(&points(&got), &points(&want)).is_empty()
                || order_differs(q, &got, &want).is_some()
            {
                wrong.push(format!("{q} at {t}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} not a's answer: {wrong:#?}",
        wrong.len()
    );
    // b's answers are not a's, so the test can tell whose went out.
    assert!(b_differs * 2 > compared, "{b_differs} of {compared}");
}
