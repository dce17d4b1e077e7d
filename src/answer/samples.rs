//! The sample table: every sample of an answer in 8 bytes (12 once its
//! times outgrow 32-bit offsets).

use std::ops::Range;

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
    pub(super) times: Times,
    pub(super) starts: Vec<u32>,
}

pub(super) enum Times {
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
pub(super) const LIST_END: i32 = i32::MIN;

/// A narrow table's base before its first time.
pub(super) const NO_BASE: i64 = i64::MIN;

/// How far past the first time narrow offsets count from (23 days in ms):
/// a range's times lie mostly after its first.
pub(super) const SKEW: i64 = 23 * 86_400_000;

impl Samples {
    pub(super) fn len(&self) -> u32 {
        self.starts.len() as u32
    }

    pub(super) fn reserve(&mut self, more: usize) {
        match &mut self.times {
            Times::Narrow { offsets, .. } => offsets.reserve(more),
            Times::Wide(times) => times.reserve(more),
        }
        self.starts.reserve(more);
    }

    pub(super) fn push(&mut self, t: i64, start: u32) {
        self.push_time(t);
        self.starts.push(start);
    }

    pub(super) fn push_time(&mut self, t: i64) {
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
    pub(super) fn widen(&mut self) {
        if let Times::Narrow { base, offsets } = &self.times {
            let mut wide = Vec::with_capacity(offsets.capacity());
            wide.extend(offsets.iter().map(|&d| whole(*base, d)));
            self.times = Times::Wide(wide);
        }
    }

    /// Entry `i`'s time (`i64::MIN` for one that closes a list).
    #[inline]
    pub(super) fn t(&self, i: usize) -> i64 {
        match &self.times {
            Times::Narrow { base, offsets } => whole(*base, offsets[i]),
            Times::Wide(times) => times[i],
        }
    }

    /// The times of entries `range` into `out` (emptied first).
    pub(super) fn times_into(&self, range: Range<usize>, out: &mut Vec<i64>) {
        out.clear();
        match &self.times {
            Times::Narrow { base, offsets } => {
                out.extend(offsets[range].iter().map(|&d| whole(*base, d)))
            }
            Times::Wide(times) => out.extend_from_slice(&times[range]),
        }
    }

    /// Appends `other`'s entries (spans are body offsets: they stay).
    pub(super) fn append(&mut self, other: &Samples) {
        self.reserve(other.len() as usize);
        for i in 0..other.len() as usize {
            self.push_time(other.t(i));
        }
        self.starts.extend_from_slice(&other.starts);
    }

    /// Closes a list of samples whose last one ended at `end` (0: none).
    pub(super) fn close_list(&mut self, end: u32) {
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
pub(super) fn whole(base: i64, d: i32) -> i64 {
    if d == LIST_END {
        i64::MIN
    } else {
        base + d as i64
    }
}
