//! Planning: what each upstream is asked for one query, and when. Pure: a
//! query's analysis, the health snapshot and the remembered counts in; the
//! requests and the decisions out. No actix, no tokio, no I/O: the
//! supervisor wires these decisions to the backends (`supervisor/query.rs`).
//!
//! - this file: the coverage plan (`CoveragePlan`: the coarse round where it
//!   pays, `coarse_pays`; the coverage over the steps) and the main request's
//!   plan (`MainPlan`: verbatim or merged, the others asked at once or after
//!   the counts, `Asks`);
//! - `coarse.rs`: the coarse round (`CoarseRound`: what is remembered, what
//!   differs, the spans of steps asked again, `FineSpan`).

mod coarse;

pub use coarse::{CoarseRound, FineSpan, Remembered, totals};

use crate::answer::Answer;
use crate::backend::{ApiRequest, UpstreamError};
use crate::budget::Held;
use crate::config::CoverageConfig;
use crate::merge::coverage::{self, Differs, Steps};
use crate::query;
use std::sync::Arc;

/// One upstream's parsed answer, or why there is none.
pub type Outcome = Result<Held<Answer>, UpstreamError>;

/// When a query reads: an instant's time, or a range's start, end and step
/// (in milliseconds), where the edge could read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct When {
    pub instant_ms: Option<i64>,
    pub range_ms: Option<(i64, i64, i64)>,
}

/// A range asks its coverage coarsely first when its narrowest moving
/// stretch spans at least this many steps: windows one stretch apart then
/// count every sample the query reads at a quarter of its steps or fewer,
/// with one aggregation (the samples read dominate the replicas' cost; see
/// `query::coverage_samples_query`).
const COARSE_STEPS: i64 = 4;

/// Whether a range asks its coverage coarsely first: where its narrowest
/// moving stretch (`width_ms`) spans `COARSE_STEPS` steps or more (see
/// there); or, with wider steps, where the range holds eight times the
/// steps that one hole's span asks (`CoarseRound::differs`). The coarse
/// round then counts each sample once at no more points than the query has
/// steps, with one aggregation against the two at every step of the
/// coverage over the steps (2,400 series over 3 h at 5-minute steps,
/// measured directly: 116 against 195 ms); a range with two holes
/// pays for both rounds, but over a quarter of its steps at most. With four
/// times instead of eight, a 3-hour range at 1-minute steps across two
/// holes cost 1.10× what it did without the coarse round (bench-e2e).
/// Grafana's long ranges (a thousand steps or so, `$__rate_interval` about
/// a step) are such ranges.
pub(crate) fn coarse_pays(
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    width_ms: i64,
    reach_ms: i64,
) -> bool {
    let steps = (end_ms - start_ms) / step_ms + 1;
    width_ms >= COARSE_STEPS * step_ms || steps >= 8 * one_span_steps(reach_ms, step_ms)
}

/// How many steps one hole's span asks besides the hole's own, at most: the
/// widest moving stretch (the windows that count the hole's samples reach
/// that far past it, and one spacing more) and the margin, on each side
/// (`CoarseRound::differs`).
pub(crate) fn one_span_steps(reach_ms: i64, step_ms: i64) -> i64 {
    2 * (reach_ms + margin_ms(step_ms)) / step_ms + 1
}

/// How far past what differs a span asked apart reaches on each side,
/// besides one window's spacing: steps to learn each upstream's usual
/// deficit from.
pub(crate) fn margin_ms(step_ms: i64) -> i64 {
    LEARN_MARGIN_STEPS * step_ms
}

/// Steps learnt from on each side of a span asked apart (see
/// `CoarseRound::differs`): an upstream's usual deficit is its 80th
/// percentile over the steps outside holes, and a scrape offset recurs
/// within 15 steps (a step of whole seconds meets a 15 s scrape's phase
/// again after 15 steps at most).
const LEARN_MARGIN_STEPS: i64 = 16;

/// How a query's coverage is asked.
pub struct CoveragePlan {
    /// Over the query's own steps (for an instant, the steps before it).
    pub fine: Arc<ApiRequest>,
    /// For a range of many steps, the same counts in windows one stretch
    /// wide and one stretch apart; for an instant, in its own window: asked
    /// first, and `fine` is asked only where another upstream counted more
    /// than the first.
    pub coarse: Option<CoarseRound>,
}

impl CoveragePlan {
    /// The coverage a query asks, counting the stretches it reads (or the
    /// configured selector over them); and how wide its moving stretches
    /// are in all (`query::mean_width_ms`).
    pub fn for_query(
        request: &ApiRequest,
        when: When,
        cov: &CoverageConfig,
        stretches: &[query::Stretch],
    ) -> (CoveragePlan, Option<i64>) {
        let stretches: std::borrow::Cow<'_, [query::Stretch]> =
            match (when.instant_ms, when.range_ms) {
                (Some(_), _) => query::at_instant(stretches).into(),
                (None, Some((start, end, _))) => {
                    query::pinned_to_range(stretches, start, end).into()
                }
                (None, None) => stretches.into(),
            };
        let stretches = match &cov.selector {
            Some(selector) => query::with_selector(selector, &stretches).into(),
            None => stretches,
        };
        let coverage = query::coverage_query(&stretches);
        let plan = CoveragePlan {
            fine: Arc::new(fine_request(request, when, &stretches, &coverage)),
            coarse: coarse_round(request, when, &stretches, &coverage),
        };
        (plan, query::mean_width_ms(&stretches))
    }
}

/// The coverage over the query's own steps. An instant's is over the steps
/// before it too, to learn each upstream's usual deficit as over a range; a
/// range too short to learn from its own steps counts each stretch's
/// least-sampled series too, as an instant does.
fn fine_request(
    request: &ApiRequest,
    when: When,
    stretches: &[query::Stretch],
    coverage: &str,
) -> ApiRequest {
    if let Some(t) = when.instant_ms {
        let step = query::INSTANT_HISTORY_STEP_MS;
        let start = t - query::INSTANT_HISTORY_STEPS * step;
        let coverage = query::instant_coverage_query(stretches, t);
        return request.as_range(&coverage, start, t, step);
    }
    let short = when.range_ms.is_some_and(|(start_ms, end_ms, step_ms)| {
        let steps = Steps {
            start_ms,
            end_ms,
            step_ms,
        };
        steps.last().is_some_and(|last| {
            steps.count((steps.start_ms, last)) < coverage::LEARN_FROM_STEPS as i64
        })
    });
    if short {
        request.with_query(&query::short_range_coverage_query(stretches))
    } else {
        request.with_query(coverage)
    }
}

/// The coarse round: an instant's is its own window, once (a range of one
/// step, so differing counts ask the coverage over its history whole); a
/// range's, where it pays (`coarse_pays`), over `coarse_windows`, so that
/// a range asked again with its start moved on (a dashboard refreshing)
/// counts at the same times and what is remembered serves.
fn coarse_round(
    request: &ApiRequest,
    when: When,
    stretches: &[query::Stretch],
    coverage: &str,
) -> Option<CoarseRound> {
    let samples = query::coverage_samples_query(stretches);
    let round = |asked: ApiRequest, steps, reach_ms, windows: Option<Steps>| CoarseRound {
        request: Some(Arc::new(asked)),
        steps,
        reach_ms,
        coverage: coverage.to_string(),
        windows,
        samples: samples.clone(),
        known: Vec::new(),
        generations: Vec::new(),
        asked_from: windows.map_or(steps.start_ms, |w| w.start_ms),
        reads_past_ms: query::reads_past_ms(stretches),
    };
    match (
        when.instant_ms,
        when.range_ms,
        query::coarse_step_ms(stretches),
        query::widest_moving_ms(stretches),
    ) {
        (Some(t), ..) => {
            let steps = Steps {
                start_ms: t,
                end_ms: t,
                step_ms: 1,
            };
            Some(round(request.with_query(&samples), steps, 0, None))
        }
        (None, Some((start_ms, end_ms, step_ms)), Some(width), Some(reach_ms))
            if step_ms > 0
                && end_ms >= start_ms
                && coarse_pays(start_ms, end_ms, step_ms, width, reach_ms) =>
        {
            let windows = coarse_windows(start_ms, end_ms, step_ms, width);
            let asked =
                request.as_range(&samples, windows.start_ms, windows.end_ms, windows.step_ms);
            let steps = Steps {
                start_ms,
                end_ms,
                step_ms,
            };
            Some(round(asked, steps, reach_ms, Some(windows)))
        }
        _ => None,
    }
}

/// A range's coarse windows' ends: one narrowest moving stretch (`width_ms`)
/// apart, on multiples of it, so that a range asked again with its start
/// moved on counts at the same times; the first at or before `start_ms`,
/// the last at or past `end_ms`. A stretch narrower than a step is counted
/// at the steps themselves: windows one step apart on multiples of the step
/// would leave what the steps of a range not aligned on its step read
/// uncounted between them (a range Grafana aligns meets the same ones).
fn coarse_windows(start_ms: i64, end_ms: i64, step_ms: i64, width_ms: i64) -> Steps {
    let (width, anchor) = match width_ms < step_ms {
        true => (step_ms, start_ms.rem_euclid(step_ms)),
        false => (width_ms, 0),
    };
    let first = anchor + (start_ms - anchor).div_euclid(width) * width;
    let tiles = (end_ms - first + width - 1) / width;
    Steps {
        start_ms: first,
        end_ms: first + tiles * width,
        step_ms: width,
    }
}

/// What an upstream after the first is asked, for a range the first is
/// asked whole (the coverage then known to differ, if anywhere, where the
/// coarse counts do).
#[derive(Clone, Debug, PartialEq)]
pub enum Asks {
    /// The whole range.
    Whole,
    /// The range over these spans of its steps alone.
    Parts(Vec<(i64, i64)>),
    /// Nothing: the first's answer serves throughout.
    Nothing,
}

impl Asks {
    pub fn after(differs: &Differs) -> Asks {
        match differs {
            Differs::Nowhere => Asks::Nothing,
            Differs::Within(spans) => Asks::Parts(spans.clone()),
            Differs::Throughout => Asks::Whole,
        }
    }
}

/// How a query's main request goes out, decided before it does.
#[derive(Clone, Debug, PartialEq)]
pub struct MainPlan {
    /// The upstream whose answer may go out as it came, unparsed (the
    /// first), where the coarse counts may show it holding as many samples
    /// as any: not with replica labels to take out, nor with an
    /// upstream down, which the answer's warnings must name.
    pub verbatim_from: Option<usize>,
    /// Where the upstreams differ, known before the query goes out: every
    /// coarse count is remembered (a range over settled history, or a past
    /// instant's window).
    pub foreseen: Option<Differs>,
    /// Whether the others wait for the coarse counts before they are asked.
    pub deferred: bool,
    /// What the others are asked at once; None: once the counts are in.
    pub asks_now: Option<Asks>,
}

impl MainPlan {
    /// Decides, from the coarse round (None: no coverage, or none worth a
    /// coarse round), whether the query is a range, whether replica labels
    /// are configured, whether every upstream is up, and which are asked.
    ///
    /// Where nothing is remembered, a range holding two spans of a hole and
    /// an instant defer the others: the first upstream is asked the whole
    /// query at once, the others once the counts are in (the spans that
    /// differ, or nothing, or the whole; an instant: whole or nothing). Their
    /// main answers, mostly not needed, would take the replicas' time from
    /// the one that is. Not through `@`, whose `start()` and `end()` would
    /// move with a span's, nor where a count never settles.
    pub fn decide(
        coarse: Option<&CoarseRound>,
        when: When,
        replica_labels: bool,
        all_up: bool,
        asked: &[bool],
    ) -> MainPlan {
        let verbatim_from = (coarse.is_some() && !replica_labels && all_up).then_some(0);
        let foreseen = coarse
            .filter(|c| c.request.is_none() && c.reads_past_ms.is_some())
            .filter(|_| verbatim_from.is_some())
            .map(|c| c.differs(&c.totals(None, asked)));
        let deferred = foreseen.is_none()
            && verbatim_from.is_some()
            && coarse.is_some_and(|c| {
                c.request.is_some()
                    && match when.range_ms {
                        Some(_) => c.reads_past_ms.is_some() && c.holds_two_spans(),
                        None => when.instant_ms.is_some(),
                    }
            });
        // (An instant's one step differs nowhere or throughout, never within
        // spans: it is asked whole or not at all.)
        let asks_now = match &foreseen {
            Some(differs) => Some(Asks::after(differs)),
            None if deferred => None,
            None => Some(Asks::Whole),
        };
        MainPlan {
            verbatim_from,
            foreseen,
            deferred,
            asks_now,
        }
    }

    /// Whether the kept buffers are trimmed to the largest before any answer
    /// is read. They are sized for whole answers, and such a range reads one,
    /// the first's, unless the others are asked whole after all: the rest
    /// would only sit beside it. Not for an instant: its answers are seldom
    /// large, and a dashboard's instants between its large ranges would drop
    /// the buffers those ranges keep.
    pub fn trims_kept_buffers(&self, when: When) -> bool {
        self.asks_now != Some(Asks::Whole) && when.range_ms.is_some()
    }
}

#[cfg(test)]
mod tests;
