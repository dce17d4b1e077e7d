//! TLS and authentication on both sides, against real Prometheus 2.42
//! servers started with `--web.config.file`, certificates made by rcgen at
//! test time.

use crate::harness::*;
use crate::pki::{Ca, Issued};
use crate::{cluster, differences, points, proxy_binary};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Two CAs, and what they signed, in a folder of the test's own.
struct Certs {
    dir: PathBuf,
    ca: Ca,
    other_ca: Ca,
    /// For the proxy's listener and replica b: 127.0.0.1.
    server: Issued,
    /// For replica a: a name only, reached with `server_name`.
    named: Issued,
    /// The proxy's client certificate, for mutual TLS.
    client: Issued,
}

fn certs(tag: &str) -> Certs {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = Ca::new(&dir, "ca");
    let other_ca = Ca::new(&dir, "other-ca");
    Certs {
        server: ca.issue(&dir, "server", &["127.0.0.1", "localhost"]),
        named: ca.issue(&dir, "named", &["prometheus-a.test"]),
        client: ca.issue(&dir, "client", &["prom-ha-proxy"]),
        dir,
        ca,
        other_ca,
    }
}

/// An agent that trusts only `cas`, showing `client` if given.
fn trusting(cas: &[&Path], client: Option<&Issued>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let pem = |p: &Path| std::fs::read(p).unwrap();
    let roots: Vec<Certificate<'static>> = cas
        .iter()
        .map(|p| Certificate::from_pem(&pem(p)).unwrap().to_owned())
        .collect();
    let client = client.map(|c| {
        let cert = Certificate::from_pem(&pem(&c.cert_file))
            .unwrap()
            .to_owned();
        let key = PrivateKey::from_pem(&pem(&c.key_file)).unwrap().to_owned();
        ClientCert::new_with_certs(&[cert], key)
    });
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&roots))
        .client_cert(client)
        .build();
    agent_with(tls)
}

/// An agent as the harness's, speaking `tls`.
fn agent_with(tls: ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .tls_config(tls)
        .build()
        .into()
}

fn reach(agent: ureq::Agent, user: &str, password: &str) -> Reach {
    Reach::tls(agent).user(user, password)
}

/// Writes a Prometheus web configuration file: TLS with `tls`, the users
/// given (bcrypt-hashed here), and `extra` lines under `tls_server_config`.
fn web_yml(dir: &Path, name: &str, tls: &Issued, extra: &str, users: &[(&str, &str)]) -> PathBuf {
    let mut yml = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{extra}",
        tls.cert_file.display(),
        tls.key_file.display()
    );
    if !users.is_empty() {
        yml.push_str("basic_auth_users:\n");
        for (user, password) in users {
            let hash = bcrypt::hash(password, 6).unwrap();
            yml.push_str(&format!("  {user}: '{hash}'\n"));
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, yml).unwrap();
    path
}

fn warnings(v: &Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The instant query across both holes, asked as Grafana asks: a POST form.
fn ask(reach: &Reach, base: &str, q: &str, t: i64) -> Value {
    let t = t.to_string();
    let (status, body) = reach
        .post_form(
            &format!("{base}/api/v1/query"),
            &[("query", q), ("time", &t)],
        )
        .unwrap();
    assert_eq!(status, 200, "{base}: {body}");
    serde_json::from_str(&body).unwrap()
}

const RAW: &str = "http_requests_total[3h]";

/// Replicas a and b of the shared cluster's data, each behind TLS and basic
/// auth; a also demands a client certificate from the test CA.
fn tls_replicas(c: &Certs) -> (Prometheus, Prometheus) {
    let tl = cluster().tl;
    let web_a = web_yml(
        &c.dir,
        "web-a.yml",
        &c.named,
        &format!(
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
            c.ca.cert_file.display()
        ),
        &[("prom", "pw-a")],
    );
    let web_b = web_yml(&c.dir, "web-b.yml", &c.server, "", &[("prom", "pw-b")]);
    let (om_a, om_b) = (
        openmetrics(&tl, &[tl.hole_a], PHASE_S),
        openmetrics(&tl, &[tl.hole_b], PHASE_S),
    );
    let flag = |p: &Path| format!("--web.config.file={}", p.display());
    let (fa, fb) = (flag(&web_a), flag(&web_b));
    // a's certificate names no address: the test reaches it by name.
    let reach_a = reach(
        trusting(&[&c.ca.cert_file], Some(&c.client)),
        "prom",
        "pw-a",
    );
    let reach_a = Reach {
        agent: Some(named_agent(c)),
        ..reach_a
    };
    let reach_b = reach(trusting(&[&c.ca.cert_file], None), "prom", "pw-b");
    std::thread::scope(|s| {
        let a = s.spawn(|| {
            Prometheus::start_reached("a", &c.dir.join("a"), &om_a, NO_SCRAPES, &[&fa], &reach_a)
        });
        let b =
            Prometheus::start_reached("b", &c.dir.join("b"), &om_b, NO_SCRAPES, &[&fb], &reach_b);
        (a.join().unwrap(), b)
    })
}

/// For the harness's own checks on replica a, whose certificate names
/// `prometheus-a.test` and no address: the client certificate, and no
/// name check (the proxy's check of the name is what the test is about).
fn named_agent(c: &Certs) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, TlsConfig};
    let pem = |p: &Path| std::fs::read(p).unwrap();
    let cert = Certificate::from_pem(&pem(&c.client.cert_file))
        .unwrap()
        .to_owned();
    let key = PrivateKey::from_pem(&pem(&c.client.key_file))
        .unwrap()
        .to_owned();
    let tls = TlsConfig::builder()
        .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
        .disable_verification(true)
        .build();
    agent_with(tls)
}

/// The proxy's TOML: a over mutual TLS by name, b over TLS, both with
/// basic auth; `a_tls` is a's `tls` table (paths relative to the file).
fn proxy_toml(
    c: &Certs,
    name: &str,
    a: &Prometheus,
    b: &Prometheus,
    a_tls: &str,
    web: &str,
) -> PathBuf {
    let toml = format!(
        "{web}\
         [upstreams.a]\nurl = '{}'\npriority = 1\nbasic_auth = {{ username = 'prom', password = 'pw-a' }}\n\
         [upstreams.a.tls]\n{a_tls}\n\
         [upstreams.b]\nurl = '{}'\npriority = 2\nbasic_auth = {{ username = 'prom', password = 'pw-b' }}\n\
         [upstreams.b.tls]\nca_file = 'ca.crt'\n",
        a.url, b.url
    );
    let path = c.dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

const A_TLS: &str = "ca_file = 'ca.crt'\ncert_file = 'client.crt'\nkey_file = 'client.key'\n\
                     server_name = 'prometheus-a.test'";

#[test]
fn tls_replicas_behind_basic_auth_fill_each_others_holes_through_a_tls_listener() {
    let cl = cluster();
    let c = certs("replicas");
    let (a, b) = tls_replicas(&c);
    let web = web_yml(
        &c.dir,
        "proxy-web.yml",
        &c.server,
        "",
        &[("grafana", "gpw")],
    );
    std::fs::write(
        &web,
        std::fs::read_to_string(&web).unwrap()
            + "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
    )
    .unwrap();
    let toml = proxy_toml(
        &c,
        "proxy.toml",
        &a,
        &b,
        A_TLS,
        "web_config_file = 'proxy-web.yml'\n",
    );
    let grafana = reach(trusting(&[&c.ca.cert_file], None), "grafana", "gpw");
    let proxy = Proxy::start_reached(
        proxy_binary(),
        &["--config", toml.to_str().unwrap()],
        &grafana,
    );
    assert!(proxy.url.starts_with("https://"), "{}", proxy.url);

    // Through TLS both ways, each replica's hole is filled from the other.
    let got = ask(&grafana, &proxy.url, RAW, cl.tl.end);
    let want = ask(&Reach::default(), &cl.reference.url, RAW, cl.tl.end);
    assert_eq!(warnings(&got), Vec::<String>::new());
    assert_eq!(differences(&points(&got), &points(&want)), vec![]);
    for replica in [&a, &b] {
        let alone = ask(&replica.reach, &replica.url, RAW, cl.tl.end);
        assert!(
            differences(&points(&alone), &points(&want)).len() > 10,
            "each has a hole"
        );
    }
    // The health probes go the same way: both stay up.
    let (status, metrics) = grafana.get(&format!("{}/metrics", proxy.url)).unwrap();
    assert_eq!(status, 200);
    let up: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("prom_ha_proxy_upstream_up"))
        .collect();
    assert!(
        up.len() == 2 && up.iter().all(|l| l.ends_with(" 1")),
        "{up:?}"
    );

    assert_guarded(&proxy, &c, &grafana);
    assert_scraped_over_tls(&proxy, &c);
}

/// Every path needs the credentials; the answers carry the configured header.
fn assert_guarded(proxy: &Proxy, c: &Certs, grafana: &Reach) {
    let agent = trusting(&[&c.ca.cert_file], None);
    for (path, auth) in [
        ("/api/v1/query?query=1", Some("Basic Z3JhZmFuYTp3cm9uZw==")), // grafana:wrong
        ("/api/v1/query?query=1", None),
        ("/-/ready", None),
        ("/-/healthy", None),
        ("/metrics", None),
        ("/", None),
    ] {
        let mut req = agent.get(&format!("{}{path}", proxy.url));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let resp = req.call().unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path} {auth:?}");
        let h = resp.headers();
        assert_eq!(h.get("www-authenticate").unwrap(), "Basic", "{path}");
        assert_eq!(
            h.get("x-content-type-options").unwrap(),
            "nosniff",
            "{path}"
        );
    }
    let (status, page) = grafana.get(&format!("{}/", proxy.url)).unwrap();
    assert_eq!(status, 200);
    for secret in ["$2", "pw-a", "pw-b", "gpw", "BEGIN"] {
        assert!(!page.contains(secret), "the status page shows {secret:?}");
    }
    // Plain HTTP to the TLS port gets no answer at all.
    let plain = proxy.url.replace("https://", "http://");
    let r = http_get(&format!("{plain}/-/ready"));
    assert!(r.is_err(), "plain HTTP was answered: {r:?}");
}

/// A real Prometheus scrapes the proxy's /metrics over https, with the CA
/// and credentials in its own scrape config, and reports the target up.
fn assert_scraped_over_tls(proxy: &Proxy, c: &Certs) {
    let dir = c.dir.join("scraper");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let target = proxy.url.trim_start_matches("https://");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: proxy\n  scheme: https\n  \
             tls_config:\n    ca_file: {}\n  basic_auth:\n    username: grafana\n    password: gpw\n  \
             static_configs:\n  - targets: ['{target}']\n",
            c.ca.cert_file.display()
        ),
    )
    .unwrap();
    let scraper = on_a_free_port(|port| Ok::<_, String>(Prometheus::spawn("scraper", &dir, port)));
    let last = std::cell::RefCell::new(String::new());
    wait_until_or(
        "the scraper reports the proxy up",
        Duration::from_secs(60),
        || {
            let url = format!("{}/api/v1/targets", scraper.url);
            *last.borrow_mut() = http_get(&url).map(|(_, b)| b).unwrap_or_default();
            last.borrow().contains("\"health\":\"up\"")
        },
        || last.borrow().clone(),
    );
}

#[test]
fn a_failed_handshake_leaves_that_upstream_out_with_a_warning_naming_the_tls_error() {
    let cl = cluster();
    let c = certs("refused");
    let (a, b) = tls_replicas(&c);
    let b_alone = ask(&b.reach, &b.url, RAW, cl.tl.end);
    for (case, a_tls, error) in [
        (
            "no client certificate",
            "ca_file = 'ca.crt'\nserver_name = 'prometheus-a.test'",
            "BadCertificate",
        ),
        (
            "a certificate from another CA",
            "ca_file = 'other-ca.crt'\ncert_file = 'client.crt'\nkey_file = 'client.key'\n\
             server_name = 'prometheus-a.test'",
            "UnknownIssuer",
        ),
        (
            "a certificate for another name",
            "ca_file = 'ca.crt'\ncert_file = 'client.crt'\nkey_file = 'client.key'",
            "not valid for name",
        ),
    ] {
        let toml = proxy_toml(&c, "proxy.toml", &a, &b, a_tls, "");
        let proxy = Proxy::start(proxy_binary(), &[], &["--config", toml.to_str().unwrap()]);
        let got = ask(&Reach::default(), &proxy.url, RAW, cl.tl.end);
        // Never data from a: the answer is b's own, hole and all.
        assert_eq!(
            differences(&points(&got), &points(&b_alone)),
            vec![],
            "{case}"
        );
        let w = warnings(&got);
        let prefix = format!("upstream {}: ", a.url);
        assert!(
            w.iter()
                .any(|w| w.starts_with(&prefix) && w.contains(error)),
            "{case}: {w:?} lacks {prefix}…{error}"
        );
    }
    // insecure_skip_verify takes a's certificate from any CA, for any name
    // (its key is still checked in the handshake): both answer again.
    let a_tls = "ca_file = 'other-ca.crt'\ncert_file = 'client.crt'\nkey_file = 'client.key'\n\
                 insecure_skip_verify = true";
    let toml = proxy_toml(&c, "proxy.toml", &a, &b, a_tls, "");
    let proxy = Proxy::start(proxy_binary(), &[], &["--config", toml.to_str().unwrap()]);
    let got = ask(&Reach::default(), &proxy.url, RAW, cl.tl.end);
    let want = ask(&Reach::default(), &cl.reference.url, RAW, cl.tl.end);
    assert_eq!(warnings(&got), Vec::<String>::new());
    assert_eq!(differences(&points(&got), &points(&want)), vec![]);
}

#[test]
fn a_certificate_replaced_in_place_is_served_to_new_connections_and_no_request_fails() {
    let cl = cluster();
    let c = certs("rotation");
    let (live_crt, live_key) = (c.dir.join("live.crt"), c.dir.join("live.key"));
    std::fs::copy(&c.server.cert_file, &live_crt).unwrap();
    std::fs::copy(&c.server.key_file, &live_key).unwrap();
    let live = Issued {
        cert_file: live_crt.clone(),
        key_file: live_key.clone(),
    };
    let web = web_yml(&c.dir, "web.yml", &live, "", &[]);
    let both = Reach::tls(trusting(&[&c.ca.cert_file, &c.other_ca.cert_file], None));
    let proxy = Proxy::start_reached(
        proxy_binary(),
        &["--web.config.file", web.to_str().unwrap(), &cl.b.url],
        &both,
    );
    let fresh = |ca: &Path| {
        let r = Reach::tls(trusting(&[ca], None));
        r.get(&format!("{}/-/ready", proxy.url))
            .is_ok_and(|(s, _)| s == 200)
    };
    assert!(fresh(&c.ca.cert_file) && !fresh(&c.other_ca.cert_file));

    let queries = QueryLoop::default();
    std::thread::scope(|s| {
        let _stop = queries.stopper();
        s.spawn(|| {
            let url = format!("{}/api/v1/query?query=count(up)", proxy.url);
            queries.run("during rotation", Duration::ZERO, || both.get(&url));
        });
        let passed = |n: usize| {
            let from = queries.ok();
            wait_until("queries answered", Duration::from_secs(60), || {
                queries.ok() >= from + n
            });
        };
        passed(20);
        // As cert-manager does: new files moved over the old, key first.
        let rotated = c.other_ca.issue(&c.dir, "next", &["127.0.0.1"]);
        std::fs::rename(&rotated.key_file, &live_key).unwrap();
        std::fs::rename(&rotated.cert_file, &live_crt).unwrap();
        wait_until(
            "new connections see the new certificate",
            Duration::from_secs(30),
            || fresh(&c.other_ca.cert_file),
        );
        assert!(
            !fresh(&c.ca.cert_file),
            "the old certificate is still served"
        );
        passed(20);
        queries.stop();
    });
    assert_eq!(queries.failed(), 0);
}
