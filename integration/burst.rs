//! Bursts: many client queries at once, as a dashboard's first load sends
//! them, against real replicas. One Prometheus queues what it cannot run at
//! once and answers it all; so must the proxy (`src/admission.rs`).

use crate::harness::*;
use crate::proxy_binary;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::Duration;

/// Series in each replica: enough that a burst's range queries take
/// Prometheus tens of milliseconds each, so they pile up.
const SERIES: usize = 800;

struct Pair {
    tl: Timeline,
    a: Prometheus,
    b: Prometheus,
}

/// Two replicas with the same data, no holes: every answer through the proxy
/// is the one a replica gives directly.
fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let tl = Timeline::recent();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("burst");
        let om = big_openmetrics(&tl, SERIES, &[]);
        let (a, b) = start_pair(&root, &om, &om);
        Pair { tl, a, b }
    })
}

/// GETs every path at once (released together by a barrier); each answer's
/// status, body and `Retry-After` header, in order.
fn burst(base: &str, paths: &[String]) -> Vec<(u16, String, Option<String>)> {
    let start = Arc::new(Barrier::new(paths.len()));
    let asks: Vec<_> = paths
        .iter()
        .map(|path| {
            let (url, start) = (format!("{base}{path}"), start.clone());
            std::thread::spawn(move || {
                start.wait();
                get_with_retry_after(&url)
            })
        })
        .collect();
    asks.into_iter().map(|a| a.join().unwrap()).collect()
}

fn get_with_retry_after(url: &str) -> (u16, String, Option<String>) {
    let mut resp = agent().get(url).call().expect(url);
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap(), retry)
}

fn data(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["data"].clone()
}

#[test]
fn cold_bursts_of_heavy_queries_are_all_answered_as_one_replica_answers() {
    let p = pair();
    for (n, q) in [
        (40, "{__name__=~\"big_.+\",shard=\"1\"}"),
        (64, "sum by (shard) (rate(big_series[5m]))"),
        (40, "rate(big_series{shard=~\"[23]\"}[5m])"),
        (128, "big_series{shard=\"1\",instance=~\"host-[0-9]:9100\"}"),
    ] {
        // A proxy just started: nothing remembered, every coverage round asked.
        let proxy = Proxy::start(proxy_binary(), &[&p.a.url, &p.b.url], &[]);
        let path = range_path(&p.tl, q);
        let (status, direct) = http_get(&format!("{}{path}", p.a.url)).unwrap();
        assert_eq!(status, 200, "{direct}");
        let answers = burst(&proxy.url, &vec![path.clone(); n]);
        for (status, body, _) in &answers {
            assert_eq!(*status, 200, "{n} x {q}: {body}");
            assert_eq!(data(body), data(&direct), "{n} x {q}");
            // Neither replica left out for being busy.
            let v: Value = serde_json::from_str(body).unwrap();
            assert!(v.get("warnings").is_none(), "{n} x {q}: {}", v["warnings"]);
        }
        assert_eq!(
            proxy_metric(&proxy.url, "prom_ha_proxy_refused_queries_total"),
            0.0
        );
    }
}

#[test]
fn a_query_reading_nothing_is_not_queued_behind_a_burst() {
    let p = pair();
    let proxy = Proxy::start(proxy_binary(), &[&p.a.url, &p.b.url], &[]);
    let heavy = range_path(&p.tl, "sum by (shard) (rate(big_series[5m]))");
    let done = Arc::new(AtomicUsize::new(0));
    let asks: Vec<_> = (0..64)
        .map(|_| {
            let (url, done) = (format!("{}{heavy}", proxy.url), done.clone());
            std::thread::spawn(move || {
                let (status, body) = http_get(&url).unwrap();
                done.fetch_add(1, Ordering::SeqCst);
                (status, body)
            })
        })
        .collect();
    // Sent once the burst is queued in the proxy.
    wait_until("the burst queued", Duration::from_secs(30), || {
        proxy_metric(&proxy.url, "prom_ha_proxy_queued_queries") > 0.0
    });
    let t = p.tl.end.to_string();
    let one = instant_path("1+1", p.tl.end);
    let (status, body) = http_get(&format!("{}{one}", proxy.url)).unwrap();
    let heavy_done = done.load(Ordering::SeqCst);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("[{t},\"2\"]")), "{body}");
    for ask in asks {
        assert_eq!(ask.join().unwrap().0, 200);
    }
    assert!(
        heavy_done < 64,
        "1+1 waited for the whole burst ({heavy_done} of 64 done first)"
    );
}

#[test]
fn a_full_queue_refuses_the_excess_at_once_and_a_short_timeout_times_out_alone() {
    let tl = Timeline::recent();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("burst-stopped");
    let om = openmetrics(&tl, &[], PHASE_S);
    let (a, b) = start_pair(&root, &om, &om);
    let env = [
        ("PROM_HA_PROXY__MAX_CONCURRENT_QUERIES", "1"),
        ("PROM_HA_PROXY__MAX_QUEUED_QUERIES", "3"),
    ];
    let proxy = Proxy::start_with_env(proxy_binary(), &[&a.url, &b.url], &[], &env);
    let path = range_path(&tl, "rate(http_requests_total[5m])");
    let (_, direct) = http_get(&format!("{}{path}", a.url)).unwrap();
    // Frozen replicas: the query admitted first holds its place until they thaw.
    a.signal(libc::SIGSTOP);
    b.signal(libc::SIGSTOP);
    let ask = |path: String| {
        let url = format!("{}{path}", proxy.url);
        std::thread::spawn(move || get_with_retry_after(&url))
    };
    let running = ask(path.clone());
    wait_until("one query running", Duration::from_secs(30), || {
        proxy_metric(&proxy.url, "prom_ha_proxy_running_queries") == 1.0
    });
    // A client's timeout shorter than the wait: Prometheus' timeout error, alone.
    let (status, body, _) = get_with_retry_after(&format!("{}{path}&timeout=1s", proxy.url));
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errorType"], "timeout", "{body}");
    assert_eq!(v["error"], "query timed out in query queue", "{body}");
    let queued: Vec<_> = (0..3).map(|_| ask(path.clone())).collect();
    wait_until("three queries queued", Duration::from_secs(30), || {
        proxy_metric(&proxy.url, "prom_ha_proxy_queued_queries") == 3.0
    });
    // Past the queue's three: refused at once, while the replicas are still frozen.
    for (status, body, retry) in burst(&proxy.url, &vec![path.clone(); 4]) {
        assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
        assert!(body.contains("\"errorType\":\"unavailable\""), "{body}");
    }
    assert_eq!(
        proxy_metric(&proxy.url, "prom_ha_proxy_refused_queries_total"),
        4.0
    );
    a.signal(libc::SIGCONT);
    b.signal(libc::SIGCONT);
    // Everything admitted is answered, as a replica answers.
    for admitted in std::iter::once(running).chain(queued) {
        let (status, body, _) = admitted.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(data(&body), data(&direct));
    }
}
