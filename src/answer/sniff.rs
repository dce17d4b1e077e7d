//! Body sniffers: what is known of an answer without parsing it.

pub(super) const SERIES_START: &[u8] = b"{\"metric\":";
pub(super) const SERIES_BOUNDARY: &[u8] = b"},{\"metric\":";

/// How Prometheus opens a query answer that succeeded, up to its result type.
pub(super) const SUCCESS_HEAD: &[u8] = br#"{"status":"success","data":{"resultType":""#;

/// Whether `body` opens as a Prometheus query answer that succeeded does, with
/// a result type the proxy knows, and ends as a JSON object does: all that is
/// checked of an answer sent on as it came (the HTTP framing said it is
/// whole; what lies between is the upstream's own encoding).
pub fn looks_like_success(body: &[u8]) -> bool {
    let Some(kind) = body.strip_prefix(SUCCESS_HEAD) else {
        return false;
    };
    let known = ["matrix", "vector", "scalar", "string"]
        .iter()
        .any(|k| kind.starts_with(k.as_bytes()) && kind.get(k.len()) == Some(&b'"'));
    known && body.trim_ascii_end().ends_with(b"}")
}

/// Whether `body` is a successful vector or matrix answer of no series, as
/// Prometheus encodes one (`"result":[]` right after the result type).
pub fn holds_no_result(body: &[u8]) -> bool {
    body.strip_prefix(SUCCESS_HEAD).is_some_and(|rest| {
        rest.starts_with(br#"vector","result":[]"#) || rest.starts_with(br#"matrix","result":[]"#)
    })
}
