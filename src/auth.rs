//! Basic authentication on the listener, from `basic_auth_users` of the
//! web configuration file. Once users are configured every path needs
//! credentials, as in Prometheus.
//!
//! Checking a bcrypt hash costs milliseconds of CPU, so a verified
//! password is remembered per user and later requests compare against it
//! in constant time; only a credential never seen before pays for bcrypt,
//! on the blocking pool, never on a server thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A hash of no one's password, checked when the user is unknown, so an
/// unknown user costs what a wrong password does and the timing tells no
/// one which users exist.
const NOBODY: &str = "$2b$10$P9ftv4R4dp1XX7t1C8dV7eBKGxdsbdrkgzt40Cu.WUv9Yk45T3smG";

/// The configured users and the passwords already verified for them.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashMap<String, Vec<u8>>>,
}

/// What the header alone tells.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// A credential not seen before: bcrypt must decide ([`BasicAuth::verify`]).
    Unknown {
        user: String,
        password: Vec<u8>,
    },
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth {
            users,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Judges an `Authorization` header (or its absence) without bcrypt.
    pub fn judge(&self, header: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = header.and_then(decode) else {
            return Verdict::Denied;
        };
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        match verified.get(&user) {
            Some(known) if equal(known, &password) => Verdict::Allowed,
            _ => Verdict::Unknown { user, password },
        }
    }

    /// The slow check: bcrypt against the user's hash. Remembers a success.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.as_str(), true),
            None => (NOBODY, false),
        };
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            verified.insert(user.to_string(), password.to_vec());
        }
        ok
    }
}

/// `Basic base64(user:password)` into its parts.
fn decode(header: &[u8]) -> Option<(String, Vec<u8>)> {
    use base64::Engine;
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = raw.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

/// Compares without stopping at the first difference.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
        .into_bytes()
    }

    fn auth() -> BasicAuth {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        BasicAuth::new(BTreeMap::from([("grafana".to_string(), hash)]))
    }

    #[test]
    fn a_verified_password_is_remembered_and_nothing_else() {
        let auth = auth();
        let right = header("grafana", "s3cret");
        let Verdict::Unknown { user, password } = auth.judge(Some(&right)) else {
            panic!("first sight must need bcrypt");
        };
        assert!(auth.verify(&user, &password));
        assert_eq!(auth.judge(Some(&right)), Verdict::Allowed);
        // A wrong password for a known user is never taken from the cache.
        let wrong = header("grafana", "s3creT");
        let Verdict::Unknown { user, password } = auth.judge(Some(&wrong)) else {
            panic!("a wrong password must go to bcrypt");
        };
        assert!(!auth.verify(&user, &password));
        assert_eq!(auth.judge(Some(&right)), Verdict::Allowed);
    }

    #[test]
    fn unknown_users_missing_and_malformed_headers_are_refused() {
        let auth = auth();
        assert!(!auth.verify("nobody", b"s3cret"));
        assert!(!auth.verify("nobody", b"anything"));
        for bad in [
            None,
            Some(b"Bearer abc".as_slice()),
            Some(b"Basic !!!not-base64"),
            Some(b"Basic Z3JhZmFuYQ=="), // "grafana", no colon
        ] {
            assert_eq!(auth.judge(bad), Verdict::Denied, "{bad:?}");
        }
    }

    #[test]
    fn the_decoy_hash_is_a_bcrypt_hash() {
        assert!(NOBODY.parse::<bcrypt::HashParts>().is_ok());
        assert!(!bcrypt::verify("", NOBODY).unwrap());
    }
}
