//! End-to-end tests: the proxy binary in front of real Prometheus replicas
//! with holes, compared with a reference Prometheus that has none.
//!
//! Replica `a` (priority 1) misses 20 minutes, replica `b` misses 15 minutes
//! at another time. A priority merge fills every step where `a` has *nothing*;
//! within a query's look-back window of `a`'s hole edges, `a` answers with
//! stale or partial values that are present, which only the coverage-aware
//! merge (a later issue) can tell apart. Tests that meet those steps say so
//! in their names and check everything else point for point.

mod api;
mod buffers;
mod burst;
mod cache;
mod cli;
mod coverage;
mod discovery;
mod failover;
mod fake;
mod fuzz_corpus;
mod generated;
mod harness;
mod kubernetes;
mod live;
mod oracle;
mod pki;
mod promql_gen;
mod spellings;
mod tls;

use harness::*;
use oracle::{Points, differences, order_differs, points, same};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

struct Cluster {
    tl: Timeline,
    a: Prometheus,
    b: Prometheus,
    reference: Prometheus,
    proxy: Proxy,
    /// The same proxy with the coverage-aware merge off: plain priority merge.
    plain: Proxy,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let tl = Timeline::recent();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster");
        let (da, db, dr) = (root.join("a"), root.join("b"), root.join("reference"));
        let (om_a, om_b, om_r) = (
            openmetrics(&tl, &[tl.hole_a], PHASE_S),
            openmetrics(&tl, &[tl.hole_b], PHASE_S),
            openmetrics(&tl, &[], PHASE_S),
        );
        let (a, (b, reference)) = std::thread::scope(|s| {
            let a = s.spawn(|| Prometheus::start("a", &da, &om_a));
            let b = s.spawn(|| Prometheus::start("b", &db, &om_b));
            let r = Prometheus::start("reference", &dr, &om_r);
            (a.join().unwrap(), (b.join().unwrap(), r))
        });
        // Batches of 2 KB: every answer but the smallest goes through the
        // batched, parse-as-it-arrives path (`plain` keeps the default, so
        // these answers are parsed whole there); pieces of 4 KB: every answer
        // but the smallest is sent on in pieces as it is merged (`plain`
        // sends these whole).
        let proxy = Proxy::start_with_env(
            proxy_binary(),
            &[&a.url, &b.url],
            &[],
            &[
                ("PROM_HA_PROXY__PARSE_BATCH_BYTES", "2048"),
                ("PROM_HA_PROXY__ANSWER_PIECE_BYTES", "4096"),
            ],
        );
        let plain = Proxy::start_with_env(
            proxy_binary(),
            &[&a.url, &b.url],
            &[],
            &[("PROM_HA_PROXY__COVERAGE__ENABLED", "false")],
        );
        Cluster {
            tl,
            a,
            b,
            reference,
            proxy,
            plain,
        }
    })
}

fn proxy_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_prom-ha-proxy"))
}

/// GET an API path and return the parsed JSON, asserting success.
fn api(base: &str, path: &str, params: &[(&str, &str)]) -> Value {
    let url = format!("{base}{path}?{}", query_string(params));
    let (status, body) = http_get(&url).unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
    assert_eq!(v["status"], "success", "{url}: {body}");
    v
}

/// The battery: (query, seconds of history it reads at each step beyond the 5m look-back).
const BATTERY: &[(&str, i64)] = &[
    ("http_requests_total", 0),
    ("temperature_celsius", 0),
    ("http_requests_total{code=\"500\",method=\"POST\"}", 0),
    ("rate(http_requests_total[5m])", 300),
    ("sum by (job, code) (rate(http_requests_total[5m]))", 300),
    ("sum(increase(http_requests_total[10m]))", 600),
    ("count(temperature_celsius)", 0),
    ("count by (instance) (http_requests_total)", 0),
    ("avg_over_time(temperature_celsius[2m])", 120),
    (
        "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
        300,
    ),
    ("topk(3, rate(http_requests_total[5m]))", 300),
    ("bottomk(2, temperature_celsius)", 0),
    ("max(temperature_celsius) - min(temperature_celsius)", 0),
    ("sum(up)", 0),
];

const LOOKBACK: i64 = 300;

/// Steps where `a` answers with stale or partial data: from the hole's start
/// until its look-back window is past the hole's end.
fn near_hole_a_edges(tl: &Timeline, window: i64, t: i64) -> bool {
    let w = LOOKBACK + window;
    (t >= tl.hole_a.start && t < tl.hole_a.start + w)
        || (t >= tl.hole_a.end && t < tl.hole_a.end + w)
}

fn range(base: &str, q: &str, start: i64, end: i64, step: i64) -> Value {
    let (s, e, st) = (start.to_string(), end.to_string(), step.to_string());
    api(
        base,
        "/api/v1/query_range",
        &[("query", q), ("start", &s), ("end", &e), ("step", &st)],
    )
}

fn instant(base: &str, q: &str, t: i64) -> Value {
    api(
        base,
        "/api/v1/query",
        &[("query", q), ("time", &t.to_string())],
    )
}

#[test]
fn raw_samples_across_both_holes_equal_the_reference() {
    let c = cluster();
    for q in [
        "http_requests_total[3h]",
        "request_duration_seconds_bucket[3h]",
        "up[3h]",
    ] {
        let got = points(&instant(&c.proxy.url, q, c.tl.end));
        let want = points(&instant(&c.reference.url, q, c.tl.end));
        for replica in [&c.a, &c.b] {
            let alone = points(&instant(&replica.url, q, c.tl.end));
            assert!(
                differences(&alone, &want).len() > 10,
                "{q}: each replica has a hole"
            );
        }
        assert_eq!(differences(&got, &want), vec![], "{q}");
        assert!(want.values().map(|s| s.len()).sum::<usize>() > 1000);
    }
}

#[test]
fn range_queries_far_from_the_holes_equal_the_reference() {
    let c = cluster();
    let (start, end) = (c.tl.start + 600, c.tl.hole_a.start - 60);
    for (q, _) in BATTERY {
        let got = points(&range(&c.proxy.url, q, start, end, 30));
        let want = points(&range(&c.reference.url, q, start, end, 30));
        assert!(!want.is_empty(), "{q}: reference has data");
        assert_eq!(differences(&got, &want), vec![], "{q}");
    }
}

#[test]
fn range_queries_across_the_holes_equal_the_reference_except_near_hole_a_edges_until_coverage_merge()
 {
    let c = cluster();
    let tl = c.tl;
    let mut filled = 0;
    for (q, window) in BATTERY {
        let got_v = range(&c.plain.url, q, tl.start + 900, tl.end, 60);
        let got = points(&got_v);
        let want = points(&range(&c.reference.url, q, tl.start + 900, tl.end, 60));
        for (key, t) in differences(&got, &want) {
            assert!(
                near_hole_a_edges(&tl, *window, t),
                "{q}: {key} differs at {t}s, outside hole a's edges (hole a {:?}, hole b {:?})",
                tl.hole_a,
                tl.hole_b
            );
        }
        // Inside both holes, away from the edges, the gap is filled.
        let in_core = |t: i64| {
            (t >= tl.hole_a.start + LOOKBACK + window && t < tl.hole_a.end) || tl.hole_b.contains(t)
        };
        let core: usize = want
            .values()
            .flat_map(|s| s.keys())
            .filter(|t| in_core(**t / 1000))
            .count();
        filled += core;
        if q.starts_with("topk(3") {
            let mut per_step: BTreeMap<i64, usize> = BTreeMap::new();
            for s in got.values() {
                for t in s.keys() {
                    *per_step.entry(*t).or_default() += 1;
                }
            }
            assert!(
                per_step.values().all(|n| *n <= 3),
                "topk(3) gave more than 3 series at a step"
            );
        }
    }
    assert!(filled > 500, "the holes' cores held only {filled} points");
}

#[test]
fn instant_queries_inside_each_hole_equal_the_reference() {
    let c = cluster();
    for t in [
        c.tl.hole_a.start + 11 * 60,
        c.tl.hole_a.end - 15,
        c.tl.hole_b.start + 60,
        c.tl.hole_b.end - 15,
    ] {
        for (q, window) in BATTERY {
            if LOOKBACK + window > 11 * 60 {
                continue;
            }
            let got = points(&instant(&c.proxy.url, q, t));
            let want = points(&instant(&c.reference.url, q, t));
            assert!(!want.is_empty(), "{q} at {t}: reference has data");
            assert_eq!(differences(&got, &want), vec![], "{q} at {t}");
        }
    }
}

#[test]
fn grafana_post_form_equals_get() {
    let c = cluster();
    let (start, end) = ((c.tl.start + 600).to_string(), c.tl.end.to_string());
    let form = [
        ("query", "sum by (code) (rate(http_requests_total[5m]))"),
        ("start", start.as_str()),
        ("end", end.as_str()),
        ("step", "60"),
    ];
    let url = format!("{}/api/v1/query_range", c.proxy.url);
    let (status, posted) = http_post_form(&url, &form).unwrap();
    assert_eq!(status, 200, "{posted}");
    let (status, got) = http_get(&format!("{url}?{}", query_string(&form))).unwrap();
    assert_eq!(status, 200);
    assert_eq!(posted, got);
    assert!(posted.contains("\"resultType\":\"matrix\""));
}

#[test]
fn one_upstream_passes_through_byte_identical() {
    let c = cluster();
    let proxy = Proxy::start(proxy_binary(), &[&c.reference.url], &[]);
    let (start, end) = ((c.tl.start).to_string(), c.tl.end.to_string());
    for q in [
        "http_requests_total",
        "rate(request_duration_seconds_bucket[1m])",
        "1+1",
        "temperature_celsius[10m]",
    ] {
        let params = [
            ("query", q),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("step", "15"),
        ];
        let path = if q.ends_with("[10m]") || q == "1+1" {
            "/api/v1/query"
        } else {
            "/api/v1/query_range"
        };
        let params = if path == "/api/v1/query" {
            &[("query", q), ("time", end.as_str())][..]
        } else {
            &params[..]
        };
        let direct = http_get(&format!(
            "{}{path}?{}",
            c.reference.url,
            query_string(params)
        ))
        .unwrap();
        let proxied = http_get(&format!("{}{path}?{}", proxy.url, query_string(params))).unwrap();
        assert_eq!(proxied.0, 200);
        assert_eq!(proxied.1, direct.1, "{q}");
    }
}

#[test]
fn promtool_queries_through_the_proxy_match_the_reference() {
    let c = cluster();
    let promtool = require("promtool");
    let t = (c.tl.hole_a.start + 12 * 60).to_string();
    let run = |base: &str, args: &[&str]| {
        let out = std::process::Command::new(&promtool)
            .arg("query")
            .args(args.iter().map(|a| a.replace("{URL}", base)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let instant = [
        "instant",
        "--time",
        &t,
        "{URL}",
        "sum by (instance) (http_requests_total)",
    ];
    let got = run(&c.proxy.url, &instant);
    assert_eq!(got, run(&c.reference.url, &instant));
    assert!(got.contains("host-3:9100"), "{got}");
    let (s, e) = (
        (c.tl.hole_a.start + 600).to_string(),
        (c.tl.hole_a.end - 60).to_string(),
    );
    let range = [
        "range",
        "--start",
        &s,
        "--end",
        &e,
        "--step",
        "1m",
        "{URL}",
        "sum(temperature_celsius)",
    ];
    let got = run(&c.proxy.url, &range);
    assert_eq!(got, run(&c.reference.url, &range));
    assert!(got.lines().count() > 5, "{got}");
}

#[test]
fn bad_promql_is_passed_on_as_bad_data() {
    let c = cluster();
    let (status, body) = http_get(&format!("{}/api/v1/query?query=sum(", c.proxy.url)).unwrap();
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    assert!(
        v["error"].as_str().unwrap().contains("parse error"),
        "{body}"
    );
}

#[test]
fn an_execution_error_the_data_causes_is_the_answer_even_where_a_replica_in_its_hole_evaluates_cleanly()
 {
    let c = cluster();
    // Many series on the right of a one-to-one match: an error wherever the
    // data is there, as in b and the reference; a, in its hole, has nothing.
    let q = "vector(1) + on() http_requests_total";
    let t = c.tl.hole_a.start + 600;
    let ask = |base: &str| http_get(&format!("{base}{}", instant_path(q, t))).unwrap();
    let (status_a, body_a) = ask(&c.a.url);
    assert_eq!(status_a, 200, "{body_a}");
    let (want_status, want) = ask(&c.reference.url);
    assert_eq!(want_status, 422, "{want}");
    let (status, body) = ask(&c.proxy.url);
    assert_eq!(status, 422, "{body}");
    let (got, want): (Value, Value) = (
        serde_json::from_str(&body).unwrap(),
        serde_json::from_str(&want).unwrap(),
    );
    assert_eq!(got["errorType"], "execution");
    assert_eq!(got["error"], want["error"]);
}

#[test]
fn malformed_requests_get_bad_data_400() {
    let c = cluster();
    let check = |(status, body): (u16, String), needle: &str| {
        assert_eq!(status, 400, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["status"].as_str(), v["errorType"].as_str()),
            (Some("error"), Some("bad_data"))
        );
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}");
    };
    let url = format!("{}/api/v1/query_range", c.proxy.url);
    check(http_get(&format!("{url}?start=1")).unwrap(), "query");
    check(http_post_form(&url, &[("step", "1")]).unwrap(), "query");
    check(
        http_get(&format!("{url}?query=up&timeout=soon")).unwrap(),
        "timeout",
    );
    let huge = "x".repeat(5 << 20);
    check(
        http_post_form(&url, &[("query", &huge)]).unwrap(),
        "larger than",
    );
}

#[test]
fn a_dead_upstream_is_left_out_with_a_warning() {
    let c = cluster();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start(proxy_binary(), &[&dead, &c.reference.url], &[]);
    let q = "sum by (instance) (http_requests_total)";
    let got = instant(&proxy.url, q, c.tl.end);
    assert_eq!(
        differences(
            &points(&got),
            &points(&instant(&c.reference.url, q, c.tl.end))
        ),
        vec![]
    );
    let warnings = got["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| {
            // Asked and refused, or already marked down by its probe: named either way.
            let w = w.as_str().unwrap();
            w.starts_with(&format!("upstream {dead}: ")) && w.contains("connection failed")
        }),
        "{warnings:?}"
    );
}

#[test]
fn all_upstreams_down_is_a_503_naming_each() {
    let (d1, d2) = (
        format!("http://127.0.0.1:{}", free_port()),
        format!("http://127.0.0.1:{}", free_port()),
    );
    let proxy = fake::start_proxy_without_readiness(proxy_binary(), &[&d1, &d2]);
    let (status, body) = http_get(&format!("{}/api/v1/query?query=up", proxy.url)).unwrap();
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errorType"], "unavailable");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains(&d1) && msg.contains(&d2), "{msg}");
}

#[test]
fn large_answers_go_out_in_pieces_as_they_are_merged_with_the_same_bytes() {
    let c = cluster();
    // Across hole a, so that the answers are merged (clear of holes, the
    // first replica's would go out as it came); a proxy of the same
    // coverage that sends these whole.
    let (start, end) = (
        (c.tl.hole_a.start - 1500).to_string(),
        (c.tl.hole_a.end + 1500).to_string(),
    );
    // The cluster's proxy sends a cached answer whole: one of its own,
    // uncached, for the pieces.
    let pieces_proxy = Proxy::start_with_env(
        proxy_binary(),
        &[&c.a.url, &c.b.url],
        &[],
        &[("PROM_HA_PROXY__ANSWER_PIECE_BYTES", "4096"), NO_CACHE],
    );
    let whole_proxy =
        Proxy::start_with_env(proxy_binary(), &[&c.a.url, &c.b.url], &[], &[NO_CACHE]);
    let q = query_string(&[
        ("query", "{__name__=~\".+\"}"),
        ("start", &start),
        ("end", &end),
        ("step", "15"),
    ]);
    let path = format!("/api/v1/query_range?{q}");
    let head = |base: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        fake::raw_request(base, &request).to_ascii_lowercase()
    };
    let (pieces, whole) = (head(&pieces_proxy.url), head(&whole_proxy.url));
    assert!(pieces.starts_with("http/1.1 200"), "{pieces}");
    assert!(pieces.contains("transfer-encoding: chunked"), "{pieces}");
    assert!(!pieces.contains("content-length"), "{pieces}");
    assert!(whole.contains("content-length"), "{whole}");
    let body = |base: &str| http_get(&format!("{base}{path}")).unwrap().1;
    let (streamed, sent_whole) = (body(&pieces_proxy.url), body(&whole_proxy.url));
    assert!(streamed.len() > 20 * 4096, "{} bytes", streamed.len());
    assert_eq!(streamed, sent_whole);
    // Through the cache, missed and then hit: the same bytes.
    assert_eq!(body(&c.proxy.url), sent_whole);
    assert_eq!(body(&c.proxy.url), sent_whole);
    let want = api(
        &c.reference.url,
        "/api/v1/query_range",
        &[
            ("query", "{__name__=~\".+\"}"),
            ("start", &start),
            ("end", &end),
            ("step", "15"),
        ],
    );
    let got: Value = serde_json::from_str(&streamed).unwrap();
    assert_eq!(differences(&points(&got), &points(&want)), vec![]);
}

#[test]
fn an_instant_vector_keeps_the_first_replicas_own_order() {
    let c = cluster();
    // Half an hour in: both replicas complete, answering alike.
    let t = c.tl.start + 1800;
    let labels = |v: &Value| -> Vec<String> {
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["metric"].to_string())
            .collect()
    };
    let mut unsorted = 0;
    for q in [
        "sum by (instance, method) (rate(http_requests_total[5m]))",
        "http_requests_total",
        "count by (le) (request_duration_seconds_bucket)",
        // `or` puts the left side's series first: not in label order.
        "up or http_requests_total",
    ] {
        let alone = labels(&instant(&c.a.url, q, t));
        assert!(alone.len() > 2, "{q}: {alone:?}");
        assert_eq!(labels(&instant(&c.proxy.url, q, t)), alone, "{q}");
        unsorted += !alone.is_sorted() as usize;
    }
    // Sorting the answer instead would have failed this test.
    assert!(unsorted > 0, "every replica answer came sorted");
}

#[test]
fn a_client_that_leaves_mid_answer_costs_nothing_after() {
    use std::io::{Read, Write};
    let c = cluster();
    let q = query_string(&[
        ("query", "{__name__=~\".+\"}"),
        ("start", &c.tl.start.to_string()),
        ("end", &c.tl.end.to_string()),
        ("step", "15"),
    ]);
    let path = format!("/api/v1/query_range?{q}");
    let whole = http_get(&format!("{}{path}", c.proxy.url)).unwrap().1;
    for _ in 0..5 {
        let mut s =
            std::net::TcpStream::connect(c.proxy.url.trim_start_matches("http://")).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let mut first = [0u8; 2048];
        s.read_exact(&mut first).unwrap();
        assert!(first.starts_with(b"HTTP/1.1 200"));
        // Gone, with most of the answer unread.
    }
    let again = http_get(&format!("{}{path}", c.proxy.url)).unwrap().1;
    assert_eq!(again, whole);
}

#[test]
fn responses_are_gzipped_when_the_client_accepts_it() {
    let c = cluster();
    let head = fake::raw_request(
        &c.proxy.url,
        "GET /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{head}");
    assert!(lower.contains("content-encoding: gzip"), "{head}");
    assert!(lower.contains("content-type: application/json"), "{head}");
}

/// The proxy in front of a fake (priority 1) and the reference (priority 2).
fn behind_fake(behaviour: fake::Behaviour) -> (fake::Fake, Proxy) {
    let c = cluster();
    let f = fake::start(behaviour);
    let proxy = fake::start_proxy_without_readiness(proxy_binary(), &[&f.url, &c.reference.url]);
    (f, proxy)
}

/// Asserts the reference's answer, with a warning about `upstream` that contains `warning`
/// (whether the upstream was asked and failed, or was already marked down by its probe).
fn assert_reference_answer_with_warning(
    proxy: &Proxy,
    extra: &[(&str, &str)],
    upstream: &str,
    warning: &str,
) {
    let c = cluster();
    let t = c.tl.end.to_string();
    let mut params = vec![
        ("query", "sum by (instance) (http_requests_total)"),
        ("time", t.as_str()),
    ];
    params.extend_from_slice(extra);
    let got = api(&proxy.url, "/api/v1/query", &params);
    let want = api(&c.reference.url, "/api/v1/query", &params[..2]);
    assert_eq!(differences(&points(&got), &points(&want)), vec![]);
    let warnings: Vec<&str> = got["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let prefix = format!("upstream {upstream}: ");
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&prefix) && w.contains(warning)),
        "{warnings:?} lacks {prefix}…{warning}"
    );
}

#[test]
fn a_garbage_answer_is_left_out_and_the_other_replica_answers_intact() {
    let (f, proxy) = behind_fake(fake::Behaviour::Answer(200, "garbage, not JSON".into()));
    assert_reference_answer_with_warning(&proxy, &[], &f.url, "body is not valid JSON");
    let (f, proxy) = behind_fake(fake::Behaviour::Answer(
        200,
        r#"{"status":"success","data":{"result":7}}"#.into(),
    ));
    assert_reference_answer_with_warning(
        &proxy,
        &[],
        &f.url,
        "body is not a Prometheus query answer",
    );
}

#[test]
fn an_html_500_is_left_out_with_its_status() {
    let (f, proxy) = behind_fake(fake::Behaviour::Answer(
        500,
        "<html><body>Internal error</body></html>".into(),
    ));
    assert_reference_answer_with_warning(&proxy, &[], &f.url, "HTTP 500");
}

#[test]
fn a_hung_upstream_costs_no_more_than_the_clients_timeout() {
    let (f, proxy) = behind_fake(fake::Behaviour::Hang);
    let started = std::time::Instant::now();
    assert_reference_answer_with_warning(&proxy, &[("timeout", "2s")], &f.url, "timeout after 2s");
    // The deadline is the client's 2s, not the upstream's default 60s.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn prefix_auth_headers_and_every_parameter_reach_the_upstream_unchanged() {
    let answer = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    let f = fake::start(fake::Behaviour::Answer(200, answer.into()));
    let proxy = fake::start_proxy_with_config(
        proxy_binary(),
        "prefix-test",
        &format!(
            "[upstreams.only]\nurl = \"{}/prefix\"\nbearer_token = \"s3cret\"\nheaders = {{ \"X-Scope-OrgID\" = \"team-a\" }}\n",
            f.url
        ),
    );
    let form =
        "query=sum%28up%29&time=1700000000&lookback_delta=1m&stats=all&limit=5&unknown_param=x%2By";
    let (status, body) = fake::post_raw(&format!("{}/api/v1/query?from_url=1", proxy.url), form);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, answer);
    // Probes of /-/ready aside: the user's query, and the coverage query sent with it.
    let seen: Vec<String> = f
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains(" /prefix/api/v1/"))
        .cloned()
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let request = seen
        .iter()
        .find(|r| r.ends_with(form))
        .expect("the user's request, unchanged");
    let coverage = seen.iter().find(|r| !r.ends_with(form)).unwrap();
    // An instant's coarse coverage: its own window at its time (one
    // upstream's counts differ from no other's, so its history is not asked).
    assert!(
        coverage.starts_with("POST /prefix/api/v1/query?from_url=1 HTTP/1.1\r\n"),
        "{coverage}"
    );
    assert!(
        coverage.contains("count_over_time%28up%5B60000ms%5D%29"),
        "look-back 1m: {coverage}"
    );
    assert!(
        coverage.ends_with("&time=1700000000&lookback_delta=1m&unknown_param=x%2By"),
        "{coverage}"
    );
    assert!(
        request.starts_with("POST /prefix/api/v1/query?from_url=1 HTTP/1.1\r\n"),
        "{request}"
    );
    let lower = request.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nauthorization: bearer s3cret\r\n"),
        "{request}"
    );
    assert!(lower.contains("\r\nx-scope-orgid: team-a\r\n"), "{request}");
    assert!(request.ends_with(&format!("\r\n\r\n{form}")), "{request}");
}

#[test]
fn an_instant_query_without_time_is_asked_at_the_proxys_now_everywhere() {
    // x and y count other numbers of samples (neither none), so the coarse
    // round's counts differ and the coverage over the instant's history is
    // asked too.
    let counting = |n: u32| {
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{n}"]}}]}}}}"#
        )
    };
    let (x, y) = (
        fake::start(fake::Behaviour::Answer(200, counting(1))),
        fake::start(fake::Behaviour::Answer(200, counting(2))),
    );
    let proxy = fake::start_proxy_without_readiness(proxy_binary(), &[&x.url, &y.url]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (status, body) =
        http_get(&format!("{}/api/v1/query?query=rate(x%5B5m%5D)", proxy.url)).unwrap();
    assert_eq!(status, 200, "{body}");
    let param = |request: &str, key: &str| -> String {
        let line = request.lines().next().unwrap();
        let query = line.split(' ').nth(1).unwrap().split_once('?').unwrap().1;
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .to_string()
    };
    let mut times = Vec::new();
    for f in [&x, &y] {
        let seen = f.requests.lock().unwrap().clone();
        let instants: Vec<&String> = seen
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/query?"))
            .collect();
        assert_eq!(instants.len(), 2, "the query and its coarse coverage");
        let coverage = seen
            .iter()
            .find(|r| r.starts_with("GET /api/v1/query_range?"))
            .expect("its coverage over the instant's history");
        let time = param(instants[0], "time");
        assert_eq!(param(instants[1], "time"), time, "both at one instant");
        // The 56 s before the instant, every 7 s.
        assert_eq!(param(coverage, "end"), time, "coverage ends at the instant");
        let start: f64 = param(coverage, "start").parse().unwrap();
        assert_eq!(time.parse::<f64>().unwrap() - start, 56.0);
        assert_eq!(param(coverage, "step"), "7.000");
        times.push(time);
    }
    assert_eq!(times[0], times[1], "both upstreams asked at one instant");
    let t: f64 = times[0].parse().unwrap();
    assert!(
        (t - before).abs() < 5.0,
        "time {t} is the proxy's now ({before})"
    );
}

#[test]
fn answers_over_the_in_flight_budget_are_refused_and_small_ones_still_served() {
    let c = cluster();
    let proxy = fake::start_proxy_with_config(
        proxy_binary(),
        "budget-test",
        &format!(
            "max_in_flight_bytes = 150000\n[upstreams.a]\nurl = \"{}\"\npriority = 1\n[upstreams.b]\nurl = \"{}\"\npriority = 2\n",
            c.a.url, c.b.url
        ),
    );
    // Two answers of about 200 kB each cannot be held under a 150 kB budget.
    let url = format!(
        "{}/api/v1/query_range?{}",
        proxy.url,
        query_string(&[
            ("query", "http_requests_total"),
            ("start", &c.tl.start.to_string()),
            ("end", &c.tl.end.to_string()),
            ("step", "15"),
        ])
    );
    let (status, body) = http_get(&url).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("budget for answers in flight is spent"),
        "{body}"
    );
    // Small answers fit, and the refusals did not mark the replicas down.
    for _ in 0..4 {
        let small = format!("{}/api/v1/query?query=sum(up)&time={}", proxy.url, c.tl.end);
        let (status, body) = http_get(&small).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("warnings"), "{body}");
    }
}

#[test]
fn an_upstream_answer_over_the_size_limit_is_left_out_with_a_warning() {
    let c = cluster();
    // A valid answer, just too big for the configured limit.
    let labels = "x".repeat(4000);
    let big = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"l":"{labels}"}},"value":[1,"1"]}}]}}}}"#
    );
    let f = fake::start(fake::Behaviour::Answer(200, big));
    let proxy = fake::start_proxy_with_config(
        proxy_binary(),
        "limit-test",
        &format!(
            "max_upstream_body_bytes = 2000\n[upstreams.big]\nurl = \"{}\"\npriority = 1\n[upstreams.reference]\nurl = \"{}\"\npriority = 2\n",
            f.url, c.reference.url
        ),
    );
    assert_reference_answer_with_warning(
        &proxy,
        &[],
        &f.url,
        "answer larger than the 2000-byte limit",
    );
}

#[test]
fn the_harness_tells_which_process_listens_on_a_port() {
    // What lets a proxy or a Prometheus started on a port found free notice
    // that another process took that port first.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(listens_on(std::process::id(), port));
    let proxy = fake::start_proxy_without_readiness(proxy_binary(), &["http://127.0.0.1:9"]);
    let proxy_port: u16 = proxy.url.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(listens_on(proxy.process.child.id(), proxy_port));
    assert!(!listens_on(proxy.process.child.id(), port));
    assert!(!listens_on(std::process::id(), proxy_port));
    drop(listener);
    assert!(!listens_on(std::process::id(), port), "closed: nobody's");
}
