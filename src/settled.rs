//! Coverage counts of settled windows, remembered per upstream.
//!
//! A dashboard asks the same long range again at every refresh, and the
//! coarse coverage round makes every replica count the samples of the whole
//! range each time: for a range of raw series about a quarter of what the
//! query itself costs a replica. A window that ended long enough ago
//! (`settle`) holds what it will hold, so its count is remembered, for
//! `remember_for`, and the next round asks only the windows after the last
//! one known; a past instant's window (a dashboard over a past hour asks
//! its instants at the same time on every refresh) is one such window, keyed
//! alike. What can still change a settled window (a replica restarted
//! with part of its write-ahead log lost, retention, deletion, backfill) is
//! met by forgetting: everything of an upstream whose health `generation`
//! moved (it went down or came back, or a request to it failed), and every
//! count after `remember_for`. The coverage over a range's steps, asked
//! around holes, is remembered the same way (each step's windows end at the
//! step, and Grafana's steps fall on multiples of the step, so a refreshed
//! range meets them again): [`Memory`] holds both.
//!
//! Pure: times come in as arguments. It knows nothing of PromQL beyond the
//! text of the query counted, which is part of the key.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How long and what is remembered; by default, nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remembering {
    /// How long a count is kept; zero remembers nothing.
    pub remember_for: Duration,
    /// A window is settled this long after its end.
    pub settle: Duration,
}

/// Counts by window end (ms), in time order.
pub type WindowCounts<V> = Vec<(i64, V)>;

/// A step's remembered coverage: (samples, series); None: none.
pub type StepCounts = Option<(f64, f64)>;

/// Per upstream, in priority order (None: not asked), its counts remembered.
pub type Known<V> = Vec<Option<WindowCounts<V>>>;

/// Counts remembered at most, over every upstream and query; past it, the
/// oldest keys are forgotten whole.
const MAX_COUNTS: usize = 200_000;

/// The remembered counts `V` of every upstream, by the coverage query
/// counted: a coarse round's samples (None: none), or a range's counts at
/// each step.
#[derive(Debug)]
pub struct SettledCounts<V> {
    remembering: Remembering,
    counts: usize,
    by_key: HashMap<(usize, String), Remembered<V>, ahash::RandomState>,
}

#[derive(Debug)]
struct Remembered<V> {
    /// The upstream's health generation the counts were read in.
    generation: u64,
    /// When the key was last written, to forget the stalest first.
    written: Instant,
    /// Window end (ms) → what was counted there, and when it was read.
    at: BTreeMap<i64, (V, Instant)>,
}

impl<V: Copy> SettledCounts<V> {
    pub fn new(remembering: Remembering) -> SettledCounts<V> {
        SettledCounts {
            remembering,
            counts: 0,
            by_key: HashMap::default(),
        }
    }

    /// Upstream `upstream`'s remembered counts of `query` at `times`
    /// (ascending), from the first on, up to the first not known (unknown,
    /// expired, or read in another health `generation`).
    pub fn known(
        &mut self,
        upstream: usize,
        generation: u64,
        query: &str,
        times: impl IntoIterator<Item = i64>,
        now: Instant,
    ) -> WindowCounts<V> {
        let key = (upstream, query.to_string());
        let Some(remembered) = self.by_key.get(&key) else {
            return Vec::new();
        };
        if remembered.generation != generation {
            self.forget(&key);
            return Vec::new();
        }
        let fresh = |read: Instant| now.duration_since(read) < self.remembering.remember_for;
        times
            .into_iter()
            .map_while(|t| match remembered.at.get(&t) {
                Some(&(count, read)) if fresh(read) => Some((t, count)),
                _ => None,
            })
            .collect()
    }

    /// Remembers upstream `upstream`'s `counts` of `query` (window end in ms,
    /// samples counted), read now, in health `generation`: those of windows
    /// settled by `now_ms` (wall-clock ms).
    pub fn remember(
        &mut self,
        upstream: usize,
        generation: u64,
        query: &str,
        counts: impl IntoIterator<Item = (i64, V)>,
        now_ms: i64,
        now: Instant,
    ) {
        if self.remembering.remember_for.is_zero() {
            return;
        }
        let settled_by = now_ms - self.remembering.settle.as_millis() as i64;
        let key = (upstream, query.to_string());
        if self
            .by_key
            .get(&key)
            .is_some_and(|r| r.generation != generation)
        {
            self.forget(&key);
        }
        let remembered = self.by_key.entry(key).or_insert_with(|| Remembered {
            generation,
            written: now,
            at: BTreeMap::new(),
        });
        remembered.written = now;
        let before = remembered.at.len();
        let remember_for = self.remembering.remember_for;
        remembered
            .at
            .retain(|_, (_, read)| now.duration_since(*read) < remember_for);
        for (t, count) in counts.into_iter().filter(|(t, _)| *t <= settled_by) {
            remembered.at.insert(t, (count, now));
        }
        self.counts = self.counts + remembered.at.len() - before;
        while self.counts > MAX_COUNTS {
            let Some(stalest) = self
                .by_key
                .iter()
                .min_by_key(|(_, r)| r.written)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.forget(&stalest);
        }
    }

    /// The upstreams were reconfigured: what upstream `i` remembered is now
    /// upstream `moved[i]`'s, or forgotten where it is None (removed).
    pub fn renumber(&mut self, moved: &[Option<usize>]) {
        let by_key = std::mem::take(&mut self.by_key);
        self.counts = 0;
        for ((upstream, query), remembered) in by_key {
            if let Some(Some(to)) = moved.get(upstream) {
                self.counts += remembered.at.len();
                self.by_key.insert((*to, query), remembered);
            }
        }
    }

    fn forget(&mut self, key: &(usize, String)) {
        if let Some(r) = self.by_key.remove(key) {
            self.counts -= r.at.len();
        }
    }

    /// Counts remembered, expired ones included until their key is written again.
    pub fn len(&self) -> usize {
        self.counts
    }

    pub fn is_empty(&self) -> bool {
        self.counts == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn counts(remember_for: u64) -> SettledCounts<Option<f64>> {
        SettledCounts::new(Remembering {
            remember_for: Duration::from_secs(remember_for),
            settle: Duration::from_secs(300),
        })
    }

    #[test]
    fn renumbered_counts_follow_their_upstream_and_removed_ones_go() {
        let mut c = counts(600);
        let now = Instant::now();
        let read = [(80 * MIN, Some(5.0))];
        c.remember(0, 1, "q", read, 100 * MIN, now);
        c.remember(1, 1, "q", [(80 * MIN, Some(6.0))], 100 * MIN, now);
        // Upstream 0 removed, upstream 1 now first.
        c.renumber(&[None, Some(0)]);
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.known(0, 1, "q", [80 * MIN], now),
            vec![(80 * MIN, Some(6.0))]
        );
        assert_eq!(c.known(1, 1, "q", [80 * MIN], now), vec![]);
    }

    #[test]
    fn settled_windows_are_known_from_the_first_up_to_the_first_unknown() {
        let mut c = counts(600);
        let now = Instant::now();
        let now_ms = 100 * MIN;
        let read = [
            (80 * MIN, Some(5.0)),
            (90 * MIN, None),
            (100 * MIN, Some(7.0)),
        ];
        c.remember(0, 1, "q", read, now_ms, now);
        // The window ending now is not settled, so not remembered.
        assert_eq!(c.len(), 2);
        let times = [80 * MIN, 90 * MIN, 100 * MIN];
        assert_eq!(
            c.known(0, 1, "q", times, now),
            vec![(80 * MIN, Some(5.0)), (90 * MIN, None)]
        );
        // From a time not known, nothing.
        assert_eq!(c.known(0, 1, "q", [70 * MIN, 80 * MIN], now), vec![]);
        // Another query, another upstream: nothing.
        assert_eq!(c.known(0, 1, "r", times, now), vec![]);
        assert_eq!(c.known(1, 1, "q", times, now), vec![]);
    }

    #[test]
    fn counts_are_forgotten_when_they_expire_or_the_upstreams_health_moves() {
        let mut c = counts(600);
        let now = Instant::now();
        c.remember(0, 1, "q", [(MIN, Some(1.0))], 100 * MIN, now);
        let later = now + Duration::from_secs(601);
        assert_eq!(c.known(0, 1, "q", [MIN], later), vec![]);
        assert_eq!(c.known(0, 1, "q", [MIN], now), vec![(MIN, Some(1.0))]);
        // Another generation: forgotten, and gone for the old one too.
        assert_eq!(c.known(0, 2, "q", [MIN], now), vec![]);
        assert_eq!(c.known(0, 1, "q", [MIN], now), vec![]);
        assert!(c.is_empty());
        // Written in a new generation, the old counts go.
        c.remember(0, 1, "q", [(MIN, Some(1.0))], 100 * MIN, now);
        c.remember(0, 2, "q", [(2 * MIN, Some(2.0))], 100 * MIN, now);
        assert_eq!(c.len(), 1);
        assert_eq!(c.known(0, 2, "q", [MIN], now), vec![]);
    }

    #[test]
    fn nothing_is_remembered_for_no_time() {
        let mut c = counts(0);
        c.remember(0, 1, "q", [(MIN, Some(1.0))], 100 * MIN, Instant::now());
        assert!(c.is_empty());
    }

    #[test]
    fn past_the_bound_the_stalest_query_is_forgotten() {
        let mut c = counts(600);
        let now = Instant::now();
        let many = |from: i64| (0..MAX_COUNTS as i64 / 2 + 1).map(move |i| (from + i, Some(1.0)));
        c.remember(0, 1, "old", many(0), i64::MAX / 2, now);
        c.remember(
            0,
            1,
            "new",
            many(0),
            i64::MAX / 2,
            now + Duration::from_secs(1),
        );
        assert_eq!(c.len(), MAX_COUNTS / 2 + 1);
        assert_eq!(c.known(0, 1, "old", [0], now), vec![]);
        assert_eq!(c.known(0, 1, "new", [0], now), vec![(0, Some(1.0))]);
    }
}

/// What a proxy remembers of its upstreams' coverage.
#[derive(Debug)]
pub struct Memory {
    /// A range's coarse round: samples per window (None: none).
    pub windows: SettledCounts<Option<f64>>,
    /// A range's coverage over its steps around holes: (samples, series)
    /// per step (None: none).
    pub steps: SettledCounts<StepCounts>,
}

impl Memory {
    pub fn new(remembering: Remembering) -> Memory {
        Memory {
            windows: SettledCounts::new(remembering),
            steps: SettledCounts::new(remembering),
        }
    }

    /// See [`SettledCounts::renumber`].
    pub fn renumber(&mut self, moved: &[Option<usize>]) {
        self.windows.renumber(moved);
        self.steps.renumber(moved);
    }
}
