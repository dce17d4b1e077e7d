//! The in-flight bytes budget: how many bytes of upstream answers the proxy
//! holds at once, across every query in flight.
//!
//! A backend reserves a body's bytes before it reads them (all of them when
//! `Content-Length` says how many, else as they arrive) and the reservation
//! travels with the parsed answer until the merge is done with it. A body
//! that does not fit fails that one upstream (`UpstreamError::OverBudget`),
//! so concurrent large queries are refused instead of exhausting memory.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
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
}
