//! Real Prometheus servers for tests and the demo: a deterministic data set,
//! backfilled with `promtool` into replicas that each miss a different stretch,
//! and a reference that misses nothing.
//!
//! Everything listens on 127.0.0.1 on free ports. Child processes are tied to
//! this process (PR_SET_PDEATHSIG), so they never outlive a test run.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Scrape interval of the generated data.
pub const STEP_S: i64 = 15;
/// How much history the data set holds.
pub const SPAN_S: i64 = 3 * 3600;
pub const INSTANCES: usize = 4;

/// A stretch of time, in seconds, [start, end).
#[derive(Clone, Copy, Debug)]
pub struct Hole {
    pub start: i64,
    pub end: i64,
}

impl Hole {
    pub fn contains(&self, t: i64) -> bool {
        t >= self.start && t < self.end
    }
}

/// The time layout every server shares.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    /// First sample, seconds since the epoch (a whole hour).
    pub start: i64,
    /// Last sample (inclusive).
    pub end: i64,
    /// Replica a misses 20 minutes, an hour in.
    pub hole_a: Hole,
    /// Replica b misses 15 minutes, two and a half hours in: far enough from
    /// a's that no query window up to an hour sees both holes.
    pub hole_b: Hole,
}

impl Timeline {
    /// Ends a little over half an hour ago, starts on a whole hour.
    pub fn recent() -> Timeline {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let start = (now - SPAN_S - 1800) / 3600 * 3600;
        Timeline {
            start,
            end: start + SPAN_S - STEP_S,
            hole_a: Hole {
                start: start + 3600,
                end: start + 3600 + 20 * 60,
            },
            hole_b: Hole {
                start: start + 9000,
                end: start + 9000 + 15 * 60,
            },
        }
    }
}

/// `series` gauges over the timeline, skipping `holes`; integer arithmetic, so
/// both replicas hold the same values where they both have data.
pub fn big_openmetrics(tl: &Timeline, series: usize, holes: &[Hole]) -> String {
    let times: Vec<i64> = (tl.start..=tl.end)
        .step_by(STEP_S as usize)
        .map(|t| t + PHASE_S)
        .filter(|t| !holes.iter().any(|h| h.contains(*t)))
        .collect();
    let mut out = String::with_capacity(series * times.len() * 60);
    out.push_str("# TYPE big_series gauge\n");
    for s in 0..series {
        for &t in &times {
            let i = (t - tl.start) / STEP_S;
            let v = (i * (s as i64 % 97 + 1) + s as i64 * 13) % 100_000;
            writeln!(
                out,
                "big_series{{instance=\"host-{}:9100\",shard=\"{}\"}} {v}.25 {t}",
                s / 8,
                s % 8
            )
            .unwrap();
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Seconds after each whole scrape interval at which the data's samples sit:
/// like real scrapes, never on a query step or a TSDB block boundary.
pub const PHASE_S: i64 = 7;

/// The data set in OpenMetrics text, skipping samples inside `holes`, with
/// samples `phase_s` seconds into each scrape interval.
///
/// Counters, gauges and a classic histogram over several instances, values
/// from integer arithmetic so every server holds exactly the same numbers.
pub fn openmetrics(tl: &Timeline, holes: &[Hole], phase_s: i64) -> String {
    openmetrics_of(tl, holes, phase_s, INSTANCES)
}

/// [`openmetrics`] over `instances` scraped hosts (`up` and the counters).
pub fn openmetrics_of(tl: &Timeline, holes: &[Hole], phase_s: i64, instances: usize) -> String {
    let times: Vec<i64> = (tl.start..=tl.end)
        .step_by(STEP_S as usize)
        .map(|t| t + phase_s)
        .filter(|t| !holes.iter().any(|h| h.contains(*t)))
        .collect();
    let mut out = String::new();
    let series = |out: &mut String, name: &str, labels: &str, value: &dyn Fn(i64) -> f64| {
        for &t in &times {
            let i = (t - tl.start) / STEP_S;
            writeln!(out, "{name}{{{labels}}} {} {t}", value(i)).unwrap();
        }
    };
    out.push_str("# TYPE up gauge\n");
    for n in 0..instances {
        series(
            &mut out,
            "up",
            &format!("instance=\"host-{n}:9100\",job=\"node\""),
            &|_| 1.0,
        );
    }
    out.push_str("# TYPE http_requests counter\n");
    for n in 0..instances {
        for (m, method) in ["GET", "POST"].iter().enumerate() {
            for (c, code) in ["200", "500"].iter().enumerate() {
                let per_step = ((n + 1) * (m + 1) * if c == 0 { 10 } else { 1 }) as i64;
                let labels = format!(
                    "code=\"{code}\",instance=\"host-{n}:9100\",job=\"api\",method=\"{method}\""
                );
                // Cumulative: per_step each scrape plus a wobble, so rates vary.
                series(&mut out, "http_requests_total", &labels, &|i| {
                    (i * per_step + (0..=i).map(|j| (j * 7 + n as i64) % 5).sum::<i64>()) as f64
                });
            }
        }
    }
    out.push_str("# TYPE temperature_celsius gauge\n");
    for room in 0..3 {
        let labels = format!("room=\"room-{room}\"");
        series(&mut out, "temperature_celsius", &labels, &|i| {
            15.0 + ((i * 7 + room * 13) % 100) as f64 / 10.0
        });
    }
    out.push_str("# TYPE request_duration_seconds histogram\n");
    for n in 0..2usize {
        let inst = format!("instance=\"host-{n}:9100\",job=\"api\"");
        let bounds = ["0.1", "0.5", "1", "+Inf"];
        for (b, le) in bounds.iter().enumerate() {
            let labels = format!("{inst},le=\"{le}\"");
            series(&mut out, "request_duration_seconds_bucket", &labels, &|i| {
                let per: i64 = [3, 6, 8, 9][b] + (n as i64);
                (i * per + (i * (b as i64 + 1)) % 4) as f64
            });
        }
        series(&mut out, "request_duration_seconds_sum", &inst, &|i| {
            (i * 4) as f64 + 0.25
        });
        series(&mut out, "request_duration_seconds_count", &inst, &|i| {
            (i * (9 + n as i64) + (i * 4) % 4) as f64
        });
    }
    out.push_str("# EOF\n");
    out
}

/// Fails loudly when a required program is missing: never a silent skip.
pub fn require(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "`{program}` is not installed (CI={}). Run scripts/test, which installs Debian's prometheus and chromium packages.",
            std::env::var("CI").unwrap_or_default()
        ),
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `start` on a port found free, tried again on another (three tries in
/// all) when it says the port turned out to be another's: servers start in
/// parallel, and one may take a port between another finding it free and
/// binding it.
pub fn on_a_free_port<T>(mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut clash = String::new();
    for _ in 0..3 {
        match start(free_port()) {
            Ok(started) => return started,
            Err(e) => clash = e,
        }
    }
    panic!("{clash}");
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`
/// (read from /proc): a port found free may be taken by another test's
/// server before this one binds it, and then that one answers at its URL.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let wanted = format!("0100007F:{port:04X}");
    // Columns: sl, local address, remote address, state (0A: listening), …, inode (the tenth).
    let inode = tcp.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&wanted.as_str()) && cols.get(3) == Some(&"0A"))
            .then(|| cols.get(9).map(|i| format!("socket:[{i}]")))
            .flatten()
    });
    let Some(inode) = inode else {
        return false;
    };
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == inode))
}

/// Spawns `cmd` so that it is killed when this process dies.
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, and
/// test threads come and go; so every child is forked by one thread that lives
/// as long as the process.
pub fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, back) in rx {
                let _ = back.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (back, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((cmd, back))
        .expect("spawner thread alive");
    answer.recv().expect("spawner answers")
}

/// A process that is killed when dropped.
pub struct Process {
    pub child: Child,
    pub name: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One real Prometheus server on loopback.
pub struct Prometheus {
    pub url: String,
    pub process: Process,
    pub dir: PathBuf,
    /// Extra command-line flags, kept for a restart.
    pub flags: Vec<String>,
    /// How it is reached: plain, or over TLS with credentials.
    pub reach: Reach,
}

/// A Prometheus configuration that scrapes nothing.
/// The proxy's environment for a test of what it asks the upstreams: the
/// cache of settled history off, so a repeated query reaches them.
pub const NO_CACHE: (&str, &str) = ("PROM_HA_PROXY__CACHE__ENABLED", "false");

pub const NO_SCRAPES: &str = "global:\n  scrape_interval: 15s\nscrape_configs: []\n";

impl Prometheus {
    /// Backfills `openmetrics` into `dir` and starts Prometheus on it; returns once ready.
    pub fn start(name: &str, dir: &Path, openmetrics: &str) -> Prometheus {
        Self::start_with(name, dir, openmetrics, NO_SCRAPES, &[])
    }

    /// [`Prometheus::start`] with a configuration file's text and extra flags.
    pub fn start_with(
        name: &str,
        dir: &Path,
        openmetrics: &str,
        config_yml: &str,
        flags: &[&str],
    ) -> Prometheus {
        Self::start_reached(name, dir, openmetrics, config_yml, flags, &Reach::default())
    }

    /// [`Prometheus::start_with`] for a server reached as `reach` says
    /// (`flags` then carry its `--web.config.file`).
    pub fn start_reached(
        name: &str,
        dir: &Path,
        openmetrics: &str,
        config_yml: &str,
        flags: &[&str],
        reach: &Reach,
    ) -> Prometheus {
        let promtool = require("promtool");
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let om = dir.join("data.om");
        std::fs::write(&om, openmetrics).unwrap();
        let out = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&om)
            .arg(dir.join("data"))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join("prometheus.yml"), config_yml).unwrap();
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        // A Prometheus whose port another took first exits, and the other
        // answers at its address: caught by `try_spawn`.
        on_a_free_port(|port| {
            Self::try_spawn(name, dir, port, &flags, reach)
                .map_err(|e| format!("prometheus {name}: {e}"))
        })
    }

    /// Starts Prometheus on an existing data directory and port; returns once ready.
    pub fn spawn(name: &str, dir: &Path, port: u16) -> Prometheus {
        Self::spawn_with(name, dir, port, &[], &Reach::default())
    }

    /// [`Prometheus::spawn`] with extra flags, kept for a restart.
    pub fn spawn_flagged(name: &str, dir: &Path, port: u16, flags: &[&str]) -> Prometheus {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        Self::spawn_with(name, dir, port, &flags, &Reach::default())
    }

    fn spawn_with(
        name: &str,
        dir: &Path,
        port: u16,
        flags: &[String],
        reach: &Reach,
    ) -> Prometheus {
        Self::try_spawn(name, dir, port, flags, reach)
            .unwrap_or_else(|e| panic!("prometheus {name}: {e}"))
    }

    /// Starts Prometheus on `port`; Err when the server that comes up there
    /// is not this one (its data directory is another's).
    fn try_spawn(
        name: &str,
        dir: &Path,
        port: u16,
        flags: &[String],
        reach: &Reach,
    ) -> Result<Prometheus, String> {
        let prometheus = require("prometheus");
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let mut cmd = Command::new(&prometheus);
        cmd.arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=3650d")
        .args(flags)
        .stdout(Stdio::null())
        .stderr(log);
        let child = spawn_tied(cmd).expect("start prometheus");
        let url = format!("{}://127.0.0.1:{port}", reach.scheme());
        let p = Prometheus {
            url: url.clone(),
            process: Process {
                child,
                name: name.to_string(),
            },
            dir: dir.to_path_buf(),
            flags: flags.to_vec(),
            reach: reach.clone(),
        };
        wait_until(
            &format!("prometheus {name} ready"),
            Duration::from_secs(60),
            || {
                reach
                    .get(&format!("{url}/-/ready"))
                    .is_ok_and(|(s, _)| s == 200)
            },
        );
        let path = dir.join("data").display().to_string();
        let (_, flags) = reach.get(&format!("{url}/api/v1/status/flags"))?;
        let serving: serde_json::Value = serde_json::from_str(&flags).map_err(|e| e.to_string())?;
        match serving["data"]["storage.tsdb.path"].as_str() {
            Some(serving) if serving == path => Ok(p),
            other => Err(format!(
                "port {port} is served by another Prometheus (data {other:?}, not {path})"
            )),
        }
    }

    /// Kills this server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }

    /// Starts it again on the same data directory and port.
    pub fn restart(&mut self) {
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        let name = self.process.name.clone();
        let fresh = Self::spawn_with(
            &name,
            &self.dir.clone(),
            port,
            &self.flags.clone(),
            &self.reach.clone(),
        );
        // The old, already killed process is reaped when dropped.
        drop(std::mem::replace(self, fresh));
    }

    /// Sends a signal (SIGSTOP, SIGCONT, …) to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.process.child.id() as i32, signal) };
    }
}

/// Replicas `a` and `b` of the timeline's data, each missing its own hole,
/// backfilled and started side by side under `root`.
pub fn start_replicas(root: &Path, tl: &Timeline) -> (Prometheus, Prometheus) {
    start_pair(
        root,
        &openmetrics(tl, &[tl.hole_a], PHASE_S),
        &openmetrics(tl, &[tl.hole_b], PHASE_S),
    )
}

/// Replicas `a` and `b` of `series` [`big_openmetrics`] gauges, each missing
/// its own hole, backfilled and started side by side under `root`.
pub fn start_big_replicas(root: &Path, tl: &Timeline, series: usize) -> (Prometheus, Prometheus) {
    start_pair(
        root,
        &big_openmetrics(tl, series, &[tl.hole_a]),
        &big_openmetrics(tl, series, &[tl.hole_b]),
    )
}

/// Replicas `a` and `b` of the given OpenMetrics texts, backfilled and started
/// side by side under `root`.
pub fn start_pair(root: &Path, om_a: &str, om_b: &str) -> (Prometheus, Prometheus) {
    std::thread::scope(|s| {
        let a = s.spawn(|| Prometheus::start("a", &root.join("a"), om_a));
        let b = Prometheus::start("b", &root.join("b"), om_b);
        (a.join().unwrap(), b)
    })
}

/// The proxy binary, started on a free port in front of `upstreams`.
pub struct Proxy {
    pub url: String,
    pub process: Process,
}

impl Proxy {
    pub fn start(binary: &Path, upstreams: &[&str], extra_args: &[&str]) -> Proxy {
        Self::start_with_env(binary, upstreams, extra_args, &[])
    }

    pub fn start_with_env(
        binary: &Path,
        upstreams: &[&str],
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        on_a_free_port(|port| {
            Self::try_start_on(binary, port, upstreams, extra_args, env, &Reach::default())
        })
    }

    /// A proxy whose listener is reached as `reach` says (`extra_args`
    /// then carry its `--web.config.file`).
    pub fn start_reached(binary: &Path, extra_args: &[&str], reach: &Reach) -> Proxy {
        on_a_free_port(|port| Self::try_start_on(binary, port, &[], extra_args, &[], reach))
    }

    /// Starts the proxy on `port` (chosen beforehand, e.g. for a scrape config).
    pub fn start_on(
        binary: &Path,
        port: u16,
        upstreams: &[&str],
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        Self::try_start_on(binary, port, upstreams, extra_args, env, &Reach::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the proxy on `port`; an error if, once something answers
    /// there, it is not this proxy.
    fn try_start_on(
        binary: &Path,
        port: u16,
        upstreams: &[&str],
        extra_args: &[&str],
        env: &[(&str, &str)],
        reach: &Reach,
    ) -> Result<Proxy, String> {
        let mut cmd = Command::new(binary);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra_args)
            .args(upstreams)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = spawn_tied(cmd).expect("start proxy");
        let url = format!("{}://127.0.0.1:{port}", reach.scheme());
        let p = Proxy {
            url: url.clone(),
            process: Process {
                child,
                name: "proxy".into(),
            },
        };
        let last = std::cell::RefCell::new(Err(String::new()));
        wait_until_or(
            "proxy ready",
            Duration::from_secs(30),
            || {
                let r = reach.get(&format!("{url}/api/v1/query?query=1"));
                let ok = r.as_ref().is_ok_and(|(s, _)| *s == 200);
                *last.borrow_mut() = r;
                ok
            },
            || format!("{:?}", last.borrow()),
        );
        if !listens_on(p.process.child.id(), port) {
            return Err(format!("proxy: port {port} is another process's"));
        }
        Ok(p)
    }
}

/// Polls `ready` until it holds; panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, ready: impl FnMut() -> bool) {
    wait_until_or(what, limit, ready, String::new)
}

/// [`wait_until`], saying what `why` reports when it gives up.
pub fn wait_until_or(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
    why: impl Fn() -> String,
) {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > limit {
            panic!("{what}: not ready after {limit:?}: {}", why());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that returns every status as an answer, and gives up after 60 s.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// The sum of every series of the metric `name` (labelled or not) at the
/// proxy at `base`, from its `/metrics`; 0 if it has none yet.
pub fn proxy_metric(base: &str, name: &str) -> f64 {
    let (_, text) = http_get(&format!("{base}/metrics")).expect("proxy metrics");
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// User + system CPU seconds a process has spent.
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A real redis-server on a loopback port, keeping nothing on disk.
pub struct Redis {
    pub port: u16,
    pub process: Option<Process>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: 0,
            process: None,
        };
        on_a_free_port(|port| {
            redis.port = port;
            redis.spawn()
        });
        redis
    }

    pub fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = std::process::Command::new(require("redis-server"));
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null());
        let child = spawn_tied(cmd).map_err(|e| e.to_string())?;
        self.process = Some(Process {
            child,
            name: "redis".into(),
        });
        let port = self.port;
        wait_until("redis answers", Duration::from_secs(20), || {
            ask(port, "PING").is_some_and(|r| r.starts_with("+PONG"))
        });
        if !listens_on(self.process.as_ref().unwrap().child.id(), port) {
            return Err(format!("redis: port {port} is another process's"));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// How many keys it holds.
    pub fn keys(&self) -> usize {
        ask(self.port, "DBSIZE")
            .and_then(|r| r.trim().trim_start_matches(':').parse().ok())
            .unwrap_or(0)
    }
}

/// A command in Redis' protocol (every argument a bulk string, so keys may
/// hold any byte); the raw reply, or None if Redis is not there.
pub fn command(port: u16, args: &[&[u8]]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    s.write_all(&out).ok()?;
    let mut buf = vec![0u8; 1 << 16];
    let n = s.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// One inline command's reply, or None if Redis is not there.
pub fn ask(port: u16, command: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The release binary a benchmark runs; `script` builds it first.
pub fn release_binary(script: &str) -> PathBuf {
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/prom-ha-proxy");
    assert!(binary.exists(), "run {script}, which builds it");
    binary
}

/// The next command-line argument as a number, or `default`.
pub fn next_number(args: &mut impl Iterator<Item = String>, default: usize) -> usize {
    args.next().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Queries asked in a loop beside a test's faults, counted: answered 200,
/// or not. Stopped by [`QueryLoop::stop`], or when the guard of
/// [`QueryLoop::stopper`] is dropped, so a panicking test never waits on it.
#[derive(Default)]
pub struct QueryLoop {
    stop: std::sync::atomic::AtomicBool,
    ok: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
}

impl QueryLoop {
    /// Asks `ask` until stopped, `pause` apart; `during` names the faults
    /// in the line printed for each failure.
    pub fn run(
        &self,
        during: &str,
        pause: Duration,
        ask: impl Fn() -> Result<(u16, String), String>,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        while !self.stop.load(Relaxed) {
            match ask() {
                Ok((200, _)) => self.ok.fetch_add(1, Relaxed),
                other => {
                    eprintln!("failed {during}: {other:?}");
                    self.failed.fetch_add(1, Relaxed)
                }
            };
            std::thread::sleep(pause);
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops the loop when dropped.
    pub fn stopper(&self) -> impl Drop + '_ {
        struct Stopper<'a>(&'a QueryLoop);
        impl Drop for Stopper<'_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        Stopper(self)
    }

    pub fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn failed(&self) -> usize {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The median of some measurements (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// GET: (status, body).
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    Reach::default().get(url)
}

/// POST a form, as Grafana does: (status, body).
pub fn http_post_form(url: &str, form: &[(&str, &str)]) -> Result<(u16, String), String> {
    Reach::default().post_form(url, form)
}

/// How a server is reached: plain HTTP, or TLS with an agent that trusts
/// its CA (and shows a client certificate), with or without basic auth.
#[derive(Clone, Default)]
pub struct Reach {
    /// The agent to ask with (kept connections); None: a new one each time.
    pub agent: Option<ureq::Agent>,
    pub https: bool,
    pub basic: Option<(String, String)>,
}

impl Reach {
    /// Over TLS with `agent`, which trusts the server's CA.
    pub fn tls(agent: ureq::Agent) -> Reach {
        Reach {
            agent: Some(agent),
            https: true,
            basic: None,
        }
    }

    /// With these basic-auth credentials.
    pub fn user(self, user: &str, password: &str) -> Reach {
        Reach {
            basic: Some((user.into(), password.into())),
            ..self
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    fn agent(&self) -> ureq::Agent {
        self.agent.clone().unwrap_or_else(agent)
    }

    fn authorization(&self) -> Option<String> {
        use base64::Engine;
        let (user, password) = self.basic.as_ref()?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {token}"))
    }

    /// GET: (status, body).
    pub fn get(&self, url: &str) -> Result<(u16, String), String> {
        let mut req = self.agent().get(url);
        if let Some(auth) = self.authorization() {
            req = req.header("Authorization", auth);
        }
        let mut resp = req.call().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    /// POST a form, as Grafana does: (status, body).
    pub fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<(u16, String), String> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut req = self
            .agent()
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(auth) = self.authorization() {
            req = req.header("Authorization", auth);
        }
        let mut resp = req.send(body.as_bytes()).map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let mut buf = String::new();
        resp.body_mut()
            .as_reader()
            .read_to_string(&mut buf)
            .map_err(|e| e.to_string())?;
        Ok((status, buf))
    }
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => write!(out, "%{b:02X}").unwrap(),
        }
    }
    out
}

/// The query string for `params`.
pub fn query_string(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// GET without compression, so neither side pays for gzip: (status, body).
pub fn get_identity(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut resp = agent
        .get(url)
        .header("Accept-Encoding", "identity")
        .call()
        .unwrap();
    // ureq stops at 10 MB unless told otherwise; the large benchmark reads ~50 MB.
    let body = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .unwrap();
    (resp.status().as_u16(), body)
}

pub fn median_ms(base: &str, path_and_query: &str, rounds: usize) -> (f64, usize) {
    let agent = agent();
    let url = format!("{base}{path_and_query}");
    let (status, body) = get_identity(&agent, &url);
    assert_eq!(status, 200, "{url}: {body}");
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let (s, _) = get_identity(&agent, &url);
            assert_eq!(s, 200);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], body.len())
}

/// The path and query of a range query of `q` over the whole timeline, every 15 s.
pub fn range_path(tl: &Timeline, q: &str) -> String {
    range_path_over(q, tl.start, tl.end)
}

/// The path and query of a range query of `q` from `start` to `end` (seconds), every 15 s.
pub fn range_path_over(q: &str, start: i64, end: i64) -> String {
    format!(
        "/api/v1/query_range?{}",
        query_string(&[
            ("query", q),
            ("start", &start.to_string()),
            ("end", &end.to_string()),
            ("step", "15"),
        ])
    )
}

/// The path and query of an instant query of `q` at `t` (seconds).
pub fn instant_path(q: &str, t: i64) -> String {
    format!(
        "/api/v1/query?{}",
        query_string(&[("query", q), ("time", &t.to_string())])
    )
}

/// The value of the sample `series` (name and labels exactly as the proxy
/// writes them) on `base`'s `/metrics`; 0 when absent.
pub fn metric(base: &str, series: &str) -> f64 {
    let (_, text) = http_get(&format!("{base}/metrics")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Serves `body()` as a Prometheus exposition on a loopback port of its
/// own, made afresh for each scrape; returns its `host:port`.
pub fn exporter_of(body: impl Fn() -> String + Send + 'static) -> String {
    use std::io::Write;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = body();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}
