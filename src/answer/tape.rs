//! The tape walker: simd-json's tape and structural index walked in step,
//! every label, sample and warning recorded as byte spans into the body.

use super::*;
use simd_json::{Node, StaticNode};
use std::ops::Range;

#[derive(Default)]
pub(super) struct Index {
    pub(super) kind: Option<ResultKind>,
    pub(super) saw_result: bool,
    /// Body offset of the first element of `data.result`.
    pub(super) first_series: Option<u32>,
    /// The kind the result's shape implies, when it can tell (an empty array
    /// could be a vector or a matrix); set by every series, batched or not.
    pub(super) shape: Option<ResultKind>,
    pub(super) labels: Vec<LabelSpan>,
    pub(super) samples: Samples,
    pub(super) series: Vec<Series>,
    pub(super) single: Option<Single>,
    pub(super) warnings: Vec<Span>,
    pub(super) infos: Vec<Span>,
    pub(super) stats: Option<Span>,
}

impl Index {
    /// Takes in `part`, series parsed from batches after this index's: its
    /// labels and samples go at the end of this index's tables (spans are
    /// body offsets already), its series, their ranges moved, onto `later`,
    /// to follow this index's own. `part` is left empty, its memory kept.
    pub(super) fn adopt(&mut self, part: &mut Index, later: &mut Vec<Series>) {
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
pub(super) struct Walker<'a, 'de> {
    pub(super) nodes: &'a [Node<'de>],
    pub(super) structurals: &'a [u32],
    /// Address of the text simd-json parsed; `place` maps offsets in it to the body.
    pub(super) base: usize,
    pub(super) place: Place,
    pub(super) n: usize,
    pub(super) s: usize,
    /// Body offsets that must hold a closing quote (see [`Walker::raw_str`]).
    pub(super) deferred_quotes: Vec<u32>,
}

/// Where the text simd-json parsed sits in the body: `offset` bytes in, with
/// the body's offsets jumping by `gap` from `gap_at` on (the envelope of a
/// batched parse is the body with its middle series cut out).
#[derive(Clone, Copy)]
pub(super) struct Place {
    pub(super) offset: u32,
    pub(super) gap_at: u32,
    pub(super) gap: u32,
}

impl Place {
    pub(super) const WHOLE: Place = Place::at(0);

    pub(super) const fn at(offset: u32) -> Place {
        Place {
            offset,
            gap_at: u32::MAX,
            gap: 0,
        }
    }

    #[inline]
    pub(super) fn body(self, pos: u32) -> u32 {
        let gap = if pos >= self.gap_at { self.gap } else { 0 };
        pos + self.offset + gap
    }
}

pub(super) fn json_error(e: simd_json::Error) -> AnswerError {
    AnswerError::Json(e.to_string())
}

/// Built only when needed: an `ok_or(value)` on the hot path would build and
/// drop an error for every tape node.
pub(super) fn truncated() -> AnswerError {
    AnswerError::Shape("truncated structure")
}

impl<'a, 'de> Walker<'a, 'de> {
    pub(super) fn new(
        nodes: &'a [Node<'de>],
        structurals: &'a [u32],
        base: usize,
        place: Place,
    ) -> Self {
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
    pub(super) fn open(&mut self) -> Result<(Node<'de>, u32), AnswerError> {
        let node = *self.nodes.get(self.n).ok_or_else(truncated)?;
        let pos = *self.structurals.get(self.s).ok_or_else(truncated)?;
        self.n += 1;
        self.s += 1;
        Ok((node, self.place.body(pos)))
    }

    /// Steps over a `,` or `:`.
    pub(super) fn sep(&mut self) {
        self.s += 1;
    }

    /// Steps over a closing bracket and returns the offset just past it.
    pub(super) fn close(&mut self) -> Result<u32, AnswerError> {
        let pos = *self.structurals.get(self.s).ok_or_else(truncated)?;
        self.s += 1;
        Ok(self.place.body(pos) + 1)
    }

    /// Offset of a string in the parsed text (not yet mapped to the body).
    #[inline]
    pub(super) fn local(&self, s: &str) -> u32 {
        (s.as_ptr() as usize - self.base) as u32
    }

    pub(super) fn span_of(&self, s: &str) -> Span {
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
    pub(super) fn raw_str(&mut self, s: &str) -> Result<(), AnswerError> {
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
    pub(super) fn skip(&mut self, raw: bool) -> Result<Span, AnswerError> {
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

    pub(super) fn expect_str(&mut self, what: &'static str) -> Result<&'de str, AnswerError> {
        match self.open()?.0 {
            Node::String(s) => Ok(s),
            _ => Err(AnswerError::Shape(what)),
        }
    }

    /// Iterates an object's keys, calling `f` with the walker positioned at each value.
    pub(super) fn object(
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
    pub(super) fn array(
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

    pub(super) fn top(&mut self, ix: &mut Index) -> Result<(), AnswerError> {
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

    pub(super) fn strings(&mut self, out: &mut Vec<Span>) -> Result<(), AnswerError> {
        self.array("warnings is not an array", |w| {
            let s = w.expect_str("warning is not a string")?;
            out.push(w.span_of(s));
            Ok(())
        })
    }

    pub(super) fn data(&mut self, ix: &mut Index) -> Result<(), AnswerError> {
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
    pub(super) fn result(&mut self, ix: &mut Index) -> Result<(), AnswerError> {
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
    pub(super) fn series(&mut self, ix: &mut Index) -> Result<(), AnswerError> {
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
    pub(super) fn sample(&mut self, histogram: bool) -> Result<(i64, u32, u32), AnswerError> {
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
    pub(super) fn compact_float_sample(&mut self) -> Option<Result<(i64, u32, u32), AnswerError>> {
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
pub(super) fn timestamp(node: Node<'_>) -> Result<i64, AnswerError> {
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
