//! The answer model: spans into the body an answer arrived in, its series,
//! and why a body is not an answer.

use super::*;
use std::ops::Range;

/// A byte range in an [`Answer`]'s buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub(super) fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// The `resultType` of a query answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultKind {
    Matrix,
    Vector,
    Scalar,
    String,
}

impl ResultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::Matrix => "matrix",
            ResultKind::Vector => "vector",
            ResultKind::Scalar => "scalar",
            ResultKind::String => "string",
        }
    }
}

/// One series of a matrix or vector: ranges into [`Answer`]'s label and sample tables.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: Range<u32>,
    pub floats: Range<u32>,
    pub histograms: Range<u32>,
}

/// A scalar or string result `[ts,"text"]`: its time, raw bytes and unescaped text.
#[derive(Clone, Copy, Debug)]
pub struct Single {
    pub t: i64,
    pub raw: Span,
    pub text: Span,
}

/// A label pair as spans of unescaped text.
#[derive(Clone, Copy, Debug)]
pub struct LabelSpan {
    pub name: Span,
    pub value: Span,
}

/// Why an upstream body is not a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// Not JSON at all, or too large to index with 32-bit offsets.
    Json(String),
    /// JSON, but not shaped like a Prometheus query answer.
    Shape(&'static str),
    /// A well-formed `"status":"error"` answer.
    Status { error_type: String, error: String },
    /// The proxy's own parser broke (a parse thread panicked): no fault of
    /// the body's.
    Panicked(String),
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::Json(e) => write!(f, "body is not valid JSON: {e}"),
            AnswerError::Shape(what) => write!(f, "body is not a Prometheus query answer: {what}"),
            AnswerError::Status { error_type, error } => write!(f, "{error_type}: {error}"),
            AnswerError::Panicked(why) => write!(f, "the proxy's parser panicked: {why}"),
        }
    }
}

impl std::error::Error for AnswerError {}

/// A body holding this panics the parser, in tests only: how a test plants
/// a bug in the proxy's own parser.
#[cfg(test)]
pub const PLANTED_PANIC: &[u8] = b"__a_parser_panic_planted_by_a_test__";

/// A parsed upstream answer (see the module docs).
pub struct Answer {
    pub(super) buf: Vec<u8>,
    pub kind: ResultKind,
    pub labels: Vec<LabelSpan>,
    pub(super) samples: Samples,
    pub series: Vec<Series>,
    /// Scalar or string result.
    pub single: Option<Single>,
    pub warnings: Vec<Span>,
    pub infos: Vec<Span>,
    /// Raw span of `data.stats`, when the client asked for stats.
    pub stats: Option<Span>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("kind", &self.kind)
            .field("series", &self.series.len())
            .field("samples", &self.samples.len())
            .finish()
    }
}

impl Answer {
    /// Parses `body`, which must hold the JSON followed by at least [`PADDING`]
    /// bytes (the parser appends them when missing). Takes the buffer so the
    /// answer can own it.
    pub fn parse(body: Vec<u8>) -> Result<Answer, AnswerError> {
        let len = body.len();
        Self::parse_padded(body, len)
    }

    /// Like [`Answer::parse`] for a buffer whose first `len` bytes are the body
    /// and whose tail is padding of any content.
    pub fn parse_padded(buf: Vec<u8>, len: usize) -> Result<Answer, AnswerError> {
        Self::parse_in_batches(buf, len, BATCH_BYTES)
    }

    /// [`Answer::parse_padded`] with the batch size as a parameter, so tests and
    /// the fuzz target can take the batched path with small bodies.
    #[doc(hidden)]
    pub fn parse_in_batches(
        buf: Vec<u8>,
        len: usize,
        batch_bytes: usize,
    ) -> Result<Answer, AnswerError> {
        Parser::new(batch_bytes).finish(buf, len)
    }

    /// The bytes behind a span.
    #[inline]
    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.buf[span.range()]
    }

    /// The text behind a span that the parser recorded as a string.
    #[inline]
    pub fn text(&self, span: Span) -> &str {
        // Spans of strings come from simd-json, which validated UTF-8.
        std::str::from_utf8(self.bytes(span)).unwrap_or("")
    }

    pub fn series_labels(&self, s: &Series) -> &[LabelSpan] {
        &self.labels[s.labels.start as usize..s.labels.end as usize]
    }

    /// The series' float samples, as indexes for [`Answer::t`] and [`Answer::raw`].
    pub fn floats(&self, s: &Series) -> Range<u32> {
        s.floats.clone()
    }

    /// The series' histogram samples, as indexes like [`Answer::floats`].
    pub fn histograms(&self, s: &Series) -> Range<u32> {
        s.histograms.clone()
    }

    /// Sample `i`'s timestamp in milliseconds.
    #[inline]
    pub fn t(&self, i: u32) -> i64 {
        self.samples.t(i as usize)
    }

    /// The timestamps of the samples `range` (one series' floats, say) into
    /// `out`, emptied first.
    #[inline]
    pub fn times_into(&self, range: Range<u32>, out: &mut Vec<i64>) {
        self.samples
            .times_into(range.start as usize..range.end as usize, out);
    }

    /// The timestamps of the samples `range`.
    #[cfg(test)]
    pub fn times(&self, range: Range<u32>) -> Vec<i64> {
        let mut out = Vec::new();
        self.times_into(range, &mut out);
        out
    }

    /// Sample `i`'s raw bytes, as it was sent.
    #[inline]
    pub fn raw(&self, i: u32) -> &[u8] {
        self.run(i, i)
    }

    /// The bytes from sample `first` to sample `last` of one list, the commas
    /// (and any white space) between them included.
    #[inline]
    pub fn run(&self, first: u32, last: u32) -> &[u8] {
        let start = self.samples.starts[first as usize] as usize;
        // See `Samples`: the last `]` before the next start ends `last`.
        let mut end = self.samples.starts[last as usize + 1] as usize - 1;
        while self.buf[end - 1] != b']' {
            end -= 1;
        }
        &self.buf[start..end]
    }

    /// Everything the merger reads from an answer, as text: for tests that compare two parses.
    #[doc(hidden)]
    pub fn digest(&self) -> Vec<String> {
        let a = self;
        let mut out = vec![format!("{:?}", a.kind)];
        for s in &a.series {
            let labels: Vec<_> = a
                .series_labels(s)
                .iter()
                .map(|l| format!("{}={}", a.text(l.name), a.text(l.value)))
                .collect();
            out.push(labels.join(","));
            for i in a.floats(s).chain(a.histograms(s)) {
                out.push(format!("{} {}", a.t(i), String::from_utf8_lossy(a.raw(i))));
            }
        }
        out.extend(a.warnings.iter().map(|&w| format!("warning {}", a.text(w))));
        out.extend(a.infos.iter().map(|&w| format!("info {}", a.text(w))));
        out.extend(
            a.stats
                .map(|s| String::from_utf8_lossy(a.bytes(s)).into_owned()),
        );
        out
    }

    /// The body buffer and the sample table, emptied, for another answer.
    pub fn into_buffers(self) -> (Vec<u8>, Samples) {
        let (mut buf, mut samples) = (self.buf, self.samples);
        buf.clear();
        samples.clear();
        (buf, samples)
    }

    /// Size of the body this answer was parsed from.
    pub fn body_len(&self) -> usize {
        self.buf.len()
    }

    /// The value of a float sample (for re-applying topk/sort), parsed from its raw bytes.
    pub fn sample_value(&self, i: u32) -> f64 {
        let raw = self.raw(i);
        // raw is `[ts,"v"]`: the value sits between the last two quotes.
        let end = raw.iter().rposition(|&b| b == b'"');
        let start = end.and_then(|e| raw[..e].iter().rposition(|&b| b == b'"'));
        match (start, end) {
            (Some(s), Some(e)) => parse_prom_float(&raw[s + 1..e]),
            _ => f64::NAN,
        }
    }
}

/// Parses a Prometheus sample value ("1.5", "NaN", "+Inf", "-Inf").
pub fn parse_prom_float(bytes: &[u8]) -> f64 {
    match bytes {
        b"+Inf" | b"Inf" => f64::INFINITY,
        b"-Inf" => f64::NEG_INFINITY,
        _ => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN),
    }
}
