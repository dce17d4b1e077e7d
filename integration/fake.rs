//! A tiny fake upstream, only for what a real Prometheus will not do on
//! demand: answer garbage, hang, and show exactly what it was sent.

#![allow(dead_code)]

use crate::harness::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the fake answers every request.
#[derive(Clone)]
pub enum Behaviour {
    /// HTTP status and body.
    Answer(u16, String),
    /// Accept, read the request, never answer.
    Hang,
    /// The proxy's coverage queries one way, every other request another.
    Split {
        coverage: Box<Behaviour>,
        main: Box<Behaviour>,
    },
    /// Promise a long body, then send a byte every 100 ms, forever.
    Trickle,
    /// Promise a long body, send the start of it, then reset the connection.
    ResetMidBody,
    /// Answer `Answer(200, body)` after this many milliseconds.
    Delay(u64, String),
    /// Answer 302 with this `Location` (a misconfigured or hostile server).
    Redirect(String),
    /// `/-/ready` answers 503 until `ready` is set (a replica replaying its
    /// WAL, say, that already answers queries); everything else `then`.
    Gated {
        ready: Arc<std::sync::atomic::AtomicBool>,
        then: Box<Behaviour>,
    },
    /// Queries (`/api/v1/query…`) get `first` the first `times` times
    /// (counted across connections), `then` after; anything else `first`.
    Then {
        first: Box<Behaviour>,
        times: usize,
        then: Box<Behaviour>,
        asked: Arc<std::sync::atomic::AtomicUsize>,
    },
}

impl Behaviour {
    /// `first` for the first `times` queries, `then` after.
    pub fn then(first: Behaviour, times: usize, then: Behaviour) -> Behaviour {
        Behaviour::Then {
            first: Box::new(first),
            times,
            then: Box::new(then),
            asked: Arc::default(),
        }
    }

    /// Answer like `Answer(200, body)`, but fail the proxy's coverage queries with a 422.
    pub fn fail_coverage(body: String) -> Behaviour {
        Behaviour::Split {
            coverage: Box::new(Behaviour::Answer(
                422,
                r#"{"status":"error","errorType":"execution","error":"coverage refused"}"#.into(),
            )),
            main: Box::new(Behaviour::Answer(200, body)),
        }
    }
}

pub struct Fake {
    pub url: String,
    /// Every request received: head and body as text.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// When each request arrived and when its answer was written, as
    /// `received …`/`answered …` and the request line (` coverage` added
    /// for the proxy's coverage queries): one clock for every fake, so the
    /// order of events across fakes shows what the proxy waited for.
    pub timeline: Timeline,
}

pub type Timeline = Arc<Mutex<Vec<(std::time::Instant, String)>>>;

/// The request line of a request, and whether it is a coverage query.
fn event(what: &str, request: &str) -> String {
    let line = request.lines().next().unwrap_or_default();
    let coverage = if request.contains("__prom_ha_proxy_coverage__") {
        " coverage"
    } else {
        ""
    };
    format!("{what} {line}{coverage}")
}

impl Fake {
    /// When the first event matching `what` (`received`/`answered`, the
    /// path, `coverage` or not) happened.
    pub fn first(&self, what: &str, path: &str, coverage: bool) -> Option<std::time::Instant> {
        self.timeline
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| {
                e.starts_with(what) && e.contains(path) && e.ends_with(" coverage") == coverage
            })
            .map(|(t, _)| *t)
    }
}

pub fn start(behaviour: Behaviour) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let timeline = Timeline::default();
    let (seen, events) = (requests.clone(), timeline.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (behaviour, seen, events) = (behaviour.clone(), seen.clone(), events.clone());
            std::thread::spawn(move || serve(stream, behaviour, seen, events));
        }
    });
    Fake {
        url,
        requests,
        timeline,
    }
}

fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    seen: Arc<Mutex<Vec<String>>>,
    events: Timeline,
) {
    loop {
        let Some(request) = read_request(&mut stream) else {
            return;
        };
        let now = std::time::Instant::now();
        events
            .lock()
            .unwrap()
            .push((now, event("received", &request)));
        seen.lock().unwrap().push(request.clone());
        let answered = || {
            let now = std::time::Instant::now();
            events
                .lock()
                .unwrap()
                .push((now, event("answered", &request)));
        };
        let behaviour = match &behaviour {
            Behaviour::Split { coverage, .. } if request.contains("__prom_ha_proxy_coverage__") => {
                (**coverage).clone()
            }
            Behaviour::Split { main, .. } => (**main).clone(),
            other => other.clone(),
        };
        let behaviour = match behaviour {
            Behaviour::Gated { ready, then } => {
                let probe = request.starts_with("GET ") && request.contains("/-/ready");
                if probe && !ready.load(std::sync::atomic::Ordering::SeqCst) {
                    Behaviour::Answer(503, "replaying the WAL".into())
                } else {
                    *then
                }
            }
            Behaviour::Then {
                first,
                times,
                then,
                asked,
            } => {
                let query = request.contains(" /api/v1/query");
                if query && asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= times {
                    *then
                } else {
                    *first
                }
            }
            other => other,
        };
        // Probes of /-/ready get a plain 200 from the slow and breaking fakes,
        // so that the fault is met by a query, not skipped as down.
        let probe = request.starts_with("GET ") && request.contains("/-/ready");
        let behaviour = match behaviour {
            Behaviour::Trickle
            | Behaviour::ResetMidBody
            | Behaviour::Delay(..)
            | Behaviour::Redirect(_)
                if probe =>
            {
                Behaviour::Answer(200, "ready".into())
            }
            other => other,
        };
        match &behaviour {
            Behaviour::Split { .. } | Behaviour::Then { .. } | Behaviour::Gated { .. } => {
                unreachable!("resolved above")
            }
            Behaviour::Trickle => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for _ in 0..36_000 {
                    if stream.write_all(b" ").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                return;
            }
            Behaviour::ResetMidBody => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
                let _ = stream.write_all(head.as_bytes());
                let _ = stream
                    .write_all(br#"{"status":"success","data":{"resultType":"vector","result":["#);
                let _ = stream.flush();
                // SO_LINGER 0: close sends a reset, not a graceful end.
                let _ = socket_linger_zero(&stream);
                return;
            }
            Behaviour::Delay(ms, body) => {
                std::thread::sleep(Duration::from_millis(*ms));
                if respond(&mut stream, 200, body).is_err() {
                    return;
                }
                answered();
            }
            Behaviour::Hang => {
                std::thread::sleep(Duration::from_secs(3600));
                return;
            }
            Behaviour::Answer(status, body) => {
                if respond(&mut stream, *status, body).is_err() {
                    return;
                }
                answered();
            }
            Behaviour::Redirect(location) => {
                let head = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

/// How many queries (not probes) the fake was sent.
pub fn query_count(fake: &Fake) -> usize {
    fake.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains("/api/v1/query"))
        .count()
}

/// Writes a whole answer with its status and a JSON body.
fn respond(stream: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

fn socket_linger_zero(stream: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized option.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// Sends raw bytes to `base` (http://host:port) and returns the response head.
pub fn raw_request(base: &str, request: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    text.split("\r\n\r\n").next().unwrap_or("").to_string()
}

/// Starts the proxy where no upstream can answer, waiting only for its port.
pub fn start_proxy_without_readiness(binary: &Path, upstreams: &[&str]) -> Proxy {
    start_proxy_with(binary, upstreams, &[])
}

/// Starts the proxy on a configuration file with this TOML text, kept in the
/// test target directory under `name` (so a failed test's config can be read).
pub fn start_proxy_with_config(binary: &Path, name: &str, toml: &str) -> Proxy {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("proxy.toml");
    std::fs::write(&config, toml).unwrap();
    start_proxy_with(binary, &[], &["--config", config.to_str().unwrap()])
}

pub fn start_proxy_with(binary: &Path, upstreams: &[&str], args: &[&str]) -> Proxy {
    on_a_free_port(|port| try_start_proxy_with(binary, port, upstreams, args))
}

/// Starts the proxy on `port`, waiting for the port alone; an error if what
/// listens there is not this proxy (`listens_on`).
fn try_start_proxy_with(
    binary: &Path,
    port: u16,
    upstreams: &[&str],
    args: &[&str],
) -> Result<Proxy, String> {
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .args(upstreams)
        .env("RUST_LOG", "warn")
        // Fakes test what is asked of upstreams: every ask reaches them.
        .env(crate::harness::NO_CACHE.0, crate::harness::NO_CACHE.1)
        .stdout(std::process::Stdio::null());
    let child = spawn_tied(cmd).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let proxy = Proxy {
        url,
        process: Process {
            child,
            name: "proxy".into(),
        },
    };
    wait_until("proxy port", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if !listens_on(proxy.process.child.id(), port) {
        return Err(format!("proxy: port {port} is another process's"));
    }
    Ok(proxy)
}

/// POSTs a raw form body; returns (status, body).
pub fn post_raw(url: &str, form: &str) -> (u16, String) {
    let mut resp = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(form.as_bytes())
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}
