//! Certificates made at test time with rcgen: CAs, and server and client
//! certificates they sign, written as PEM files. Shared by the unit tests
//! (`src/web_config/tests.rs`) and the integration tests.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// A certificate authority whose certificate is in `cert_file`.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_file: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its certificate written into `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        std::fs::create_dir_all(dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_file = dir.join(format!("{name}.crt"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            cert_file,
        }
    }

    /// A certificate for `names` (DNS names or addresses), signed by this CA;
    /// usable by a server and a client alike.
    pub fn issue(&self, dir: &Path, file_stem: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, file_stem);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert_file: dir.join(format!("{file_stem}.crt")),
            key_file: dir.join(format!("{file_stem}.key")),
        };
        std::fs::write(&issued.cert_file, cert.pem()).unwrap();
        std::fs::write(&issued.key_file, key.serialize_pem()).unwrap();
        issued
    }
}
