//! The coverage each upstream gave, span by span: remembered counts joined
//! with those its answers bring, which are remembered in turn.

use crate::merge::coverage::Coverage;
use crate::merger::SpanCoverage;
use crate::plan::{FineSpan, Outcome};
use crate::query;
use crate::settled::Memory;
use std::collections::HashMap;
use std::time::Instant;

/// Each span's coverage per upstream: remembered counts, then those its
/// answer (`answers`, per span, if asked) brings, which are remembered.
pub(super) fn read_spans(
    spans: Vec<FineSpan>,
    answers: Vec<Option<Vec<Option<Outcome>>>>,
    settled: &std::sync::Mutex<Memory>,
) -> Vec<Vec<SpanCoverage>> {
    let now_ms = crate::time::now_ms();
    let now = Instant::now();
    let mut memory = settled.lock().ok();
    spans
        .into_iter()
        .zip(answers)
        .map(|(mut span, answers)| {
            let upstreams = answers.as_ref().map_or(span.known.len(), Vec::len);
            (0..upstreams)
                .map(|u| {
                    let known = span.known.get_mut(u).and_then(Option::take);
                    let fresh = match answers.as_ref().map(|a| &a[u]) {
                        // Not asked; or (no request) every step remembered.
                        None if known.is_none() => return SpanCoverage::NotAsked,
                        None => None,
                        Some(None) => return SpanCoverage::NotAsked,
                        Some(Some(Err(e))) => return SpanCoverage::Failed(e.clone()),
                        Some(Some(Ok(held))) => match Coverage::read(held, query::COVERAGE_LABEL) {
                            Some(read) => Some(read),
                            None => return SpanCoverage::Read(None),
                        },
                    };
                    let Some(remembered) = &span.remembered else {
                        return SpanCoverage::Read(fresh);
                    };
                    if let (Some(fresh), Some(memory)) = (&fresh, memory.as_mut()) {
                        let at: HashMap<i64, (f64, f64)> =
                            fresh.counts().map(|(t, n, s)| (t, (n, s))).collect();
                        let steps = remembered.steps;
                        let read = (span.asked_from..=steps.end_ms)
                            .step_by(steps.step_ms as usize)
                            .map(|t| (t, at.get(&t).copied()));
                        let generation = remembered.generations.get(u).copied().unwrap_or_default();
                        memory.steps.remember(
                            u,
                            generation,
                            &remembered.query,
                            read,
                            now_ms - remembered.reads_past_ms,
                            now,
                        );
                    }
                    let known = known.unwrap_or_default().into_iter();
                    let known = known.filter_map(|(t, c)| c.map(|(n, s)| (t, n, s)));
                    let fresh = fresh.iter().flat_map(Coverage::counts);
                    SpanCoverage::Read(Some(Coverage::from_counts(known.chain(fresh))))
                })
                .collect()
        })
        .collect()
}
