//! One query's merge: its upstream answers and what their merge needs, run
//! here or on the blocking pool, handed on in pieces; and what a set of
//! failures means.

use super::spans::{SpanCoverage, step_mask};
use super::{Piece, ProxyError, Supervisor};
use crate::backend::{ApiRequest, UpstreamError};
use crate::budget::Budget;
use crate::merge::reorder::Reorder;
use crate::merge::{self, AllEligible, ByOwner, Eligibility, MergeOptions, MergeReport, Upstream};
use crate::metrics::Metrics;
use crate::plan::Outcome;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Pieces waiting for the client at most; the merge waits when it is ahead.
pub(super) const PIECES_QUEUED: usize = 4;

/// A client that takes no piece of its answer for this long loses the rest
/// (the connection is cut), so it cannot hold a merge thread and the upstream
/// answers forever.
const CLIENT_STALL: Duration = Duration::from_secs(60);

/// Why a merge stopped without its answer.
#[derive(Debug)]
pub(super) enum MergeStop {
    /// The proxy's merge broke: an internal error.
    Failed(String),
    /// The client left, or took no piece for [`CLIENT_STALL`]: no error.
    ClientLeft,
}

/// The first main answer the proxy failed to read itself (its parser
/// broke): the query is the proxy's failure, not an upstream's.
pub(super) fn proxy_fault(outcomes: &[Outcome]) -> Option<ProxyError> {
    outcomes.iter().find_map(|o| match o {
        Err(UpstreamError::Proxy(why)) => Some(ProxyError::Internal(why.clone())),
        _ => None,
    })
}

/// One query's upstream answers and what their merge needs.
pub(super) struct MergeJob {
    pub(super) names: Arc<Vec<String>>,
    pub(super) replica_labels: Arc<Vec<String>>,
    pub(super) reorder: Reorder,
    pub(super) metrics: Arc<Metrics>,
    pub(super) path: String,
    pub(super) budget: Arc<Budget>,
    /// Each upstream's answer to the user's query, in priority order (where
    /// it was asked in parts over spans of the steps, its first part).
    pub(super) outcomes: Vec<Outcome>,
    /// The other parts: (upstream, its answer over one span of the steps).
    pub(super) more: Vec<(usize, Outcome)>,
    /// Per upstream, whether it was asked in parts (and not again whole).
    pub(super) partial: Vec<bool>,
    /// Per span of steps asked (the whole range, or the spans where the
    /// coarse counts differ; none if no coverage was asked or needed), each
    /// upstream's answer to the coverage query over it, if asked.
    pub(super) coverage: Vec<Vec<SpanCoverage>>,
    /// How wide the coverage query's moving stretches are in all.
    pub(super) coverage_window_ms: Option<i64>,
}

impl MergeJob {
    /// A query's job, its answers to come.
    pub(super) fn new(
        supervisor: &Supervisor,
        request: &ApiRequest,
        reorder: Reorder,
        coverage_window_ms: Option<i64>,
    ) -> MergeJob {
        MergeJob {
            names: supervisor.names.clone(),
            replica_labels: supervisor.replica_labels.clone(),
            reorder,
            metrics: supervisor.metrics.clone(),
            path: request.path.clone(),
            budget: supervisor.budget.clone(),
            outcomes: Vec::new(),
            more: Vec::new(),
            partial: Vec::new(),
            coverage: Vec::new(),
            coverage_window_ms,
        }
    }

    /// The answers' body bytes (the coverage answers, small and read
    /// already, left out).
    pub(super) fn input_bytes(&self) -> usize {
        let len = |o: &Outcome| o.as_ref().map_or(0, |held| held.body_len());
        self.outcomes.iter().map(len).sum::<usize>()
            + self.more.iter().map(|(_, o)| len(o)).sum::<usize>()
    }

    /// Merges the answers. With `pieces`, each `piece_bytes` of output is
    /// handed on as `Piece::More` as soon as it is written, `hand_on` saying
    /// whether the client is still there; without, the answer is built whole.
    /// [`MergeJob::merge`], a panic in it caught: the proxy's bug fails this
    /// query as an internal error, never the thread it runs on.
    pub(super) fn merge_catching(
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
                run_merge(
                    &upstreams, &warnings, &opts, &by_owner, &mut body, &mut spill,
                )
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

    /// Gives the answers' large buffers to the budget, for the next large answers.
    pub(super) fn release(self) {
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

/// Sends a piece of an answer from the merge thread, waiting while the client
/// is behind, up to [`CLIENT_STALL`]; false when the client is gone or stalled.
pub(super) fn hand_on(
    runtime: &tokio::runtime::Handle,
    tx: &mpsc::Sender<Piece>,
    piece: Piece,
) -> bool {
    // The timer is driven by the arbiter that spawned the merge, which runs on.
    runtime
        .block_on(async { tokio::time::timeout(CLIENT_STALL, tx.send(piece)).await })
        .is_ok_and(|sent| sent.is_ok())
}

/// Each failed upstream's name and why, in priority order.
pub(super) fn failures<T>(
    names: &[String],
    outcomes: &[Result<T, UpstreamError>],
) -> Vec<(String, UpstreamError)> {
    names
        .iter()
        .zip(outcomes)
        .filter_map(|(n, o)| o.as_ref().err().map(|e| (n.clone(), e.clone())))
        // Dropped for another's answer: no failure.
        .filter(|(_, e)| *e != UpstreamError::NotNeeded)
        .collect()
}

/// One warning per failed upstream, as the merged answer carries them.
pub(super) fn failure_warnings<T>(
    names: &[String],
    outcomes: &[Result<T, UpstreamError>],
) -> Vec<String> {
    failures(names, outcomes)
        .into_iter()
        .map(|(n, e)| format!("upstream {n}: {e}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_the_proxy_failed_to_read_makes_the_query_its_internal_error() {
        let outcomes: Vec<Outcome> = vec![
            Err(UpstreamError::Connect("refused".into())),
            Err(UpstreamError::Proxy("the parser panicked: x".into())),
        ];
        assert_eq!(
            proxy_fault(&outcomes),
            Some(ProxyError::Internal("the parser panicked: x".into()))
        );
        assert_eq!(proxy_fault(&outcomes[..1]), None);
    }
}
