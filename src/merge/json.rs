//! Writing JSON the way Prometheus (Go's encoding/json rules) writes it.
//!
//! Only strings need care: label names, label values and warnings reach the
//! merger unescaped, so they are escaped again here with Go's rules (HTML
//! characters and U+2028/U+2029 as `\u` escapes), which makes a one-upstream
//! answer byte-identical to the upstream's own.

/// Appends `s` as a JSON string literal, quotes included.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_text(out, s.as_bytes())
}

/// Appends text held as bytes (label names and values, which the parser
/// found to be UTF-8 without their being checked again) as a JSON string
/// literal. Bytes that are not UTF-8 after all are written as U+FFFD.
pub fn write_text(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Without an early exit, so that the check compiles to vector compares.
    if !bytes.iter().fold(false, |any, &b| any | needs_escape(b)) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    let (s, bytes) = (&*text, text.as_bytes());
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let short: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            _ => None,
        };
        let needs_u = matches!(
            c,
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}'
        );
        if short.is_none() && !needs_u {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match short {
            Some(esc) => out.extend_from_slice(esc),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let cp = c as u32;
                out.extend_from_slice(b"\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[((cp >> shift) & 0xf) as usize]);
                }
            }
        }
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[inline]
fn needs_escape(b: u8) -> bool {
    // 0xE2 starts U+2028/U+2029; checking the lead byte keeps the fast path exact.
    (b < 0x20) | (b == b'"') | (b == b'\\') | (b == b'<') | (b == b'>') | (b == b'&') | (b == 0xE2)
}

/// Appends a label set as a JSON object, `{"name":"value",…}`, in the pairs' order.
pub fn write_labels(out: &mut Vec<u8>, pairs: &[(&[u8], &[u8])]) {
    write_seq(out, b'{', b'}', pairs, |out, (name, value)| {
        write_text(out, name);
        out.push(b':');
        write_text(out, value);
    });
}

/// Appends `open`, each item written by `each` with commas between, and `close`.
pub fn write_seq<T>(
    out: &mut Vec<u8>,
    open: u8,
    close: u8,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut Vec<u8>, T),
) {
    out.push(open);
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(close);
}

/// Appends a Prometheus error answer.
pub fn write_error(out: &mut Vec<u8>, error_type: &str, error: &str) {
    out.extend_from_slice(b"{\"status\":\"error\",\"errorType\":");
    write_str(out, error_type);
    out.extend_from_slice(b",\"error\":");
    write_str(out, error);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(esc("plain"), "\"plain\"");
        assert_eq!(esc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(esc("x<y>&z"), r#""x\u003cy\u003e\u0026z""#);
        assert_eq!(esc("\n\t\u{1}"), r#""\n\t\u0001""#);
        assert_eq!(esc("\u{2028}é€"), "\"\\u2028é€\"");
    }

    #[test]
    fn error_answer_is_valid_json() {
        let mut out = Vec::new();
        write_error(&mut out, "bad_data", "no \"query\"");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"status":"error","errorType":"bad_data","error":"no \"query\""}"#
        );
    }
}
