use super::*;

#[path = "../../integration/pki.rs"]
mod pki;

/// A folder with a CA, a server certificate it signed, and another key.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::Ca::new(dir.path(), "ca");
        assert!(ca.cert_file.exists());
        ca.issue(dir.path(), "server", &["localhost", "127.0.0.1"]);
        ca.issue(dir.path(), "other", &["localhost"]);
        Files { dir }
    }

    /// Loads a web configuration file of this text from the folder.
    fn load(&self, yaml: &str) -> Result<WebConfig, WebConfigError> {
        let path = self.dir.path().join("web.yml");
        std::fs::write(&path, yaml).unwrap();
        WebConfig::load(&path)
    }

    fn error(&self, yaml: &str) -> WebConfigError {
        self.load(yaml).expect_err("must be refused")
    }
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

#[test]
fn a_full_file_is_read_with_paths_from_its_folder() {
    let f = Files::new();
    let hash = bcrypt::hash("pw", 4).unwrap();
    let web = f
        .load(&format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
             min_version: TLS12\n  prefer_server_cipher_suites: true\n\
             basic_auth_users:\n  grafana: {hash}\n\
             http_server_config:\n  http2: true\n  headers:\n    x-frame-options: deny\n"
        ))
        .unwrap();
    let tls = web.tls.expect("tls");
    assert_eq!(tls.cert_file, f.dir.path().join("server.crt"));
    assert_eq!(tls.client_ca_file, Some(f.dir.path().join("ca.crt")));
    assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
    assert_eq!(web.users.get("grafana"), Some(&hash));
    assert_eq!(
        web.headers,
        vec![("X-Frame-Options".to_string(), "deny".to_string())]
    );
}

#[test]
fn an_empty_file_is_plain_http_for_everyone() {
    let web = Files::new().load("").unwrap();
    assert_eq!((web.tls, web.users.len()), (None, 0));
}

#[test]
fn each_bad_file_names_its_key() {
    let f = Files::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "basic_auth_users:\n  grafana: hunter2\n",
            "basic_auth_users.grafana",
            "bcrypt",
        ),
        (
            &format!("{TLS}  client_auth_type: MaybeClientCert\n"),
            "tls_server_config.client_auth_type",
            "unknown client_auth_type",
        ),
        ("tls_server_config: [unclosed\n", "", "not valid YAML"),
        ("tls_server_confg:\n  cert_file: x\n", "", "unknown field"),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
            "tls_server_config.cert_file",
            "do not make a key pair",
        ),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
            "tls_server_config.cert_file",
            "cannot read",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n",
            "tls_server_config.key_file",
            "missing",
        ),
        (
            &format!("{TLS}  client_ca_file: ca.crt\n"),
            "tls_server_config.client_ca_file",
            "without a client_auth_type",
        ),
        (
            &format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"),
            "tls_server_config.client_ca_file",
            "missing",
        ),
        (
            &format!("{TLS}  min_version: TLS13\n  max_version: TLS12\n"),
            "tls_server_config.min_version",
            "no TLS version left",
        ),
        (
            "http_server_config:\n  headers:\n    Server: me\n",
            "http_server_config.headers.Server",
            "cannot be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "http_server_config.headers.X-Frame-Options",
            "must be one of",
        ),
        (
            &format!("{TLS}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            "tls_server_config.cipher_suites",
            "not supported",
        ),
    ];
    for (yaml, key, reason) in cases {
        let e = f.error(yaml);
        assert_eq!(&e.key, key, "{yaml}: {e:?}");
        assert!(e.reason.contains(reason), "{yaml}: {e:?}");
        assert!(!e.reason.contains('\n'), "{yaml}: one line: {e:?}");
        assert!(
            !e.reason.contains("hunter2"),
            "a password never shows: {e:?}"
        );
    }
}
