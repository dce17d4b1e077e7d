//! A query's coarse coverage round: what is remembered of it, what it asks,
//! where its counts say the upstreams differ, and the spans of steps whose
//! coverage is asked again.

use super::{Outcome, margin_ms, one_span_steps};
use crate::backend::ApiRequest;
use crate::merge::coverage::{self, Differs, Steps};
use crate::settled::{Known, SettledCounts, StepCounts};
use std::sync::Arc;
use std::time::Instant;

/// A query's coarse coverage round, and what it takes to ask the coverage
/// over only some of a range's steps afterwards. An instant's is one window,
/// its own, counted at its time (`steps` is that one step): where the first
/// upstream holds as many samples as any there, its history is not asked.
pub struct CoarseRound {
    /// None when every count needed is remembered.
    pub request: Option<Arc<ApiRequest>>,
    pub steps: Steps,
    /// The widest stretch moving with the steps.
    pub reach_ms: i64,
    /// The coverage query over the steps.
    pub coverage: String,
    /// A range's windows' ends; None for an instant, whose one window ends
    /// at its time (`steps`), remembered as a range's are.
    pub windows: Option<Steps>,
    /// The query counting the samples in each window: what is remembered by.
    pub samples: String,
    /// Per upstream asked (None: not asked), its counts remembered, up to
    /// where `request` starts.
    pub known: Known<Option<f64>>,
    /// Each upstream's health generation when they were recalled.
    pub generations: Vec<u64>,
    /// The first window `request` asks.
    pub asked_from: i64,
    /// How far past a window's end its count reads (`query::reads_past_ms`);
    /// None: never settled, not remembered.
    pub reads_past_ms: Option<i64>,
}

/// Each asked upstream's coarse coverage answer read as counts (None if unreadable).
pub fn totals(answers: &[Option<Outcome>]) -> Vec<Option<Vec<(i64, f64)>>> {
    answers
        .iter()
        .flatten()
        .map(|a| a.as_ref().ok().and_then(|held| coverage::totals(held)))
        .collect()
}

impl CoarseRound {
    /// Takes what is remembered of each asked upstream's counts, and asks only
    /// the windows from the first that one of them does not know.
    pub fn recall(
        &mut self,
        settled: &mut SettledCounts<Option<f64>>,
        asked: &[bool],
        generations: Vec<u64>,
    ) {
        let (Some(request), Some(_)) = (self.request.as_ref(), self.reads_past_ms) else {
            return;
        };
        // An instant's one window, at its time.
        let windows = self.windows.unwrap_or(self.steps);
        let now = Instant::now();
        let times = || (windows.start_ms..=windows.end_ms).step_by(windows.step_ms as usize);
        let mut known: Known<Option<f64>> = asked
            .iter()
            .enumerate()
            .map(|(u, asked)| {
                asked.then(|| settled.known(u, generations[u], &self.samples, times(), now))
            })
            .collect();
        let from = known
            .iter()
            .flatten()
            .map(|k| windows.start_ms + k.len() as i64 * windows.step_ms)
            .min()
            .unwrap_or(windows.start_ms);
        for k in known.iter_mut().flatten() {
            k.retain(|(t, _)| *t < from);
        }
        self.request = (from <= windows.end_ms).then(|| match self.windows {
            Some(_) => {
                Arc::new(request.as_range(&self.samples, from, windows.end_ms, windows.step_ms))
            }
            // An instant's one window: asked as it is, of every upstream.
            None => request.clone(),
        });
        self.known = known;
        self.generations = generations;
        self.asked_from = from;
    }

    /// Each asked upstream's counts: those remembered, then its answer's
    /// (None if it gave none, when it was asked).
    pub fn totals(
        &self,
        answers: Option<&[Option<Outcome>]>,
        asked: &[bool],
    ) -> Vec<Option<Vec<(i64, f64)>>> {
        let fresh = answers.map(totals);
        asked
            .iter()
            .enumerate()
            .filter(|(_, asked)| **asked)
            .enumerate()
            .map(|(asked, (u, _))| {
                let known = self.known.get(u).and_then(Option::as_ref);
                let mut counts: Vec<(i64, f64)> = known
                    .into_iter()
                    .flatten()
                    .filter_map(|(t, n)| n.map(|n| (*t, n)))
                    .collect();
                if let Some(fresh) = &fresh {
                    counts.extend(fresh.get(asked)?.as_ref()?);
                }
                Some(counts)
            })
            .collect()
    }

    /// The coverage over the query's steps `from..=to`, asked from the
    /// first step one asked upstream does not remember (a range whose counts
    /// may settle; else all of it).
    pub fn fine_span(
        &self,
        fine: &ApiRequest,
        from: i64,
        to: i64,
        settled: &mut SettledCounts<StepCounts>,
        asked: &[bool],
    ) -> FineSpan {
        let steps = Steps {
            start_ms: from,
            end_ms: to,
            step_ms: self.steps.step_ms,
        };
        let mut span = FineSpan {
            request: None,
            remembered: None,
            known: Vec::new(),
            asked_from: from,
        };
        if let (Some(reads_past_ms), true) = (self.reads_past_ms, self.windows.is_some()) {
            let now = Instant::now();
            let times = || (from..=to).step_by(steps.step_ms as usize);
            span.known = asked
                .iter()
                .enumerate()
                .map(|(u, asked)| {
                    let generation = self.generations.get(u).copied().unwrap_or_default();
                    asked.then(|| settled.known(u, generation, &self.coverage, times(), now))
                })
                .collect();
            span.asked_from = span
                .known
                .iter()
                .flatten()
                .map(|k| from + k.len() as i64 * steps.step_ms)
                .min()
                .unwrap_or(from);
            for k in span.known.iter_mut().flatten() {
                k.retain(|(t, _)| *t < span.asked_from);
            }
            span.remembered = Some(Remembered {
                steps,
                query: self.coverage.clone(),
                generations: self.generations.clone(),
                reads_past_ms,
            });
        }
        span.request =
            (span.asked_from <= to).then(|| Arc::new(self.over(fine, span.asked_from, to)));
        span
    }

    /// Remembers each asked upstream's counts in the windows asked.
    pub fn remember(&self, settled: &mut SettledCounts<Option<f64>>, answers: &[Option<Outcome>]) {
        let (Some(_), Some(reads_past_ms)) = (self.request.as_ref(), self.reads_past_ms) else {
            return;
        };
        let windows = self.windows.unwrap_or(self.steps);
        let from = self.asked_from;
        let now_ms = crate::time::now_ms();
        let now = Instant::now();
        for (u, answer) in answers.iter().enumerate() {
            let Some(Some(counts)) = answer
                .as_ref()
                .map(|a| a.as_ref().ok().and_then(|held| coverage::totals(held)))
            else {
                continue;
            };
            // An instant's one count is its own time's, whatever time the
            // answer gives it (Prometheus echoes `time` to the millisecond).
            let one = self
                .windows
                .is_none()
                .then(|| counts.first().map(|(_, n)| *n));
            let at: std::collections::HashMap<i64, f64> = counts.into_iter().collect();
            let read = (from..=windows.end_ms)
                .step_by(windows.step_ms as usize)
                .map(|t| (t, one.unwrap_or_else(|| at.get(&t).copied())));
            let generation = self.generations.get(u).copied().unwrap_or_default();
            // A window is settled by the end of what its count reads.
            let now_ms = now_ms - reads_past_ms;
            settled.remember(u, generation, &self.samples, read, now_ms, now);
        }
    }

    /// Where another upstream asked counted more samples than the first in
    /// some window. Where the first holds as many as any in every window a
    /// step reads, it lacks no sample another holds (short of two holes of
    /// one size within one window), its answer serves, and that step needs
    /// no coverage of its own; elsewhere the coverage over the query's steps
    /// is asked, span by span (a span reaching one window's spacing and
    /// `LEARN_MARGIN_STEPS` steps past what differs, to learn each
    /// upstream's usual deficit from). Costs each replica one read of the
    /// selectors' samples, against two plus a count at every step for the
    /// coverage over the query's steps.
    pub fn differs(&self, totals: &[Option<Vec<(i64, f64)>>]) -> Differs {
        let spacing_ms = self.windows.map_or(0, |w| w.step_ms);
        let margin_ms = margin_ms(self.steps.step_ms);
        coverage::differing_spans(totals, self.steps, spacing_ms, margin_ms)
    }

    /// Whether the range holds twice the steps one hole's span asks (a
    /// hole's own steps aside; see `differs`): then a hole, unless it is
    /// long, leaves most steps to the first upstream's answer alone, and
    /// the others are asked the spans. In a shorter range one hole often
    /// differs throughout, and the others, asked only once the counts are
    /// in, would answer a round trip later than asked with the first (the
    /// last 15 minutes of a dashboard just after a restart); such a range
    /// is cheap to ask of every replica anyway.
    pub fn holds_two_spans(&self) -> bool {
        let steps = self.steps;
        steps.last().is_some_and(|last| {
            steps.count((steps.start_ms, last)) >= 2 * one_span_steps(self.reach_ms, steps.step_ms)
        })
    }

    /// For an instant (a round of one step), the upstream that holds every
    /// sample its window holds anywhere, where the others hold none there
    /// (`coverage::sole_holder`): its answer is the answer.
    pub fn sole_holder(&self, totals: &[Option<Vec<(i64, f64)>>]) -> Option<usize> {
        (self.steps.start_ms == self.steps.end_ms)
            .then(|| coverage::sole_holder(totals))
            .flatten()
    }

    /// `fine`, the coverage over the query's steps, over its steps from
    /// `from_ms` to `to_ms` alone.
    fn over(&self, fine: &ApiRequest, from_ms: i64, to_ms: i64) -> ApiRequest {
        fine.as_range(&self.coverage, from_ms, to_ms, self.steps.step_ms)
    }
}

/// One span of steps whose coverage is asked, with what of it is remembered.
pub struct FineSpan {
    /// None when every asked upstream remembers every step of it.
    pub request: Option<Arc<ApiRequest>>,
    /// Where its counts are remembered; None: they are not (an instant's
    /// history, a range without a coarse round, a pinned stretch).
    pub remembered: Option<Remembered>,
    /// Per upstream (None: not asked), its counts remembered before `asked_from`.
    pub known: Known<StepCounts>,
    /// The first step `request` asks.
    pub asked_from: i64,
}

/// How a span's counts are remembered.
pub struct Remembered {
    pub steps: Steps,
    pub query: String,
    pub generations: Vec<u64>,
    pub reads_past_ms: i64,
}

impl FineSpan {
    /// Asked whole, not remembered.
    pub fn whole(request: Arc<ApiRequest>) -> FineSpan {
        FineSpan {
            request: Some(request),
            remembered: None,
            known: Vec::new(),
            asked_from: 0,
        }
    }
}
