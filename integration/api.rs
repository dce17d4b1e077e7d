//! Everything Grafana asks of a Prometheus datasource beyond queries, against
//! real Prometheus replicas, with requests shaped as Grafana sends them.
//!
//! The data set is the core one plus two short-lived series, each alive only
//! while one replica was down (like a batch job's pod during a restart):
//! `run="during-a"` exists only in b and the reference, `run="during-b"` only
//! in a and the reference. Both replicas also scrape a real target on
//! loopback (a tiny static page of OpenMetrics with exemplars) and evaluate
//! rules; b scrapes two more targets, one of them the proxy's own `/metrics`,
//! and has one more rule. So every union below has something that only one
//! replica holds, and something both hold that must come out once.

use crate::harness::*;
use crate::proxy_binary;
use serde_json::Value;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

struct ApiCluster {
    tl: Timeline,
    a: Prometheus,
    b: Prometheus,
    reference: Prometheus,
    proxy: Proxy,
}

/// The two series alive only during one replica's hole, in OpenMetrics lines.
fn with_short_lived_series(tl: &Timeline, holes: &[Hole]) -> String {
    let base = openmetrics(tl, holes, PHASE_S);
    let mut out = base.strip_suffix("# EOF\n").unwrap().to_string();
    out.push_str("# TYPE batch_runs counter\n");
    for (run, alive) in [("during-a", tl.hole_a), ("during-b", tl.hole_b)] {
        let times = (alive.start..alive.end)
            .step_by(STEP_S as usize)
            .map(|t| t + PHASE_S)
            .filter(|t| alive.contains(*t) && !holes.iter().any(|h| h.contains(*t)));
        for (i, t) in times.enumerate() {
            out.push_str(&format!(
                "batch_runs_total{{job=\"batch\",run=\"{run}\"}} {i} {t}\n"
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

/// When the scraped target's exemplars happened: the same for every scrape,
/// so the two replicas store the very same exemplar.
fn exemplar_time() -> f64 {
    static T: OnceLock<f64> = OnceLock::new();
    *T.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        now.as_secs() as f64 - 5.5
    })
}

/// A real scrape target on loopback: `/metrics` and `/more`, OpenMetrics with exemplars.
fn start_target() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = exemplar_time();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                while let Some(request) = crate::fake::read_request(&mut stream) {
                    let body = if request.starts_with("GET /more") {
                        format!(
                            "# TYPE proxy_test_more counter\n# HELP proxy_test_more Scraped by replica b only.\nproxy_test_more_total 3 # {{trace_id=\"more\"}} 1 {t}\n# EOF\n"
                        )
                    } else {
                        format!(
                            "# TYPE proxy_test_requests counter\n# HELP proxy_test_requests Requests served by the test target.\nproxy_test_requests_total{{path=\"/a\"}} 5 # {{trace_id=\"abc\"}} 1 {t}\n# EOF\n"
                        )
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).is_err()
                        || stream.write_all(body.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

const RULES_ONLY_B: &str = r#"groups:
  - name: proxy-test-b
    interval: 1s
    rules:
      - alert: OnlyOnB
        expr: vector(2)
"#;

const RULES: &str = r#"groups:
  - name: proxy-test
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        labels: {severity: page}
      - record: batch:runs:count
        expr: count(batch_runs_total)
"#;

fn prometheus_yml(rules: &[&Path], target_port: u16, extra_jobs: &str) -> String {
    let files: Vec<String> = rules.iter().map(|r| format!("'{}'", r.display())).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\nscrape_configs:\n  - job_name: target\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n{extra_jobs}",
        files.join(", ")
    )
}

/// Exemplars stored; admin and lifecycle APIs on: were the proxy to forward a
/// write, a snapshot, a deletion or a quit, it would work.
const WRITABLE: [&str; 3] = [
    "--enable-feature=exemplar-storage",
    "--web.enable-admin-api",
    "--web.enable-lifecycle",
];

fn api_cluster() -> &'static ApiCluster {
    static CLUSTER: OnceLock<ApiCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let tl = Timeline::recent();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-cluster");
        let target = start_target();
        let proxy_port = free_port();
        let (om_a, om_b, om_r) = (
            with_short_lived_series(&tl, &[tl.hole_a]),
            with_short_lived_series(&tl, &[tl.hole_b]),
            with_short_lived_series(&tl, &[]),
        );
        // Beside the servers' directories, which starting a server empties.
        std::fs::create_dir_all(&root).unwrap();
        // Both load the common rules; b also a file a has not got yet.
        let (common, only_b) = (root.join("rules.yml"), root.join("rules-b.yml"));
        std::fs::write(&common, RULES).unwrap();
        std::fs::write(&only_b, RULES_ONLY_B).unwrap();
        let yml_a = prometheus_yml(&[&common], target, "");
        let yml_b = prometheus_yml(
            &[&common, &only_b],
            target,
            &format!(
                "  - job_name: more\n    metrics_path: /more\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n  - job_name: proxy\n    static_configs: [{{targets: ['127.0.0.1:{proxy_port}']}}]\n"
            ),
        );
        let (a, (b, reference)) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                Prometheus::start_with("a", &root.join("a"), &om_a, &yml_a, &WRITABLE)
            });
            let b = s.spawn(|| {
                Prometheus::start_with("b", &root.join("b"), &om_b, &yml_b, &WRITABLE)
            });
            let r = Prometheus::start("reference", &root.join("reference"), &om_r);
            (a.join().unwrap(), (b.join().unwrap(), r))
        });
        let proxy = Proxy::start_on(proxy_binary(), proxy_port, &[&a.url, &b.url], &[], &[]);
        // Readiness: every target scraped, every rule evaluated, the exemplars stored.
        for (p, targets, alerts) in [(&a, 1, 1), (&b, 3, 2)] {
            let seen = std::cell::RefCell::new(String::new());
            wait_until_or(
                &format!("{} scraped and evaluated", p.url),
                Duration::from_secs(60),
                || {
                    let t = get_json(&p.url, "/api/v1/targets", &[]);
                    let up = t["data"]["activeTargets"].as_array().is_some_and(|ts| {
                        ts.len() == targets && ts.iter().all(|t| t["health"] == "up")
                    });
                    let al = get_json(&p.url, "/api/v1/alerts", &[]);
                    let firing = al["data"]["alerts"]
                        .as_array()
                        .is_some_and(|a| a.len() == alerts);
                    let ex = get_json(
                        &p.url,
                        "/api/v1/query_exemplars",
                        &[
                            ("query", "proxy_test_requests_total"),
                            ("start", "0"),
                            ("end", "9999999999"),
                        ],
                    );
                    let stored = ex["data"].as_array().is_some_and(|s| !s.is_empty());
                    *seen.borrow_mut() = format!("targets {t}\nalerts {al}\nexemplars {ex}");
                    up && firing && stored
                },
                || seen.borrow().clone(),
            );
        }
        ApiCluster {
            tl,
            a,
            b,
            reference,
            proxy,
        }
    })
}

/// GET and parse, whatever the status (null when it is not JSON).
fn get_json(base: &str, path: &str, params: &[(&str, &str)]) -> Value {
    let url = format!("{base}{path}?{}", query_string(params));
    http_get(&url)
        .ok()
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

/// A request as Grafana's Prometheus datasource sends it (its headers, a
/// form body for POST); returns (status, parsed body).
fn grafana(method: &str, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let agent = agent();
    let mut resp = match method {
        "POST" => agent
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json, text/plain, */*")
            .header("User-Agent", "Grafana/11.3.0")
            .header("X-Grafana-Org-Id", "1")
            .header("X-Datasource-Uid", "prom-ha")
            .send(query_string(form).as_bytes()),
        _ => agent
            .get(url)
            .header("Accept", "application/json, text/plain, */*")
            .header("User-Agent", "Grafana/11.3.0")
            .header("X-Grafana-Org-Id", "1")
            .call(),
    }
    .unwrap();
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap();
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
    (status, v)
}

/// A successful answer's `data`, asserting the envelope Grafana parses.
fn data(base: &str, path: &str, params: &[(&str, &str)]) -> Value {
    let url = format!("{base}{path}?{}", query_string(params));
    let (status, v) = grafana("GET", &url, &[]);
    assert_eq!(status, 200, "{url}: {v}");
    assert_eq!(v["status"], "success", "{url}: {v}");
    v["data"].clone()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a list of strings"))
        .collect()
}

#[test]
fn grafana_save_and_test_and_buildinfo_work() {
    let c = api_cluster();
    // "Save & test": an instant query of 1+1, POSTed as a form.
    let now = (c.tl.end + 600).to_string();
    let (status, v) = grafana(
        "POST",
        &format!("{}/api/v1/query", c.proxy.url),
        &[("query", "1+1"), ("time", &now)],
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "scalar", "{v}");
    assert_eq!(v["data"]["result"][1], "2", "{v}");
    // Grafana feature-detects from buildinfo's version: the first upstream's answer, unchanged.
    let path = "/api/v1/status/buildinfo";
    let (_, direct) = http_get(&format!("{}{path}", c.a.url)).unwrap();
    let (status, through) = http_get(&format!("{}{path}", c.proxy.url)).unwrap();
    assert_eq!(status, 200);
    assert_eq!(through, direct);
    let v: Value = serde_json::from_str(&through).unwrap();
    assert!(
        v["data"]["version"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
}

#[test]
fn a_grafana_dashboard_panel_across_both_holes_equals_the_reference() {
    let c = api_cluster();
    let (start, end) = (c.tl.start.to_string(), c.tl.end.to_string());
    for query in [
        "sum by (code) (rate(http_requests_total[5m]))",
        "batch_runs_total",
        "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    ] {
        // A time series panel: a POSTed range query, step from the panel width.
        let form = [
            ("query", query),
            ("start", &start),
            ("end", &end),
            ("step", "30"),
        ];
        let ask = |base: &str| {
            let (status, v) = grafana("POST", &format!("{base}/api/v1/query_range"), &form);
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["data"]["resultType"], "matrix", "{v}");
            crate::points(&v)
        };
        let (proxy, reference, a) = (ask(&c.proxy.url), ask(&c.reference.url), ask(&c.a.url));
        assert_eq!(crate::differences(&proxy, &reference), vec![], "{query}");
        assert!(
            !crate::differences(&a, &reference).is_empty(),
            "a alone has its hole: {query}"
        );
    }
}

#[test]
fn an_upstream_error_on_a_merged_endpoint_is_a_warning_never_a_hang() {
    use crate::fake::{Behaviour, start};
    let c = api_cluster();
    let window = [
        ("start", c.tl.start.to_string()),
        ("end", c.tl.end.to_string()),
    ];
    let params: Vec<(&str, &str)> = window.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for behaviour in [
        Behaviour::Answer(500, "<html>internal error</html>".into()),
        Behaviour::Answer(200, "not json at all".into()),
        Behaviour::Answer(200, r#"{"status":"success","data":{"no":"list"}}"#.into()),
        Behaviour::Hang,
    ] {
        let broken = start(behaviour);
        let proxy = crate::fake::start_proxy_with(
            proxy_binary(),
            &[&broken.url, &c.a.url],
            &["--config", straggler_config(1).to_str().unwrap()],
        );
        let started = std::time::Instant::now();
        let url = format!("{}/api/v1/labels?{}", proxy.url, query_string(&params));
        let (status, v) = grafana("GET", &url, &[]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"], data(&c.a.url, "/api/v1/labels", &params));
        let warnings = v["warnings"].to_string();
        assert!(
            warnings.contains(&format!("upstream {}", broken.url)),
            "{v}"
        );
    }
    // Every upstream rejects the request: their error, as Prometheus said it.
    let proxy = crate::fake::start_proxy_with(proxy_binary(), &[&c.a.url, &c.b.url], &[]);
    let (status, v) = grafana("GET", &format!("{}/api/v1/series", proxy.url), &[]);
    assert_eq!(
        (status, &v["errorType"]),
        (400, &Value::from("bad_data")),
        "{v}"
    );
    let (_, direct) = grafana("GET", &format!("{}/api/v1/series", c.a.url), &[]);
    assert_eq!(v["error"], direct["error"]);
}

/// A config file setting only the straggler timeout, in seconds.
fn straggler_config(seconds: u32) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("straggler-{seconds}s.toml"));
    std::fs::write(
        &path,
        format!("[health]\nstraggler_timeout = \"{seconds}s\"\n"),
    )
    .unwrap();
    path
}

#[test]
fn label_values_and_series_are_the_union_of_the_replicas_as_the_reference_has_them() {
    let c = api_cluster();
    let (start, end) = (c.tl.start.to_string(), c.tl.end.to_string());
    let window = [("start", start.as_str()), ("end", end.as_str())];
    let with = |m: &'static str| {
        let mut p = vec![("match[]", m)];
        p.extend(window);
        p
    };
    // The label browser: values of `run` for one metric. Each replica misses one.
    let values = "/api/v1/label/run/values";
    let p = with("batch_runs_total");
    assert_eq!(strings(&data(&c.a.url, values, &p)), ["during-b"]);
    assert_eq!(strings(&data(&c.b.url, values, &p)), ["during-a"]);
    let merged = data(&c.proxy.url, values, &p);
    assert_eq!(merged, data(&c.reference.url, values, &p));
    assert_eq!(strings(&merged), ["during-a", "during-b"]);
    // Series, as the metric browser asks for them.
    let series = data(&c.proxy.url, "/api/v1/series", &p);
    assert_eq!(series, data(&c.reference.url, "/api/v1/series", &p));
    assert_eq!(series.as_array().unwrap().len(), 2, "{series}");
    assert_eq!(
        data(&c.a.url, "/api/v1/series", &p)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Label names, with and without match[]; metric names (values of __name__).
    for (path, params) in [
        ("/api/v1/labels", p.clone()),
        ("/api/v1/labels", window.to_vec()),
        ("/api/v1/label/__name__/values", window.to_vec()),
        (
            "/api/v1/series",
            with("{__name__=~\"batch_runs_total|up\"}"),
        ),
    ] {
        assert_eq!(
            data(&c.proxy.url, path, &params),
            data(&c.reference.url, path, &params),
            "{path} {params:?}"
        );
    }
    // POST, as Grafana sends the label browser's requests when set to POST.
    let (status, posted) = grafana("POST", &format!("{}/api/v1/series", c.proxy.url), &p);
    assert_eq!(status, 200, "{posted}");
    assert_eq!(posted["data"], series);
}

#[test]
fn limit_is_applied_after_the_union_with_prometheus_warning() {
    let c = api_cluster();
    let (start, end) = (c.tl.start.to_string(), c.tl.end.to_string());
    let all = data(
        &c.reference.url,
        "/api/v1/label/__name__/values",
        &[("start", &start), ("end", &end)],
    );
    let url = format!(
        "{}/api/v1/label/__name__/values?{}",
        c.proxy.url,
        query_string(&[("start", &start), ("end", &end), ("limit", "2")])
    );
    let (status, v) = grafana("GET", &url, &[]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"].as_array().unwrap()[..],
        all.as_array().unwrap()[..2]
    );
    assert_eq!(
        v["warnings"],
        serde_json::json!(["results truncated due to limit"])
    );
    let (status, v) = grafana(
        "GET",
        &format!("{}/api/v1/labels?limit=x", c.proxy.url),
        &[],
    );
    assert_eq!(
        (status, &v["errorType"]),
        (400, &Value::from("bad_data")),
        "{v}"
    );
}

#[test]
fn metadata_targets_rules_alerts_and_exemplars_are_merged_without_duplicates() {
    let c = api_cluster();
    // Metadata: the metric both replicas scrape once, each replica's own metrics too.
    let meta = data(&c.proxy.url, "/api/v1/metadata", &[]);
    assert_eq!(
        meta["proxy_test_requests"],
        serde_json::json!([{"type": "counter", "help": "Requests served by the test target.", "unit": ""}]),
        "{meta}"
    );
    assert!(
        meta["proxy_test_more"].is_array(),
        "only b scrapes it: {meta}"
    );
    assert!(data(&c.a.url, "/api/v1/metadata", &[])["proxy_test_more"].is_null());
    assert!(
        meta["prom_ha_proxy_http_requests"].is_array(),
        "b scrapes the proxy's own /metrics: {meta}"
    );
    let limited = data(&c.proxy.url, "/api/v1/metadata", &[("limit", "1")]);
    assert_eq!(limited.as_object().unwrap().len(), 1, "{limited}");

    // Targets: one per (scrape pool, URL); the proxy's /metrics scraped healthy by a real Prometheus.
    let targets = data(&c.proxy.url, "/api/v1/targets", &[]);
    let active = targets["activeTargets"].as_array().unwrap();
    let mut pools: Vec<&str> = active
        .iter()
        .map(|t| t["scrapePool"].as_str().unwrap())
        .collect();
    pools.sort();
    assert_eq!(pools, ["more", "proxy", "target"], "{targets}");
    assert!(active.iter().all(|t| t["health"] == "up"), "{targets}");
    let tm = |base: &str| {
        data(
            base,
            "/api/v1/targets/metadata",
            &[("match_target", "{job=\"target\"}")],
        )
    };
    let merged = tm(&c.proxy.url);
    assert_eq!(
        merged.as_array().unwrap().len(),
        tm(&c.a.url).as_array().unwrap().len()
    );
    assert!(!merged.as_array().unwrap().is_empty());

    // Rules: the group both have once, with its rules once; b's extra group added.
    let rules = data(&c.proxy.url, "/api/v1/rules", &[]);
    let groups = rules["groups"].as_array().unwrap();
    let names = |g: &Value| -> Vec<String> {
        g["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    let summary: Vec<(&str, Vec<String>)> = groups
        .iter()
        .map(|g| (g["name"].as_str().unwrap(), names(g)))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "proxy-test",
                vec!["AlwaysFiring".to_string(), "batch:runs:count".into()]
            ),
            ("proxy-test-b", vec!["OnlyOnB".to_string()])
        ],
        "{rules}"
    );
    // The higher-priority replica's state: a's evaluation, not b's.
    let a_rules = data(&c.a.url, "/api/v1/rules", &[]);
    assert_eq!(
        groups[0]["rules"][0]["alerts"][0]["activeAt"],
        a_rules["groups"][0]["rules"][0]["alerts"][0]["activeAt"]
    );

    // Alerts: each once.
    let alerts = data(&c.proxy.url, "/api/v1/alerts", &[]);
    let mut names: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["AlwaysFiring", "OnlyOnB"], "{alerts}");

    // Exemplars, POSTed as Grafana does: the one both replicas hold comes out once.
    let form = [
        (
            "query",
            "proxy_test_requests_total or proxy_test_more_total",
        ),
        ("start", "0"),
        ("end", "9999999999"),
    ];
    let (status, v) = grafana(
        "POST",
        &format!("{}/api/v1/query_exemplars", c.proxy.url),
        &form,
    );
    assert_eq!(status, 200, "{v}");
    let series = v["data"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{v}");
    for s in series {
        let exemplars = s["exemplars"].as_array().unwrap();
        assert_eq!(exemplars.len(), 1, "{v}");
        let ts = exemplars[0]["timestamp"].as_f64().unwrap();
        assert!((ts - exemplar_time()).abs() < 1e-3, "{v}");
    }
}

/// Sends `method target` with `form` as its body (for every method, so a
/// POST or PUT that got through would carry its matcher); the status.
fn raw_status(base: &str, method: &str, target: &str, form: &str) -> u16 {
    let host = base.trim_start_matches("http://");
    let head = crate::fake::raw_request(
        base,
        &format!(
            "{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_spelling_of_a_write_or_admin_call_is_refused_and_never_reaches_an_upstream() {
    let c = api_cluster();
    let count_up = |base: &str| {
        let t = (c.tl.start + 600).to_string();
        let q = [("query", "count(up)"), ("time", t.as_str())];
        data(base, "/api/v1/query", &q)["result"][0]["value"][1].clone()
    };
    let replicas = [&c.a, &c.b];
    let before: Vec<Value> = replicas.iter().map(|p| count_up(&p.url)).collect();
    let snapshots = |p: &Prometheus| p.dir.join("data").join("snapshots");
    let mut sent = 0;
    for (path, form) in crate::spellings::STATE_CHANGING {
        for spelling in crate::spellings::spellings(path) {
            let target = match form {
                "" => spelling.clone(),
                f if spelling.contains('?') => format!("{spelling}&{f}"),
                f => format!("{spelling}?{f}"),
            };
            for method in crate::spellings::METHODS {
                let status = raw_status(&c.proxy.url, method, &target, form);
                assert!((400..500).contains(&status), "{method} {target}: {status}");
                sent += 1;
            }
        }
    }
    assert!(sent > 2000, "only {sent} requests sent");
    // The plain spelling is named as read-only, in Prometheus' error format.
    let (status, body) =
        crate::fake::post_raw(&format!("{}/api/v1/admin/tsdb/snapshot", c.proxy.url), "");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, v["status"].as_str(), v["errorType"].as_str()),
        (403, Some("error"), Some("bad_data"))
    );
    assert!(v["error"].as_str().unwrap().contains("read-only"), "{v}");
    // Nothing reached a replica: both run, hold no snapshot, deleted nothing.
    for (p, before) in replicas.iter().zip(&before) {
        assert_eq!(http_get(&format!("{}/-/ready", p.url)).unwrap().0, 200);
        assert!(!snapshots(p).exists(), "{}: a snapshot was taken", p.url);
        assert_eq!(&count_up(&p.url), before, "{}: series deleted", p.url);
    }
    // The checks above can fail: the same call made directly takes a snapshot.
    let (status, body) =
        crate::fake::post_raw(&format!("{}/api/v1/admin/tsdb/snapshot", c.a.url), "");
    assert_eq!(status, 200, "{body}");
    assert!(snapshots(&c.a).exists());
}

/// The installed Prometheus' version as (major, minor).
fn version_of(p: &Prometheus) -> (u32, u32) {
    let v = data(&p.url, "/api/v1/status/buildinfo", &[]);
    let text = v["version"].as_str().unwrap().to_string();
    let mut parts = text.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn every_allowed_endpoint_the_installed_prometheus_serves_answers_through_the_proxy() {
    use prom_ha_proxy::routes::{ENDPOINTS, Handling};
    let c = api_cluster();
    let installed = version_of(&c.a);
    let mut asked = 0;
    for e in ENDPOINTS {
        let mut since = e.since.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
        let since = (since.next().unwrap_or(0), since.next().unwrap_or(0));
        if matches!(e.handling, Handling::Local(_)) || since > installed {
            continue;
        }
        let path = e.pattern.replace("{name}", "job");
        let (direct, _) = http_get(&format!("{}{path}", c.a.url)).unwrap();
        let (through, body) = http_get(&format!("{}{path}", c.proxy.url)).unwrap();
        assert_ne!(
            direct, 404,
            "{path}: not served by Prometheus {installed:?}"
        );
        assert_ne!(through, 404, "{path}: {body}");
        asked += 1;
    }
    assert!(asked >= 18, "{asked}");
}

#[test]
fn forwarded_read_paths_are_answered_by_priority_unchanged_and_others_are_not_found() {
    let c = api_cluster();
    for path in ["/api/v1/status/flags", "/api/v1/status/config"] {
        let direct = http_get(&format!("{}{path}", c.a.url)).unwrap();
        let through = http_get(&format!("{}{path}", c.proxy.url)).unwrap();
        assert_eq!(through, direct, "{path}");
        // Prometheus takes no POST here; the proxy asks with GET whatever the client used.
        let (status, body) = crate::fake::post_raw(&format!("{}{path}", c.proxy.url), "");
        assert_eq!((status, body), direct, "POST {path}");
    }
    // A GET-only merged endpoint: a POSTed form is asked as a GET with its parameters.
    let (status, body) = crate::fake::post_raw(
        &format!("{}/api/v1/label/job/values", c.proxy.url),
        "match[]=up",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"target\""), "{body}");
    // The first upstream down: the next one answers.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = crate::fake::start_proxy_with(proxy_binary(), &[&dead, &c.b.url], &[]);
    let path = "/api/v1/status/flags";
    assert_eq!(
        http_get(&format!("{}{path}", proxy.url)).unwrap(),
        http_get(&format!("{}{path}", c.b.url)).unwrap()
    );
    // Not in the allow-list, though Prometheus serves it or might one day: a
    // Prometheus-format 404, never forwarded.
    for path in [
        "/federate",
        "/api/v1/no_such_endpoint",
        "/api/v1/read",
        "/graph",
    ] {
        let (status, body) = http_get(&format!("{}{path}", c.proxy.url)).unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("\"errorType\":\"not_found\""), "{body}");
    }
}

#[test]
fn an_upstream_redirect_is_never_followed_and_fails_that_upstream_with_a_warning() {
    let c = api_cluster();
    let elsewhere = crate::fake::start(crate::fake::Behaviour::Answer(200, "{}".into()));
    let redirecting = crate::fake::start(crate::fake::Behaviour::Redirect(format!(
        "{}/api/v1/admin/tsdb/snapshot",
        elsewhere.url
    )));
    let proxy = crate::fake::start_proxy_with(proxy_binary(), &[&redirecting.url, &c.b.url], &[]);
    let path = "/api/v1/status/flags";
    assert_eq!(
        http_get(&format!("{}{path}", proxy.url)).unwrap(),
        http_get(&format!("{}{path}", c.b.url)).unwrap()
    );
    let t = (c.tl.start + 600).to_string();
    let v = get_json(
        &proxy.url,
        "/api/v1/query",
        &[("query", "count(up)"), ("time", &t)],
    );
    assert_eq!(v["status"], "success", "{v}");
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("HTTP 302") && warnings.contains("not followed"),
        "{v}"
    );
    assert!(!redirecting.requests.lock().unwrap().is_empty());
    assert!(elsewhere.requests.lock().unwrap().is_empty());
}

#[test]
fn client_headers_do_not_reach_upstreams_except_authorization_where_configured() {
    let answer = r#"{"status":"success","data":["job"]}"#;
    let (x, y) = (
        crate::fake::start(crate::fake::Behaviour::Answer(200, answer.into())),
        crate::fake::start(crate::fake::Behaviour::Answer(200, answer.into())),
    );
    let proxy = crate::fake::start_proxy_with_config(
        proxy_binary(),
        "forward-auth",
        &format!(
            "[upstreams.x]\nurl = \"{}\"\nforward_authorization = true\n[upstreams.y]\nurl = \"{}\"\n",
            x.url, y.url
        ),
    );
    let host = proxy.url.trim_start_matches("http://");
    let head = crate::fake::raw_request(
        &proxy.url,
        &format!(
            "GET /api/v1/labels HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer client-token\r\nProxy-Authorization: Basic cHJveHk=\r\nTE: trailers\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nX-Grafana-Org-Id: 1\r\n\r\n"
        ),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = |f: &crate::fake::Fake| {
        f.requests
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.starts_with("GET /api/v1/labels"))
            .cloned()
            .expect("the request reached the upstream")
            .to_ascii_lowercase()
    };
    let (to_x, to_y) = (seen(&x), seen(&y));
    assert!(
        to_x.contains("\r\nauthorization: bearer client-token\r\n"),
        "{to_x}"
    );
    assert!(!to_y.contains("authorization:"), "{to_y}");
    for r in [&to_x, &to_y] {
        for header in [
            "proxy-authorization:",
            "\r\nte:",
            "x-hop",
            "x-grafana-org-id",
        ] {
            assert!(!r.contains(header), "{header} forwarded: {r}");
        }
    }
}

#[test]
fn health_readiness_and_metrics_of_the_proxy_itself() {
    let c = api_cluster();
    assert_eq!(
        http_get(&format!("{}/-/healthy", c.proxy.url)).unwrap().0,
        200
    );
    assert_eq!(
        http_get(&format!("{}/-/ready", c.proxy.url)).unwrap().0,
        200
    );
    // A range query across hole a: b's samples fill it, and the counter says so.
    let q = [
        ("query", "up"),
        ("start", &c.tl.start.to_string()),
        ("end", &c.tl.end.to_string()),
        ("step", "60"),
    ];
    let (status, _) = grafana("POST", &format!("{}/api/v1/query_range", c.proxy.url), &q);
    assert_eq!(status, 200);
    let (status, text) = http_get(&format!("{}/metrics", c.proxy.url)).unwrap();
    assert_eq!(status, 200);
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(prefix)
                    .map(|v| v.trim().parse::<f64>().unwrap())
            })
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    };
    assert!(value("prom_ha_proxy_filled_samples_total") > 0.0);
    assert!(
        value("prom_ha_proxy_http_requests_total{endpoint=\"/api/v1/query_range\",code=\"200\"}")
            >= 1.0
    );
    for u in [&c.a.url, &c.b.url] {
        assert_eq!(
            value(&format!("prom_ha_proxy_upstream_up{{upstream=\"{u}\"}}")),
            1.0
        );
        assert!(
            value(&format!(
                "prom_ha_proxy_upstream_received_bytes_total{{upstream=\"{u}\"}}"
            )) > 0.0
        );
    }
    assert!(
        text.contains("prom_ha_proxy_merge_duration_seconds_bucket{"),
        "{text}"
    );
    // With no upstream reachable, not ready.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let proxy = crate::fake::start_proxy_with(proxy_binary(), &[&dead], &[]);
    wait_until("proxy not ready", Duration::from_secs(10), || {
        http_get(&format!("{}/-/ready", proxy.url)).is_ok_and(|(s, _)| s == 503)
    });
    assert_eq!(
        http_get(&format!("{}/-/healthy", proxy.url)).unwrap().0,
        200
    );
}

#[test]
fn the_status_page_renders_in_chromium_with_each_upstreams_state() {
    let c = api_cluster();
    let chromium = require("chromium");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let proxy = crate::fake::start_proxy_with_config(
        proxy_binary(),
        "status-page",
        &format!(
            "[upstreams.a]\nurl = \"{}\"\npriority = 1\n[upstreams.dead]\nurl = \"{dead}\"\npriority = 2\nbearer_token = \"s3cret-token\"\n",
            c.a.url
        ),
    );
    wait_until(
        "the dead upstream marked down",
        Duration::from_secs(10),
        || http_get(&format!("{}/-/ready", proxy.url)).is_ok_and(|(_, b)| b.contains("1 of 2")),
    );
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(extra)
            .arg(format!("{}/", proxy.url))
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let dom = run(&["--dump-dom"]);
    assert!(dom.contains("1 of 2 upstreams healthy"), "{dom}");
    assert!(dom.contains(&c.a.url) && dom.contains(&dead), "{dom}");
    assert!(
        dom.contains("<span class=\"state down\">down</span>"),
        "{dom}"
    );
    assert!(
        dom.contains("ready probe failed: connection failed"),
        "{dom}"
    );
    assert!(dom.contains("ready probe answered 200"), "{dom}");
    assert!(
        !dom.contains("s3cret-token") && dom.contains("***"),
        "secret shown: {dom}"
    );
    let shot = dir.join("status.png");
    run(&[&format!("--screenshot={}", shot.display())]);
    // The picture shows both state badges: green for a, red for the dead one.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let near = |p: &[u8], rgb: [u8; 3]| p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 12);
    let green = pixels
        .iter()
        .filter(|p| near(p, [0x1a, 0x7f, 0x37]))
        .count();
    let red = pixels
        .iter()
        .filter(|p| near(p, [0xcf, 0x22, 0x2e]))
        .count();
    assert!(
        info.width >= 1000 && info.height >= 600,
        "{}x{}",
        info.width,
        info.height
    );
    assert!(
        green > 200 && red > 200,
        "badges: {green} green, {red} red pixels"
    );
}
