//! The in-flight bytes budget: how many bytes of upstream answers the proxy
//! holds at once, across every query in flight.
//!
//! A backend reserves a body's bytes before it reads them (all of them when
//! `Content-Length` says how many, else as they arrive) and the reservation
//! travels with the parsed answer until the merge is done with it. A body
//! that does not fit fails that one upstream (`UpstreamError::OverBudget`),
//! so concurrent large queries are refused instead of exhausting memory.
//!
//! It also keeps the large buffers of answers already merged (bodies and
//! sample tables, up to `keep_bytes` of them) for the next large answers.
//! A fresh 40 MB buffer costs 10,000 page faults, each mapping and zeroing a
//! page, and freeing it unmaps them all again: about a fifth of the proxy's
//! CPU for a large range query, measured. A kept buffer's pages are mapped
//! already. Kept buffers are idle memory, outside the in-flight budget.
//!
//! And it keeps a few sets of simd-json's working memory (`Scratch`) from
//! answers parsed whole, up to `SCRATCH_UP_TO_BYTES`, for the next ones: for
//! 200 KB answers, new sets cost about a quarter of the proxy's CPU (measured).

use crate::answer::{Samples, Scratch, SpareTables};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Buffers smaller than this are not kept: the allocator serves them from
/// memory it keeps anyway (see `main.rs`, which maps larger ones apart).
pub const KEPT_FROM_BYTES: usize = 4 << 20;

/// Sets of parse scratch kept at most: a query with the coverage-aware merge
/// parses four answers from two upstreams.
pub const SCRATCH_KEPT: usize = 4;

/// Scratch grown for longer bodies is freed: a set holds about six times
/// its longest body, so the kept ones stay under 4 × 1.5 MB. (Keeping it for
/// every body up to 512 KiB, batched ones too, raised the peak memory of a
/// 38 MB range query by 10 MB, measured: it stays resident during the merge.)
pub const SCRATCH_UP_TO_BYTES: usize = 256 << 10;

#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    keep_bytes: usize,
    spare: Mutex<Spare>,
    scratch: Mutex<Vec<Scratch>>,
}

/// Buffers kept for reuse; `bytes` is their capacity added up.
#[derive(Default)]
struct Spare {
    bodies: Vec<Vec<u8>>,
    tables: Vec<Samples>,
    bytes: usize,
}

impl std::fmt::Debug for Spare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spare")
            .field("bodies", &self.bodies.len())
            .field("tables", &self.tables.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Self::keeping(limit, 0)
    }

    /// A budget that keeps up to `keep_bytes` of merged answers' buffers.
    pub fn keeping(limit: usize, keep_bytes: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            keep_bytes,
            spare: Mutex::new(Spare::default()),
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// The largest kept body buffer, emptied, if one is kept.
    pub fn spare_body(&self) -> Option<Vec<u8>> {
        let mut spare = self.spare.lock().ok()?;
        let Spare { bodies, bytes, .. } = &mut *spare;
        take_largest(bodies, bytes, Vec::capacity)
    }

    /// Frees the kept buffers but the `n` largest bodies and `n` largest
    /// sample tables: for a query that will read at most `n` large answers
    /// (the rest would only sit in memory beside it).
    pub fn keep_at_most(&self, n: usize) {
        if let Ok(mut spare) = self.spare.lock() {
            spare.keep_at_most(n);
        }
    }

    /// Keeps a merged answer's buffers, if they are large and there is room.
    pub fn keep(&self, body: Vec<u8>, table: Samples) {
        if let Ok(mut spare) = self.spare.lock() {
            spare.keep(body, table, self.keep_bytes);
        }
    }

    /// Capacity of the buffers kept now.
    pub fn kept_bytes(&self) -> usize {
        self.spare.lock().map_or(0, |s| s.bytes)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or None if they do not fit.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.take(bytes).then(|| Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

impl SpareTables for Budget {
    fn spare_table(&self) -> Option<Samples> {
        let mut spare = self.spare.lock().ok()?;
        let Spare { tables, bytes, .. } = &mut *spare;
        take_largest(tables, bytes, Samples::capacity_bytes)
    }

    fn spare_scratch(&self) -> Option<Scratch> {
        self.scratch.lock().ok()?.pop()
    }

    /// Kept unless this budget keeps nothing, `SCRATCH_KEPT` are kept
    /// already, or it grew for a long input.
    fn keep_scratch(&self, scratch: Scratch) {
        if self.keep_bytes == 0 || scratch.grown_for() > SCRATCH_UP_TO_BYTES {
            return;
        }
        if let Ok(mut kept) = self.scratch.lock()
            && kept.len() < SCRATCH_KEPT
        {
            kept.push(scratch);
        }
    }
}

/// Takes the largest of `kept` (sized by `size`) out, and out of `bytes`, the kept total.
fn take_largest<T>(kept: &mut Vec<T>, bytes: &mut usize, size: fn(&T) -> usize) -> Option<T> {
    let (i, _) = kept.iter().enumerate().max_by_key(|(_, b)| size(b))?;
    let taken = kept.swap_remove(i);
    *bytes -= size(&taken);
    Some(taken)
}

impl Spare {
    fn keep_at_most(&mut self, n: usize) {
        keep_largest(&mut self.bodies, &mut self.bytes, n, Vec::capacity);
        keep_largest(
            &mut self.tables,
            &mut self.bytes,
            n,
            Samples::capacity_bytes,
        );
    }

    fn keep(&mut self, body: Vec<u8>, table: Samples, limit: usize) {
        keep_one(
            &mut self.bodies,
            &mut self.bytes,
            limit,
            body,
            Vec::capacity,
        );
        keep_one(
            &mut self.tables,
            &mut self.bytes,
            limit,
            table,
            Samples::capacity_bytes,
        );
    }
}

/// Frees all but the `n` largest of `kept`.
fn keep_largest<T>(kept: &mut Vec<T>, bytes: &mut usize, n: usize, size: fn(&T) -> usize) {
    kept.sort_by_key(|b| std::cmp::Reverse(size(b)));
    for freed in kept.drain(n.min(kept.len())..) {
        *bytes -= size(&freed);
    }
}

/// Keeps `buffer` if it is large and fits under `limit`; else it is freed.
fn keep_one<T>(
    kept: &mut Vec<T>,
    bytes: &mut usize,
    limit: usize,
    buffer: T,
    size: fn(&T) -> usize,
) {
    let n = size(&buffer);
    if n >= KEPT_FROM_BYTES && *bytes + n <= limit {
        *bytes += n;
        kept.push(buffer);
    }
}

/// Bytes held from a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `more` bytes too; false (holding what it held) if they do not fit.
    pub fn grow(&mut self, more: usize) -> bool {
        let ok = self.budget.take(more);
        if ok {
            self.bytes += more;
        }
        ok
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A value that holds its share of the budget for as long as it lives.
#[derive(Debug)]
pub struct Held<T> {
    value: T,
    _reservation: Reservation,
}

impl<T> Held<T> {
    pub fn new(value: T, reservation: Reservation) -> Held<T> {
        Held {
            value,
            _reservation: reservation,
        }
    }

    /// The value, its bytes given back to the budget.
    pub fn release(self) -> T {
        self.value
    }
}

impl<T> Deref for Held<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_limit_and_are_given_back_when_dropped() {
        let budget = Budget::new(100);
        let mut a = budget.reserve(60).expect("fits");
        assert!(budget.reserve(41).is_none(), "60 + 41 > 100");
        assert!(!a.grow(41));
        assert!(a.grow(40));
        assert_eq!((a.bytes(), budget.in_use()), (100, 100));
        let held = Held::new("answer", a);
        assert!(budget.reserve(1).is_none());
        assert_eq!(*held, "answer");
        drop(held);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.reserve(100).is_some());
    }

    fn table_of(entries: usize) -> Samples {
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{}]}}]}}}}"#,
            vec![r#"[1,"1"]"#; entries].join(",")
        );
        let answer = crate::answer::Answer::parse(body.into_bytes()).unwrap();
        answer.into_buffers().1
    }

    /// Parses `body` with scratch from `budget` and gives it back.
    fn parse_with(budget: &Arc<Budget>, body: &str) {
        let mut buf = body.as_bytes().to_vec();
        buf.resize(body.len() + crate::answer::PADDING, 0);
        crate::answer::Parser::new(body.len())
            .with_spare_tables(budget.clone())
            .finish(buf, body.len())
            .expect("an answer");
    }

    /// A vector answer of about `bytes` bytes, in one series (parsed whole).
    fn vector_of(bytes: usize) -> String {
        let pad = "x".repeat(bytes);
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"a":"{pad}"}},"value":[1,"1"]}}]}}}}"#
        )
    }

    #[test]
    fn parse_scratch_is_kept_a_few_sets_at_most_and_only_if_small() {
        let budget = Budget::keeping(1 << 30, 1 << 30);
        let kept = || budget.scratch.lock().unwrap().len();
        parse_with(&budget, &vector_of(100));
        assert_eq!(kept(), 1, "kept after the parse");
        parse_with(&budget, &vector_of(100));
        assert_eq!(kept(), 1, "taken and given back, not a second set");
        // Grown for a long input: freed, not kept.
        let _lent = budget.spare_scratch();
        parse_with(&budget, &vector_of(SCRATCH_UP_TO_BYTES + 1));
        assert_eq!(kept(), 0);
        // Never more than SCRATCH_KEPT.
        let lent: Vec<_> = (0..SCRATCH_KEPT + 2)
            .map(|_| {
                parse_with(&budget, &vector_of(100));
                budget.spare_scratch().expect("the set just kept")
            })
            .collect();
        assert_eq!(kept(), 0);
        lent.into_iter().for_each(|s| budget.keep_scratch(s));
        assert_eq!(kept(), SCRATCH_KEPT);
        // A budget that keeps no buffers keeps no scratch either.
        let none = Budget::keeping(1 << 30, 0);
        parse_with(&none, &vector_of(100));
        assert!(none.scratch.lock().unwrap().is_empty());
    }

    #[test]
    fn large_buffers_are_kept_up_to_the_limit_and_handed_out_once() {
        let budget = Budget::keeping(1 << 30, 3 * KEPT_FROM_BYTES);
        budget.keep(Vec::with_capacity(KEPT_FROM_BYTES / 2), Samples::default());
        assert_eq!(budget.kept_bytes(), 0, "small buffers are not kept");
        budget.keep(Vec::with_capacity(KEPT_FROM_BYTES), Samples::default());
        budget.keep(Vec::with_capacity(2 * KEPT_FROM_BYTES), Samples::default());
        assert_eq!(budget.kept_bytes(), 3 * KEPT_FROM_BYTES);
        budget.keep(Vec::with_capacity(KEPT_FROM_BYTES), Samples::default());
        assert_eq!(
            budget.kept_bytes(),
            3 * KEPT_FROM_BYTES,
            "over the limit: freed"
        );
        let largest = budget.spare_body().unwrap();
        assert_eq!(largest.capacity(), 2 * KEPT_FROM_BYTES);
        assert!(largest.is_empty());
        assert_eq!(budget.spare_body().unwrap().capacity(), KEPT_FROM_BYTES);
        assert!(budget.spare_body().is_none());
        assert_eq!(budget.kept_bytes(), 0);
        // A table of a few hundred thousand samples is kept too, and handed out once.
        let table = table_of(KEPT_FROM_BYTES / 12 + 1);
        let size = table.capacity_bytes();
        assert!(size >= KEPT_FROM_BYTES);
        budget.keep(Vec::new(), table);
        assert_eq!(budget.kept_bytes(), size);
        assert_eq!(budget.spare_table().unwrap().capacity_bytes(), size);
        assert!(budget.spare_table().is_none());
        // Nothing is kept with no room for it.
        let none = Budget::new(1 << 30);
        none.keep(Vec::with_capacity(KEPT_FROM_BYTES), Samples::default());
        assert_eq!(none.kept_bytes(), 0);
    }

    #[test]
    fn keeping_at_most_n_frees_all_but_the_largest() {
        let budget = Budget::keeping(1 << 30, 1 << 30);
        for mib in [4usize, 16, 8] {
            budget.keep(Vec::with_capacity(mib << 20), Samples::default());
        }
        budget.keep_at_most(2);
        assert_eq!(budget.kept_bytes(), 24 << 20);
        assert_eq!(budget.spare_body().map(|b| b.capacity()), Some(16 << 20));
        budget.keep_at_most(0);
        assert_eq!(budget.kept_bytes(), 0);
        assert!(budget.spare_body().is_none());
    }
}
