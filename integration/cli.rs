//! The command line: `--check-config` validates a file without starting.

use crate::proxy_binary;
use std::path::Path;
use std::process::Command;

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(proxy_binary())
        .arg("--check-config")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_valid_file_and_names_the_broken_key_of_another() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prom-ha-proxy.toml");
    let (code, stdout, _) = check(&["--config", example.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("configuration valid: 2 upstreams"),
        "{stdout}"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-config");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, toml, key) in [
        (
            "timeout",
            "[upstreams.a]\nurl='http://a:1'\ntimeout='-5s'\n",
            "upstreams.a.timeout",
        ),
        (
            "queue",
            "max_concurrent_queries=0\n[upstreams.a]\nurl='http://a:1'\n",
            "max_concurrent_queries",
        ),
        (
            "unknown",
            "[upstreams.a]\nurl='http://a:1'\ntimeuot='5s'\n",
            "timeuot",
        ),
        ("none", "listen='127.0.0.1:1'\n", "upstreams"),
        (
            "dns port",
            "[upstreams.a]\nurl='dns+http://prom.test'\n",
            "upstreams.a.url",
        ),
        (
            "srv port",
            "[upstreams.a]\nurl='dnssrv+http://_web._tcp.prom.test:9090'\n",
            "upstreams.a.url",
        ),
        (
            "nameserver",
            "[dns]\nnameservers=['localhost']\n[upstreams.a]\nurl='http://a:1'\n",
            "dns.nameservers",
        ),
    ] {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, toml).unwrap();
        let (code, _, stderr) = check(&["--config", file.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(key), "{name}: {stderr}");
    }
}

/// Starts the proxy for real (no `--check-config`) and returns its exit
/// status and what it printed on stderr.
fn start(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(proxy_binary())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broken_certificates_users_and_yaml_stop_the_start_with_one_line_naming_the_key() {
    use crate::pki::Ca;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad-tls");
    let _ = std::fs::remove_dir_all(&dir);
    let ca = Ca::new(&dir, "ca");
    let good = ca.issue(&dir, "good", &["127.0.0.1"]);
    let other = ca.issue(&dir, "other", &["127.0.0.1"]);
    let (crt, key, other_key) = (
        good.cert_file.display().to_string(),
        good.key_file.display().to_string(),
        other.key_file.display().to_string(),
    );
    let tls = |cert: &str, key: &str| {
        format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    };
    let web_cases = [
        (
            "unreadable",
            tls("/nonexistent/x.crt", &key),
            "tls_server_config.cert_file",
        ),
        (
            "mismatched",
            tls(&crt, &other_key),
            "tls_server_config.cert_file",
        ),
        (
            "plain password",
            "basic_auth_users:\n  grafana: hunter2\n".into(),
            "basic_auth_users.grafana",
        ),
        (
            "client auth",
            tls(&crt, &key) + "  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type",
        ),
        ("yaml", "tls_server_config: [\n".into(), "--web.config.file"),
    ];
    for (case, yml, key) in web_cases {
        let file = dir.join("web.yml");
        std::fs::write(&file, yml).unwrap();
        let (code, stderr) = start(&[
            "--web.config.file",
            file.to_str().unwrap(),
            "http://127.0.0.1:1",
        ]);
        assert_eq!(code, Some(2), "{case}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{case}: {stderr}");
        assert!(stderr.contains(key), "{case}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{case}: {stderr}");
    }
    let toml_cases = [
        (
            "ca",
            "ca_file = '/nonexistent/ca.crt'",
            "upstreams.a.tls.ca_file",
        ),
        (
            "pair",
            &*format!(
                "ca_file = '{}'\ncert_file = '{crt}'\nkey_file = '{other_key}'",
                ca.cert_file.display()
            ),
            "upstreams.a.tls.cert_file",
        ),
        (
            "half",
            &*format!("cert_file = '{crt}'"),
            "upstreams.a.tls.key_file",
        ),
        (
            "version",
            "min_version = 'TLS14'",
            "upstreams.a.tls.min_version",
        ),
    ];
    for (case, table, key) in toml_cases {
        let file = dir.join("proxy.toml");
        std::fs::write(
            &file,
            format!("[upstreams.a]\nurl = 'https://127.0.0.1:1'\n[upstreams.a.tls]\n{table}\n"),
        )
        .unwrap();
        let (code, stderr) = start(&["--config", file.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{case}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{case}: {stderr}");
        assert!(stderr.contains(key), "{case}: {stderr}");
    }
}
