//! Spellings of a path that a lenient server (Prometheus' Go router, a proxy
//! in front of it) may read as that path: the generator behind the read-only
//! battery. Pure, no dependencies: the integration suite and the unit tests
//! of `src/routes.rs` both include this file.

/// Prometheus' state-changing paths, each with a query string or form some
/// of them need to act (`delete_series` deletes nothing without a matcher).
pub const STATE_CHANGING: [(&str, &str); 9] = [
    ("/api/v1/admin/tsdb/snapshot", ""),
    ("/api/v1/admin/tsdb/delete_series", "match[]=up"),
    ("/api/v1/admin/tsdb/clean_tombstones", ""),
    ("/api/v1/write", ""),
    ("/api/v1/otlp/v1/metrics", ""),
    ("/-/reload", ""),
    ("/-/quit", ""),
    // Reached from an allowed prefix by dot segments.
    ("/api/v1/query/../admin/tsdb/snapshot", ""),
    ("/api/v1/status/../../-/quit", ""),
];

/// The methods each spelling is sent with.
pub const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

fn encode(byte: u8, upper: bool) -> String {
    if upper {
        format!("%{byte:02X}")
    } else {
        format!("%{byte:02x}")
    }
}

/// `path` with the byte at `at` replaced by `with`.
fn replaced(path: &str, at: usize, with: &str) -> String {
    format!("{}{with}{}", &path[..at], &path[at + 1..])
}

/// Every spelling of `path` (ASCII, starting with `/`) this battery sends.
pub fn spellings(path: &str) -> Vec<String> {
    let mut out = vec![path.to_string()];
    let slashes: Vec<usize> = path.match_indices('/').map(|(i, _)| i).collect();
    // One character percent-encoded, upper and lower case, single and double.
    for (at, byte) in path.bytes().enumerate().skip(1) {
        for upper in [true, false] {
            out.push(replaced(path, at, &encode(byte, upper)));
        }
        out.push(replaced(path, at, &format!("%25{:02X}", byte)));
    }
    // Every character after the first slash encoded; every slash encoded.
    let all: String = path.bytes().skip(1).map(|b| encode(b, true)).collect();
    out.push(format!("/{all}"));
    for (with, double) in [("%2F", false), ("%2f", false), ("%252F", true)] {
        let mut s = String::from("/");
        s.push_str(&path[1..].replace('/', with));
        out.push(s);
        if !double {
            out.push(path.replacen('/', with, 1));
        }
    }
    // Dot segments, plain and encoded; doubled and backslashed slashes.
    for &at in slashes.iter().skip(1) {
        for insert in [
            "/.",
            "/./",
            "/x/..",
            "/%2e",
            "/%2E%2E/x",
            "/.%2e/x",
            "/",
            "\\",
            "/\\",
        ] {
            out.push(format!("{}{insert}{}", &path[..at], &path[at..]));
        }
        out.push(replaced(path, at, "\\"));
        out.push(replaced(path, at, "%5C"));
        out.push(replaced(path, at, "%5c"));
    }
    out.push(format!("/{path}"));
    out.push(format!("{path}/"));
    out.push(format!("{path}/."));
    out.push(format!("{path}%2F"));
    out.push(path.replace('/', "\\"));
    // Case changes.
    out.push(path.to_ascii_uppercase());
    let capitalised: Vec<String> = path
        .split('/')
        .map(|s| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    out.push(capitalised.join("/"));
    // Query strings and parameters that some servers split on.
    for tail in ["?x=1", "?/../../", ";x=1", "?", "%3F", "%23", "#x"] {
        out.push(format!("{path}{tail}"));
    }
    out.sort();
    out.dedup();
    out
}
