//! The basic-auth benchmark: what the listener's authentication adds to a
//! request. Two release proxies in front of the same real replica, one
//! open and one with `basic_auth_users` (a bcrypt hash of cost 10, as
//! `htpasswd -B` makes), asked `1+1` in turn over kept-alive connections;
//! and what the first request with credentials not seen before costs
//! (the bcrypt check itself).
//!
//! `scripts/bench-auth [ROUNDS] [PER_ROUND]` (defaults 21 rounds of 200
//! requests each). A benchmark, not a test: it asserts only that every
//! answer was a 200 and that wrong credentials get a 401.

#[path = "harness.rs"]
mod harness;

use harness::*;
use std::path::Path;
use std::time::Instant;

/// Mean milliseconds of `n` requests, asked one after another.
fn mean_ms(reach: &Reach, url: &str, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let (status, body) = reach.get(url).unwrap();
        assert_eq!(status, 200, "{url}: {body}");
    }
    t.elapsed().as_secs_f64() * 1000.0 / n as f64
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds = next_number(&mut args, 21);
    let per_round = next_number(&mut args, 200);
    let binary = release_binary("scripts/bench-auth");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/auth-bench");
    let tl = Timeline::recent();
    let replica = Prometheus::start("a", &root.join("a"), &openmetrics(&tl, &[], PHASE_S));
    // Users of their own for the first-sight figures, so every one is a miss.
    let firsts = 5;
    let mut yml = String::from("basic_auth_users:\n");
    for user in std::iter::once("grafana".to_string()).chain((0..firsts).map(|i| format!("u{i}"))) {
        let hash = bcrypt::hash("bench-password", 10).unwrap();
        yml.push_str(&format!("  {user}: '{hash}'\n"));
    }
    let web = root.join("web.yml");
    std::fs::write(&web, yml).unwrap();
    let kept = || Reach {
        agent: Some(agent()),
        ..Reach::default()
    };
    let open = Proxy::start(&binary, &[&replica.url], &[]);
    let grafana = kept().user("grafana", "bench-password");
    let guarded = Proxy::start_reached(
        &binary,
        &["--web.config.file", web.to_str().unwrap(), &replica.url],
        &grafana,
    );
    let plain = kept();
    let path = "/api/v1/query?query=1%2B1";
    let (open_url, guarded_url) = (
        format!("{}{path}", open.url),
        format!("{}{path}", guarded.url),
    );
    let wrong = kept().user("grafana", "wrong");
    assert_eq!(wrong.get(&guarded_url).unwrap().0, 401);
    mean_ms(&grafana, &guarded_url, 1);

    // The first request with credentials not seen before: bcrypt's cost.
    let first_ms: Vec<f64> = (0..firsts)
        .map(|i| {
            mean_ms(
                &grafana.clone().user(&format!("u{i}"), "bench-password"),
                &guarded_url,
                1,
            )
        })
        .collect();

    mean_ms(&plain, &open_url, per_round);
    mean_ms(&grafana, &guarded_url, per_round);
    let (mut open_ms, mut guarded_ms, mut diffs) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        // Alternate which goes first, so drift falls on both alike.
        let (o, g) = if round % 2 == 0 {
            let o = mean_ms(&plain, &open_url, per_round);
            (o, mean_ms(&grafana, &guarded_url, per_round))
        } else {
            let g = mean_ms(&grafana, &guarded_url, per_round);
            (mean_ms(&plain, &open_url, per_round), g)
        };
        open_ms.push(o);
        guarded_ms.push(g);
        diffs.push(g - o);
    }
    println!(
        "{rounds} rounds of {per_round} `1+1` queries to each proxy in turn, one real replica \
         behind both, kept-alive connections; medians of the rounds' means, in ms\n"
    );
    println!(
        "| query | open | basic auth | basic auth − open, paired | first request of a new credential (bcrypt cost 10) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| instant 1+1 | {:.3} | {:.3} | {:+.3} ms | {:.1} |",
        median(open_ms),
        median(guarded_ms),
        median(diffs),
        median(first_ms)
    );
}
