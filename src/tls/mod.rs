//! TLS on both sides, with rustls and its ring provider: no system TLS
//! library. `upstream` builds what the backends connect with; `listener`
//! what the proxy's own port serves. This file holds what both read: PEM
//! files and protocol versions, each failure naming the key at fault.

pub mod listener;
pub mod upstream;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The one crypto provider, named explicitly so no process-wide default is
/// needed (and two linked providers could never make one ambiguous).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; an error if it holds none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), pem_error(e)))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {}", path.display(), pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{}: no PEM private key in it", path.display())
        }
        e => format!("cannot read {}: {}", path.display(), pem_error(e)),
    })
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    rustls::sign::CertifiedKey::from_der(certs, key, &provider())
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "{} and {} do not make a key pair: {e}",
                cert_file.display(),
                key_file.display()
            )
        })
}

/// A store of the CA certificates in a PEM file.
pub fn read_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// A TLS version in Prometheus' spelling (`TLS10` … `TLS13`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn parse(text: &str) -> Result<TlsVersion, String> {
        match text {
            "TLS10" => Ok(TlsVersion::Tls10),
            "TLS11" => Ok(TlsVersion::Tls11),
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            other => Err(format!(
                "unknown TLS version {other:?} (TLS10, TLS11, TLS12 or TLS13)"
            )),
        }
    }
}

/// The protocol versions rustls offers between `min` and `max`. rustls
/// speaks only TLS 1.2 and 1.3, so a minimum of TLS10 or TLS11 means 1.2:
/// nothing older is ever offered, which is what such a minimum allows.
pub fn versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let min = min.unwrap_or(TlsVersion::Tls12);
    let max = max.unwrap_or(TlsVersion::Tls13);
    let chosen: Vec<_> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= min && *v <= max)
    .map(|(_, p)| p)
    .collect();
    if chosen.is_empty() {
        return Err("no TLS version left between min_version and max_version \
                    (this proxy speaks TLS 1.2 and 1.3)"
            .into());
    }
    Ok(chosen)
}

/// Accepts any certificate, still checking that the peer holds its key. For
/// `insecure_skip_verify` towards upstreams and for the client-certificate
/// modes that ask for a certificate without verifying it.
#[derive(Debug)]
pub struct AnyCertificate {
    provider: Arc<CryptoProvider>,
    /// For a listener: whether a client must present one.
    pub mandatory: bool,
}

impl AnyCertificate {
    pub fn new(mandatory: bool) -> Self {
        AnyCertificate {
            provider: provider(),
            mandatory,
        }
    }
}

/// The handshake-signature checks both verifier traits ask for, the same
/// for both: the provider's own.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    signature_checks!();
}

impl rustls::server::danger::ClientCertVerifier for AnyCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    signature_checks!();
}
