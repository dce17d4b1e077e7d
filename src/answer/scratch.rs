//! Memory lent from one parse to the next: sample tables kept by the
//! budget, and simd-json's working buffers.

use super::*;
use simd_json::{Buffers, Tape};

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
    pub(super) buffers: Buffers,
    pub(super) tape: Tape<'static>,
    /// The longest body it has parsed, which its buffers have grown to hold.
    pub(super) grown_for: usize,
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
    pub(super) fn walk<T>(
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
