//! TLS on the proxy's own port: `tls_server_config` of a Prometheus web
//! configuration file, served by rustls. The certificate and key are
//! re-read when their files change, so a certificate rotated in place
//! (cert-manager) is served to the next connection, with no restart and
//! no connection dropped.

use super::{AnyCertificate, TlsVersion, certified_key, provider, read_roots};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Go's `tls.ClientAuthType`, in the spellings Prometheus accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    pub fn parse(text: &str) -> Result<ClientAuth, String> {
        Ok(match text {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // The second spelling is an old one Prometheus still reads.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => {
                return Err(format!(
                    "unknown client_auth_type {other:?} (NoClientCert, RequestClientCert, \
                     RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
                ));
            }
        })
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// `tls_server_config`, checked: files readable and matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

/// A setting that cannot be used: the key under `tls_server_config.` and why.
pub type TlsError = (&'static str, String);

impl ServerTls {
    /// Reads every file once, so a broken one stops the start.
    pub fn check(&self) -> Result<(), TlsError> {
        self.server_config().map(|_| ())
    }

    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let versions =
            super::versions(self.min_version, self.max_version).map_err(|e| ("min_version", e))?;
        let certs = ReloadingCert::new(self.cert_file.clone(), self.key_file.clone())
            .map_err(|e| ("cert_file", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .map_err(|e| ("min_version", e.to_string()))?
            .with_client_cert_verifier(self.client_verifier()?)
            .with_cert_resolver(Arc::new(certs));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    fn client_verifier(
        &self,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
        let auth = self.client_auth;
        match (&self.client_ca_file, auth.verifies()) {
            (Some(_), false) if auth == ClientAuth::NoClientCert => {
                return Err((
                    "client_ca_file",
                    "set without a client_auth_type that asks for certificates".into(),
                ));
            }
            (None, true) => {
                return Err((
                    "client_ca_file",
                    format!("missing: client_auth_type {auth:?} verifies against it"),
                ));
            }
            _ => {}
        }
        Ok(match auth {
            ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
            ClientAuth::RequestClientCert => Arc::new(AnyCertificate::new(false)),
            ClientAuth::RequireAnyClientCert => Arc::new(AnyCertificate::new(true)),
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
                let path = self.client_ca_file.as_ref().expect("checked above");
                let roots = read_roots(path).map_err(|e| ("client_ca_file", e))?;
                let builder = WebPkiClientVerifier::builder_with_provider(roots.into(), provider());
                let builder = if auth == ClientAuth::VerifyClientCertIfGiven {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                builder
                    .build()
                    .map_err(|e| ("client_ca_file", e.to_string()))?
            }
        })
    }
}

/// What identifies a file's content without reading it.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Serves the certificate in `cert_file`, and a new one once the files
/// change and hold a matching pair again (a half-written rotation keeps
/// the old one until the other file follows).
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Mutex<(Stamp, Stamp, Arc<CertifiedKey>)>,
}

impl ReloadingCert {
    fn new(cert_file: PathBuf, key_file: PathBuf) -> Result<ReloadingCert, String> {
        let (cs, ks) = (stamp(&cert_file), stamp(&key_file));
        let key = certified_key(&cert_file, &key_file)?;
        Ok(ReloadingCert {
            cert_file,
            key_file,
            current: Mutex::new((cs, ks, key)),
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    // Two stats a handshake: far below the handshake's own cost.
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let (cs, ks) = (stamp(&self.cert_file), stamp(&self.key_file));
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if (cs, ks) != (current.0, current.1) {
            match certified_key(&self.cert_file, &self.key_file) {
                Ok(key) => {
                    log::info!(
                        "serving the new certificate in {}",
                        self.cert_file.display()
                    );
                    *current = (cs, ks, key);
                }
                Err(e) => log::warn!("keeping the certificate served so far: {e}"),
            }
        }
        Some(current.2.clone())
    }
}
