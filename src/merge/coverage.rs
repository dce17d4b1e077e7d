//! Per-step eligibility from coverage answers: at each step, only upstreams
//! whose data in the queried window is as complete as the best one's may
//! contribute.
//!
//! Each upstream answered a coverage query with two series per step, told
//! apart by a label: `samples` (how many samples of the coverage selector it
//! holds in the window) and `series` (how many series those are). Replicas
//! scrape the same targets at different offsets, so two complete replicas can
//! differ by one sample per target: whoever is within `series` of the best
//! counts as complete, and priority decides among those. This module knows
//! nothing of PromQL; it reads numbers from answers.

use super::Eligibility;
use super::answer::Answer;
use std::collections::HashMap;

/// The most upstreams a mask can hold (one bit each).
pub const MAX_UPSTREAMS: usize = 64;

/// Which upstreams may contribute at each step; steps it does not know
/// (raw samples of a range selector, say) are open to all.
#[derive(Debug, Default)]
pub struct StepMask {
    by_t: HashMap<i64, u64, ahash::RandomState>,
}

#[derive(Clone, Copy, Default)]
struct Counts {
    samples: f64,
    series: f64,
}

impl StepMask {
    /// Builds the mask. `coverage[u]` is upstream u's coverage answer (None if
    /// that query failed); `answered[u]` says whether u's main answer exists,
    /// since the coverage of an upstream that gave no answer is beside the point.
    /// An upstream whose coverage failed ranks below every other at every step
    /// where some coverage is known.
    pub fn from_coverage(coverage: &[Option<&Answer>], answered: &[bool], label: &str) -> StepMask {
        let n = coverage.len().min(MAX_UPSTREAMS);
        let mut table: HashMap<i64, Vec<Counts>, ahash::RandomState> = HashMap::default();
        for (u, answer) in coverage.iter().enumerate().take(n) {
            let Some(a) = answer.filter(|_| answered[u]) else {
                continue;
            };
            for s in &a.series {
                let kind = a
                    .series_labels(s)
                    .iter()
                    .find(|l| a.text(l.name) == label)
                    .map(|l| a.text(l.value));
                for sample in a.floats(s) {
                    let counts = &mut table
                        .entry(sample.t)
                        .or_insert_with(|| vec![Counts::default(); n])[u];
                    let v = a.sample_value(sample);
                    let v = if v.is_finite() { v } else { 0.0 };
                    match kind {
                        Some("samples") => counts.samples = v,
                        Some("series") => counts.series = v,
                        _ => {}
                    }
                }
            }
        }
        let known: Vec<bool> = (0..n)
            .map(|u| answered[u] && coverage[u].is_some())
            .collect();
        let by_t = table
            .into_iter()
            .map(|(t, counts)| {
                let best = (0..n)
                    .filter(|&u| known[u])
                    .map(|u| counts[u].samples)
                    .fold(0.0, f64::max);
                let tolerance = (0..n)
                    .filter(|&u| known[u] && counts[u].samples == best)
                    .map(|u| counts[u].series)
                    .fold(0.0, f64::max);
                let mask = (0..n)
                    .filter(|&u| known[u] && counts[u].samples >= best - tolerance)
                    .fold(0u64, |m, u| m | 1 << u);
                (t, mask)
            })
            .collect();
        StepMask { by_t }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage(points: &[(i64, f64, f64)]) -> Answer {
        let series = |kind: &str, pick: fn(&(i64, f64, f64)) -> f64| {
            let values: Vec<String> = points
                .iter()
                .map(|p| format!("[{},\"{}\"]", p.0, pick(p)))
                .collect();
            format!(
                "{{\"metric\":{{\"c\":\"{kind}\"}},\"values\":[{}]}}",
                values.join(",")
            )
        };
        let body = format!(
            "{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":[{},{}]}}}}",
            series("samples", |p| p.1),
            series("series", |p| p.2)
        );
        Answer::parse(body.into_bytes()).unwrap()
    }

    #[test]
    fn the_incomplete_upstream_is_excluded_where_it_is_incomplete() {
        // 4 targets, 20 samples each per window when complete.
        let a = coverage(&[(1, 80.0, 4.0), (2, 40.0, 4.0), (3, 79.0, 4.0)]);
        let b = coverage(&[(1, 77.0, 4.0), (2, 80.0, 4.0), (3, 80.0, 4.0)]);
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], "c");
        // t=1: both within one scrape per target; t=2: a is missing half; t=3: a is one short.
        assert!(m.allows(0, 1000) && m.allows(1, 1000));
        assert!(!m.allows(0, 2000) && m.allows(1, 2000));
        assert!(m.allows(0, 3000) && m.allows(1, 3000));
        // Unknown steps are open.
        assert!(m.allows(0, 9000));
    }

    #[test]
    fn no_coverage_at_a_step_means_zero() {
        let a = coverage(&[(1, 80.0, 4.0)]);
        let b = coverage(&[(1, 80.0, 4.0), (2, 80.0, 4.0)]);
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, true], "c");
        assert!(!m.allows(0, 2000));
    }

    #[test]
    fn failed_coverage_ranks_lowest_and_absent_answers_do_not_count() {
        let b = coverage(&[(1, 80.0, 4.0)]);
        let m = StepMask::from_coverage(&[None, Some(&b)], &[true, true], "c");
        assert!(!m.allows(0, 1000) && m.allows(1, 1000));
        // b's main query failed: its coverage does not make a look incomplete.
        let a = coverage(&[(1, 10.0, 4.0)]);
        let m = StepMask::from_coverage(&[Some(&a), Some(&b)], &[true, false], "c");
        assert!(m.allows(0, 1000));
    }
}
