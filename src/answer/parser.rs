//! The parser as a body arrives: the chunk cutter (whole series, cut at
//! `},{"metric":`), the batches handed to a worker, the envelope checked,
//! and the rest parsed in two halves once the body is in.

use super::*;
use std::sync::Arc;
use std::sync::mpsc;

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
    pub(super) batch_bytes: usize,
    pub(super) index: Index,
    /// The `[` opening `data.result`, once found.
    pub(super) first: Option<u32>,
    /// Where the next batch starts: `first`, or the `,` that ended the last one.
    pub(super) open: u32,
    /// The last series boundary seen.
    pub(super) last: Option<u32>,
    /// Where the search for the next boundary resumes.
    pub(super) scanned: usize,
    /// The first series did not follow a `[`: parse whole.
    pub(super) whole: bool,
    pub(super) batches: usize,
    /// For the batches parsed in place and the envelope.
    pub(super) scratch: Scratch,
    pub(super) deferred: Vec<u32>,
    /// Parses the batches cut while the body arrives; started by the first.
    pub(super) worker: Option<BatchWorker>,
    /// No worker thread could be started: every batch is parsed in place.
    pub(super) in_place: bool,
    /// At the end: batches are cut into this list, to be parsed after.
    pub(super) cuts: Option<Vec<(usize, usize)>>,
    pub(super) spares: Option<Arc<dyn SpareTables>>,
}

/// Batches handed to a [`BatchWorker`] and not yet parsed, at most: the
/// reader's copies stay this small however far the worker falls behind (past
/// it, cutting waits for the next feed).
pub(super) const BATCHES_QUEUED: usize = 4;

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
                        parse_theirs(tail, theirs_at, theirs, spares, &hand, &given_back)
                    })
                    .ok()
            };
            let here = self.parse_mine(worker, head, mine, len, &handed, &give_back, &mut later);
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
        self.into_answer(buf, len)
    }

    /// The answer, once every series is parsed: the envelope (everything
    /// but the series cut out) checked, or the body parsed whole if it was
    /// never cut; every sample checked to hold no escape sequence.
    fn into_answer(mut self, mut buf: Vec<u8>, len: usize) -> Result<(Answer, usize), AnswerError> {
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
    pub(super) fn scan(
        &mut self,
        buf: &mut [u8],
        len: usize,
        at_end: bool,
    ) -> Result<(), AnswerError> {
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
    pub(super) fn worker_has_room(&mut self) -> bool {
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
    pub(super) fn take_spare_table(&mut self) {
        if self.index.samples.len() == 0
            && let Some(table) = self.spares.as_ref().and_then(|s| s.spare_table())
        {
            self.index.samples = table;
        }
    }

    /// Parses the series between the cuts `open` and `close` as one array:
    /// on arrival by the worker, from a copy; at the end (the worker joined
    /// by then) in place.
    pub(super) fn batch(
        &mut self,
        buf: &mut [u8],
        open: usize,
        close: usize,
    ) -> Result<(), AnswerError> {
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
    pub(super) fn envelope(
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

impl Parser {
    /// The first half of the rest, parsed here once the worker's batches are
    /// joined; the helper's batches adopted as they are handed over, their
    /// emptied indexes given back.
    #[allow(clippy::too_many_arguments)]
    fn parse_mine(
        &mut self,
        worker: Option<BatchWorker>,
        head: &mut [u8],
        mine: &[(usize, usize)],
        len: usize,
        handed: &mpsc::Receiver<(Index, Vec<u32>)>,
        give_back: &mpsc::Sender<Index>,
        later: &mut Vec<Series>,
    ) -> Result<(), AnswerError> {
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
        // A sample `[1700000000.123,"1"],` takes at least 20 bytes: sized so
        // the table never grows (and copies) while it fills. Pages not
        // written are never touched, so the slack costs address space, not
        // memory.
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
                self.index.adopt(&mut part, later);
                self.deferred.append(&mut deferred);
                let _ = give_back.send(part);
            }
        }
        Ok(())
    }
}

/// The second half of the rest (`theirs`, body offsets; `tail` is the body
/// from `theirs_at` on), parsed on a helper thread a batch at a time, each
/// batch's index handed over as it is done.
fn parse_theirs(
    tail: &mut [u8],
    theirs_at: usize,
    theirs: &[(usize, usize)],
    spares: Option<Arc<dyn SpareTables>>,
    hand: &mpsc::Sender<(Index, Vec<u32>)>,
    given_back: &mpsc::Receiver<Index>,
) -> Result<(), AnswerError> {
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
}
