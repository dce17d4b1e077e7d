//! Health-aware failover under real faults: replicas killed, frozen and
//! restarted while clients query, and the fake upstream's broken answers.

use crate::*;

/// Fast health settings, so faults are seen within a second or two.
const FAST: &[(&str, &str)] = &[
    ("PROM_HA_PROXY__HEALTH__PROBE_INTERVAL", "300ms"),
    ("PROM_HA_PROXY__HEALTH__PROBE_TIMEOUT", "300ms"),
    ("PROM_HA_PROXY__HEALTH__STRAGGLER_TIMEOUT", "1s"),
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
    let (mut served, mut killed_at, mut down_seen_after) = (0, None, None);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(5) {
        if served == 30 {
            x.kill();
            killed_at = Some(std::time::Instant::now());
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
        if let Some(k) = killed_at
            && down_seen_after.is_none()
            && warnings.contains(&format!("upstream {}: down, not asked", x.url))
        {
            down_seen_after = Some(k.elapsed());
        }
    }
    let after = down_seen_after.expect("the killed replica was never marked down");
    // One probe interval plus one probe timeout, and a margin for a loaded machine.
    assert!(
        after < std::time::Duration::from_secs(3),
        "marked down after {after:?}"
    );
    println!("{served} requests, none failed; killed replica marked down after {after:?}");
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
        // Straggler timeout 1s, plus a margin.
        assert!(
            took < std::time::Duration::from_millis(2500),
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
    let (status, _, _) = sum_up(&proxy.url);
    assert_eq!(status, 503);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
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
