//! TLS towards an upstream: `[upstreams.NAME.tls]`, in the names of
//! Prometheus' `tls_config`, and the awc client that speaks it.

use super::{
    AnyCertificate, TlsVersion, certified_key, provider, read_certs, read_key, read_roots,
};
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService};
use awc::http::Uri;
use futures_util::future::LocalBoxFuture;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The settings as configured (paths resolved against the config file's
/// folder); what two configurations are compared by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub min_version: Option<TlsVersion>,
}

/// The settings and the rustls configuration built from them at start-up,
/// so a file that cannot be used stops the start, not a query.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub settings: TlsSettings,
    client: Arc<rustls::ClientConfig>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

/// A setting that cannot be used: the key under `tls.` and why.
pub type TlsError = (&'static str, String);

impl UpstreamTls {
    pub fn build(settings: TlsSettings) -> Result<UpstreamTls, TlsError> {
        let versions =
            super::versions(settings.min_version, None).map_err(|e| ("min_version", e))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .map_err(|e| ("min_version", e.to_string()))?;
        let builder = if settings.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(false)))
        } else {
            builder.with_root_certificates(roots(settings.ca_file.as_ref())?)
        };
        let mut client = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => {
                // Checked as a pair first, for an error that says so.
                certified_key(cert, key).map_err(|e| ("cert_file", e))?;
                let certs = read_certs(cert).map_err(|e| ("cert_file", e))?;
                let key = read_key(key).map_err(|e| ("key_file", e))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| ("key_file", e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(("key_file", "missing: cert_file needs it".into())),
            (None, Some(_)) => return Err(("cert_file", "missing: key_file needs it".into())),
        };
        if let Some(name) = &settings.server_name {
            rustls::pki_types::ServerName::try_from(name.as_str()).map_err(|_| {
                (
                    "server_name",
                    format!("{name:?} is not a DNS name or address"),
                )
            })?;
        }
        // HTTP/1.1 over TLS, as over plain TCP: one connection pool behaviour.
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamTls {
            settings,
            client: Arc::new(client),
        })
    }

    /// What an `https://` URL without a `tls` table uses: the system roots.
    pub fn system() -> Result<UpstreamTls, TlsError> {
        UpstreamTls::build(TlsSettings::default())
    }
}

/// `ca_file`, or the system's CA certificates (read once).
fn roots(ca_file: Option<&PathBuf>) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    if let Some(path) = ca_file {
        return read_roots(path).map(Arc::new).map_err(|e| ("ca_file", e));
    }
    static SYSTEM: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    let store = SYSTEM.get_or_init(|| {
        let mut store = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        log::debug!("{added} system CA certificates");
        Arc::new(store)
    });
    if store.is_empty() {
        return Err((
            "ca_file",
            "no CA certificates in the system store: install ca-certificates or set ca_file".into(),
        ));
    }
    Ok(store.clone())
}

/// The awc client for one upstream: plain, or speaking its TLS settings,
/// with redirects and awc's own timeout off (the deadline is the caller's).
/// `found_as`: for an address found by DNS, the name to verify when the
/// table sets no `server_name`.
pub fn client(tls: Option<&UpstreamTls>, found_as: Option<&str>) -> awc::Client {
    let builder = awc::Client::builder()
        // The deadline is applied around the whole exchange by the caller.
        .disable_timeout()
        // A redirect would take a request to a path the allow-list never
        // chose, on a server the configuration never named.
        .disable_redirects();
    let Some(tls) = tls else {
        return builder.finish();
    };
    let connector = awc::Connector::new().rustls_0_23(tls.client.clone());
    match tls.settings.server_name.as_deref().or(found_as) {
        Some(name) => builder
            .connector(connector.connector(NamedConnector {
                inner: ConnectorService::default(),
                server_name: name.into(),
            }))
            .finish(),
        None => builder.connector(connector).finish(),
    }
}

/// Connects to the URL's address but hands the TLS layer `server_name` as
/// the host, so rustls sends it as SNI and verifies the certificate against
/// it, as Prometheus' `server_name` does.
#[derive(Clone)]
struct NamedConnector {
    inner: ConnectorService,
    server_name: Arc<str>,
}

impl Service<ConnectInfo<Uri>> for NamedConnector {
    type Response = Connection<Uri, actix_web::rt::net::TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let connecting = self.inner.call(req);
        let name = self.server_name.clone();
        Box::pin(async move {
            let (io, uri) = connecting.await?.into_parts();
            Ok(Connection::new(renamed(&uri, &name), io))
        })
    }
}

/// `uri` with its host replaced by `name` (port and path kept).
fn renamed(uri: &Uri, name: &str) -> Uri {
    let host = if name.contains(':') {
        format!("[{name}]")
    } else {
        name.to_string()
    };
    let authority = match uri.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    let mut parts = uri.clone().into_parts();
    match authority.parse() {
        Ok(a) => parts.authority = Some(a),
        Err(_) => return uri.clone(),
    }
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renamed_keeps_port_and_path() {
        let uri: Uri = "https://127.0.0.1:9443/api/v1/query".parse().unwrap();
        let r = renamed(&uri, "prometheus.example");
        assert_eq!(r.host(), Some("prometheus.example"));
        assert_eq!(r.port_u16(), Some(9443));
        assert_eq!(r.path(), "/api/v1/query");
        let v6 = renamed(&uri, "::1");
        assert_eq!(v6.host(), Some("[::1]"));
    }
}
