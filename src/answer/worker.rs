//! The parse worker: a thread of a body's own that parses its batches in
//! order while the rest arrives.

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// A batch of series copied out of the body: `bytes` holds `[s1,...,sn]`
/// (body bytes `open..=close`, the two ends replaced) and simd-json's padding.
pub(super) struct Batch {
    pub(super) open: usize,
    pub(super) bytes: Vec<u8>,
}

/// What a [`BatchWorker`] hands back while it runs.
pub(super) enum Back {
    /// A batch held escapes, so unescaping rewrote strings in the copy; the
    /// body must hold the same text, as the spans read the body.
    Unescaped(Batch),
    /// A batch's copy, parsed, for the next batch to be copied into.
    Spent(Vec<u8>),
    Failed(AnswerError),
}

/// A thread of its own that parses [`Batch`]es in order into an [`Index`]
/// of body offsets, exactly as [`Parser::batch`] would in place.
pub(super) struct BatchWorker {
    pub(super) batches: Option<mpsc::Sender<Batch>>,
    pub(super) back: mpsc::Receiver<Back>,
    /// Copies the worker is done with (at most [`BATCHES_QUEUED`] or so), so
    /// the copies of a body take a few allocations, not one per batch.
    pub(super) spent: Vec<Vec<u8>>,
    pub(super) sent: usize,
    pub(super) parsed: Arc<AtomicUsize>,
    /// Set when the parser is dropped unfinished: the thread stops after the
    /// batch at hand instead of parsing what is queued.
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) thread: Option<std::thread::JoinHandle<Result<Parsed, AnswerError>>>,
}

/// What a [`BatchWorker`] parsed: the index, and the body offsets that must
/// hold a closing quote (see [`Walker::raw_str`]); and its scratch, for what is
/// parsed after.
pub(super) type Parsed = (Index, Vec<u32>, Scratch);

impl BatchWorker {
    /// Starts the thread, which fills `index` (at the first batch it holds at
    /// most a spare sample table, which is dropped if no thread can start).
    pub(super) fn start(mut index: Index) -> Option<BatchWorker> {
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

    pub(super) fn has_room(&self) -> bool {
        self.sent - self.parsed.load(Ordering::Acquire) < BATCHES_QUEUED
    }

    /// Applies what the worker has handed back so far to the body.
    pub(super) fn take_back(&mut self, buf: &mut [u8], blocking: bool) -> Result<(), AnswerError> {
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
    pub(super) fn join(mut self, buf: &mut [u8]) -> Result<Parsed, AnswerError> {
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
pub(super) fn parse_batch(
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
pub(super) fn parse_in_place(
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
