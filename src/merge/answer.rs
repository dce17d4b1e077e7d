//! One upstream's parsed answer: the body buffer it arrived in, plus byte
//! spans into that buffer for every label, sample and warning.
//!
//! This is the form that crosses actor mailboxes. A borrowed simd-json tape
//! cannot outlive the `&mut` borrow of its buffer, so the parser walks the tape
//! once, together with simd-json's structural index (the byte offset of every
//! `{ } [ ] , :` and of every scalar), and records plain `u32` offsets. The
//! merger later turns those offsets back into `&str`/`&[u8]` slices of the same
//! buffer: labels and values are never copied into owned strings.
//!
//! simd-json unescapes strings in place, so a label span covers the unescaped
//! text (re-escaped on output). Sample spans cover the raw bytes of
//! `[ts,"value"]`, which are written out unchanged; the parser checks that
//! those bytes held no escape sequence (Prometheus never escapes numbers).

use simd_json::{Buffers, Node, StaticNode, Tape};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// Extra bytes the parser needs after the body (simd-json reads in blocks).
pub const PADDING: usize = simd_json::INPUT_PADDING;

/// Above this size, a body's series are parsed a batch of about this many
/// bytes at a time (see [`Parser`]): the tape and the structural index then
/// stay this small and in cache, instead of costing three times the body.
pub const BATCH_BYTES: usize = 256 * 1024;

/// A byte range in an [`Answer`]'s buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
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

/// Every sample of an answer, in 8 bytes each (a large answer holds millions):
/// its timestamp in milliseconds (for ordering and eligibility), and where the
/// raw bytes `[ts,"v"]` or `[ts,{histogram}]` it was sent as start in the body.
///
/// Times are kept as 32-bit offsets while they fit: from about 2 days
/// before the table's first time to 47 days after it (a range answer's
/// series each start near its first time). The first that does not turns
/// the table wide, 64 bits a time (12 bytes a sample), for good. The narrow
/// form saves a third of what a large answer's table costs.
///
/// Its end is not stored: only white space and one comma may stand between a
/// sample's closing `]` and the next sample, so it is the last `]` before the
/// next start. Each list of samples (a series' `values`, say) is followed by
/// one extra entry whose start is just past its last sample's `]` plus one,
/// as if a comma followed, so the last sample's end is found the same way.
#[derive(Default)]
pub struct Samples {
    times: Times,
    starts: Vec<u32>,
}

enum Times {
    /// Times less `base` (the first time pushed plus [`SKEW`]; [`NO_BASE`]
    /// before it); [`LIST_END`] closes a list.
    Narrow { base: i64, offsets: Vec<i32> },
    /// Every time, whole; `i64::MIN` closes a list.
    Wide(Vec<i64>),
}

impl Default for Times {
    fn default() -> Times {
        Times::Narrow {
            base: NO_BASE,
            offsets: Vec::new(),
        }
    }
}

/// A narrow table's mark for the entry that closes a list.
const LIST_END: i32 = i32::MIN;

/// A narrow table's base before its first time.
const NO_BASE: i64 = i64::MIN;

/// How far past the first time narrow offsets count from (23 days in ms):
/// a range's times lie mostly after its first.
const SKEW: i64 = 23 * 86_400_000;

impl Samples {
    fn len(&self) -> u32 {
        self.starts.len() as u32
    }

    fn reserve(&mut self, more: usize) {
        match &mut self.times {
            Times::Narrow { offsets, .. } => offsets.reserve(more),
            Times::Wide(times) => times.reserve(more),
        }
        self.starts.reserve(more);
    }

    fn push(&mut self, t: i64, start: u32) {
        self.push_time(t);
        self.starts.push(start);
    }

    fn push_time(&mut self, t: i64) {
        if let Times::Narrow { base, offsets } = &mut self.times {
            if t == i64::MIN {
                offsets.push(LIST_END);
                return;
            }
            if *base == NO_BASE {
                *base = t.saturating_add(SKEW).max(NO_BASE + 1);
            }
            let offset = t.checked_sub(*base).and_then(|d| i32::try_from(d).ok());
            if let Some(d) = offset.filter(|&d| d != LIST_END) {
                offsets.push(d);
                return;
            }
            self.widen();
        }
        if let Times::Wide(times) = &mut self.times {
            times.push(t);
        }
    }

    /// Turns the table wide: every time so far, whole.
    fn widen(&mut self) {
        if let Times::Narrow { base, offsets } = &self.times {
            let mut wide = Vec::with_capacity(offsets.capacity());
            wide.extend(offsets.iter().map(|&d| whole(*base, d)));
            self.times = Times::Wide(wide);
        }
    }

    /// Entry `i`'s time (`i64::MIN` for one that closes a list).
    #[inline]
    fn t(&self, i: usize) -> i64 {
        match &self.times {
            Times::Narrow { base, offsets } => whole(*base, offsets[i]),
            Times::Wide(times) => times[i],
        }
    }

    /// The times of entries `range` into `out` (emptied first).
    fn times_into(&self, range: Range<usize>, out: &mut Vec<i64>) {
        out.clear();
        match &self.times {
            Times::Narrow { base, offsets } => {
                out.extend(offsets[range].iter().map(|&d| whole(*base, d)))
            }
            Times::Wide(times) => out.extend_from_slice(&times[range]),
        }
    }

    /// Appends `other`'s entries (spans are body offsets: they stay).
    fn append(&mut self, other: &Samples) {
        self.reserve(other.len() as usize);
        for i in 0..other.len() as usize {
            self.push_time(other.t(i));
        }
        self.starts.extend_from_slice(&other.starts);
    }

    /// Closes a list of samples whose last one ended at `end` (0: none).
    fn close_list(&mut self, end: u32) {
        self.push(i64::MIN, end + 1);
    }

    /// Empties the table, keeping its memory for the next answer (a wide
    /// one is narrow again, in the room its times had).
    pub fn clear(&mut self) {
        let offsets = match std::mem::take(&mut self.times) {
            Times::Narrow { mut offsets, .. } => {
                offsets.clear();
                offsets
            }
            Times::Wide(times) => Vec::with_capacity(times.capacity() * 2),
        };
        self.times = Times::Narrow {
            base: NO_BASE,
            offsets,
        };
        self.starts.clear();
    }

    /// The bytes the table holds room for.
    pub fn capacity_bytes(&self) -> usize {
        let times = match &self.times {
            Times::Narrow { offsets, .. } => offsets.capacity() * 4,
            Times::Wide(times) => times.capacity() * 8,
        };
        times + self.starts.capacity() * 4
    }
}

/// A narrow offset as a whole time.
#[inline]
fn whole(base: i64, d: i32) -> i64 {
    if d == LIST_END {
        i64::MIN
    } else {
        base + d as i64
    }
}

/// Where a [`Parser`] gets an empty sample table that served an earlier
/// answer, for a body large enough to be parsed in batches: its pages are
/// mapped already, so filling it costs no page faults (a fresh table for a
/// 38 MB answer takes some 5,000 of them).
pub trait SpareTables: Send + Sync {
    fn spare_table(&self) -> Option<Samples>;

    /// simd-json's working memory left by an earlier answer parsed whole, if any.
    fn spare_scratch(&self) -> Option<Scratch> {
        None
    }

    /// Takes back the working memory of an answer parsed whole (or drops it).
    fn keep_scratch(&self, scratch: Scratch) {
        drop(scratch);
    }
}

/// simd-json's working memory (its buffers and a tape), reused from one
/// input to the next. A body parsed whole borrows it from [`SpareTables`]:
/// new, it is about six times the body in fresh pages (1.3 MB for a 200 KB
/// answer), each faulted in and zeroed, then given back to the kernel when
/// freed. A body parsed in batches has one small set for its batches (and one
/// on its worker thread), used batch after batch.
pub struct Scratch {
    buffers: Buffers,
    tape: Tape<'static>,
    /// The longest body it has parsed, which its buffers have grown to hold.
    grown_for: usize,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("grown_for", &self.grown_for)
            .finish()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            buffers: Buffers::default(),
            tape: Tape::null(),
            grown_for: 0,
        }
    }
}

impl Scratch {
    /// The longest input its buffers were grown for (they hold about six
    /// times that: tape, structural index, string buffer).
    pub fn grown_for(&self) -> usize {
        self.grown_for
    }

    /// Runs simd-json over `input[..len]` and hands `read` a walker over the
    /// tape, its spans placed by `place`; returns what `read` gives and the
    /// offsets that must hold a closing quote (see [`Walker::raw_str`]).
    fn walk<T>(
        &mut self,
        input: &mut [u8],
        len: usize,
        place: Place,
        read: impl FnOnce(&mut Walker<'_, '_>) -> Result<T, AnswerError>,
    ) -> Result<(T, Vec<u32>), AnswerError> {
        self.grown_for = self.grown_for.max(len);
        let mut tape = std::mem::replace(&mut self.tape, Tape::null()).reset();
        let base = input.as_ptr() as usize;
        simd_json::fill_tape_padded(input, len, &mut self.buffers, &mut tape)
            .map_err(json_error)?;
        let mut walker = Walker::new(&tape.0, self.buffers.structural_indexes(), base, place);
        let read = read(&mut walker);
        let deferred = std::mem::take(&mut walker.deferred_quotes);
        drop(walker);
        self.tape = tape.reset();
        Ok((read?, deferred))
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
    buf: Vec<u8>,
    pub kind: ResultKind,
    pub labels: Vec<LabelSpan>,
    samples: Samples,
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

#[derive(Default)]
struct Index {
    kind: Option<ResultKind>,
    saw_result: bool,
    /// Body offset of the first element of `data.result`.
    first_series: Option<u32>,
    /// The kind the result's shape implies, when it can tell (an empty array
    /// could be a vector or a matrix); set by every series, batched or not.
    shape: Option<ResultKind>,
    labels: Vec<LabelSpan>,
    samples: Samples,
    series: Vec<Series>,
    single: Option<Single>,
    warnings: Vec<Span>,
    infos: Vec<Span>,
    stats: Option<Span>,
}

impl Index {
    /// Takes in `part`, series parsed from batches after this index's: its
    /// labels and samples go at the end of this index's tables (spans are
    /// body offsets already), its series, their ranges moved, onto `later`,
    /// to follow this index's own. `part` is left empty, its memory kept.
    fn adopt(&mut self, part: &mut Index, later: &mut Vec<Series>) {
        let labels = self.labels.len() as u32;
        let samples = self.samples.len();
        let moved = |r: &Range<u32>, by: u32| r.start + by..r.end + by;
        later.extend(part.series.iter().map(|s| Series {
            labels: moved(&s.labels, labels),
            floats: moved(&s.floats, samples),
            histograms: moved(&s.histograms, samples),
        }));
        self.labels.extend_from_slice(&part.labels);
        self.samples.append(&part.samples);
        if let Some(shape) = part.shape.take() {
            self.shape = Some(shape);
        }
        part.series.clear();
        part.labels.clear();
        part.samples.clear();
    }
}

/// Walks the tape and the structural index in step. The tape has one node per
/// value; the structural index has one entry per value *and* per `,` `:` and
/// closing bracket, which the walker consumes where the grammar puts them.
struct Walker<'a, 'de> {
    nodes: &'a [Node<'de>],
    structurals: &'a [u32],
    /// Address of the text simd-json parsed; `place` maps offsets in it to the body.
    base: usize,
    place: Place,
    n: usize,
    s: usize,
    /// Body offsets that must hold a closing quote (see [`Walker::raw_str`]).
    deferred_quotes: Vec<u32>,
}

/// Where the text simd-json parsed sits in the body: `offset` bytes in, with
/// the body's offsets jumping by `gap` from `gap_at` on (the envelope of a
/// batched parse is the body with its middle series cut out).
#[derive(Clone, Copy)]
struct Place {
    offset: u32,
    gap_at: u32,
    gap: u32,
}

impl Place {
    const WHOLE: Place = Place::at(0);

    const fn at(offset: u32) -> Place {
        Place {
            offset,
            gap_at: u32::MAX,
            gap: 0,
        }
    }

    #[inline]
    fn body(self, pos: u32) -> u32 {
        let gap = if pos >= self.gap_at { self.gap } else { 0 };
        pos + self.offset + gap
    }
}

fn json_error(e: simd_json::Error) -> AnswerError {
    AnswerError::Json(e.to_string())
}

/// Parses an answer as its body arrives, a batch of whole series at a time.
///
/// A large body's `data.result` is cut into batches of about `batch_bytes`,
/// each parsed by simd-json on its own, in place, as the JSON array
/// `[s1,...,sn]` (its first `,` or `[` and its last `,` briefly overwritten
/// with `[` and `]`), reusing one small tape. Cuts are found with `memmem` on
/// `},{"metric":`: in valid JSON that text cannot sit inside a string (a
/// string's `"` after `{` would end it and leave `metric` bare), so each match
/// is a `,` between two objects of one array, the second keyed "metric".
///
/// Every byte is still checked by simd-json: the batches, and the rest, the
/// "envelope" (everything before the first series, then the last series and
/// everything after it), parsed from a copy that must be an answer whose
/// `data.result` starts exactly where the cut-out series were. A body that is
/// not compact JSON, has fewer than two series or is at most `batch_bytes`
/// long is parsed whole at the end.
///
/// Batches complete while the body arrives ([`Parser::feed`]) are parsed by a
/// [`BatchWorker`] thread from copies, so the thread reading the body only
/// reads, cuts and copies, and the parse of a large body runs beside its
/// transfer on another core. What is left at [`Parser::finish`] is parsed in
/// place there, once the worker is done.
pub struct Parser {
    batch_bytes: usize,
    index: Index,
    /// The `[` opening `data.result`, once found.
    first: Option<u32>,
    /// Where the next batch starts: `first`, or the `,` that ended the last one.
    open: u32,
    /// The last series boundary seen.
    last: Option<u32>,
    /// Where the search for the next boundary resumes.
    scanned: usize,
    /// The first series did not follow a `[`: parse whole.
    whole: bool,
    batches: usize,
    /// For the batches parsed in place and the envelope.
    scratch: Scratch,
    deferred: Vec<u32>,
    /// Parses the batches cut while the body arrives; started by the first.
    worker: Option<BatchWorker>,
    /// No worker thread could be started: every batch is parsed in place.
    in_place: bool,
    /// At the end: batches are cut into this list, to be parsed after.
    cuts: Option<Vec<(usize, usize)>>,
    spares: Option<Arc<dyn SpareTables>>,
}

/// Batches handed to a [`BatchWorker`] and not yet parsed, at most: the
/// reader's copies stay this small however far the worker falls behind (past
/// it, cutting waits for the next feed).
const BATCHES_QUEUED: usize = 4;

/// A batch of series copied out of the body: `bytes` holds `[s1,...,sn]`
/// (body bytes `open..=close`, the two ends replaced) and simd-json's padding.
struct Batch {
    open: usize,
    bytes: Vec<u8>,
}

/// What a [`BatchWorker`] hands back while it runs.
enum Back {
    /// A batch held escapes, so unescaping rewrote strings in the copy; the
    /// body must hold the same text, as the spans read the body.
    Unescaped(Batch),
    /// A batch's copy, parsed, for the next batch to be copied into.
    Spent(Vec<u8>),
    Failed(AnswerError),
}

/// A thread of its own that parses [`Batch`]es in order into an [`Index`]
/// of body offsets, exactly as [`Parser::batch`] would in place.
struct BatchWorker {
    batches: Option<mpsc::Sender<Batch>>,
    back: mpsc::Receiver<Back>,
    /// Copies the worker is done with (at most [`BATCHES_QUEUED`] or so), so
    /// the copies of a body take a few allocations, not one per batch.
    spent: Vec<Vec<u8>>,
    sent: usize,
    parsed: Arc<AtomicUsize>,
    /// Set when the parser is dropped unfinished: the thread stops after the
    /// batch at hand instead of parsing what is queued.
    cancel: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Parsed, AnswerError>>>,
}

/// What a [`BatchWorker`] parsed: the index, and the body offsets that must
/// hold a closing quote (see [`Walker::raw_str`]); and its scratch, for what is
/// parsed after.
type Parsed = (Index, Vec<u32>, Scratch);

impl BatchWorker {
    /// Starts the thread, which fills `index` (at the first batch it holds at
    /// most a spare sample table, which is dropped if no thread can start).
    fn start(mut index: Index) -> Option<BatchWorker> {
        let (batches, todo) = mpsc::channel::<Batch>();
        let (report, back) = mpsc::channel();
        let parsed = Arc::new(AtomicUsize::new(0));
        let counter = parsed.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("parse-batches".into())
            .spawn(move || {
                let mut scratch = Scratch::default();
                let mut deferred = Vec::new();
                for mut batch in todo {
                    if cancelled.load(Ordering::Acquire) {
                        break;
                    }
                    let len = batch.bytes.len() - PADDING;
                    let escaped = memchr::memchr(b'\\', &batch.bytes[..len]).is_some();
                    let parsed = parse_batch(
                        &mut batch.bytes,
                        len,
                        batch.open,
                        &mut scratch,
                        &mut index,
                        &mut deferred,
                    );
                    if let Err(e) = parsed {
                        let _ = report.send(Back::Failed(e.clone()));
                        return Err(e);
                    }
                    let _ = report.send(if escaped {
                        Back::Unescaped(batch)
                    } else {
                        Back::Spent(batch.bytes)
                    });
                    counter.fetch_add(1, Ordering::Release);
                }
                Ok((index, deferred, scratch))
            })
            .ok()?;
        Some(BatchWorker {
            batches: Some(batches),
            back,
            spent: Vec::new(),
            sent: 0,
            parsed,
            cancel,
            thread: Some(thread),
        })
    }

    fn has_room(&self) -> bool {
        self.sent - self.parsed.load(Ordering::Acquire) < BATCHES_QUEUED
    }

    /// Applies what the worker has handed back so far to the body.
    fn take_back(&mut self, buf: &mut [u8], blocking: bool) -> Result<(), AnswerError> {
        let next = || {
            if blocking {
                self.back.recv().ok()
            } else {
                self.back.try_recv().ok()
            }
        };
        while let Some(back) = next() {
            match back {
                Back::Unescaped(batch) => {
                    let inner = 1..batch.bytes.len() - PADDING - 1;
                    let at = batch.open + 1;
                    buf[at..at + inner.len()].copy_from_slice(&batch.bytes[inner]);
                    self.spent.push(batch.bytes);
                }
                Back::Spent(bytes) => self.spent.push(bytes),
                Back::Failed(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits for every batch sent; returns the index they make up.
    fn join(mut self, buf: &mut [u8]) -> Result<Parsed, AnswerError> {
        drop(self.batches.take());
        // The worker's end closes the channel, so this drains all it sent.
        self.take_back(buf, true)?;
        let thread = self.thread.take().ok_or_else(truncated)?;
        thread
            .join()
            .map_err(|_| AnswerError::Panicked("a batch parse thread".into()))?
    }
}

/// Joined here, so no parse thread outlives its parser (a body dropped by a
/// deadline or a bad chunk, say); it stops after the batch at hand.
impl Drop for BatchWorker {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
        drop(self.batches.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Parses `piece[..len]`, the batch of series cut at body offset `open` and
/// written as an array, into `ix`; spans are body offsets.
fn parse_batch(
    piece: &mut [u8],
    len: usize,
    open: usize,
    scratch: &mut Scratch,
    ix: &mut Index,
    deferred: &mut Vec<u32>,
) -> Result<(), AnswerError> {
    let place = Place::at(open as u32);
    let ((), mut quotes) = scratch.walk(piece, len, place, |w| {
        w.array("result is not an array", |w| w.series(ix))
    })?;
    deferred.append(&mut quotes);
    Ok(())
}

/// Parses the batches `cuts` (body offsets `(open, close)`, in order) in
/// place, each as an array (its ends swapped for `[` and `]` meanwhile);
/// `buf` holds the body from offset `at` on, and simd-json's padding past
/// the last batch.
fn parse_in_place(
    buf: &mut [u8],
    at: usize,
    cuts: &[(usize, usize)],
    scratch: &mut Scratch,
    ix: &mut Index,
    deferred: &mut Vec<u32>,
) -> Result<(), AnswerError> {
    for &(open, close) in cuts {
        let (o, c) = (open - at, close - at);
        let opener = std::mem::replace(&mut buf[o], b'[');
        buf[c] = b']';
        parse_batch(&mut buf[o..], close + 1 - open, open, scratch, ix, deferred)?;
        buf[o] = opener;
        buf[c] = b',';
    }
    Ok(())
}

const SERIES_START: &[u8] = b"{\"metric\":";
const SERIES_BOUNDARY: &[u8] = b"},{\"metric\":";

/// How Prometheus opens a query answer that succeeded, up to its result type.
const SUCCESS_HEAD: &[u8] = br#"{"status":"success","data":{"resultType":""#;

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

impl Parser {
    pub fn new(batch_bytes: usize) -> Parser {
        Parser {
            batch_bytes,
            index: Index::default(),
            first: None,
            open: 0,
            last: None,
            scanned: 0,
            whole: false,
            batches: 0,
            scratch: Scratch::default(),
            deferred: Vec::new(),
            worker: None,
            in_place: false,
            cuts: None,
            spares: None,
        }
    }

    /// Takes the sample table of a body parsed in batches from `spares`.
    pub fn with_spare_tables(mut self, spares: Arc<dyn SpareTables>) -> Parser {
        self.spares = Some(spares);
        self
    }

    /// Takes in `buf[..len]`, the body so far (`buf` may hold more, which is
    /// not looked at): parses every batch that is complete and has simd-json's
    /// padding of body after it.
    pub fn feed(&mut self, buf: &mut [u8], len: usize) -> Result<(), AnswerError> {
        if let Some(worker) = &mut self.worker {
            worker.take_back(buf, false)?;
        }
        self.scan(buf, len, false)
    }

    /// Whether a batch has been cut from the body: from then on the parse may
    /// have written unescaped text back into it. Until then it is as it came.
    pub fn has_cut(&self) -> bool {
        self.batches > 0
    }

    /// Parses what is left of the body `buf[..len]` and returns the answer.
    pub fn finish(self, buf: Vec<u8>, len: usize) -> Result<Answer, AnswerError> {
        self.finish_counting(buf, len).map(|(answer, _)| answer)
    }

    /// [`Parser::finish`], also telling how many batches were parsed (0: whole).
    #[doc(hidden)]
    pub fn finish_counting(
        mut self,
        mut buf: Vec<u8>,
        len: usize,
    ) -> Result<(Answer, usize), AnswerError> {
        if len > u32::MAX as usize - PADDING {
            return Err(AnswerError::Json("body larger than 4 GiB".into()));
        }
        #[cfg(test)]
        if memchr::memmem::find(&buf[..len], PLANTED_PANIC).is_some() {
            panic!("a parser panic planted by a test");
        }
        if buf.len() < len + PADDING {
            buf.resize(len + PADDING, 0);
        }
        // The batches cut on arrival come first; the rest follow them, cut
        // now and parsed in place.
        let worker = self.worker.take();
        let mut rest = Vec::new();
        if len > self.batch_bytes {
            self.cuts = Some(Vec::new());
            let scanned = self.scan(&mut buf, len, true);
            rest = self.cuts.take().unwrap_or_default();
            scanned?;
        }
        // The body is in, so the cores that sent and read it are free: the
        // rest's second half is parsed on a thread of its own, beside the
        // worker's last batches and the first half here. The batch between
        // the halves is parsed last, so that neither half's padding (bytes
        // simd-json reads past a batch's end) is a byte the other rewrites.
        let half = rest.len() / 2;
        let halves = rest.len() >= 3 && rest[half].0 + 1 + PADDING <= rest[half].1;
        let (mine, between, theirs) = if halves {
            (&rest[..half], Some(rest[half]), &rest[half + 1..])
        } else {
            (&rest[..], None, &rest[..0])
        };
        let theirs_at = theirs.first().map_or(buf.len(), |c| c.0);
        let spares = self.spares.clone();
        let (head, tail) = buf.split_at_mut(theirs_at);
        // The second half's series, in order, to follow the rest; their labels
        // and samples join this index's tables batch by batch as the helper
        // hands them over, so its own tables never hold more than a few
        // batches (a table's order is free: each series names its ranges).
        let mut later: Vec<Series> = Vec::new();
        let (here, there) = std::thread::scope(|scope| {
            let (hand, handed) = mpsc::channel::<(Index, Vec<u32>)>();
            // Emptied indexes going back, so the helper's batches reuse a few.
            let (give_back, given_back) = mpsc::channel::<Index>();
            let helper = if theirs.is_empty() {
                drop(hand);
                None
            } else {
                std::thread::Builder::new()
                    .name("parse-rest".into())
                    .spawn_scoped(scope, move || {
                        let mut scratch = spares
                            .as_ref()
                            .and_then(|s| s.spare_scratch())
                            .unwrap_or_default();
                        let mut parsed = Ok(());
                        for cut in theirs {
                            let mut ix = given_back.try_recv().unwrap_or_default();
                            let mut deferred = Vec::new();
                            parsed = parse_in_place(
                                tail,
                                theirs_at,
                                std::slice::from_ref(cut),
                                &mut scratch,
                                &mut ix,
                                &mut deferred,
                            );
                            if parsed.is_err() || hand.send((ix, deferred)).is_err() {
                                break;
                            }
                        }
                        if let Some(spares) = &spares {
                            spares.keep_scratch(scratch);
                        }
                        parsed
                    })
                    .ok()
            };
            let here = (|| {
                if let Some(worker) = worker {
                    let (index, mut deferred, scratch) = worker.join(head)?;
                    self.index = index;
                    self.deferred.append(&mut deferred);
                    // Its scratch, grown for a batch already, serves the rest.
                    if self.scratch.grown_for() == 0 {
                        self.scratch = scratch;
                    }
                }
                if len > self.batch_bytes {
                    self.take_spare_table();
                }
                // A sample `[1700000000.123,"1"],` takes at least 20 bytes: sized
                // so the table never grows (and copies) while it fills. Pages not
                // written are never touched, so the slack costs address space,
                // not memory.
                self.index
                    .samples
                    .reserve((len / 20 + 1).saturating_sub(self.index.samples.len() as usize));
                for cut in mine {
                    parse_in_place(
                        head,
                        0,
                        std::slice::from_ref(cut),
                        &mut self.scratch,
                        &mut self.index,
                        &mut self.deferred,
                    )?;
                    for (mut part, mut deferred) in handed.try_iter() {
                        self.index.adopt(&mut part, &mut later);
                        self.deferred.append(&mut deferred);
                        let _ = give_back.send(part);
                    }
                }
                Ok::<_, AnswerError>(())
            })();
            let there = helper.map(|h| {
                // Until the helper is done and its end of the channel gone.
                for (mut part, mut deferred) in handed.iter() {
                    self.index.adopt(&mut part, &mut later);
                    self.deferred.append(&mut deferred);
                }
                h.join()
                    .map_err(|_| AnswerError::Panicked("a batch parse thread".into()))?
            });
            (here, there)
        });
        here?;
        let ix = &mut self.index;
        parse_in_place(
            &mut buf,
            0,
            between.as_slice(),
            &mut self.scratch,
            ix,
            &mut self.deferred,
        )?;
        match there {
            Some(there) => {
                there?;
                self.index.series.append(&mut later);
            }
            // No thread could be started: parsed here, after all.
            None => parse_in_place(
                &mut buf,
                0,
                theirs,
                &mut self.scratch,
                ix,
                &mut self.deferred,
            )?,
        }
        let deferred = match (self.batches, self.first, self.last) {
            (1.., Some(first), Some(last)) => {
                self.envelope(&mut buf, len, first as usize + 1, last as usize + 1)?;
                self.deferred
            }
            _ => {
                let spares = self.spares.as_ref();
                let mut scratch = spares.and_then(|s| s.spare_scratch()).unwrap_or_default();
                let ix = &mut self.index;
                let parsed = scratch.walk(&mut buf, len, Place::WHOLE, |w| w.top(ix));
                if let Some(spares) = spares {
                    spares.keep_scratch(scratch);
                }
                parsed?.1
            }
        };
        let index = self.index;
        if deferred.iter().any(|&p| buf.get(p as usize) != Some(&b'"')) {
            return Err(AnswerError::Shape("escape sequence inside a sample"));
        }
        buf.truncate(len);
        let answer = Answer {
            buf,
            kind: index.kind.ok_or(AnswerError::Shape("no data.resultType"))?,
            labels: index.labels,
            samples: index.samples,
            series: index.series,
            single: index.single,
            warnings: index.warnings,
            infos: index.infos,
            stats: index.stats,
        };
        if !index.saw_result {
            return Err(AnswerError::Shape("no data.result"));
        }
        Ok((answer, self.batches))
    }

    /// Finds boundaries past `scanned` and parses each batch that reached
    /// `batch_bytes`; at the end, also the last batch, up to the last boundary.
    fn scan(&mut self, buf: &mut [u8], len: usize, at_end: bool) -> Result<(), AnswerError> {
        if self.whole {
            return Ok(());
        }
        if self.first.is_none() {
            let Some(at) = memchr::memmem::find(&buf[self.scanned..len], SERIES_START) else {
                self.scanned = self.scanned.max(len.saturating_sub(SERIES_START.len() - 1));
                return Ok(());
            };
            let at = self.scanned + at;
            if at == 0 || buf[at - 1] != b'[' {
                self.whole = true;
                return Ok(());
            }
            self.first = Some(at as u32 - 1);
            self.open = at as u32 - 1;
            self.scanned = at;
            return self.scan(buf, len, at_end);
        }
        let finder = memchr::memmem::Finder::new(SERIES_BOUNDARY);
        loop {
            let Some(m) = finder.find(&buf[self.scanned..len]) else {
                self.scanned = self
                    .scanned
                    .max(len.saturating_sub(SERIES_BOUNDARY.len() - 1));
                break;
            };
            let comma = self.scanned + m + 1;
            if comma - self.open as usize >= self.batch_bytes {
                let waits = !at_end && (comma + 1 + PADDING > len || !self.worker_has_room());
                if waits {
                    // Found again on the next call, when its padding has
                    // arrived or the worker has room.
                    self.scanned = comma - 1;
                    break;
                }
                self.batch(buf, self.open as usize, comma)?;
                self.open = comma as u32;
            }
            self.last = Some(comma as u32);
            self.scanned = comma + 1;
        }
        match self.last {
            Some(last) if at_end && last != self.open => {
                self.batch(buf, self.open as usize, last as usize)?;
                self.open = last;
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether a batch may be cut now: always in place, or while the worker
    /// (started here by the first batch) has fewer than [`BATCHES_QUEUED`].
    fn worker_has_room(&mut self) -> bool {
        if self.in_place {
            return true;
        }
        if self.worker.is_none() {
            self.take_spare_table();
            self.worker = BatchWorker::start(std::mem::take(&mut self.index));
            self.in_place = self.worker.is_none();
        }
        self.worker.as_ref().is_none_or(BatchWorker::has_room)
    }

    /// A large body's first batch: its table from the spares, if any.
    fn take_spare_table(&mut self) {
        if self.index.samples.len() == 0
            && let Some(table) = self.spares.as_ref().and_then(|s| s.spare_table())
        {
            self.index.samples = table;
        }
    }

    /// Parses the series between the cuts `open` and `close` as one array:
    /// on arrival by the worker, from a copy; at the end (the worker joined
    /// by then) in place.
    fn batch(&mut self, buf: &mut [u8], open: usize, close: usize) -> Result<(), AnswerError> {
        self.batches += 1;
        if let Some(cuts) = self.cuts.as_mut() {
            cuts.push((open, close));
            return Ok(());
        }
        if let Some(worker) = self.worker.as_mut() {
            let mut bytes = worker.spent.pop().unwrap_or_default();
            bytes.clear();
            bytes.reserve(close + 1 - open + PADDING);
            bytes.push(b'[');
            bytes.extend_from_slice(&buf[open + 1..close]);
            bytes.push(b']');
            bytes.resize(bytes.len() + PADDING, 0);
            let sent = worker
                .batches
                .as_ref()
                .map(|tx| tx.send(Batch { open, bytes }));
            return match sent {
                Some(Ok(())) => {
                    worker.sent += 1;
                    Ok(())
                }
                // The worker stopped at a bad batch: its error says why.
                _ => worker.take_back(buf, true).and(Err(truncated())),
            };
        }
        parse_in_place(
            buf,
            0,
            &[(open, close)],
            &mut self.scratch,
            &mut self.index,
            &mut self.deferred,
        )
    }

    /// Parses the envelope: `buf[..first]` (up to the first series) followed by
    /// `buf[last..len]` (the last series and the rest).
    fn envelope(
        &mut self,
        buf: &mut [u8],
        len: usize,
        first: usize,
        last: usize,
    ) -> Result<(), AnswerError> {
        let mut envelope = Vec::with_capacity(first + len - last + PADDING);
        envelope.extend_from_slice(&buf[..first]);
        envelope.extend_from_slice(&buf[last..len]);
        let envelope_len = envelope.len();
        envelope.resize(envelope_len + PADDING, 0);
        let place = Place {
            offset: 0,
            gap_at: first as u32,
            gap: (last - first) as u32,
        };
        let ix = &mut self.index;
        let ((), mut quotes) = self
            .scratch
            .walk(&mut envelope, envelope_len, place, |w| w.top(ix))?;
        self.deferred.append(&mut quotes);
        if self.index.first_series != Some(last as u32) {
            return Err(AnswerError::Shape("series outside data.result"));
        }
        // Unescaping rewrote the envelope's strings in the copy; spans read the body.
        buf[..first].copy_from_slice(&envelope[..first]);
        buf[last..len].copy_from_slice(&envelope[first..envelope_len]);
        Ok(())
    }
}

/// Built only when needed: an `ok_or(value)` on the hot path would build and
/// drop an error for every tape node.
fn truncated() -> AnswerError {
    AnswerError::Shape("truncated structure")
}

impl<'a, 'de> Walker<'a, 'de> {
    fn new(nodes: &'a [Node<'de>], structurals: &'a [u32], base: usize, place: Place) -> Self {
        Walker {
            nodes,
            structurals,
            base,
            place,
            n: 0,
            s: 0,
            deferred_quotes: Vec::new(),
        }
    }

    /// Takes the next value's node and the body offset where it starts.
    fn open(&mut self) -> Result<(Node<'de>, u32), AnswerError> {
        let node = *self.nodes.get(self.n).ok_or_else(truncated)?;
        let pos = *self.structurals.get(self.s).ok_or_else(truncated)?;
        self.n += 1;
        self.s += 1;
        Ok((node, self.place.body(pos)))
    }

    /// Steps over a `,` or `:`.
    fn sep(&mut self) {
        self.s += 1;
    }

    /// Steps over a closing bracket and returns the offset just past it.
    fn close(&mut self) -> Result<u32, AnswerError> {
        let pos = *self.structurals.get(self.s).ok_or_else(truncated)?;
        self.s += 1;
        Ok(self.place.body(pos) + 1)
    }

    /// Offset of a string in the parsed text (not yet mapped to the body).
    #[inline]
    fn local(&self, s: &str) -> u32 {
        (s.as_ptr() as usize - self.base) as u32
    }

    fn span_of(&self, s: &str) -> Span {
        let start = self.place.body(self.local(s));
        Span {
            start,
            end: start + s.len() as u32,
        }
    }

    /// Checks that a string just opened is still its raw bytes, because the
    /// bytes around it will be copied to the output verbatim.
    ///
    /// In-place unescaping writes the shorter text over the start of the raw
    /// text. So if the text holds no `"` or `\\` and its closing quote sits
    /// right after it, nothing was unescaped: an unescaped string is shorter
    /// than its raw form, and the raw byte at that offset would be a quote only
    /// as part of `\\"`, which would have put a `"` into the text.
    ///
    /// In compact JSON the next structural (found before unescaping) sits
    /// right after the raw closing quote; when that is just past the text,
    /// raw and text are equally long, and since every escape sequence is
    /// longer than what it stands for, there was none: no scan of the text.
    fn raw_str(&mut self, s: &str) -> Result<(), AnswerError> {
        let end = self.local(s) + s.len() as u32;
        if self.structurals.get(self.s) == Some(&(end + 1)) {
            return Ok(());
        }
        if s.bytes().any(|b| b == b'"' || b == b'\\') {
            return Err(AnswerError::Shape("escape sequence inside a sample"));
        }
        self.deferred_quotes.push(self.place.body(end));
        Ok(())
    }

    /// Skips one whole value, whatever its shape; returns its raw span. With
    /// `raw`, every string in it is checked by [`Walker::raw_str`].
    fn skip(&mut self, raw: bool) -> Result<Span, AnswerError> {
        let (node, start) = self.open()?;
        let end = match node {
            Node::Array { len, .. } => {
                for i in 0..len {
                    if i > 0 {
                        self.sep();
                    }
                    self.skip(raw)?;
                }
                self.close()?
            }
            Node::Object { len, .. } => {
                for i in 0..len {
                    if i > 0 {
                        self.sep();
                    }
                    let key = self.expect_str("object key")?;
                    if raw {
                        self.raw_str(key)?;
                    }
                    self.sep();
                    self.skip(raw)?;
                }
                self.close()?
            }
            Node::String(s) if raw => {
                self.raw_str(s)?;
                start
            }
            // Scalars: the span is only used for containers, so an empty end is fine.
            _ => start,
        };
        Ok(Span { start, end })
    }

    fn expect_str(&mut self, what: &'static str) -> Result<&'de str, AnswerError> {
        match self.open()?.0 {
            Node::String(s) => Ok(s),
            _ => Err(AnswerError::Shape(what)),
        }
    }

    /// Iterates an object's keys, calling `f` with the walker positioned at each value.
    fn object(
        &mut self,
        what: &'static str,
        mut f: impl FnMut(&mut Self, &'de str) -> Result<(), AnswerError>,
    ) -> Result<u32, AnswerError> {
        let (node, _) = self.open()?;
        let Node::Object { len, .. } = node else {
            return Err(AnswerError::Shape(what));
        };
        for i in 0..len {
            if i > 0 {
                self.sep();
            }
            let key = self.expect_str("object key")?;
            self.sep();
            f(self, key)?;
        }
        self.close()
    }

    /// Iterates an array's elements.
    fn array(
        &mut self,
        what: &'static str,
        mut f: impl FnMut(&mut Self) -> Result<(), AnswerError>,
    ) -> Result<(), AnswerError> {
        let (node, _) = self.open()?;
        let Node::Array { len, .. } = node else {
            return Err(AnswerError::Shape(what));
        };
        for i in 0..len {
            if i > 0 {
                self.sep();
            }
            f(self)?;
        }
        self.close()?;
        Ok(())
    }

    fn top(&mut self, ix: &mut Index) -> Result<(), AnswerError> {
        let mut status = None;
        let mut error_type = String::new();
        let mut error = String::new();
        self.object("answer is not an object", |w, key| {
            match key {
                "status" => status = Some(w.expect_str("status is not a string")?),
                "errorType" => error_type = w.expect_str("errorType")?.to_owned(),
                "error" => error = w.expect_str("error")?.to_owned(),
                "data" => w.data(ix)?,
                "warnings" => w.strings(&mut ix.warnings)?,
                "infos" => w.strings(&mut ix.infos)?,
                _ => {
                    w.skip(false)?;
                }
            }
            Ok(())
        })?;
        match status {
            Some("success") => Ok(()),
            Some("error") => Err(AnswerError::Status { error_type, error }),
            _ => Err(AnswerError::Shape("no status")),
        }
    }

    fn strings(&mut self, out: &mut Vec<Span>) -> Result<(), AnswerError> {
        self.array("warnings is not an array", |w| {
            let s = w.expect_str("warning is not a string")?;
            out.push(w.span_of(s));
            Ok(())
        })
    }

    fn data(&mut self, ix: &mut Index) -> Result<(), AnswerError> {
        // resultType may come after result; if so, the result's shape decides it.
        let mut declared = None;
        if let Some(Node::Static(StaticNode::Null)) = self.nodes.get(self.n) {
            self.open()?;
            return Ok(());
        }
        self.object("data is not an object", |w, key| {
            match key {
                "resultType" => {
                    declared = Some(match w.expect_str("resultType")? {
                        "matrix" => ResultKind::Matrix,
                        "vector" => ResultKind::Vector,
                        "scalar" => ResultKind::Scalar,
                        "string" => ResultKind::String,
                        _ => return Err(AnswerError::Shape("unknown resultType")),
                    })
                }
                "result" => {
                    w.result(ix)?;
                    ix.saw_result = true;
                }
                "stats" => ix.stats = Some(w.skip(true)?),
                _ => {
                    w.skip(false)?;
                }
            }
            Ok(())
        })?;
        let single = |k: ResultKind| matches!(k, ResultKind::Scalar | ResultKind::String);
        if let (Some(d), Some(s)) = (declared, ix.shape) {
            // The shape of `result` says scalar for strings too, so compare families.
            if single(d) != single(s) || (!single(d) && d != s) {
                return Err(AnswerError::Shape("result does not match resultType"));
            }
        }
        ix.kind = declared;
        Ok(())
    }

    /// Parses `data.result`, noting in `ix.shape` the kind its shape implies.
    fn result(&mut self, ix: &mut Index) -> Result<(), AnswerError> {
        let Some(&Node::Array { len, .. }) = self.nodes.get(self.n) else {
            return Err(AnswerError::Shape("result is not an array"));
        };
        // A scalar or string result is `[ts, "text"]`; a vector or matrix is an array of objects.
        if len == 2
            && matches!(self.nodes.get(self.n + 1), Some(Node::Static(_)))
            && matches!(self.nodes.get(self.n + 2), Some(Node::String(_)))
        {
            let (_, start) = self.open()?;
            let t = timestamp(self.open()?.0)?;
            self.sep();
            let text = self.expect_str("value")?;
            let end = self.close()?;
            ix.single = Some(Single {
                t,
                raw: Span { start, end },
                text: self.span_of(text),
            });
            ix.shape = Some(ResultKind::Scalar);
            return Ok(());
        }
        let mut first = true;
        self.array("result is not an array", |w| {
            if first {
                first = false;
                let at = *w.structurals.get(w.s).ok_or_else(truncated)?;
                ix.first_series = Some(w.place.body(at));
            }
            w.series(ix)
        })
    }

    /// One element of `data.result`: `{"metric":{…},"values":[…]}` and the like.
    /// Sets `ix.shape` to what its sample keys imply.
    fn series(&mut self, ix: &mut Index) -> Result<(), AnswerError> {
        let w = self;
        let labels_start = ix.labels.len() as u32;
        let floats_start = ix.samples.len();
        let mut floats = floats_start..floats_start;
        let mut histograms = floats_start..floats_start;
        w.object("series is not an object", |w, key| {
            match key {
                "metric" => {
                    w.object("metric is not an object", |w, name| {
                        let name = w.span_of(name);
                        let value = w.expect_str("label value is not a string")?;
                        ix.labels.push(LabelSpan {
                            name,
                            value: w.span_of(value),
                        });
                        Ok(())
                    })?;
                }
                "values" | "histograms" => {
                    ix.shape = Some(ResultKind::Matrix);
                    let from = ix.samples.len();
                    let is_hist = key == "histograms";
                    let mut end = 0;
                    w.array("values is not an array", |w| {
                        let (t, start, sample_end) = w.sample(is_hist)?;
                        ix.samples.push(t, start);
                        end = sample_end;
                        Ok(())
                    })?;
                    let range = from..ix.samples.len();
                    ix.samples.close_list(end);
                    if is_hist {
                        histograms = range
                    } else {
                        floats = range
                    }
                }
                "value" | "histogram" => {
                    ix.shape = Some(ResultKind::Vector);
                    let from = ix.samples.len();
                    let (t, start, end) = w.sample(key == "histogram")?;
                    ix.samples.push(t, start);
                    ix.samples.close_list(end);
                    let range = from..from + 1;
                    if key == "histogram" {
                        histograms = range
                    } else {
                        floats = range
                    }
                }
                _ => {
                    w.skip(false)?;
                }
            }
            Ok(())
        })?;
        ix.series.push(Series {
            labels: labels_start..ix.labels.len() as u32,
            floats,
            histograms,
        });
        Ok(())
    }

    /// One `[ts,"v"]` or `[ts,{histogram}]`: its time, start and end.
    fn sample(&mut self, histogram: bool) -> Result<(i64, u32, u32), AnswerError> {
        if !histogram && let Some(sample) = self.compact_float_sample() {
            return sample;
        }
        let (node, start) = self.open()?;
        if !matches!(node, Node::Array { len: 2, .. }) {
            return Err(AnswerError::Shape("sample is not a pair"));
        }
        let t = timestamp(self.open()?.0)?;
        self.sep();
        if histogram {
            if !matches!(self.nodes.get(self.n), Some(Node::Object { .. })) {
                return Err(AnswerError::Shape("histogram is not an object"));
            }
            self.skip(true)?;
        } else {
            let value = self.expect_str("sample value is not a string")?;
            self.raw_str(value)?;
        }
        let end = self.close()?;
        Ok((t, start, end))
    }
}

impl<'de> Walker<'_, 'de> {
    /// The usual float sample, `[ts,"v"]` written compactly, read in one step:
    /// three tape nodes (the pair, the number, the string) and five structurals
    /// (`[`, the number, `,`, the string, `]`), taken as one slice each, with
    /// the raw check of [`Walker::raw_str`] for compact JSON. None, consuming
    /// nothing, when it is anything else; the general path then judges it.
    #[inline]
    fn compact_float_sample(&mut self) -> Option<Result<(i64, u32, u32), AnswerError>> {
        let [Node::Array { len: 2, .. }, number, Node::String(value)] =
            *self.nodes.get(self.n..self.n + 3)?
        else {
            return None;
        };
        let &[open, _, _, _, close] = self.structurals.get(self.s..self.s + 5)? else {
            return None;
        };
        if close != self.local(value) + value.len() as u32 + 1 {
            return None;
        }
        self.n += 3;
        self.s += 5;
        Some(timestamp(number).map(|t| (t, self.place.body(open), self.place.body(close) + 1)))
    }
}

/// A JSON timestamp in seconds as integer milliseconds, the precision Prometheus keeps.
fn timestamp(node: Node<'_>) -> Result<i64, AnswerError> {
    match node {
        Node::Static(StaticNode::F64(f)) => {
            // Adding half away from zero and truncating rounds like f64::round
            // without a libm call on this hot path; a timestamp times 1000 sits
            // within a few ulps of a whole number, never near a half.
            let ms = f * 1000.0;
            Ok((ms + 0.5f64.copysign(ms)) as i64)
        }
        Node::Static(StaticNode::I64(i)) => Ok(i.saturating_mul(1000)),
        Node::Static(StaticNode::U64(u)) => {
            Ok((u.min(i64::MAX as u64) as i64).saturating_mul(1000))
        }
        _ => Err(AnswerError::Shape("timestamp is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Answer, AnswerError> {
        Answer::parse(s.as_bytes().to_vec())
    }

    #[test]
    fn only_a_success_answers_opening_and_end_pass_as_one_and_only_no_series_as_empty() {
        // (body, looks like a success, holds no result)
        for (body, passes, empty) in [
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                true,
                true,
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["w"]}"#,
                true,
                true,
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}"#,
                true,
                false,
            ),
            // A scalar is a result, though an array.
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#,
                true,
                false,
            ),
            // Not Prometheus' encoding of no series: taken for some.
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[ ]}}"#,
                true,
                false,
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrixx","result":[]}}"#,
                false,
                false,
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":["#,
                false,
                false,
            ),
            (
                r#"{"status":"error","errorType":"bad_data","error":"x"}"#,
                false,
                false,
            ),
            (
                r#" {"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                false,
                false,
            ),
            ("garbage", false, false),
            ("", false, false),
        ] {
            assert_eq!(looks_like_success(body.as_bytes()), passes, "{body}");
            assert_eq!(holds_no_result(body.as_bytes()), empty, "{body}");
        }
    }

    #[test]
    fn matrix_spans_point_at_the_original_bytes() {
        let a = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[1.5,"1"],[3,"NaN"]]}]},"warnings":["w1"]}"#).unwrap();
        assert_eq!(a.kind, ResultKind::Matrix);
        let s = &a.series[0];
        let labels: Vec<_> = a
            .series_labels(s)
            .iter()
            .map(|l| (a.text(l.name), a.text(l.value)))
            .collect();
        assert_eq!(labels, [("__name__", "up"), ("job", "a\"b")]);
        let raw: Vec<_> = a.floats(s).map(|i| a.raw(i)).collect();
        assert_eq!(raw, [&b"[1.5,\"1\"]"[..], &b"[3,\"NaN\"]"[..]]);
        assert_eq!(a.times(a.floats(s)), [1500, 3000]);
        let b = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1435781451.781,"1"],[-1.5,"2"],[0.0015,"3"]]}]}}"#).unwrap();
        assert_eq!(b.times(b.floats(&b.series[0])), [1435781451781, -1500, 2]);
        assert_eq!(a.text(a.warnings[0]), "w1");
    }

    #[test]
    fn histograms_are_kept_as_raw_spans() {
        let a = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"histograms":[[10,{"count":"2","sum":"3","buckets":[[0,"0","1","2"]]}]]}]}}"#).unwrap();
        let s = &a.series[0];
        assert!(a.floats(s).is_empty());
        assert_eq!(
            a.raw(a.histograms(s).start),
            br#"[10,{"count":"2","sum":"3","buckets":[[0,"0","1","2"]]}]"#
        );
    }

    #[test]
    fn whitespace_does_not_confuse_spans() {
        let a = parse("{ \"status\" : \"success\" , \"data\" : { \"result\" : [ { \"metric\" : { } , \"value\" : [ 1 , \"2\" ] } ] , \"resultType\" : \"vector\" } }").unwrap();
        assert_eq!(a.kind, ResultKind::Vector);
        assert_eq!(a.raw(a.floats(&a.series[0]).start), b"[ 1 , \"2\" ]");
    }

    #[test]
    fn scalar_and_string_results() {
        let a = parse(r#"{"status":"success","data":{"resultType":"scalar","result":[1.25,"2"]}}"#)
            .unwrap();
        assert_eq!(a.kind, ResultKind::Scalar);
        assert_eq!(a.bytes(a.single.unwrap().raw), br#"[1.25,"2"]"#);
        assert_eq!(a.single.unwrap().t, 1250);
        let a = parse(r#"{"status":"success","data":{"resultType":"string","result":[1,"a\nb"]}}"#)
            .unwrap();
        assert_eq!(a.kind, ResultKind::String);
        assert_eq!(a.text(a.single.unwrap().text), "a\nb");
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(parse("garbage"), Err(AnswerError::Json(_))));
        assert!(matches!(
            parse("{\"status\":\"success\""),
            Err(AnswerError::Json(_))
        ));
        assert!(matches!(parse("[1,2]"), Err(AnswerError::Shape(_))));
        assert!(matches!(
            parse(r#"{"status":"success"}"#),
            Err(AnswerError::Shape(_))
        ));
        assert!(matches!(
            parse(
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,2]]}]}}"#
            ),
            Err(AnswerError::Shape(_))
        ));
        assert_eq!(
            parse(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
                .unwrap_err(),
            AnswerError::Status {
                error_type: "bad_data".into(),
                error: "parse error".into()
            }
        );
        assert!(matches!(
            parse(
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"\u0031"]]}]}}"#
            ),
            Err(AnswerError::Shape(_))
        ));
    }

    fn parse_batched(s: &str, batch_bytes: usize) -> Result<Answer, AnswerError> {
        let mut buf = s.as_bytes().to_vec();
        buf.resize(s.len() + PADDING, 0);
        Answer::parse_in_batches(buf, s.len(), batch_bytes)
    }

    const BATCHABLE: &[&str] = &[
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b},{\"metric\":"},"values":[[1.5,"1"],[3,"NaN"]]},{"metric":{"job":"\u00e9"},"values":[[2,"2"]]},{"metric":{},"histograms":[[10,{"count":"2","sum":"3","buckets":[[0,"0","1","2"]]}]]},{"metric":{"x":"y"},"values":[[4,"4"]],"histograms":[[5,{"count":"1"}]]}],"stats":{"timings":{"evalTotalTime":0.1}}},"warnings":["w1","w\"2"],"infos":["i"]}"#,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]},{"metric":{"a":"3"},"histogram":[1,{"count":"1"}]}]}}"#,
        r#"{"data":{"result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}],"resultType":"vector"},"status":"success"}"#,
    ];

    /// Parses `body` fed in pieces of `piece` bytes, as it arrives; also
    /// says how many batches were parsed and how many of them by the worker.
    fn parse_fed(
        body: &str,
        batch_bytes: usize,
        piece: usize,
    ) -> Result<(Answer, usize, usize), AnswerError> {
        feed_whole(Parser::new(batch_bytes), body, piece)
    }

    /// [`parse_fed`] with a parser set up by the caller.
    fn feed_whole(
        mut parser: Parser,
        body: &str,
        piece: usize,
    ) -> Result<(Answer, usize, usize), AnswerError> {
        let mut buf = Vec::new();
        for chunk in body.as_bytes().chunks(piece) {
            buf.extend_from_slice(chunk);
            let len = buf.len();
            parser.feed(&mut buf, len)?;
        }
        let on_arrival = parser.worker.as_ref().map_or(0, |w| w.sent);
        let (answer, batches) = parser.finish_counting(buf, body.len())?;
        Ok((answer, batches, on_arrival))
    }

    #[test]
    fn batches_read_exactly_what_one_pass_reads() {
        // Batches cut on arrival go to the worker, whose copies hold the
        // escaped labels of BATCHABLE[0]: the body must read as one pass reads.
        for body in BATCHABLE {
            let whole = parse(body).unwrap().digest();
            for batch_bytes in [1, 40, 100] {
                let batched = parse_batched(body, batch_bytes).unwrap();
                assert_eq!(batched.digest(), whole, "{batch_bytes}: {body}");
                // Fed as it would arrive, in pieces of every size.
                for piece in [1, 7, 64, 200] {
                    let (answer, batches, on_arrival) =
                        parse_fed(body, batch_bytes, piece).unwrap();
                    assert!(batches > 0, "{body}");
                    // The first cut always finds the worker's queue empty.
                    assert!(batch_bytes > 1 || on_arrival > 0, "{piece}: {body}");
                    assert_eq!(answer.digest(), whole, "{batch_bytes}/{piece}: {body}");
                }
            }
            let (_, batches) = Parser::new(body.len())
                .finish_counting(body.as_bytes().to_vec(), body.len())
                .unwrap();
            assert_eq!(batches, 0, "a body no larger than a batch is parsed whole");
        }
    }

    #[test]
    fn the_rest_parsed_in_two_halves_reads_as_one_pass_reads() {
        // Every series longer than simd-json's padding and a batch of its
        // own, so what is left at the end is parsed in two halves (the second
        // on a thread of its own), escapes on both sides of the split.
        let series: Vec<String> = (0..41)
            .map(|i| {
                let values: Vec<String> = (0..i % 7 + 1)
                    .map(|t| format!("[{},\"{}\"]", 1000 + t * 15, i * t))
                    .collect();
                format!(
                    r#"{{"metric":{{"__name__":"m","i":"{i}","esc":"a\"b\u00e9{i}"}},"values":[{}]}}"#,
                    values.join(",")
                )
            })
            .collect();
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}},"warnings":["w"]}}"#,
            series.join(",")
        );
        assert!(series.iter().all(|s| s.len() > PADDING + 1));
        let whole = parse(&body).unwrap().digest();
        assert_eq!(parse_batched(&body, 1).unwrap().digest(), whole);
        // Fed in pieces, some batches go to the worker first; the rest splits.
        for piece in [300, 2000, body.len()] {
            let (answer, batches, _) = parse_fed(&body, 1, piece).unwrap();
            assert_eq!(batches, 40, "{piece}");
            assert_eq!(answer.digest(), whole, "{piece}");
        }
        // A corrupt series in the second half fails the answer.
        let bad = body.replacen(r#""i":"35""#, r#""i":35"#, 1);
        assert!(parse_batched(&bad, 1).is_err());
    }

    #[test]
    fn sample_times_read_back_whole_narrow_or_wide() {
        let day = 86_400_000i64;
        let t0 = 1_700_000_000_000i64;
        let mut rng = fastrand::Rng::with_seed(5);
        for round in 0..300 {
            // Mostly within the narrow window; some rounds reach past it,
            // before or after, or hit the marker's own offset.
            let pick = |rng: &mut fastrand::Rng, first: Option<i64>| match rng.u8(..40) {
                0 if round % 3 == 0 => t0 - 3 * day,
                1 if round % 3 == 1 => t0 + 60 * day,
                // The offset that would read as a list's end.
                2 => first
                    .unwrap_or(t0)
                    .saturating_add(SKEW)
                    .saturating_add(LIST_END as i64),
                3 => i64::MAX,
                4 => i64::MIN + 1,
                _ => t0 + rng.i64(-day..40 * day),
            };
            let mut parts: Vec<(Samples, Vec<i64>)> = Vec::new();
            for _ in 0..3 {
                let (mut table, mut want) = (Samples::default(), Vec::new());
                for i in 0..rng.usize(0..50) {
                    let first = want.iter().copied().find(|&t| t != i64::MIN);
                    let t = if i % 7 == 6 {
                        i64::MIN
                    } else {
                        pick(&mut rng, first)
                    };
                    table.push(t, i as u32);
                    want.push(t);
                }
                parts.push((table, want));
            }
            let (mut whole, mut want) = (Samples::default(), Vec::new());
            for (table, times) in &parts {
                let read: Vec<i64> = (0..table.len() as usize).map(|i| table.t(i)).collect();
                assert_eq!(&read, times, "round {round}");
                whole.append(table);
                want.extend_from_slice(times);
            }
            let mut read = Vec::new();
            whole.times_into(0..want.len(), &mut read);
            assert_eq!(read, want, "round {round}");
            assert_eq!(whole.starts.len(), want.len());
            // Emptied, a table that went wide is narrow again.
            whole.clear();
            whole.push(t0, 0);
            assert!(matches!(whole.times, Times::Narrow { .. }) && whole.t(0) == t0);
        }
    }

    /// Spare tables that once held another answer's samples.
    struct Spares(std::sync::Mutex<Vec<Samples>>);

    impl SpareTables for Spares {
        fn spare_table(&self) -> Option<Samples> {
            self.0.lock().unwrap().pop()
        }
    }

    #[test]
    fn a_spare_table_holds_nothing_of_its_last_answer() {
        let (first, second) = (BATCHABLE[1], BATCHABLE[0]);
        let (_, table) = parse(first).unwrap().into_buffers();
        assert_eq!(table.len(), 0);
        assert!(table.capacity_bytes() > 0);
        let spares = Arc::new(Spares(std::sync::Mutex::new(vec![table])));
        let parser = Parser::new(40).with_spare_tables(spares.clone());
        let (answer, _, _) = feed_whole(parser, second, 16).unwrap();
        assert!(spares.0.lock().unwrap().is_empty(), "the spare was taken");
        assert_eq!(answer.digest(), parse(second).unwrap().digest());
    }

    /// Scratch lent out and taken back, however much.
    #[derive(Default)]
    struct ScratchPool(std::sync::Mutex<Vec<Scratch>>);

    impl SpareTables for ScratchPool {
        fn spare_table(&self) -> Option<Samples> {
            None
        }
        fn spare_scratch(&self) -> Option<Scratch> {
            self.0.lock().unwrap().pop()
        }
        fn keep_scratch(&self, scratch: Scratch) {
            self.0.lock().unwrap().push(scratch);
        }
    }

    #[test]
    fn scratch_lent_from_answer_to_answer_reads_each_as_fresh_scratch_would() {
        let pool = Arc::new(ScratchPool::default());
        let kept = || pool.0.lock().unwrap().len();
        let read = |body: &str, batch_bytes: usize| {
            let parser = Parser::new(batch_bytes).with_spare_tables(pool.clone());
            let (answer, _, _) = feed_whole(parser, body, 16).unwrap();
            assert_eq!(answer.digest(), parse(body).unwrap().digest(), "{body}");
        };
        // Parsed whole: its scratch, new, comes back.
        read(BATCHABLE[0], 1 << 20);
        assert_eq!(kept(), 1);
        // In batches: none is lent.
        read(BATCHABLE[1], 1);
        assert_eq!(kept(), 1);
        // Longer and shorter answers in turn, each with scratch an earlier
        // one grew and wrote: nothing of it shows in what is read.
        for _ in 0..3 {
            for body in BATCHABLE.iter().rev() {
                for batch_bytes in [1, 40, 1 << 20] {
                    read(body, batch_bytes);
                }
            }
        }
        assert_eq!(kept(), 1, "the lent set came back, no other was made");
        let longest = BATCHABLE.iter().map(|b| b.len()).max();
        assert_eq!(
            pool.0.lock().unwrap().first().map(Scratch::grown_for),
            longest
        );
        // A body that fails gives its scratch back too.
        let parser = Parser::new(1 << 20).with_spare_tables(pool.clone());
        assert!(feed_whole(parser, &BATCHABLE[0][..50], 16).is_err());
        assert_eq!(kept(), 1);
    }

    #[test]
    fn batches_reject_what_one_pass_rejects() {
        let good = BATCHABLE[0];
        // Every single-byte corruption that one pass rejects is rejected in batches
        // too (the batched path must not accept what simd-json would not).
        let mut rejected = 0;
        for at in 0..good.len() {
            for byte in [b'x', b'"', b',', b'}', b']', b'\\'] {
                let mut bad = good.as_bytes().to_vec();
                bad[at] = byte;
                let Ok(bad) = String::from_utf8(bad) else {
                    continue;
                };
                if parse(&bad).is_err() {
                    rejected += 1;
                    assert!(
                        parse_batched(&bad, 1).is_err(),
                        "accepted in batches: {bad}"
                    );
                    assert!(
                        parse_fed(&bad, 1, 9).is_err(),
                        "accepted in batches parsed on arrival: {bad}"
                    );
                }
            }
        }
        assert!(rejected > 100, "only {rejected} corruptions tried");
        // A shape seen only in a batch still has to match resultType.
        let mixed = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"c":"a"},"value":[1,"80"]},{"metric":{"c":"b"},"other":1}]}}"#;
        assert!(parse(mixed).is_err());
        assert!(parse_batched(mixed, 1).is_err());
        // Series-like objects outside data.result are not taken as series.
        let outside = r#"{"status":"success","data":{"resultType":"vector","result":[]},"extra":[{"metric":{}},{"metric":{}}]}"#;
        assert!(parse_batched(outside, 1).is_err());
        assert!(parse(outside).unwrap().series.is_empty());
    }

    #[test]
    fn prom_floats() {
        assert_eq!(parse_prom_float(b"+Inf"), f64::INFINITY);
        assert_eq!(parse_prom_float(b"-Inf"), f64::NEG_INFINITY);
        assert!(parse_prom_float(b"NaN").is_nan());
        assert_eq!(parse_prom_float(b"1e3"), 1000.0);
    }
}
