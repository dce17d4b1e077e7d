//! Per-step eligibility from coverage answers: at each step, only upstreams
//! whose data in the queried window is as complete as the best one's may
//! contribute.
//!
//! Each upstream answered a coverage query with two series per step, told
//! apart by a label: `samples` (how many samples of the query's selectors it
//! holds in the windows read) and `series` (how many series those are); an
//! instant's, with one `leastK` per stretch read (how many the least-sampled
//! series of stretch K holds at the instant, the same at every step). Replicas scrape the
//! same targets at different offsets, so two complete replicas can differ by
//! one sample per target: whoever is within `series` of the best counts as
//! complete, and priority decides among those; but fewer series, or a least
//! count two or more below the best's (a few targets' series missing two
//! scrapes, which the total may hide), is short whatever the total. This
//! module knows nothing of PromQL; it reads numbers from answers.
//!
//! That tolerance cannot tell "scrapes 5s later" from "missed its latest
//! scrape": at one step, counts alone look the same. Over a range of steps
//! they do not. A phase offset gives a replica the same small deficit step
//! after step; a hole's deficit grows from one scrape per target to many. So,
//! given enough steps, each upstream's tolerance is its usual deficit (the
//! 80th percentile over the steps outside holes and outside a run of short
//! steps that opens or closes the range, never more than one sample per
//! target), and a small deficit within one scrape interval of a step short by
//! more than that is the edge of a hole. Lockstep replicas get no tolerance;
//! the first step of a hole is caught whatever the phases and the step. An
//! instant query has one step of its own, so its coverage is asked as a short
//! range ending at that instant (see `query::INSTANT_HISTORY`): the same rules
//! apply at its last step.

use super::Eligibility;
use crate::answer::{Answer, Series};
use std::collections::HashMap;

/// How many steps it takes to learn an upstream's usual deficit; with fewer
/// (an instant query), every upstream gets one sample per target.
pub const LEARN_FROM_STEPS: usize = 8;

/// The most upstreams a mask can hold (one bit each).
pub const MAX_UPSTREAMS: usize = 64;

/// Which upstreams may contribute at each step; steps it does not know
/// (raw samples of a range selector, say) are open to all.
#[derive(Debug, Default)]
pub struct StepMask {
    by_t: HashMap<i64, u64, ahash::RandomState>,
    /// The steps of `by_t` that leave some upstream out, in order, for
    /// [`Eligibility::open_until`].
    closed: Vec<i64>,
}

/// How many of an instant's stretches have a least-sampled count of their
/// own (`least0` …); the stretches after the last share it.
pub const LEAST_COUNTS: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    samples: f64,
    series: f64,
    /// Per stretch, the fewest samples any one of its series holds (0: not
    /// known). One count over every stretch would be the shortest window's:
    /// a hole in a 2m stretch hides behind a 1m stretch's usual 4 samples.
    least: [f64; LEAST_COUNTS],
}

/// One upstream's coverage answer, read: its counts at each step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coverage {
    by_t: Vec<(i64, Counts)>,
}

impl Coverage {
    /// Reads a coverage answer: at each step, one sample of each of the
    /// series whose `label` says `samples`, `series` and `leastK`. None if a
    /// count is no whole number, which no count is.
    pub fn read(answer: &Answer, label: &str) -> Option<Coverage> {
        let by_t = per_step(answer, |counts: &mut Counts, s, v| {
            let kind = answer
                .series_labels(s)
                .iter()
                .find(|l| answer.text(l.name) == label)
                .map(|l| answer.text(l.value));
            match kind {
                Some("samples") => counts.samples = v,
                Some("series") => counts.series = v,
                Some(least) => {
                    let k = least.strip_prefix("least").and_then(|k| k.parse().ok());
                    if let Some(slot) = k.and_then(|k: usize| counts.least.get_mut(k)) {
                        *slot = v;
                    }
                }
                None => {}
            }
        })?;
        Some(Coverage { by_t })
    }

    /// Its counts as `(t_ms, samples, series)`, in time order (the count of
    /// the least-sampled series, an instant's, left out).
    pub fn counts(&self) -> impl Iterator<Item = (i64, f64, f64)> + '_ {
        self.by_t.iter().map(|(t, c)| (*t, c.samples, c.series))
    }

    /// Counts given as `(t_ms, samples, series)`: remembered ones, tests, benchmarks.
    pub fn from_counts(points: impl IntoIterator<Item = (i64, f64, f64)>) -> Coverage {
        let mut by_t: Vec<(i64, Counts)> = points
            .into_iter()
            .map(|(t, samples, series)| {
                let counts = Counts {
                    samples,
                    series,
                    ..Counts::default()
                };
                (t, counts)
            })
            .collect();
        by_t.sort_by_key(|(t, _)| *t);
        Coverage { by_t }
    }
}

/// A coarse coverage answer's numbers: per step, the sum of its series'
/// values, in time order. None if one is no whole count.
pub fn totals(answer: &Answer) -> Option<Vec<(i64, f64)>> {
    per_step(answer, |total: &mut f64, _, v| *total += v)
}

/// Per step, in time order, what `add` makes of the values of an answer's
/// series (each with the series it belongs to). None if a value is no whole
/// count, as every coverage value is.
fn per_step<T: Default>(
    answer: &Answer,
    mut add: impl FnMut(&mut T, &Series, f64),
) -> Option<Vec<(i64, T)>> {
    let mut at: HashMap<i64, T, ahash::RandomState> = HashMap::default();
    for s in &answer.series {
        for sample in answer.floats(s) {
            let v = answer.sample_value(sample);
            if !(v >= 0.0 && v.fract() == 0.0) {
                return None;
            }
            add(at.entry(answer.t(sample)).or_default(), s, v);
        }
    }
    let mut by_t: Vec<(i64, T)> = at.into_iter().collect();
    by_t.sort_by_key(|(t, _)| *t);
    Some(by_t)
}

/// The steps of a range query: `start_ms`, then every `step_ms` up to `end_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steps {
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
}

impl Steps {
    /// The last step, or None if there is none.
    pub fn last(&self) -> Option<i64> {
        (self.step_ms > 0 && self.end_ms >= self.start_ms)
            .then(|| self.start_ms + (self.end_ms - self.start_ms) / self.step_ms * self.step_ms)
    }

    /// How many steps lie in `[from, to]` (both steps of this range).
    pub(crate) fn count(&self, (from, to): (i64, i64)) -> i64 {
        (to - from) / self.step_ms + 1
    }
}

/// Where the coarse round says a range's coverage must be asked step by step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Differs {
    /// The first upstream asked counted as many samples as any other in
    /// every window: its answer serves throughout.
    Nowhere,
    /// Only the steps in these spans (first and last step of each, ascending,
    /// apart by more than a step) read a window where another upstream
    /// counted more samples than the first.
    Within(Vec<(i64, i64)>),
    /// Across most of the range, or unknown (a count unreadable, or at a
    /// time that was not asked).
    Throughout,
}

/// An instant's coarse counts ([`totals`] of its one window, per upstream)
/// where the upstreams split into those holding no sample at all and those
/// holding the very same number: the first of the latter, which can answer
/// alone; no history is needed to tell that the others lack what it holds
/// (a window wholly in a hole). None otherwise, or if a count is unreadable.
pub fn sole_holder(coarse: &[Option<Vec<(i64, f64)>>]) -> Option<usize> {
    let counts: Vec<f64> = coarse
        .iter()
        .map(|c| c.as_ref().map(|points| points.iter().map(|(_, n)| n).sum()))
        .collect::<Option<_>>()?;
    let most = counts.iter().copied().fold(0.0, f64::max);
    (most > 0.0 && counts.iter().all(|&n| n == 0.0 || n == most))
        .then(|| counts.iter().position(|&n| n == most))
        .flatten()
}

/// At most this many spans are asked apart; more, and the coverage is asked
/// over every step (each span is a request to every upstream).
const MAX_SPANS: usize = 4;

/// Where upstreams' coarse counts differ, as spans of the range's steps.
///
/// `coarse[u]` is upstream u's coarse answer read by [`totals`] (None if
/// unreadable), one point per window, the windows `spacing_ms` apart and
/// each counting every stretch as a step at its time reads it. What a step
/// reads lies within the windows at the two times either side of it (each
/// stretch at least as wide as the spacing), so a step that reads a sample
/// the first lacks is less than `spacing_ms` from a window where the first
/// counted fewer: those steps must be asked where another upstream counted
/// more samples than the first (a point missing is a count of none). Where the first
/// counted as many as any, it lacks nothing the others hold (short of two
/// holes within one window), and its answer serves however few the others
/// hold: a hole in a later upstream alone asks nothing more of anyone, where
/// asking its spans cost every upstream the coverage over their steps and
/// the others their main answer there. Each span is widened by
/// `margin_ms` on both sides, steps outside the hole from which each
/// upstream's usual deficit is learnt (see [`StepMask::from_coverage`]), and
/// spans that meet are joined. Spans covering three quarters of the steps or
/// more, or more than [`MAX_SPANS`] of them, are `Throughout`: asking them
/// apart would save little; so is a differing count at a time no step reads
/// (an answer other than the one asked for). An instant is a range of one
/// step: `Nowhere` or `Throughout`.
pub fn differing_spans(
    coarse: &[Option<Vec<(i64, f64)>>],
    steps: Steps,
    spacing_ms: i64,
    margin_ms: i64,
) -> Differs {
    let Some(last) = steps.last() else {
        return Differs::Throughout;
    };
    let Some(coarse) = coarse
        .iter()
        .map(Option::as_ref)
        .collect::<Option<Vec<_>>>()
    else {
        return Differs::Throughout;
    };
    let mut at: std::collections::BTreeMap<i64, Vec<Option<f64>>> = Default::default();
    for (u, points) in coarse.iter().enumerate() {
        for (t, count) in points.iter() {
            at.entry(*t).or_insert_with(|| vec![None; coarse.len()])[u] = Some(*count);
        }
    }
    let widen = spacing_ms + margin_ms;
    // A window no step reads is no window that was asked: the answer is
    // not what it should be, and says nothing of where to look.
    let unasked = |c: i64| c + widen < steps.start_ms || c - widen > last;
    if at
        .iter()
        .any(|(c, counts)| unasked(*c) && counts.iter().any(|n| *n != counts[0]))
    {
        return Differs::Throughout;
    }
    let differing = at
        .into_iter()
        .filter(|(_, counts)| counts.iter().any(|c| *c > counts[0]))
        .map(|(t, _)| t);
    // Each differing window's steps, widened and snapped to the steps.
    let on_step_at_or_after = |t: i64| {
        let k = (t - steps.start_ms).max(0);
        steps.start_ms + (k + steps.step_ms - 1) / steps.step_ms * steps.step_ms
    };
    let on_step_at_or_before = |t: i64| {
        let k = (t - steps.start_ms).max(0);
        (steps.start_ms + k / steps.step_ms * steps.step_ms).min(last)
    };
    let mut spans: Vec<(i64, i64)> = Vec::new();
    for c in differing {
        let (from, to) = (
            on_step_at_or_after(c - widen),
            on_step_at_or_before(c + widen),
        );
        if from > to {
            continue;
        }
        match spans.last_mut() {
            Some(span) if from <= span.1 + steps.step_ms => span.1 = span.1.max(to),
            _ => spans.push((from, to)),
        }
    }
    let asked: i64 = spans.iter().map(|s| steps.count(*s)).sum();
    let all = steps.count((steps.start_ms, last));
    match spans.len() {
        0 => Differs::Nowhere,
        n if n > MAX_SPANS || asked * 4 >= all * 3 => Differs::Throughout,
        _ => Differs::Within(spans),
    }
}

/// One step of the coverage, every upstream's counts side by side.
struct Step {
    t: i64,
    counts: Vec<Counts>,
    /// Among the upstreams holding the most series, the best count of samples.
    best: f64,
    /// The most series any upstream holds: one sample per target of the best
    /// is the widest tolerance.
    per_target: f64,
    /// Among those, the most samples each stretch's least-sampled series holds.
    least: [f64; LEAST_COUNTS],
}

/// The coverage of every upstream, step by step, and the judgements made of it.
struct StepTable {
    n: usize,
    /// Whether upstream u's coverage is known (it answered, and its coverage read).
    known: Vec<bool>,
    steps: Vec<Step>,
}

impl StepTable {
    fn new(coverage: &[Option<&Coverage>], answered: &[bool]) -> StepTable {
        let n = coverage.len().min(MAX_UPSTREAMS);
        let mut table: HashMap<i64, Vec<Counts>, ahash::RandomState> = HashMap::default();
        for (u, cov) in coverage.iter().enumerate().take(n) {
            let Some(c) = cov.filter(|_| answered[u]) else {
                continue;
            };
            for (t, counts) in &c.by_t {
                table
                    .entry(*t)
                    .or_insert_with(|| vec![Counts::default(); n])[u] = *counts;
            }
        }
        let known: Vec<bool> = (0..n)
            .map(|u| answered[u] && coverage[u].is_some())
            .collect();
        // Per step: the most series any upstream holds (one that holds fewer
        // lacks a target's every sample in the window, which no scrape offset
        // explains once the window spans a scrape interval, and which a
        // deficit in samples alone misses where the window holds one sample
        // per target, or where a pinned `@` stretch short the same way at
        // every step looks usual); among those, the best count of samples;
        // and one sample per target of the best as the widest tolerance;
        // and the most samples the least-sampled series holds, which differs
        // by one sample at most between replicas scraping the same targets
        // at any phases: by more, a series is short of two scrapes or more,
        // a hole in some targets however few samples it takes of the total.
        let mut table: Vec<(i64, Vec<Counts>)> = table.into_iter().collect();
        table.sort_unstable_by_key(|(t, _)| *t);
        let steps = table
            .into_iter()
            .map(|(t, counts)| {
                let per_target = (0..n)
                    .filter(|&u| known[u])
                    .map(|u| counts[u].series)
                    .fold(0.0, f64::max);
                let most = |of: &dyn Fn(&Counts) -> f64| {
                    (0..n)
                        .filter(|&u| known[u] && counts[u].series == per_target)
                        .map(|u| of(&counts[u]))
                        .fold(0.0, f64::max)
                };
                let best = most(&|c| c.samples);
                let least = std::array::from_fn(|k| most(&|c| c.least[k]));
                Step {
                    t,
                    counts,
                    best,
                    per_target,
                    least,
                }
            })
            .collect();
        StepTable { n, known, steps }
    }

    /// How many samples upstream u lacks at step i. Fewer series, or a series
    /// two samples short, is short beyond any tolerance, however many samples.
    fn deficit(&self, i: usize, u: usize) -> f64 {
        let step = &self.steps[i];
        let counts = &step.counts[u];
        let least_short = (counts.least.iter().zip(&step.least)).any(|(l, best)| l + 1.0 < *best);
        if counts.series < step.per_target || least_short {
            f64::INFINITY
        } else {
            step.best - counts.samples
        }
    }

    /// Short by more than one scrape per target: inside a hole, whatever the phases.
    fn beyond(&self, i: usize, u: usize) -> bool {
        self.deficit(i, u) > self.steps[i].per_target
    }

    /// Upstream u's usual deficit: the 80th percentile over the steps.
    /// Learnt from the steps outside holes only: a hole filling a fifth of
    /// the range would otherwise make its own deficit look usual. Nor from
    /// a run of short steps that starts or ends the range: a hole that
    /// began (or ended) within a scrape of it shows as such a run, and an
    /// offset shows as runs that recur, so earlier ones are there to learn
    /// from. Only when nothing else is left does such a run count.
    fn usual(&self, u: usize) -> f64 {
        let len = self.steps.len();
        if len < LEARN_FROM_STEPS {
            return f64::INFINITY;
        }
        let deficit = |i: usize| self.deficit(i, u);
        let lead = (0..len).take_while(|&i| deficit(i) > 0.0).count();
        let trail = (0..len).rev().take_while(|&i| deficit(i) > 0.0).count();
        let outside = |i: usize| !self.beyond(i, u);
        // A run of short steps beside a step beyond is a hole's ramp (its
        // first or last missing scrapes): were it learnt from, a short range
        // would take a hole's edges for the usual.
        let mut ramp = vec![false; len];
        let mut i = 0;
        while i < len {
            let run = (i..len)
                .take_while(|&j| outside(j) && deficit(j) > 0.0)
                .count();
            let (from, to) = (i, i + run);
            let beside = (from > 0 && self.beyond(from - 1, u)) || (to < len && self.beyond(to, u));
            if run > 0 && beside {
                ramp[from..to].fill(true);
            }
            i = to + 1;
        }
        let inner = (lead..len.saturating_sub(trail)).filter(|&i| outside(i) && !ramp[i]);
        let mut deficits: Vec<f64> = inner.map(deficit).collect();
        if deficits.is_empty() {
            deficits = (0..len).filter(|&i| outside(i)).map(deficit).collect();
        }
        if deficits.is_empty() {
            return f64::INFINITY;
        }
        deficits.sort_by(f64::total_cmp);
        // The 80th percentile, nearest rank.
        deficits[(deficits.len() * 4).div_ceil(5) - 1]
    }

    /// Whether upstream u leads some other upstream somewhere: at a step
    /// where u lacks nothing, another lacks at most one sample per target.
    /// Replicas scraping at their own moments take turns at that (each
    /// window's edge meets one's scrape, then the other's); where u does,
    /// its own shortfalls of one sample per target are those turns, however
    /// rarely they fall on a step (steps on whole seconds meet a scrape at
    /// the window's very edge once in many), not the start of a hole.
    /// Lockstep replicas never lead each other, and keep no slack.
    fn takes_turns(&self, u: usize) -> bool {
        (0..self.steps.len()).any(|i| {
            self.deficit(i, u) == 0.0
                && (0..self.n).any(|v| {
                    let d = self.deficit(i, v);
                    v != u && self.known[v] && d > 0.0 && d <= self.steps[i].per_target
                })
        })
    }

    /// How many steps one scrape interval spans at step i: a window holding
    /// k samples per target is k scrape intervals wide. At least 1.
    fn reach(&self, i: usize, window_ms: Option<i64>, step_ms: Option<i64>) -> usize {
        let step = &self.steps[i];
        let per_window = step.best / step.per_target;
        match (window_ms, step_ms) {
            (Some(w), Some(step)) if per_window >= 2.0 && w > 0 => {
                let interval = w as f64 / per_window;
                ((interval / step as f64).ceil() as usize).clamp(1, self.steps.len())
            }
            _ => 1,
        }
    }

    /// For upstream u, per step, how many steps away the nearest step beyond
    /// is: a small deficit within one scrape interval of such a step is the
    /// edge of that hole (the scrape it misses has not yet, or no longer,
    /// made the deficit large), not an offset.
    fn to_beyond(&self, u: usize) -> Vec<usize> {
        let mut distance = vec![usize::MAX; self.steps.len()];
        let mut last = None;
        for (i, d) in distance.iter_mut().enumerate() {
            *d = last.map_or(usize::MAX, |j| i - j);
            if self.beyond(i, u) {
                last = Some(i);
            }
        }
        last = None;
        for (i, d) in distance.iter_mut().enumerate().rev() {
            *d = (*d).min(last.map_or(usize::MAX, |j| j - i));
            if self.beyond(i, u) {
                last = Some(i);
            }
        }
        distance
    }

    /// For upstream u, the steps on a hole's ramp: walking away from a step
    /// beyond, the short steps whose deficit keeps falling (at least once a
    /// scrape interval, `reach`) until it is gone. A hole in a few targets'
    /// series falls by one scrape of each per interval, short of one sample
    /// per series of all at every step of the walk, so one interval from the
    /// last step beyond does not reach its end; an offset's deficit holds
    /// steady, and the walk stops on it. The upstream with the best count is
    /// never on a ramp (its deficit is none), so this only ever hands a step
    /// to it.
    fn on_ramp(&self, u: usize, reach: &[usize]) -> Vec<bool> {
        let len = self.steps.len();
        let mut ramp = vec![false; len];
        let mut walk = |from: usize, away: &mut dyn Iterator<Item = usize>| {
            let (mut least, mut fell_at) = (f64::INFINITY, from);
            for i in away {
                let d = self.deficit(i, u);
                if self.beyond(i, u) || d <= 0.0 {
                    break;
                }
                if d < least {
                    (least, fell_at) = (d, i);
                } else if i.abs_diff(fell_at) >= reach[i] {
                    break;
                }
                ramp[i] = true;
            }
        };
        for j in (0..len).filter(|&j| self.beyond(j, u)) {
            walk(j, &mut (j + 1..len));
            walk(j, &mut (0..j).rev());
        }
        ramp
    }
}

impl StepMask {
    /// Builds the mask. `coverage[u]` is upstream u's coverage (None if
    /// that query failed); `answered[u]` says whether u's main answer exists,
    /// since the coverage of an upstream that gave no answer is beside the point.
    /// An upstream whose coverage failed ranks below every other at every step
    /// where some coverage is known.
    ///
    /// `window_ms` is how wide the stretch counted at each step is, summed
    /// over the stretches that move with the step (None if not known): with
    /// the counts it tells how many steps one scrape interval spans.
    pub fn from_coverage(
        coverage: &[Option<&Coverage>],
        answered: &[bool],
        window_ms: Option<i64>,
    ) -> StepMask {
        let table = StepTable::new(coverage, answered);
        let (n, steps) = (table.n, table.steps.len());
        // The slack each upstream gets: its usual deficit, or one sample per
        // target where it takes turns with another.
        let usual: Vec<f64> = (0..n)
            .map(|u| match table.takes_turns(u) {
                true => f64::INFINITY,
                false => table.usual(u),
            })
            .collect();
        let step_ms = table
            .steps
            .windows(2)
            .map(|w| w[1].t - w[0].t)
            .filter(|d| *d > 0)
            .min();
        let reach: Vec<usize> = (0..steps)
            .map(|i| table.reach(i, window_ms, step_ms))
            .collect();
        let to_beyond: Vec<Vec<usize>> = (0..n).map(|u| table.to_beyond(u)).collect();
        let on_ramp: Vec<Vec<bool>> = (0..n).map(|u| table.on_ramp(u, &reach)).collect();
        let by_t: HashMap<i64, u64, ahash::RandomState> = (0..steps)
            .map(|i| {
                let step = &table.steps[i];
                let mask = (0..n)
                    .filter(|&u| {
                        let deficit = table.deficit(i, u);
                        let at_edge =
                            deficit > 0.0 && (to_beyond[u][i] <= reach[i] || on_ramp[u][i]);
                        table.known[u] && deficit <= step.per_target.min(usual[u]) && !at_edge
                    })
                    .fold(0u64, |m, u| m | 1 << u);
                (step.t, mask)
            })
            .collect();
        // `coverage` has one entry per upstream (the supervisor's spans do),
        // so these are all the upstreams `allows` is asked about.
        let every = (0..n).fold(0u64, |m, u| m | 1 << u);
        let mut closed: Vec<i64> = by_t
            .iter()
            .filter(|(_, m)| **m & every != every)
            .map(|(t, _)| *t)
            .collect();
        closed.sort_unstable();
        StepMask { by_t, closed }
    }

    /// One mask from masks over disjoint spans of steps (a range's coverage
    /// asked span by span): each span's steps as its own mask says.
    pub fn join(masks: impl IntoIterator<Item = StepMask>) -> StepMask {
        let mut joined = StepMask::default();
        for mask in masks {
            joined.by_t.extend(mask.by_t);
            joined.closed.extend(mask.closed);
        }
        joined.closed.sort_unstable();
        joined
    }

    /// Steps at which `upstream` may not contribute, for tests and metrics.
    pub fn excluded_steps(&self, upstream: usize) -> usize {
        self.by_t
            .values()
            .filter(|m| *m & (1 << upstream) == 0)
            .count()
    }
}

impl Eligibility for StepMask {
    #[inline]
    fn allows(&self, upstream: usize, t_ms: i64) -> bool {
        self.by_t
            .get(&t_ms)
            .is_none_or(|m| m & (1 << upstream) != 0)
    }

    /// The steps that leave some upstream out.
    fn closed(&self) -> Option<&[i64]> {
        Some(&self.closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_held_whole_by_some_and_not_at_all_by_the_others_has_a_sole_holder() {
        let at = |n: f64| Some(vec![(60_000, n)]);
        let none = Some(vec![]);
        assert_eq!(sole_holder(&[none.clone(), at(40.0)]), Some(1));
        assert_eq!(sole_holder(&[at(0.0), at(40.0), at(40.0)]), Some(1));
        assert_eq!(sole_holder(&[at(40.0), none.clone(), at(40.0)]), Some(0));
        // Short, not empty: only its history tells a hole from an offset.
        assert_eq!(sole_holder(&[at(39.0), at(40.0)]), None);
        assert_eq!(sole_holder(&[none.clone(), at(39.0), at(40.0)]), None);
        assert_eq!(sole_holder(&[none.clone(), none.clone()]), None);
        // A count unread: unknown.
        assert_eq!(sole_holder(&[None, at(40.0)]), None);
    }

    fn coverage(points: &[(i64, f64, f64)]) -> Coverage {
        Coverage::from_counts(points.iter().map(|p| (p.0 * 1000, p.1, p.2)))
    }

    #[test]
    fn a_coverage_answer_reads_as_samples_and_series_per_step() {
        let body = |result: &str| {
            let body = format!(
                "{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":[{result}]}}}}"
            );
            Answer::parse(body.into_bytes()).unwrap()
        };
        let a = body(
            r#"{"metric":{"c":"samples"},"values":[[1,"80"],[2,"79"]]},{"metric":{"c":"series"},"values":[[1,"4"],[2,"4"]]}"#,
        );
        let read = Coverage::read(&a, "c");
        assert_eq!(read, Some(coverage(&[(1, 80.0, 4.0), (2, 79.0, 4.0)])));
        assert_ne!(read, Some(coverage(&[(1, 80.0, 4.0), (2, 80.0, 4.0)])));
        let fraction = body(r#"{"metric":{"c":"samples"},"values":[[1,"1.5"]]}"#);
        assert_eq!(Coverage::read(&fraction, "c"), None);
        assert_eq!(totals(&fraction), None);
        // A coarse answer: values summed per step, whatever the labels.
        assert_eq!(totals(&a), Some(vec![(1000, 84.0), (2000, 83.0)]));
        // An instant's: one vector sample.
        let vector = Answer::parse(
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[3,"80"]}]}}"#
                .to_vec(),
        )
        .unwrap();
        assert_eq!(totals(&vector), Some(vec![(3000, 80.0)]));
    }

    #[test]
    fn the_incomplete_upstream_is_excluded_where_it_is_incomplete() {
        // 4 targets, 20 samples each per window when complete.
        let a = coverage(&[
            (1, 80.0, 4.0),
            (2, 79.0, 4.0),
            (3, 80.0, 4.0),
            (4, 80.0, 4.0),
            (5, 40.0, 4.0),
        ]);
        let b = coverage(&[
            (1, 77.0, 4.0),
            (2, 80.0, 4.0),
            (3, 80.0, 4.0),
            (4, 80.0, 4.0),
            (5, 80.0, 4.0),
        ]);
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        // t=1: both within one scrape per target; t=2: a one short, nothing missing around it.
        assert!(m.allows(0, 1000) && m.allows(1, 1000));
        assert!(m.allows(0, 2000) && m.allows(1, 2000));
        // t=5: a is missing half; t=4 beside it, a is complete, so still allowed.
        assert!(!m.allows(0, 5000) && m.allows(1, 5000));
        assert!(m.allows(0, 4000));
        // Unknown steps are open.
        assert!(m.allows(0, 9000));
        // Runs: open to all but at the one step that leaves one out.
        assert_eq!(m.closed(), Some(&[5000][..]));
        let joined = StepMask::join([StepMask::default(), m]);
        assert_eq!(joined.closed(), Some(&[5000][..]));
        assert!(!joined.allows(0, 5000));
    }

    #[test]
    fn an_upstream_lacking_a_series_is_short_whatever_its_samples() {
        // A window pinned by `@ start()` where `late` had no data yet: the
        // same one sample per target short at every step, which would pass
        // for an offset; and a step where `late` has more samples of fewer series.
        let late: Vec<(i64, f64, f64)> = (1..=20)
            .map(|t| {
                if t == 20 {
                    (t, 9.0, 1.0)
                } else {
                    (t, 0.0, 0.0)
                }
            })
            .collect();
        let full: Vec<(i64, f64, f64)> = (1..=20).map(|t| (t, 2.0, 2.0)).collect();
        let (late, full) = (coverage(&late), coverage(&full));
        let m = StepMask::from_coverage(&[Some(&late), Some(&full)], &[true, true], None);
        assert_eq!(
            m.excluded_steps(0),
            20,
            "late holds fewer series at every step"
        );
        assert_eq!(m.excluded_steps(1), 0);
        // An instant query's few steps: the same.
        let late = coverage(&[(1, 0.0, 0.0), (2, 0.0, 0.0)]);
        let full = coverage(&[(1, 2.0, 2.0), (2, 2.0, 2.0)]);
        let m = StepMask::from_coverage(&[Some(&late), Some(&full)], &[true, true], None);
        assert!(!m.allows(0, 2000) && m.allows(1, 2000));
    }

    #[test]
    fn replicas_taking_turns_keep_one_sample_per_target_however_rarely_short() {
        // Steps on whole seconds: b's window edge meets an extra scrape at
        // step 3, a's at step 17; otherwise both hold 84.
        let counts = |extra_at: usize| -> Vec<(i64, f64, f64)> {
            (1..=20)
                .map(|t| (t as i64, if t == extra_at { 88.0 } else { 84.0 }, 4.0))
                .collect()
        };
        let (a, b) = (coverage(&counts(17)), coverage(&counts(3)));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        assert!(
            m.allows(0, 3_000),
            "a one sample per target short at b's turn"
        );
        assert!(m.allows(1, 17_000));
        assert_eq!((m.excluded_steps(0), m.excluded_steps(1)), (0, 0));
        // Without turns (b never short), the same shortfall of a's is a hole.
        let b = coverage(&counts(0));
        let a = coverage(
            &(1..=20)
                .map(|t| (t, if t == 3 { 80.0 } else { 84.0 }, 4.0))
                .collect::<Vec<_>>(),
        );
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        assert!(!m.allows(0, 3_000));
    }

    #[test]
    fn lockstep_replicas_get_no_tolerance_over_a_range() {
        // Both complete at 84 per window, except a's first step into a hole: 80.
        let mut a: Vec<(i64, f64, f64)> = (1..=20).map(|t| (t, 84.0, 4.0)).collect();
        a[10].1 = 80.0;
        let b: Vec<(i64, f64, f64)> = (1..=20).map(|t| (t, 84.0, 4.0)).collect();
        let (a, b) = (coverage(&a), coverage(&b));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        assert!(
            !m.allows(0, 11_000),
            "one scrape short in lockstep is a hole"
        );
        assert_eq!(m.excluded_steps(0), 1);
    }

    #[test]
    fn an_offset_replica_keeps_its_usual_deficit_and_no_more() {
        // a always one sample per target behind (its scrapes come later), b never.
        let mut a: Vec<(i64, f64, f64)> = (1..=20).map(|t| (t, 80.0, 4.0)).collect();
        a[10].1 = 76.0;
        let b: Vec<(i64, f64, f64)> = (1..=20).map(|t| (t, 84.0, 4.0)).collect();
        let (a, b) = (coverage(&a), coverage(&b));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        // Only the step a really misses a scrape, and its two edges: no flipping elsewhere.
        assert_eq!(
            m.excluded_steps(0),
            3,
            "no flipping to b where a is only offset"
        );
        assert!(!m.allows(0, 11_000) && m.allows(0, 9_000) && m.allows(0, 13_000));
    }

    #[test]
    fn the_first_step_of_a_hole_is_caught_even_when_the_hole_fills_the_range() {
        // a: complete for 3 steps, then one short, then ever shorter.
        let pts: Vec<(i64, f64, f64)> = [
            84.0, 84.0, 84.0, 80.0, 76.0, 72.0, 68.0, 64.0, 60.0, 56.0, 52.0, 48.0,
        ]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64 + 1, *v, 4.0))
        .collect();
        let a = coverage(&pts);
        let b = coverage(&pts.iter().map(|p| (p.0, 84.0, 4.0)).collect::<Vec<_>>());
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        assert!(m.allows(0, 3000));
        assert!(!m.allows(0, 4000), "one short, next to a hole");
        assert_eq!(m.excluded_steps(0), 9);
    }

    #[test]
    fn a_hole_over_a_fifth_of_the_range_does_not_teach_its_own_deficit() {
        // Lockstep, 4 targets, steps of half a scrape: a's hole takes 30 of
        // the 100 steps, its deficit rising one scrape per target every two.
        let a: Vec<(i64, f64, f64)> = (0..100)
            .map(|i| {
                let d = if (60..90).contains(&i) {
                    4 * ((i - 60) / 2 + 1)
                } else {
                    0
                };
                (i, 80.0 - (d.min(80)) as f64, 4.0)
            })
            .collect();
        let b: Vec<(i64, f64, f64)> = (0..100).map(|i| (i, 80.0, 4.0)).collect();
        let (a, b) = (coverage(&a), coverage(&b));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        // Steps 60 and 61, one scrape short, are the hole's start.
        assert!(!m.allows(0, 60_000) && !m.allows(0, 61_000));
        assert!(m.allows(0, 59_000) && m.allows(0, 90_000));
        assert_eq!(m.excluded_steps(0), 30);
    }

    #[test]
    fn a_short_range_does_not_learn_a_holes_ramps_as_usual() {
        // Seen in a generated query: 53 steps of 30 s, windows of 2 min, 8
        // series scraped every 15 s in lockstep; a loses two series' scrapes
        // for 20 min. Its ramps in and out (one and two scrapes short per
        // lost series) are a large share of the steps outside the hole.
        let samples = |i: usize| match i {
            ..8 | 51.. => 64.0,
            8..=10 => 60.0 - 4.0 * (i - 8) as f64,
            48..=50 => 52.0 + 4.0 * (i - 48) as f64,
            _ => 48.0,
        };
        let series = |i: usize| if (11..48).contains(&i) { 6.0 } else { 8.0 };
        let a: Vec<(i64, f64, f64)> = (0..53)
            .map(|i| (i as i64 * 30, samples(i), series(i)))
            .collect();
        let b: Vec<(i64, f64, f64)> = (0..53).map(|i| (i as i64 * 30, 64.0, 8.0)).collect();
        let (a, b) = (coverage(&a), coverage(&b));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], Some(120_000));
        assert!(
            !m.allows(0, 8 * 30_000),
            "one scrape short of two series, into the hole"
        );
        assert!(!m.allows(0, 50 * 30_000), "and out of it");
        assert!(m.allows(0, 7 * 30_000) && m.allows(0, 51 * 30_000));
        assert_eq!(m.excluded_steps(0), (8..=50).count());
    }

    #[test]
    fn an_offset_replicas_hole_edge_reaches_one_scrape_interval() {
        // Steps of 5 s, scrapes every 15 s, windows of 300 s (20 samples per
        // target, 4 targets). a scrapes later than b: one sample per target
        // short at every third step. Its hole's first missing scrape makes
        // it one short from step 30, then two from 33, three from 36, ...
        let deficit = |i: i64| match i {
            ..30 if i % 3 == 0 => 4.0,
            ..30 => 0.0,
            _ => 4.0 * ((i - 30) / 3 + 1) as f64,
        };
        let a: Vec<(i64, f64, f64)> = (0..60).map(|i| (i * 5, 80.0 - deficit(i), 4.0)).collect();
        let b: Vec<(i64, f64, f64)> = (0..60).map(|i| (i * 5, 80.0, 4.0)).collect();
        let (a, b) = (coverage(&a), coverage(&b));
        let covs = [Some(&a), Some(&b)];
        let m = StepMask::from_coverage(&covs, &[true, true], Some(300_000));
        // Steps 30 to 32 look like the lag, but lie within one scrape of the
        // first step short by more (33): they are the hole's edge.
        assert!((30..=32).all(|i| !m.allows(0, i * 5000)));
        assert!(m.allows(0, 27 * 5000), "the lag alone is tolerated");
        // Not knowing the window, only the step next to it is caught.
        let m = StepMask::from_coverage(&covs, &[true, true], None);
        assert!(m.allows(0, 30 * 5000) && m.allows(0, 31 * 5000) && !m.allows(0, 32 * 5000));
    }

    #[test]
    fn a_few_targets_ramp_out_of_a_hole_is_the_hole_to_its_end() {
        // Generated seed 24: `rate(…[10m])` at 15 s steps, 40 series of 4
        // hosts, 40 samples each a window; a lost host-1's 10 series for a
        // while, lockstep. The range ends as the window leaves the hole:
        // 4, 3, 2, then 1 scrape of those 10 short, none beyond one sample
        // per series of all (40), and nothing earlier to learn from.
        let full = 1600.0;
        let a: Vec<(i64, f64, f64)> = (0..20)
            .map(|i| match i {
                ..16 => (i * 15, full - 200.0, 30.0),
                _ => (i * 15, full - 10.0 * (20 - i) as f64, 40.0),
            })
            .collect();
        let b: Vec<(i64, f64, f64)> = (0..20).map(|i| (i * 15, full, 40.0)).collect();
        let (a, b) = (coverage(&a), coverage(&b));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], Some(600_000));
        assert_eq!(
            m.excluded_steps(0),
            20,
            "a's ramp out is the hole's, to its last step"
        );
        assert_eq!(m.excluded_steps(1), 0);
        // An offset's steady deficit after the ramp is left to a: the walk
        // stops one scrape interval into it.
        let late: Vec<(i64, f64, f64)> = (0..30)
            .map(|i| match i {
                ..16 => (i * 15, full - 200.0, 30.0),
                16..=18 => (i * 15, full - 10.0 * (20 - i) as f64, 40.0),
                _ => (i * 15, full - 10.0, 40.0),
            })
            .collect();
        let b: Vec<(i64, f64, f64)> = (0..30).map(|i| (i * 15, full, 40.0)).collect();
        let (late, b) = (coverage(&late), coverage(&b));
        let m = StepMask::from_coverage(&[Some(&late), Some(&b)], &[true, true], Some(600_000));
        assert!(!m.allows(0, 19 * 15_000) && m.allows(0, 20 * 15_000));
        assert!((20..30).all(|i| m.allows(0, i * 15_000)));
    }

    #[test]
    fn a_run_of_short_steps_ending_an_instants_history_is_a_hole() {
        // 9 steps 7 s apart, lockstep: a is one scrape short at the last
        // three (a hole began 14 s before the instant).
        let pts = |short: &[usize]| -> Vec<(i64, f64, f64)> {
            (0..9)
                .map(|i| {
                    (
                        i as i64 * 7,
                        if short.contains(&i) { 76.0 } else { 80.0 },
                        4.0,
                    )
                })
                .collect()
        };
        let b = coverage(&pts(&[]));
        let a = coverage(&pts(&[6, 7, 8]));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], Some(300_000));
        assert!(!m.allows(0, 56_000));
        // The same deficit recurring, as a lagging replica's does, is usual.
        let a = coverage(&pts(&[0, 2, 4, 6, 7, 8]));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], Some(300_000));
        assert!(m.allows(0, 56_000) && m.allows(0, 28_000));
    }

    #[test]
    fn alternating_phase_deficits_never_flip() {
        // Steps that are not a multiple of the scrape interval: a is one short every other step.
        let pts: Vec<(i64, f64, f64)> = (1..=20)
            .map(|t| (t, if t % 2 == 0 { 80.0 } else { 84.0 }, 4.0))
            .collect();
        let a = coverage(&pts);
        let b = coverage(&pts.iter().map(|p| (p.0, 84.0, 4.0)).collect::<Vec<_>>());
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        assert_eq!(m.excluded_steps(0), 0);
    }

    /// A range of 15 s steps over 3 hours, its coarse windows 5 minutes apart.
    const RANGE: Steps = Steps {
        start_ms: 0,
        end_ms: 3 * 3_600_000,
        step_ms: 15_000,
    };
    const FIVE_MIN: i64 = 300_000;

    fn windows(counts: impl Fn(i64) -> f64) -> Option<Vec<(i64, f64)>> {
        Some(
            (0..=36)
                .map(|k| k * FIVE_MIN)
                .map(|t| (t, counts(t)))
                .collect(),
        )
    }

    #[test]
    fn steps_are_asked_only_where_coarse_counts_differ() {
        let full = windows(|_| 400.0);
        // a misses the windows ending at 65 to 85 minutes (a 20-minute hole from 60).
        let a = windows(|t| {
            if (65..=85).contains(&(t / 60_000)) {
                100.0
            } else {
                400.0
            }
        });
        assert_eq!(
            differing_spans(&[full.clone(), full.clone()], RANGE, FIVE_MIN, FIVE_MIN),
            Differs::Nowhere
        );
        // Each differing window reaches one spacing each way, and the margin one more.
        let minute = 60_000;
        assert_eq!(
            differing_spans(&[a.clone(), full.clone()], RANGE, FIVE_MIN, FIVE_MIN),
            Differs::Within(vec![(55 * minute, 95 * minute)])
        );
        // A hole in a later upstream alone asks nothing: the first's
        // answer serves there.
        let b = windows(|t| if t / 60_000 >= 175 { 0.0 } else { 400.0 });
        assert_eq!(
            differing_spans(&[full.clone(), b.clone()], RANGE, FIVE_MIN, FIVE_MIN),
            Differs::Nowhere
        );
        assert_eq!(
            differing_spans(&[a.clone(), b.clone()], RANGE, FIVE_MIN, FIVE_MIN),
            Differs::Within(vec![(55 * minute, 95 * minute)])
        );
        // A second hole in the first far off is a second span; one near the
        // end stops at the last step.
        let (a_twice, full_or_b) = (
            windows(|t| {
                a.as_ref().unwrap()[(t / FIVE_MIN) as usize]
                    .1
                    .min(b.as_ref().unwrap()[(t / FIVE_MIN) as usize].1)
            }),
            windows(|_| 400.0),
        );
        assert_eq!(
            differing_spans(&[a_twice, full_or_b], RANGE, FIVE_MIN, FIVE_MIN),
            Differs::Within(vec![
                (55 * minute, 95 * minute),
                (165 * minute, 180 * minute)
            ])
        );
        // A window only another upstream answered differs (no samples is no
        // point); one only the first answered does not.
        let mut gap = full.clone().unwrap();
        gap.remove(10);
        assert_eq!(
            differing_spans(
                &[Some(gap.clone()), full.clone()],
                RANGE,
                FIVE_MIN,
                FIVE_MIN
            ),
            Differs::Within(vec![(40 * minute, 60 * minute)])
        );
        assert_eq!(
            differing_spans(&[full.clone(), Some(gap)], RANGE, FIVE_MIN, FIVE_MIN),
            Differs::Nowhere
        );
        // Spans that meet are one; steps off the grid snap inward onto it.
        let steps = Steps {
            start_ms: 7_000,
            ..RANGE
        };
        assert_eq!(
            differing_spans(&[a.clone(), full.clone()], steps, FIVE_MIN, FIVE_MIN + 1),
            Differs::Within(vec![(55 * minute + 7_000, 95 * minute - 8_000)])
        );
    }

    #[test]
    fn an_instant_is_asked_whole_where_its_one_window_differs() {
        let instant = Steps {
            start_ms: 60_000,
            end_ms: 60_000,
            step_ms: 1,
        };
        let at = |count| Some(vec![(60_000, count)]);
        assert_eq!(
            differing_spans(&[at(80.0), at(80.0)], instant, 0, 0),
            Differs::Nowhere
        );
        // The first holding more than another is the first's answer.
        assert_eq!(
            differing_spans(&[at(80.0), at(79.0)], instant, 0, 0),
            Differs::Nowhere
        );
        assert_eq!(
            differing_spans(&[at(79.0), at(80.0)], instant, 0, 0),
            Differs::Throughout
        );
        assert_eq!(
            differing_spans(&[Some(vec![]), at(80.0)], instant, 0, 0),
            Differs::Throughout
        );
        // Counts at another time than the one asked: not to be placed.
        assert_eq!(
            differing_spans(&[Some(vec![(1_000, 1.0)]), Some(vec![])], instant, 0, 0),
            Differs::Throughout
        );
    }

    #[test]
    fn most_of_the_range_or_an_unreadable_count_is_asked_throughout() {
        let full = windows(|_| 400.0);
        // An offset shows in most windows.
        let offset = windows(|t| {
            if t % (2 * FIVE_MIN) == 0 {
                399.0
            } else {
                400.0
            }
        });
        assert_eq!(
            differing_spans(&[offset, full.clone()], RANGE, FIVE_MIN, FIVE_MIN),
            Differs::Throughout
        );
        assert_eq!(
            differing_spans(&[full.clone(), None], RANGE, FIVE_MIN, FIVE_MIN),
            Differs::Throughout
        );
        // Many holes far apart: more spans than are worth asking apart.
        let holes = windows(|t| if t % (6 * FIVE_MIN) == 0 { 0.0 } else { 400.0 });
        assert_eq!(
            differing_spans(&[holes, full.clone()], RANGE, FIVE_MIN, 0),
            Differs::Throughout
        );
        // One hole, a quarter of the range: asked apart; a wider reach makes it most.
        let quarter = windows(|t| {
            if (60..=95).contains(&(t / 60_000)) {
                0.0
            } else {
                400.0
            }
        });
        assert!(matches!(
            differing_spans(&[quarter.clone(), full.clone()], RANGE, FIVE_MIN, FIVE_MIN),
            Differs::Within(_)
        ));
        assert_eq!(
            differing_spans(&[quarter, full], RANGE, 60 * 60_000, FIVE_MIN),
            Differs::Throughout
        );
    }

    #[test]
    fn masks_over_spans_join() {
        let (a, b) = (coverage(&[(1, 10.0, 1.0)]), coverage(&[(1, 20.0, 1.0)]));
        let first = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        let (a, b) = (coverage(&[(9, 20.0, 1.0)]), coverage(&[(9, 10.0, 1.0)]));
        let second = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        let m = StepMask::join([first, second]);
        assert!(!m.allows(0, 1000) && m.allows(1, 1000));
        assert!(m.allows(0, 9000) && !m.allows(1, 9000));
        assert!(
            m.allows(0, 5000) && m.allows(1, 5000),
            "between spans: open"
        );
    }

    /// Coverage with one stretch's least-sampled series' count: `(t_s, samples, series, least)`.
    fn with_least(points: &[(i64, f64, f64, f64)]) -> Coverage {
        let points: Vec<_> = points
            .iter()
            .map(|&(t, samples, series, least)| (t, samples, series, vec![least]))
            .collect();
        with_leasts(&points)
    }

    /// Coverage with each stretch's least-sampled series' count.
    fn with_leasts(points: &[(i64, f64, f64, Vec<f64>)]) -> Coverage {
        let by_t = points
            .iter()
            .map(|(t, samples, series, leasts)| {
                let mut least = [0.0; LEAST_COUNTS];
                least[..leasts.len()].copy_from_slice(leasts);
                let (samples, series) = (*samples, *series);
                (
                    t * 1000,
                    Counts {
                        samples,
                        series,
                        least,
                    },
                )
            })
            .collect();
        Coverage { by_t }
    }

    #[test]
    fn a_stretch_short_of_scrapes_is_short_behind_another_stretch_with_fewer() {
        // Generated seed 23's instant `min(stdvar_over_time(d[2m])) unless
        // resets(r[1m])`, 59 s after a's hole in one host's series ended: of
        // that host's 2m stretch a holds 4 samples, b 8; the 1m stretch holds
        // 4 in each. Counted over both stretches at once, the least was 4 for
        // both and a passed; counted per stretch, its 2m stretch is short.
        let a: Vec<_> = (0..9)
            .map(|i| (i * 7, 400.0 - 4.0, 20.0, vec![4.0, 4.0]))
            .collect();
        let b: Vec<_> = (0..9)
            .map(|i| (i * 7, 400.0, 20.0, vec![8.0, 4.0]))
            .collect();
        let (a, b) = (with_leasts(&a), with_leasts(&b));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], Some(120_000));
        assert!(!m.allows(0, 56_000), "a's 2m stretch is four scrapes short");
        assert!(m.allows(1, 56_000));
        // One sample less in one stretch is a later scrape, not a hole.
        let late: Vec<_> = (0..9)
            .map(|i| (i * 7, 400.0 - 1.0, 20.0, vec![7.0, 4.0]))
            .collect();
        let late = with_leasts(&late);
        let m = StepMask::from_coverage(&[Some(&late), Some(&b)], &[true, true], Some(120_000));
        assert_eq!(m.excluded_steps(0), 0);
    }

    #[test]
    fn a_few_series_two_scrapes_short_are_short_however_few_samples_that_is() {
        // Generated seed 16's instant, 66 s into a hole in one host's 4 of 16
        // series, as two real replicas counted it over its history (nine
        // steps 7 s apart): a's deficit grows to 16 samples, within one per
        // series of all 16 at every step, so it passed for usual. The least
        // count is the instant's at every step (`query::instant_coverage_query`).
        let a_samples = [
            316.0, 316.0, 312.0, 312.0, 308.0, 308.0, 304.0, 304.0, 304.0,
        ];
        let a: Vec<(i64, f64, f64, f64)> = (0..9)
            .map(|i| (i as i64 * 7, a_samples[i], 16.0, 16.0))
            .collect();
        let b: Vec<(i64, f64, f64, f64)> = (0..9).map(|i| (i * 7, 320.0, 16.0, 20.0)).collect();
        let (a, b) = (with_least(&a), with_least(&b));
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], Some(300_000));
        assert!(
            !m.allows(0, 56_000),
            "a's host is four scrapes short at the instant"
        );
        assert!(m.allows(1, 56_000));
        // A replica scraping later holds one sample less of some series: not short.
        let late: Vec<(i64, f64, f64, f64)> = (0..9)
            .map(|i| (i * 7, 320.0 - (i % 2) as f64 * 12.0, 16.0, 19.0))
            .collect();
        let late = with_least(&late);
        let m = StepMask::from_coverage(&[Some(&late), Some(&b)], &[true, true], Some(300_000));
        assert_eq!(m.excluded_steps(0), 0);
    }

    #[test]
    fn no_coverage_at_a_step_means_zero() {
        let a = coverage(&[(1, 80.0, 4.0)]);
        let b = coverage(&[(1, 80.0, 4.0), (2, 80.0, 4.0)]);
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], None);
        assert!(!m.allows(0, 2000));
    }

    #[test]
    fn failed_coverage_ranks_lowest_and_absent_answers_do_not_count() {
        let b = coverage(&[(1, 80.0, 4.0)]);
        let m = StepMask::from_coverage(&[None, Some(&b)], &[true, true], None);
        assert!(!m.allows(0, 1000) && m.allows(1, 1000));
        // b's main query failed: its coverage does not make a look incomplete.
        let a = coverage(&[(1, 10.0, 4.0)]);
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, false], None);
        assert!(m.allows(0, 1000));
    }
}
