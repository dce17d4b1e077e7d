//! The listener's web configuration file: the YAML Prometheus and its
//! exporters read with `--web.config.file` (exporter-toolkit), so an
//! operator reuses the file they have. Read and checked once at start-up;
//! certificates are re-read as they change (`tls::listener`).

use crate::tls::TlsVersion;
use crate::tls::listener::{ClientAuth, ServerTls};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub path: PathBuf,
    pub tls: Option<ServerTls>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Added to every response, the 401s included.
    pub headers: Vec<(String, String)>,
}

/// A file that cannot be used: the key at fault within it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfigError {
    pub key: String,
    pub reason: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: RawServerTls,
    #[serde(default)]
    http_server_config: RawHttp,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    rate_limit: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    /// Go stopped reading it in 1.18; read and ignored here too.
    #[allow(dead_code)]
    prefer_server_cipher_suites: Option<bool>,
    cipher_suites: Option<serde_yaml_ng::Value>,
    curve_preferences: Option<serde_yaml_ng::Value>,
    client_allowed_sans: Option<serde_yaml_ng::Value>,
    cert: Option<serde_yaml_ng::Value>,
    key: Option<serde_yaml_ng::Value>,
    client_ca: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// HTTP/2 is offered over TLS by ALPN either way.
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The response headers exporter-toolkit lets a file set, and the values
/// it allows (None: any).
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

fn fail(key: impl Into<String>, reason: impl Into<String>) -> WebConfigError {
    WebConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail("", format!("cannot read {}: {e}", path.display())))?;
        let raw: RawWebConfig = if text.trim().is_empty() {
            RawWebConfig::default()
        } else {
            serde_yaml_ng::from_str(&text)
                .map_err(|e| fail("", format!("not valid YAML: {}", one_line(&e.to_string()))))?
        };
        // Relative paths are read from the file's folder, as Prometheus does.
        let dir = path.parent().unwrap_or(Path::new("."));
        let web = WebConfig {
            path: path.to_path_buf(),
            tls: raw.tls_server_config.resolve(dir)?,
            users: users(raw.basic_auth_users)?,
            headers: headers(raw.http_server_config.headers)?,
        };
        if raw.rate_limit.is_some() {
            return Err(fail(
                "rate_limit",
                "not supported by prom-ha-proxy (see max_queued_queries)",
            ));
        }
        Ok(web)
    }
}

fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

impl RawServerTls {
    fn resolve(self, dir: &Path) -> Result<Option<ServerTls>, WebConfigError> {
        let key = |k: &str| format!("tls_server_config.{k}");
        for (name, set) in [
            ("cipher_suites", self.cipher_suites.is_some()),
            ("curve_preferences", self.curve_preferences.is_some()),
            ("client_allowed_sans", self.client_allowed_sans.is_some()),
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
            ("client_ca", self.client_ca.is_some()),
        ] {
            if set {
                return Err(fail(
                    key(name),
                    "not supported by prom-ha-proxy (rustls picks among its own strong \
                     suites; give certificates as files)",
                ));
            }
        }
        let enabled = self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca_file.is_some()
            || self.client_auth_type.is_some();
        if !enabled {
            return Ok(None);
        }
        let path = |p: Option<String>, name: &str| {
            p.filter(|p| !p.is_empty())
                .map(|p| dir.join(p))
                .ok_or_else(|| fail(key(name), "missing"))
        };
        let version = |v: Option<String>, name: &str| {
            v.map(|v| TlsVersion::parse(&v))
                .transpose()
                .map_err(|e| fail(key(name), e))
        };
        let tls = ServerTls {
            cert_file: path(self.cert_file, "cert_file")?,
            key_file: path(self.key_file, "key_file")?,
            client_auth: ClientAuth::parse(self.client_auth_type.as_deref().unwrap_or(""))
                .map_err(|e| fail(key("client_auth_type"), e))?,
            client_ca_file: self
                .client_ca_file
                .filter(|p| !p.is_empty())
                .map(|p| dir.join(p)),
            min_version: version(self.min_version, "min_version")?,
            max_version: version(self.max_version, "max_version")?,
        };
        tls.check().map_err(|(k, e)| fail(key(k), e))?;
        Ok(Some(tls))
    }
}

fn users(raw: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, WebConfigError> {
    for (user, hash) in &raw {
        if hash.parse::<bcrypt::HashParts>().is_err() {
            // Never the value itself: it may be a password typed in by mistake.
            return Err(fail(
                format!("basic_auth_users.{user}"),
                "not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
            ));
        }
    }
    Ok(raw)
}

fn headers(raw: BTreeMap<String, String>) -> Result<Vec<(String, String)>, WebConfigError> {
    let mut out = Vec::new();
    for (name, value) in raw {
        let key = format!("http_server_config.headers.{name}");
        let Some((canonical, allowed)) =
            HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(&name))
        else {
            return Err(fail(key, "this header cannot be configured"));
        };
        if let Some(allowed) = allowed
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value))
        {
            return Err(fail(key, format!("must be one of {allowed:?}")));
        }
        if actix_web::http::header::HeaderValue::try_from(value.as_str()).is_err() {
            return Err(fail(key, "not a valid header value"));
        }
        out.push((canonical.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
