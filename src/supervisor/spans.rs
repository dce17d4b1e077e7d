//! The coverage each upstream gave, span by span, and the per-step
//! eligibility built from it.

use crate::backend::UpstreamError;
use crate::merge::coverage::{Coverage, StepMask};
use crate::plan::{FineSpan, Outcome};
use crate::query;
use crate::settled::Memory;
use std::collections::HashMap;
use std::time::Instant;

/// One upstream's coverage over one span of steps.
pub(super) enum SpanCoverage {
    NotAsked,
    Failed(UpstreamError),
    /// None: its answer was unreadable.
    Read(Option<Coverage>),
}

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

/// The per-step eligibility from the coverage answers (per span of steps
/// asked, each upstream's), or None for the plain priority merge (no coverage
/// asked, or none known). Says in `warnings` what degraded, once.
pub(super) fn step_mask(
    names: &[String],
    outcomes: &[Outcome],
    coverage: &[Vec<SpanCoverage>],
    window_ms: Option<i64>,
    warnings: &mut Vec<String>,
) -> Option<StepMask> {
    if coverage
        .iter()
        .flatten()
        .all(|c| matches!(c, SpanCoverage::NotAsked))
    {
        return None;
    }
    let answered: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
    let mut warn = |warning: String| {
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    };
    let mut masks = Vec::with_capacity(coverage.len());
    for span in coverage {
        let read: Vec<Option<Coverage>> = names
            .iter()
            .zip(span)
            .zip(&answered)
            .map(|((name, cov), answered)| match cov {
                SpanCoverage::Read(read) if *answered => {
                    if read.is_none() {
                        warn(format!(
                            "upstream {name}: coverage answer unreadable; its data is used only where no other upstream's completeness is known"
                        ));
                    }
                    read.clone()
                }
                SpanCoverage::Failed(e) if *answered => {
                    warn(format!(
                        "upstream {name}: coverage query failed ({e}); its data is used only where no other upstream's completeness is known"
                    ));
                    None
                }
                _ => None,
            })
            .collect();
        if read.iter().all(Option::is_none) {
            continue;
        }
        let read: Vec<Option<&Coverage>> = read.iter().map(Option::as_ref).collect();
        masks.push(StepMask::from_coverage(&read, &answered, window_ms));
    }
    if masks.is_empty() {
        warn(
            "completeness unknown on every upstream: answered by plain priority merge".to_string(),
        );
        return None;
    }
    Some(StepMask::join(masks))
}
