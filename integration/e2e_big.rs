//! The large end-to-end benchmark: two real Prometheus replicas on loopback,
//! backfilled with thousands of series (each replica missing its own stretch),
//! the same queries sent to each replica directly and through the release
//! proxy binary, medians and ratios printed as a table, and the proxy's peak
//! RSS read from `/usr/bin/time -v`.
//!
//! `scripts/bench-e2e [SERIES] [ROUNDS]` (defaults 2400 series, about 40 MB
//! per range answer, and 7 rounds; each round asks every column in turn, so
//! the machine's drift falls on all of them). With
//! `E2E_BEFORE=path/to/an/older/binary` that build runs too, in the same run,
//! and the table gains its columns, so a change is quoted as before and after.
//! Each proxy's CPU time per query is read from /proc. `E2E_ONLY=text` runs
//! only the rows whose name holds `text`. A benchmark, not a
//! test: it asserts nothing about time or memory; it prints them.

#[path = "harness.rs"]
mod harness;

use harness::*;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Milliseconds to ask every base in `bases` at once and read every answer:
/// for one base, a plain query; for several, the slower of them, which is the
/// floor for the proxy (it asks them all at once, and on one machine the
/// replicas then share its cores). Also the size of the first answer.
fn ask_all_at_once(agent: &ureq::Agent, bases: &[&str], path_and_query: &str) -> (f64, usize) {
    std::thread::scope(|s| {
        let asks: Vec<_> = bases
            .iter()
            .map(|base| {
                s.spawn(move || {
                    let t = std::time::Instant::now();
                    let (status, body) = get_identity(agent, &format!("{base}{path_and_query}"));
                    assert_eq!(status, 200, "{base}{path_and_query}: {body}");
                    (t.elapsed().as_secs_f64() * 1000.0, body.len())
                })
            })
            .collect();
        let answers: Vec<(f64, usize)> = asks.into_iter().map(|a| a.join().unwrap()).collect();
        (
            answers.iter().map(|a| a.0).fold(0.0, f64::max),
            answers[0].1,
        )
    })
}

/// Answer body bytes a proxy has read from its upstreams so far (its
/// `/metrics`): the bodies a query held, coverage answers and parts included.
fn received_bytes(proxy: &str) -> f64 {
    proxy_metric(proxy, "prom_ha_proxy_upstream_received_bytes_total")
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// CPU time (user + system) a process has used so far, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime is the 12th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / per_second
}

fn main() {
    let mut args = std::env::args().skip(1);
    let series: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2400);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(7);
    let proxy_binary = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("prom-ha-proxy");
    assert!(
        proxy_binary.exists(),
        "{} missing: run scripts/bench-e2e, which builds it",
        proxy_binary.display()
    );
    let tl = Timeline::recent();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-big");
    eprintln!("backfilling two replicas with {series} series each…");
    let (a, b) = start_big_replicas(&root, &tl, series);

    // The build at hand twice: remembering settled coverage counts (the
    // default), and not, so every query costs what it does asked the first
    // time (`forgetful`). Both without the cache of answers, which would
    // answer every round after the first from memory (scripts/bench-dashboard
    // measures it).
    let remember = [NO_CACHE];
    let forget = [("PROM_HA_PROXY__COVERAGE__REMEMBER_FOR", "0s"), NO_CACHE];
    type Env<'a> = &'a [(&'a str, &'a str)];
    let mut binaries: Vec<(&str, std::path::PathBuf, Env)> = vec![
        ("proxy", proxy_binary.clone(), &remember),
        ("forgetful", proxy_binary, &forget),
    ];
    // An older build as the build at hand runs, without the cache of
    // answers (so it must be one that has `cache.enabled`).
    if let Ok(before) = std::env::var("E2E_BEFORE") {
        binaries.insert(0, ("before", before.into(), &remember));
    }
    let proxies: Vec<TimedProxy> = binaries
        .iter()
        .map(|(name, binary, env)| TimedProxy::start(name, binary, &root, &[&a.url, &b.url], env))
        .collect();
    let t = tl.end - 60;
    let range = |q: &str| range_path(&tl, q);
    // Between the two holes, its coverage windows clear of both: a
    // dashboard's range long after the last restart.
    let (clear_start, clear_end) = (tl.hole_a.end + 300, tl.hole_b.start - 600);
    let clear = |q: &str| range_path_over(q, clear_start, clear_end);
    let instant = |q: &str| instant_path(q, t);
    // Each case with how many times a round asks each column for it: quick
    // queries many times, so the CPU time read from /proc (in 10 ms ticks)
    // adds up to something that can be divided.
    let ten = "big_series{instance=~\"host-[0-4]:9100\",shard=~\"[01]\"}";
    let cases = [
        ("range, every series x 720 steps", range("big_series"), 1),
        (
            "range, sum by shard (rate) x 720",
            range("sum by (shard) (rate(big_series[5m]))"),
            1,
        ),
        (
            "range clear of holes, every series x 221 steps",
            clear("big_series"),
            1,
        ),
        (
            "range clear of holes, sum by shard (rate) x 221",
            clear("sum by (shard) (rate(big_series[5m]))"),
            1,
        ),
        (
            "range clear of holes, sum by shard (rate[30s]) at 10-second steps x 331",
            clear("sum by (shard) (rate(big_series[30s]))").replace("step=15", "step=10"),
            1,
        ),
        (
            "range, sum by shard (rate[1m]) at 30-second steps x 360",
            range("sum by (shard) (rate(big_series[1m]))").replace("step=15", "step=30"),
            1,
        ),
        ("range, 10 series x 720 steps", range(ten), 20),
        ("instant 1+1", instant("1+1"), 20),
        ("instant 10-series vector", instant(ten), 20),
        (
            "instant, sum by shard (rate) over every series",
            instant("sum by (shard) (rate(big_series[5m]))"),
            5,
        ),
        (
            "the same instant inside hole a",
            instant_path(
                "sum by (shard) (rate(big_series[5m]))",
                tl.hole_a.start + 600,
            ),
            5,
        ),
        (
            "the same instant a minute after hole a",
            instant_path("sum by (shard) (rate(big_series[5m]))", tl.hole_a.end + 60),
            5,
        ),
    ];
    println!(
        "{series} series; {rounds} rounds per row, each asking every column in turn \
         (the quick rows 20 times each, the heavy instants 5); medians in ms; no compression; \
         a proxy's CPU is its user + system time per query\n"
    );
    let mut header = String::from("| query | answer bytes | a | b | a and b at once, slower |");
    for p in &proxies {
        let n = p.name;
        write!(
            header,
            " {n} | {n} / slowest alone | {n} / slower alone, paired | {n} / slower at once | {n} − slower at once | {n} CPU ms |"
        )
        .unwrap();
    }
    println!("{header}");
    println!(
        "|---|---|---|---|---|{}",
        "---|---|---|---|---|---|".repeat(proxies.len())
    );
    let agent = agent();
    let pids: Vec<u32> = proxies.iter().map(TimedProxy::pid).collect();
    // Per proxy, the most body bytes one query of a row read, on average.
    let mut biggest_read = vec![0.0f64; proxies.len()];
    // `E2E_ONLY=text`: only the rows whose name holds it.
    let only = std::env::var("E2E_ONLY").unwrap_or_default();
    for &(name, ref pq, repeat) in cases.iter().filter(|c| c.0.contains(&only)) {
        // Columns: a alone, b alone, both at once, then each proxy. Every round
        // asks each in turn, so the machine's drift (10-20% here) falls on all.
        let mut columns: Vec<Vec<&str>> = vec![vec![&a.url], vec![&b.url], vec![&a.url, &b.url]];
        columns.extend(proxies.iter().map(|p| vec![p.url.as_str()]));
        let mut times = vec![Vec::with_capacity(rounds * repeat); columns.len()];
        let mut cpu = vec![0.0; proxies.len()];
        let read_before: Vec<f64> = proxies.iter().map(|p| received_bytes(&p.url)).collect();
        let mut bytes = 0;
        for round in 0..=rounds {
            for (c, bases) in columns.iter().enumerate() {
                let proxy = c.checked_sub(3).map(|i| (i, pids[i]));
                let before = proxy.map_or(0.0, |(_, pid)| cpu_ms(pid));
                for _ in 0..repeat {
                    let (ms, size) = ask_all_at_once(&agent, bases, pq);
                    // Round 0 warms every cache up and is not counted.
                    if round > 0 {
                        times[c].push(ms);
                    } else if c == 0 {
                        bytes = size;
                    }
                }
                if round == 0 {
                    continue;
                }
                if let Some((i, pid)) = proxy {
                    cpu[i] += cpu_ms(pid) - before;
                }
            }
        }
        for (i, p) in proxies.iter().enumerate() {
            let per_query =
                (received_bytes(&p.url) - read_before[i]) / ((rounds + 1) * repeat) as f64;
            biggest_read[i] = biggest_read[i].max(per_query);
        }
        // Per proxy, the median of each ask's ratio to the slower replica
        // alone in the same round (asked moments apart): steadier than the
        // ratio of medians when the machine drifts between rounds.
        let paired: Vec<f64> = (3..times.len())
            .map(|c| {
                let ratios = (0..times[c].len())
                    .map(|i| times[c][i] / times[0][i].max(times[1][i]))
                    .collect();
                median(ratios)
            })
            .collect();
        let medians: Vec<f64> = times.into_iter().map(median).collect();
        let (ma, mb, both) = (medians[0], medians[1], medians[2]);
        let slowest = ma.max(mb);
        let mut row = format!("| {name} | {bytes} | {ma:.2} | {mb:.2} | {both:.2} |");
        for (i, mp) in medians[3..].iter().enumerate() {
            write!(
                row,
                " {mp:.2} | {:.3} | {:.3} | {:.3} | {:.2} ms | {:.2} |",
                mp / slowest,
                paired[i],
                mp / both,
                mp - both,
                cpu[i] / (rounds * repeat) as f64
            )
            .unwrap();
        }
        println!("{row}");
    }
    println!();
    for (p, read) in proxies.into_iter().zip(biggest_read) {
        let (name, peak_mb) = (p.name, p.stop_and_peak_mb());
        let bodies_mb = read / 1e6;
        println!(
            "{name} peak RSS: {peak_mb:.1} MB; the most upstream body bytes one query read: {bodies_mb:.1} MB; \
             bound 1.5 x bodies + 30 MB = {:.1} MB; peak / bodies = {:.2}",
            1.5 * bodies_mb + 30.0,
            peak_mb / bodies_mb
        );
    }
}

/// A proxy binary run under GNU time, which reports its peak RSS when it exits.
struct TimedProxy {
    name: &'static str,
    url: String,
    rusage: std::path::PathBuf,
    timed: std::process::Child,
}

impl TimedProxy {
    fn start(
        name: &'static str,
        binary: &Path,
        root: &Path,
        upstreams: &[&str],
        env: &[(&str, &str)],
    ) -> TimedProxy {
        assert!(binary.exists(), "{} missing", binary.display());
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let rusage = root.join(format!("{name}.time"));
        let mut time = Command::new("/usr/bin/time");
        time.arg("-v")
            .arg("-o")
            .arg(&rusage)
            .arg(binary)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(upstreams)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null());
        let timed = spawn_tied(time).expect("run /usr/bin/time (Debian package `time`)");
        wait_until("proxy ready", Duration::from_secs(30), || {
            http_get(&format!("{url}/-/ready")).is_ok_and(|(s, _)| s == 200)
        });
        TimedProxy {
            name,
            url,
            rusage,
            timed,
        }
    }

    /// The proxy's process id: GNU time's only child.
    fn pid(&self) -> u32 {
        let time = self.timed.id();
        std::fs::read_to_string(format!("/proc/{time}/task/{time}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
            .unwrap_or(time)
    }

    /// SIGTERM to the proxy (time's child); time then writes its report.
    fn stop_and_peak_mb(mut self) -> f64 {
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &self.timed.id().to_string()])
            .status();
        let _ = self.timed.wait();
        let report = std::fs::read_to_string(&self.rusage).unwrap_or_default();
        let peak_kb: f64 = report
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes): ")
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(f64::NAN);
        peak_kb * 1024.0 / 1e6
    }
}
