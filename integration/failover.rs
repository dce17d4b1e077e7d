//! Health-aware failover under real faults: replicas killed, frozen and
//! restarted while clients query, and the fake upstream's broken answers.

use crate::*;

/// Fast health settings, so faults are seen within a second or two.
const FAST: &[(&str, &str)] = &[
    ("PROM_HA_PROXY__HEALTH__PROBE_INTERVAL", "300ms"),
    ("PROM_HA_PROXY__HEALTH__PROBE_TIMEOUT", "300ms"),
    ("PROM_HA_PROXY__HEALTH__STRAGGLER_TIMEOUT", "1s"),
    // Every query reaches the replicas, whose failures are what is tested.
    NO_CACHE,
];

/// Two fresh, gap-free replicas of their own (tests here kill and freeze them).
fn pair(tag: &str) -> (Prometheus, Prometheus) {
    let tl = cluster().tl;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("failover")
        .join(tag);
    let om = openmetrics(&tl, &[], PHASE_S);
    std::thread::scope(|s| {
        let x = s.spawn(|| Prometheus::start("x", &root.join("x"), &om));
        let y = Prometheus::start("y", &root.join("y"), &om);
        (x.join().unwrap(), y)
    })
}

/// `sum(up)` at the data's end through `base`: (status, value if any, warnings).
fn sum_up(base: &str) -> (u16, Option<String>, String) {
    let t = cluster().tl.end.to_string();
    let url = format!(
        "{base}/api/v1/query?{}",
        query_string(&[("query", "sum(up)"), ("time", &t)])
    );
    let (status, body) = http_get(&url).unwrap_or((0, String::new()));
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let value = v["data"]["result"][0]["value"][1]
        .as_str()
        .map(String::from);
    (status, value, v["warnings"].to_string())
}

#[test]
fn kill_9_of_a_replica_fails_no_request_and_it_is_marked_down() {
    let (mut x, y) = pair("kill");
    let proxy = Proxy::start_with_env(proxy_binary(), &[&x.url, &y.url], &[], FAST);
    // And a range over the whole timeline: x, the first, is asked it, and y
    // only its coarse counts, until x is killed (then y is asked again, whole).
    let c = cluster();
    let whole_range = |base: &str| range(base, "sum(up)", c.tl.start, c.tl.end, STEP_S);
    let want = points(&whole_range(&c.reference.url));
    // 30 requests before the kill, then on until x is seen down, and 10
    // more; 600 at most (a hang guard: with probes every 500 ms it is seen
    // down within a few requests).
    let (mut served, mut down_seen, mut reason) = (0, None, String::new());
    while down_seen.is_none_or(|at| served < at + 10) {
        assert!(served < 600, "the killed replica was never marked down");
        if served == 30 {
            x.kill();
        }
        let (status, value, warnings) = sum_up(&proxy.url);
        assert_eq!(
            (status, value.as_deref()),
            (200, Some("4")),
            "request {served}: {warnings}"
        );
        let got = whole_range(&proxy.url);
        assert_eq!(
            differences(&points(&got), &want),
            vec![],
            "range {served}: {}",
            got["warnings"]
        );
        served += 1;
        let down = format!("upstream {}: down, not asked (", x.url);
        if served > 30
            && down_seen.is_none()
            && let Some(at) = warnings.find(&down)
        {
            down_seen = Some(served);
            reason = warnings[at + down.len()..].to_string();
        }
    }
    // Down for what a kill does: a probe or requests refused.
    assert!(
        reason.starts_with("ready probe failed: connection failed")
            || reason.contains("requests in a row failed"),
        "{reason}"
    );
    assert_eq!(upstream_up(&proxy.url, &x.url), Some(0.0));
    println!("{served} requests, none failed; the killed replica was marked down ({reason}");
}

#[test]
fn a_frozen_replica_costs_at_most_the_straggler_timeout_and_is_used_again_after() {
    let (x, y) = pair("sigstop");
    let proxy = Proxy::start_with_env(proxy_binary(), &[&x.url, &y.url], &[], FAST);
    x.signal(libc::SIGSTOP);
    for i in 0..5 {
        let t = std::time::Instant::now();
        let (status, value, warnings) = sum_up(&proxy.url);
        let took = t.elapsed();
        assert_eq!((status, value.as_deref()), (200, Some("4")), "{warnings}");
        assert!(
            warnings.contains(&format!("upstream {}: ", x.url)),
            "request {i}: {warnings}"
        );
        // Left out for not answering within the straggler timeout, or
        // because it was marked down since: never waited for. A hang guard
        // besides: the frozen replica would hold a request for ever.
        assert!(
            warnings.contains("answered without it") || warnings.contains("down, not asked"),
            "request {i}: {warnings}"
        );
        assert!(
            took < std::time::Duration::from_secs(10),
            "request {i} took {took:?}"
        );
    }
    x.signal(libc::SIGCONT);
    wait_until(
        "the thawed replica is used again",
        std::time::Duration::from_secs(15),
        || {
            let (status, _, warnings) = sum_up(&proxy.url);
            status == 200 && warnings == "null"
        },
    );
}

#[test]
fn a_restarted_replica_is_used_again_only_once_ready() {
    let (mut x, y) = pair("restart");
    let proxy = Proxy::start_with_env(proxy_binary(), &[&x.url, &y.url], &[], FAST);
    x.kill();
    wait_until(
        "killed replica marked down",
        std::time::Duration::from_secs(10),
        || sum_up(&proxy.url).2.contains("down, not asked"),
    );
    x.restart();
    wait_until(
        "restarted replica used again",
        std::time::Duration::from_secs(15),
        || {
            let (status, _, warnings) = sum_up(&proxy.url);
            status == 200 && warnings == "null"
        },
    );
    // And its answers are whole again: the same as the other replica's.
    let q = "rate(http_requests_total[5m])";
    let t = cluster().tl.end;
    assert_eq!(
        differences(
            &points(&instant(&proxy.url, q, t)),
            &points(&instant(&y.url, q, t))
        ),
        vec![]
    );
}

#[test]
fn with_every_replica_down_a_quick_503_then_recovery() {
    let (mut x, _y) = pair("all-down");
    let proxy = Proxy::start_with_env(proxy_binary(), &[&x.url], &[], FAST);
    x.kill();
    let t = std::time::Instant::now();
    let (status, error) = http_get(&format!("{}/api/v1/query?query=sum(up)", proxy.url)).unwrap();
    assert_eq!(status, 503, "{error}");
    // Refused at once, not waited on until a timeout (a hang guard besides).
    assert!(
        error.contains("connection failed") || error.contains("down"),
        "{error}"
    );
    assert!(!error.contains("timeout"), "{error}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "503 took {:?}",
        t.elapsed()
    );
    x.restart();
    wait_until("recovery", std::time::Duration::from_secs(15), || {
        sum_up(&proxy.url).0 == 200
    });
}

#[test]
fn broken_answers_are_left_out_and_the_other_replica_answers_intact() {
    let truncated =
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}"#.to_string();
    let cases = [
        (
            fake::Behaviour::Answer(200, truncated),
            "body is not valid JSON",
        ),
        (fake::Behaviour::ResetMidBody, "answer cut off"),
        (fake::Behaviour::Trickle, "no answer within"),
    ];
    for (behaviour, warning) in cases {
        let (f, proxy) = behind_fake(behaviour);
        assert_reference_answer_with_warning(&proxy, &[], &f.url, warning);
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_zero() {
    let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"42"]}}"#;
    let f = fake::start(fake::Behaviour::Delay(1500, body.into()));
    let mut proxy = fake::start_proxy_with(proxy_binary(), &[&f.url], &[]);
    let url = format!("{}/api/v1/query?query=42", proxy.url);
    let client = std::thread::spawn(move || http_get(&url));
    wait_until(
        "the query reached the upstream",
        std::time::Duration::from_secs(10),
        || {
            f.requests
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.contains("/api/v1/query"))
        },
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(proxy.process.child.id() as i32, libc::SIGTERM) };
    let (status, got) = client.join().unwrap().expect("in-flight request answered");
    assert_eq!((status, got.as_str()), (200, body));
    let exit = proxy.process.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

#[test]
fn sigterm_waits_no_longer_than_the_shutdown_grace() {
    let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"42"]}}"#;
    let f = fake::start(fake::Behaviour::Delay(6000, body.into()));
    let mut proxy = fake::start_proxy_with_config(
        proxy_binary(),
        "grace-test",
        &format!(
            "shutdown_grace = \"1s\"\n[upstreams.slow]\nurl = \"{}\"\n",
            f.url
        ),
    );
    let url = format!("{}/api/v1/query?query=42", proxy.url);
    let client = std::thread::spawn(move || http_get(&url));
    wait_until(
        "the query reached the upstream",
        std::time::Duration::from_secs(10),
        || {
            f.requests
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.contains("/api/v1/query"))
        },
    );
    let signalled = std::time::Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(proxy.process.child.id() as i32, libc::SIGTERM) };
    let exit = proxy.process.child.wait().unwrap();
    let took = signalled.elapsed();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    // The upstream answers only after 6s; a 1s grace must not wait for it.
    assert!(
        took < std::time::Duration::from_secs(4),
        "exited {took:?} after SIGTERM"
    );
    let _ = client.join();
}

/// The `prom_ha_proxy_upstream_up` value of one upstream at the proxy.
fn upstream_up(base: &str, upstream: &str) -> Option<f64> {
    let (_, text) = http_get(&format!("{base}/metrics")).ok()?;
    let prefix = format!("prom_ha_proxy_upstream_up{{upstream=\"{upstream}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

#[test]
fn an_upstream_that_answers_queries_before_it_is_ready_is_not_used_until_ready() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = cluster().tl.end;
    let vector = |v: &str| {
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[{t},"{v}"]}}]}}}}"#
        )
    };
    let ready = std::sync::Arc::new(AtomicBool::new(false));
    let gated = crate::fake::start(crate::fake::Behaviour::Gated {
        ready: ready.clone(),
        then: Box::new(crate::fake::Behaviour::Answer(200, vector("9"))),
    });
    let other = crate::fake::start(crate::fake::Behaviour::Answer(200, vector("1")));
    let proxy = crate::fake::start_proxy_with_config(
        proxy_binary(),
        "gated",
        &format!(
            "[coverage]\nenabled = false\n[health]\nprobe_interval = \"300ms\"\n\
             [upstreams.gated]\nurl = \"{}\"\npriority = 1\n\
             [upstreams.other]\nurl = \"{}\"\npriority = 2\n",
            gated.url, other.url
        ),
    );
    let value = || {
        let (status, body) =
            http_get(&format!("{}/api/v1/query?query=x&time={t}", proxy.url)).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    wait_until(
        "the gated upstream marked down",
        std::time::Duration::from_secs(30),
        || upstream_up(&proxy.url, &gated.url) == Some(0.0),
    );
    let queries = || crate::fake::query_count(&gated);
    let before = queries();
    for _ in 0..5 {
        assert_eq!(
            value(),
            "1",
            "answered by the other while the first is not ready"
        );
    }
    assert_eq!(queries(), before, "a replica not ready was asked a query");
    ready.store(true, Ordering::SeqCst);
    wait_until(
        "used again once ready",
        std::time::Duration::from_secs(30),
        || value() == "9",
    );
    assert_eq!(upstream_up(&proxy.url, &gated.url), Some(1.0));
}
