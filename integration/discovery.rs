//! Upstreams found in DNS and configurations read again on SIGHUP, against
//! real Prometheus replicas and a real DNS server (dnsmasq) on loopback.

use crate::harness::*;
use crate::{cluster, differences, points, proxy_binary};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A program from PATH or the sbin folders Debian puts servers in.
fn require_server(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    require(program)
}

/// dnsmasq serving `records` (its config lines) on a loopback port.
struct Dns {
    port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl Dns {
    fn start(dir: &Path, records: &str) -> Dns {
        let mut dns = Dns {
            port: free_port(),
            dir: dir.to_path_buf(),
            process: None,
        };
        dns.serve(records);
        dns
    }

    /// (Re)starts the server with these records on the same port.
    fn serve(&mut self, records: &str) {
        self.stop();
        let conf = self.dir.join("dnsmasq.conf");
        std::fs::write(
            &conf,
            format!(
                "port={}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
                 local-ttl=0\n{records}",
                self.port
            ),
        )
        .unwrap();
        let mut cmd = Command::new(require_server("dnsmasq"));
        cmd.arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf.display()))
            .arg("--pid-file=")
            .arg("--user=root")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied(cmd).expect("start dnsmasq");
        let pid = child.id();
        self.process = Some(Process {
            child,
            name: "dnsmasq".into(),
        });
        wait_until("dnsmasq listening", Duration::from_secs(20), || {
            listens_on(pid, self.port)
        });
    }

    fn stop(&mut self) {
        self.process = None;
    }
}

/// SRV records for `_web._tcp.prom.test`: target `prom-i.prom.test` on each port.
fn srv_records(ports: &[(usize, u16)]) -> String {
    ports
        .iter()
        .map(|(i, port)| {
            format!(
                "srv-host=_web._tcp.prom.test,prom-{i}.prom.test,{port},0,0\n\
                 host-record=prom-{i}.prom.test,127.0.0.1\n"
            )
        })
        .collect()
}

fn port_of(p: &Prometheus) -> u16 {
    p.url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Replicas a and b of the shared cluster's data, each missing its own hole.
fn replicas(root: &Path) -> (Prometheus, Prometheus) {
    let tl = cluster().tl;
    start_pair(
        root,
        &openmetrics(&tl, &[tl.hole_a], PHASE_S),
        &openmetrics(&tl, &[tl.hole_b], PHASE_S),
    )
}

fn ask(base: &str, q: &str, t: i64) -> Value {
    let url = format!("{base}/api/v1/query?query={}&time={t}", urlencode(q));
    let (status, body) = http_get(&url).unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `prom_ha_proxy_upstream_up` lines: upstream name → value.
fn upstream_up(base: &str) -> std::collections::BTreeMap<String, f64> {
    let (_, text) = http_get(&format!("{base}/metrics")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("prom_ha_proxy_upstream_up{upstream=\""))
        .filter_map(|rest| {
            let (name, value) = rest.split_once("\"} ")?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

const RAW: &str = "http_requests_total[3h]";

#[test]
fn replicas_named_by_srv_records_fill_each_others_holes_and_follow_the_records() {
    let cl = cluster();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dns-srv");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (a, b) = replicas(&root);
    let (pa, pb) = (port_of(&a), port_of(&b));
    let mut dns = Dns::start(&root, &srv_records(&[(0, pa), (1, pb)]));
    let toml = format!(
        "[dns]\nnameservers = ['127.0.0.1:{}']\nrefresh_interval = '1s'\n\
         [health]\nprobe_interval = '1s'\n\
         [upstreams.k8s]\nurl = 'dnssrv+http://_web._tcp.prom.test'\n",
        dns.port
    );
    let proxy = crate::fake::start_proxy_with_config(proxy_binary(), "dns-srv", &toml);
    let (n0, n1) = (
        format!("k8s/prom-0.prom.test:{pa}"),
        format!("k8s/prom-1.prom.test:{pb}"),
    );
    let both_up = || {
        let up = upstream_up(&proxy.url);
        up.get(&n0) == Some(&1.0) && up.get(&n1) == Some(&1.0)
    };
    wait_until(
        "both replicas found and ready",
        Duration::from_secs(60),
        both_up,
    );

    // Both found, in the SRV targets' order: the holes are filled as from a then b.
    let reference = points(&ask(&cl.reference.url, RAW, cl.tl.end));
    let whole = || points(&ask(&proxy.url, RAW, cl.tl.end));
    assert_eq!(differences(&whole(), &reference), vec![]);

    let queries = QueryLoop::default();
    std::thread::scope(|s| {
        // The loop ends with the test, whether it passes or panics.
        let _stop = queries.stopper();
        s.spawn(|| {
            let url = format!("{}/api/v1/query?query=count(up)", proxy.url);
            queries.run("while the records changed", Duration::ZERO, || {
                http_get(&url)
            });
        });
        // b's record removed: dropped from the upstreams.
        dns.serve(&srv_records(&[(0, pa)]));
        wait_until("prom-1 dropped", Duration::from_secs(30), || {
            !upstream_up(&proxy.url).contains_key(&n1)
        });
        let alone = points(&ask(&proxy.url, RAW, cl.tl.end));
        let a_alone = points(&ask(&a.url, RAW, cl.tl.end));
        assert_eq!(differences(&alone, &a_alone), vec![], "a alone now");
        // Back: used once ready, the holes filled again.
        dns.serve(&srv_records(&[(0, pa), (1, pb)]));
        wait_until("prom-1 back and ready", Duration::from_secs(30), both_up);
        assert_eq!(differences(&whole(), &reference), vec![]);
        // The DNS server stops: lookups fail, the last set stays in use.
        dns.stop();
        let failures = proxy_metric(&proxy.url, "prom_ha_proxy_dns_lookup_failures_total");
        wait_until("lookups failing", Duration::from_secs(30), || {
            proxy_metric(&proxy.url, "prom_ha_proxy_dns_lookup_failures_total") >= failures + 2.0
        });
        assert!(both_up(), "{:?}", upstream_up(&proxy.url));
        assert_eq!(differences(&whole(), &reference), vec![]);
        queries.stop();
    });
    assert!(queries.ok() > 10);
    assert_eq!(queries.failed(), 0);
}

#[test]
fn addresses_of_a_dns_name_are_upstreams_of_their_own() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dns-a");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let a = &cluster().a;
    let dns = Dns::start(&root, "host-record=prom.test,127.0.0.1\n");
    let toml = format!(
        "[dns]\nnameservers = ['127.0.0.1:{}']\nrefresh_interval = '1s'\n\
         [upstreams.pair]\nurl = 'dns+http://prom.test:{}'\n",
        dns.port,
        port_of(a)
    );
    let proxy = crate::fake::start_proxy_with_config(proxy_binary(), "dns-a", &toml);
    let name = format!("pair/127.0.0.1:{}", port_of(a));
    wait_until("the address found", Duration::from_secs(60), || {
        upstream_up(&proxy.url).contains_key(&name)
    });
    let t = cluster().tl.end;
    let got = points(&ask(&proxy.url, "sum(up)", t));
    assert_eq!(
        differences(&got, &points(&ask(&a.url, "sum(up)", t))),
        vec![]
    );
}

/// Sends the proxy SIGHUP.
fn hangup(proxy: &Proxy) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(proxy.process.child.id() as i32, libc::SIGHUP) };
}

fn reload_toml(pair: &(Prometheus, Prometheus), first: &str, second: &str, dead: &str) -> String {
    let (a, b) = (&pair.0.url, &pair.1.url);
    format!(
        "[health]\nprobe_interval = '1h'\n\
         [upstreams.a]\nurl = '{a}'\npriority = {first}\n\
         [upstreams.b]\nurl = '{b}'\npriority = {second}\n\
         [upstreams.dead]\nurl = '{dead}'\npriority = 3\n"
    )
}

#[test]
fn sighup_swaps_priorities_refuses_a_broken_file_and_keeps_unchanged_upstreams() {
    let cl = cluster();
    // Down from its first probe; it counts the probes it is sent.
    let dead = crate::fake::start(crate::fake::Behaviour::Answer(503, "down".into()));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sighup");
    // Gap-free replicas whose scrapes sit 7 and 11 s into each interval:
    // where both are complete, the sample times show whose answer won.
    let tl = cl.tl;
    let pair = start_pair(&dir, &openmetrics(&tl, &[], 7), &openmetrics(&tl, &[], 11));
    let toml = reload_toml(&pair, "1", "2", &dead.url);
    let proxy = crate::fake::start_proxy_with_config(proxy_binary(), "sighup", &toml);
    let file = dir.join("proxy.toml");
    let probes = || {
        dead.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("GET /-/ready"))
            .count()
    };
    wait_until(
        "the dead upstream marked down",
        Duration::from_secs(30),
        || upstream_up(&proxy.url).get(&dead.url) == Some(&0.0),
    );
    assert_eq!(probes(), 1);
    assert_eq!(
        proxy_metric(&proxy.url, "prom_ha_proxy_config_last_reload_successful"),
        1.0
    );

    // Ages, not timestamps: the comparison's relative tolerance would call
    // two times near 1.8e9 seconds 4 s apart equal.
    let t = tl.end - 3600;
    let q = &format!("{t} - timestamp(http_requests_total)");
    let (from_a, from_b) = (
        points(&ask(&pair.0.url, q, t)),
        points(&ask(&pair.1.url, q, t)),
    );
    assert!(
        !differences(&from_a, &from_b).is_empty(),
        "a and b differ at {t}"
    );
    assert_eq!(
        differences(&points(&ask(&proxy.url, q, t)), &from_a),
        vec![]
    );

    std::fs::write(&file, reload_toml(&pair, "2", "1", &dead.url)).unwrap();
    hangup(&proxy);
    wait_until("b wins after the reload", Duration::from_secs(30), || {
        differences(&points(&ask(&proxy.url, q, t)), &from_b).is_empty()
    });
    // The unchanged upstream kept its backend: still down, not probed anew.
    assert_eq!(upstream_up(&proxy.url).get(&dead.url), Some(&0.0));
    assert_eq!(
        probes(),
        1,
        "a reload must not restart an unchanged upstream"
    );

    std::fs::write(&file, "[upstreams.a\nurl = ").unwrap();
    hangup(&proxy);
    wait_until("the broken file refused", Duration::from_secs(30), || {
        proxy_metric(&proxy.url, "prom_ha_proxy_config_last_reload_successful") == 0.0
    });
    assert_eq!(
        differences(&points(&ask(&proxy.url, q, t)), &from_b),
        vec![]
    );
    assert_eq!(upstream_up(&proxy.url).len(), 3);
}

#[test]
fn an_srv_target_over_https_is_verified_by_its_name() {
    use crate::pki::Ca;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dns-https");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // The replica's certificate names the SRV target only, not its address.
    let ca = Ca::new(&root, "ca");
    let cert = ca.issue(&root, "prom-0", &["prom-0.prom.test"]);
    let web = root.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            cert.cert_file.display(),
            cert.key_file.display()
        ),
    )
    .unwrap();
    let tl = cluster().tl;
    let insecure = ureq::tls::TlsConfig::builder()
        .disable_verification(true)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(insecure)
        .build()
        .into();
    let replica = Prometheus::start_reached(
        "tls",
        &root.join("replica"),
        &openmetrics(&tl, &[], PHASE_S),
        NO_SCRAPES,
        &[&format!("--web.config.file={}", web.display())],
        &Reach::tls(agent),
    );
    let dns = Dns::start(&root, &srv_records(&[(0, port_of(&replica))]));
    let toml = format!(
        "[dns]\nnameservers = ['127.0.0.1:{}']\nrefresh_interval = '1s'\n\
         [upstreams.k8s]\nurl = 'dnssrv+https://_web._tcp.prom.test'\n\
         [upstreams.k8s.tls]\nca_file = '{}'\n",
        dns.port,
        ca.cert_file.display()
    );
    let proxy = crate::fake::start_proxy_with_config(proxy_binary(), "dns-https", &toml);
    let name = format!("k8s/prom-0.prom.test:{}", port_of(&replica));
    wait_until(
        "the https target found and ready",
        Duration::from_secs(60),
        || upstream_up(&proxy.url).get(&name) == Some(&1.0),
    );
    let got = ask(&proxy.url, "sum(up)", tl.end);
    assert!(got.get("warnings").is_none(), "{got}");
    let want = ask(&cluster().reference.url, "sum(up)", tl.end);
    assert_eq!(differences(&points(&got), &points(&want)), vec![]);
}
