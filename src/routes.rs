//! The allow-list of served paths, and the discipline every request path
//! passes before it is routed: a raw path and a method in, a decision out.
//! No actix and no I/O here, so the fuzz target and the unit tests exercise
//! the very function the edge calls.
//!
//! Only the paths in [`ENDPOINTS`] are served; everything else is refused
//! before it could reach an upstream. The path sent upstream is built from
//! the entry's pattern and its decoded parameter, never copied from the
//! client's spelling: a client cannot make the proxy ask for a path that is
//! not in the table, however it encodes one.

use crate::merge::meta::MetaKind;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// How an allowed path is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// `/api/v1/query`: every upstream asked, the answers merged by coverage.
    Instant,
    /// `/api/v1/query_range`: likewise.
    Range,
    /// Every upstream asked, the answers' union returned.
    Merged(MetaKind),
    /// Answered by the highest-priority upstream that answers, unchanged.
    Forwarded,
    /// Answered by the proxy itself; never reaches an upstream.
    Local(Local),
}

/// The proxy's own pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    StatusPage,
    Healthy,
    Ready,
    Metrics,
}

/// One served path.
#[derive(Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The path; a `{name}` segment stands for one client-chosen segment.
    pub pattern: &'static str,
    pub handling: Handling,
    /// Prometheus takes a POST here, so a client's POST goes upstream as one.
    /// Elsewhere the upstream is asked with GET, whatever the client used,
    /// the form body's parameters moved into the URL.
    pub upstream_post: bool,
    /// The first Prometheus version that serves it.
    pub since: &'static str,
}

const fn endpoint(
    pattern: &'static str,
    handling: Handling,
    upstream_post: bool,
    since: &'static str,
) -> Endpoint {
    Endpoint {
        pattern,
        handling,
        upstream_post,
        since,
    }
}

use Handling::{Forwarded, Instant, Merged, Range};

/// Every path the proxy serves. A read endpoint a newer Prometheus grows is
/// added here on purpose; nothing is served by default.
pub static ENDPOINTS: &[Endpoint] = &[
    endpoint("/api/v1/query", Instant, true, "2.0"),
    endpoint("/api/v1/query_range", Range, true, "2.0"),
    endpoint("/api/v1/series", Merged(MetaKind::Series), true, "2.0"),
    endpoint("/api/v1/labels", Merged(MetaKind::LabelNames), true, "2.0"),
    endpoint(
        "/api/v1/label/{name}/values",
        Merged(MetaKind::LabelValues),
        false,
        "2.0",
    ),
    endpoint("/api/v1/metadata", Merged(MetaKind::Metadata), false, "2.0"),
    endpoint(
        "/api/v1/targets/metadata",
        Merged(MetaKind::TargetMetadata),
        false,
        "2.0",
    ),
    endpoint(
        "/api/v1/query_exemplars",
        Merged(MetaKind::Exemplars),
        true,
        "2.26",
    ),
    endpoint("/api/v1/rules", Merged(MetaKind::Rules), false, "2.0"),
    endpoint("/api/v1/alerts", Merged(MetaKind::Alerts), false, "2.0"),
    endpoint("/api/v1/targets", Merged(MetaKind::Targets), false, "2.0"),
    endpoint("/api/v1/alertmanagers", Forwarded, false, "2.0"),
    endpoint("/api/v1/scrape_pools", Forwarded, false, "2.42"),
    endpoint("/api/v1/targets/relabel_steps", Forwarded, false, "3.4"),
    endpoint("/api/v1/status/buildinfo", Forwarded, false, "2.14"),
    endpoint("/api/v1/status/runtimeinfo", Forwarded, false, "2.14"),
    endpoint("/api/v1/status/flags", Forwarded, false, "2.0"),
    endpoint("/api/v1/status/config", Forwarded, false, "2.0"),
    endpoint("/api/v1/status/tsdb", Forwarded, false, "2.14"),
    endpoint("/api/v1/status/tsdb/blocks", Forwarded, false, "3.6"),
    endpoint("/api/v1/status/walreplay", Forwarded, false, "2.28"),
    endpoint("/api/v1/notifications", Forwarded, false, "3.0"),
    endpoint("/api/v1/format_query", Forwarded, true, "2.38"),
    endpoint("/api/v1/parse_query", Forwarded, true, "3.0"),
    endpoint("/", Handling::Local(Local::StatusPage), false, "-"),
    endpoint("/-/healthy", Handling::Local(Local::Healthy), false, "-"),
    endpoint("/-/ready", Handling::Local(Local::Ready), false, "-"),
    endpoint("/metrics", Handling::Local(Local::Metrics), false, "-"),
];

/// State-changing paths of Prometheus, as segments: refused with a 403 in any
/// spelling, so an operator sees why (any other path outside the table is a
/// plain 404).
const STATE_CHANGING: [&[&str]; 5] = [
    &["api", "v1", "admin"],
    &["api", "v1", "write"],
    &["api", "v1", "otlp"],
    &["-", "reload"],
    &["-", "quit"],
];

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The path names a state-changing call, however spelled (403).
    ReadOnly,
    /// The path is spelled in a way no client of the API needs (400).
    BadPath(&'static str),
    /// Not an allowed path (404).
    NotFound,
    /// An allowed path, with a method it is not served with (405).
    Method,
}

/// An allowed request: its entry, and the path to ask upstreams for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub endpoint: &'static Endpoint,
    /// Built from the pattern and the decoded parameter, re-encoded.
    pub upstream_path: String,
}

impl Route {
    /// Whether the path sent upstream is this entry's own: its fixed segments
    /// the pattern's, its parameter segment (if any) unreserved characters and
    /// escapes only, and routed again, the same route. The router's promise,
    /// checked by its fuzz target and tests.
    pub fn is_canonical(&self) -> bool {
        let pattern = self.endpoint.pattern.split('/');
        let sent: Vec<&str> = self.upstream_path.split('/').collect();
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"-._~%".contains(&b);
        pattern.clone().count() == sent.len()
            && pattern.zip(&sent).all(|(want, got)| {
                if is_parameter(want) {
                    !got.is_empty() && *got != "." && *got != ".." && got.bytes().all(safe)
                } else {
                    want == *got
                }
            })
            && route("GET", &self.upstream_path).as_ref() == Ok(self)
    }
}

/// Decides what a request for `raw_path` (as it came on the request line,
/// still percent-encoded) with `method` gets.
pub fn route(method: &str, raw_path: &str) -> Result<Route, Refusal> {
    if names_state_changing(raw_path) {
        return Err(Refusal::ReadOnly);
    }
    let segments = disciplined_segments(raw_path)?;
    let endpoint = ENDPOINTS
        .iter()
        .find(|e| matches(e.pattern, &segments))
        .ok_or(Refusal::NotFound)?;
    let allowed = match endpoint.handling {
        Handling::Local(_) => method == "GET",
        _ => method == "GET" || method == "POST",
    };
    if !allowed {
        return Err(Refusal::Method);
    }
    Ok(Route {
        endpoint,
        upstream_path: upstream_path(endpoint.pattern, &segments),
    })
}

/// The path's segments, decoded, if it passes the discipline: no encoded `/`,
/// `.`, `\` or `%`, no control character, no `.` or `..` segment, no empty
/// segment (a doubled or trailing slash), no backslash.
fn disciplined_segments(raw_path: &str) -> Result<Vec<String>, Refusal> {
    let rest = raw_path
        .strip_prefix('/')
        .ok_or(Refusal::BadPath("the path does not start with /"))?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    if raw_path.contains('\\') {
        return Err(Refusal::BadPath("the path holds a backslash"));
    }
    check_escapes(raw_path)?;
    rest.split('/')
        .map(|raw| {
            if raw.is_empty() {
                return Err(Refusal::BadPath(
                    "the path holds an empty segment (a doubled or trailing slash)",
                ));
            }
            if raw == "." || raw == ".." {
                return Err(Refusal::BadPath("the path holds a dot segment"));
            }
            let decoded = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| Refusal::BadPath("the path is not UTF-8 once decoded"))?;
            if decoded.chars().any(char::is_control) {
                return Err(Refusal::BadPath("the path holds a control character"));
            }
            Ok(decoded.into_owned())
        })
        .collect()
}

/// Every `%` starts a valid escape, and none encodes a character that
/// changes how the path splits or decodes.
fn check_escapes(raw_path: &str) -> Result<(), Refusal> {
    let bytes = raw_path.as_bytes();
    for (at, _) in raw_path.match_indices('%') {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        let byte = hex
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(Refusal::BadPath(
                "the path holds a malformed percent escape",
            ))?;
        match byte {
            b'/' => return Err(Refusal::BadPath("the path holds an encoded /")),
            b'.' => return Err(Refusal::BadPath("the path holds an encoded .")),
            b'\\' => return Err(Refusal::BadPath("the path holds an encoded backslash")),
            b'%' => return Err(Refusal::BadPath("the path holds an encoded %")),
            b if b < 0x20 || b == 0x7f => {
                return Err(Refusal::BadPath("the path holds a control character"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the path, decoded as often as it decodes, case folded, with
/// backslashes read as slashes and dot segments resolved, holds one of the
/// state-changing paths.
fn names_state_changing(raw_path: &str) -> bool {
    let mut path = raw_path.to_string();
    // Each round undoes one layer of encoding; a few cover any client and
    // any server in front of an upstream that might decode again.
    for _ in 0..4 {
        let decoded = percent_decode_str(&path).decode_utf8_lossy().into_owned();
        if decoded == path {
            break;
        }
        path = decoded;
    }
    let path = path.to_ascii_lowercase().replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    STATE_CHANGING
        .iter()
        .any(|named| segments.windows(named.len()).any(|w| w == *named))
}

/// The pattern's segments (`{name}` standing for one client segment).
fn pattern_segments(pattern: &str) -> impl Iterator<Item = &str> + Clone {
    pattern.split('/').skip(1).filter(|s| !s.is_empty())
}

fn matches(pattern: &str, segments: &[String]) -> bool {
    let wanted = pattern_segments(pattern);
    wanted.clone().count() == segments.len()
        && wanted.zip(segments).all(|(w, s)| is_parameter(w) || w == s)
}

fn is_parameter(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

/// Everything but the unreserved characters of RFC 3986 is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The pattern with each parameter replaced by the client's decoded segment,
/// re-encoded.
fn upstream_path(pattern: &str, segments: &[String]) -> String {
    let mut path = String::with_capacity(pattern.len() + 16);
    for (wanted, given) in pattern_segments(pattern).zip(segments) {
        path.push('/');
        if is_parameter(wanted) {
            path.extend(utf8_percent_encode(given, SEGMENT));
        } else {
            path.push_str(wanted);
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests;
