//! One query's merge job: its upstream answers, their coverage read into a
//! step mask, and what their merge needs; merged, optionally in pieces.

use super::{Common, Piece, failure_warnings};
use crate::backend::UpstreamError;
use crate::budget::Budget;
use crate::merge::coverage::{Coverage, StepMask};
use crate::merge::reorder::Reorder;
use crate::merge::{
    self, AllEligible, ByOwner, Eligibility, Led, MergeOptions, MergeReport, Upstream,
};
use crate::metrics::Metrics;
use crate::plan::Outcome;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a merge stopped without its answer.
#[derive(Debug)]
pub enum MergeStop {
    /// The proxy's merge broke: an internal error.
    Failed(String),
    /// The client left, or took no piece for [`CLIENT_STALL`]: no error.
    ClientLeft,
}

/// One upstream's coverage over one span of steps.
pub enum SpanCoverage {
    NotAsked,
    Failed(UpstreamError),
    /// None: its answer was unreadable.
    Read(Option<Coverage>),
}

/// One query's upstream answers and what their merge needs.
pub struct MergeJob {
    pub names: Arc<Vec<String>>,
    pub replica_labels: Arc<Vec<String>>,
    pub reorder: Reorder,
    pub metrics: Arc<Metrics>,
    pub path: String,
    pub budget: Arc<Budget>,
    /// Each upstream's answer to the user's query, in priority order (where
    /// it was asked in parts over spans of the steps, its first part).
    pub outcomes: Vec<Outcome>,
    /// The other parts: (upstream, its answer over one span of the steps).
    pub more: Vec<(usize, Outcome)>,
    /// Per upstream, whether it was asked in parts (and not again whole).
    pub partial: Vec<bool>,
    /// Per span of steps asked (the whole range, or the spans where the
    /// first lacks samples another holds; none if no coverage was asked or needed), each
    /// upstream's answer to the coverage query over it, if asked.
    pub coverage: Vec<Vec<SpanCoverage>>,
    /// How wide the coverage query's moving stretches are in all.
    pub coverage_window_ms: Option<i64>,
}

impl MergeJob {
    /// A query's job, its answers to come.
    pub fn new(
        common: &Common,
        path: &str,
        reorder: Reorder,
        coverage_window_ms: Option<i64>,
    ) -> MergeJob {
        MergeJob {
            names: common.names.clone(),
            replica_labels: common.replica_labels.clone(),
            reorder,
            metrics: common.metrics.clone(),
            path: path.to_string(),
            budget: common.budget.clone(),
            outcomes: Vec::new(),
            more: Vec::new(),
            partial: Vec::new(),
            coverage: Vec::new(),
            coverage_window_ms,
        }
    }

    /// The answers' body bytes (the coverage answers, small and read
    /// already, left out).
    pub fn input_bytes(&self) -> usize {
        let len = |o: &Outcome| o.as_ref().map_or(0, |held| held.body_len());
        self.outcomes.iter().map(len).sum::<usize>()
            + self.more.iter().map(|(_, o)| len(o)).sum::<usize>()
    }

    /// Merges the answers. With `pieces`, each `piece_bytes` of output is
    /// handed on as `Piece::More` as soon as it is written, `hand_on` saying
    /// whether the client is still there; without, the answer is built whole.
    /// [`MergeJob::merge`], a panic in it caught: the proxy's bug fails this
    /// query as an internal error, never the thread it runs on.
    pub fn merge_catching(
        &self,
        pieces: Option<(usize, &mut dyn FnMut(Piece) -> bool)>,
    ) -> Result<Vec<u8>, MergeStop> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.merge(pieces)))
            .unwrap_or_else(|_| Err(MergeStop::Failed("the merge panicked".to_string())))
    }

    /// The rest of the answer, or why there is none.
    fn merge(
        &self,
        pieces: Option<(usize, &mut dyn FnMut(Piece) -> bool)>,
    ) -> Result<Vec<u8>, MergeStop> {
        let started = Instant::now();
        let names = &self.names;
        let mut warnings = failure_warnings(names, &self.outcomes);
        // Each upstream's answers in priority order, its parts after its
        // first; `owner`: whose each is.
        let mut upstreams: Vec<Upstream<'_>> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (u, (n, o)) in names.iter().zip(&self.outcomes).enumerate() {
            let parts = self.more.iter().filter(|(p, _)| *p == u).map(|(_, o)| o);
            for o in std::iter::once(o).chain(parts) {
                upstreams.push(Upstream {
                    name: n,
                    answer: o.as_ref().ok().map(|held| &**held),
                });
                owner.push(u);
            }
        }
        let opts = MergeOptions {
            replica_labels: &self.replica_labels,
            reorder: self.reorder.clone(),
        };
        let mask = step_mask(
            names,
            &self.outcomes,
            &self.coverage,
            self.coverage_window_ms,
            &mut warnings,
        );
        let (piece_bytes, mut hand_on) = match pieces {
            Some((bytes, hand_on)) => (bytes, Some(hand_on)),
            None => (usize::MAX, None),
        };
        // Room for a piece and the series that crosses its end.
        let capacity = piece_bytes.min(self.input_bytes()) * 5 / 4;
        let fresh_piece = || Vec::with_capacity(capacity);
        let mut body = fresh_piece();
        let mut client_there = true;
        // How long the merge waited for the client to take its pieces.
        let mut waited = Duration::ZERO;
        let mut spill = |out: &mut Vec<u8>| {
            if let Some(hand_on) = hand_on.as_mut().filter(|_| out.len() >= piece_bytes) {
                let piece = std::mem::replace(out, fresh_piece());
                let handing = Instant::now();
                client_there = hand_on(Piece::More(piece.into()));
                waited += handing.elapsed();
            }
            client_there
        };
        let merged = match &mask {
            Some(mask) => {
                let by_owner = ByOwner {
                    eligibility: mask,
                    owner: &owner,
                };
                match self.leader(&upstreams) {
                    Some(leader) => {
                        let led = Led {
                            eligibility: &by_owner,
                            leader,
                        };
                        run_merge(&upstreams, &warnings, &opts, &led, &mut body, &mut spill)
                    }
                    None => run_merge(
                        &upstreams, &warnings, &opts, &by_owner, &mut body, &mut spill,
                    ),
                }
            }
            None => run_merge(
                &upstreams,
                &warnings,
                &opts,
                &AllEligible,
                &mut body,
                &mut spill,
            ),
        };
        log::debug!(
            "{}: merged in {:?}, {waited:?} of it handing pieces on",
            self.path,
            started.elapsed()
        );
        if !client_there {
            return Err(MergeStop::ClientLeft);
        }
        let report = merged.map_err(MergeStop::Failed)?;
        self.metrics
            .merged(&self.path, started.elapsed(), report.filled_samples);
        Ok(body)
    }

    /// The first answering upstream, where the answers' times are the
    /// query's steps (a range query's matrix, an instant's vector) and each
    /// upstream gave one answer: there the first leads at every step the
    /// coverage leaves open ([`Led`]). A range vector's samples are at the
    /// replicas' own scrape times, and parts cover some steps only: those
    /// keep the union of the eligible.
    fn leader(&self, upstreams: &[Upstream<'_>]) -> Option<usize> {
        if !self.more.is_empty() {
            return None;
        }
        let (u, answer) = upstreams
            .iter()
            .enumerate()
            .find_map(|(u, up)| Some((u, up.answer?)))?;
        let steps = match answer.kind {
            crate::answer::ResultKind::Vector => true,
            crate::answer::ResultKind::Matrix => self.path.ends_with("/query_range"),
            _ => false,
        };
        steps.then_some(u)
    }

    /// Gives the answers' large buffers to the budget, for the next large answers.
    pub fn release(self) {
        // Parts took no kept buffers, and none of theirs is kept: the kept
        // ones are sized for whole answers.
        let whole = self
            .outcomes
            .into_iter()
            .enumerate()
            .filter(|(u, _)| !self.partial.get(*u).copied().unwrap_or(false))
            .map(|(_, o)| o);
        for held in whole.flatten() {
            let (body, table) = held.release().into_buffers();
            self.budget.keep(body, table);
        }
        self.metrics.kept_buffers(self.budget.kept_bytes());
    }
}

fn run_merge<E: Eligibility>(
    upstreams: &[Upstream<'_>],
    warnings: &[String],
    opts: &MergeOptions<'_>,
    eligibility: &E,
    body: &mut Vec<u8>,
    spill: &mut dyn FnMut(&mut Vec<u8>) -> bool,
) -> Result<MergeReport, String> {
    merge::merge_in_pieces(upstreams, warnings, opts, eligibility, body, spill)
        .map_err(|e| format!("the merge failed: {e}"))
}

/// The per-step eligibility from the coverage answers (per span of steps
/// asked, each upstream's), or None for the plain priority merge (no coverage
/// asked, or none known). Says in `warnings` what degraded, once.
fn step_mask(
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
