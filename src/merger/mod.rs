//! The merger actor: every merge runs here, on threads of its own (an actix
//! `SyncArbiter`), off the arbiter that does the backends' I/O. The
//! supervisor sends it a query's parsed answers (`MergeQuery`, answered
//! piece by piece through a channel) or another endpoint's bodies
//! (`MergeMeta`); a panic in a merge is caught here and is the proxy's
//! internal error.
//!
//! - this file: the actor, its messages, the pieces handed to the client;
//! - `job.rs`: one query's `MergeJob`: the step mask and the merge.

mod job;

pub use job::{MergeJob, MergeStop, SpanCoverage};

use crate::backend::{Body, UpstreamError};
use crate::budget::Budget;
use crate::merge::meta::{self, MetaAnswer, MetaKind, MetaOptions};
use crate::metrics::Metrics;
use actix::prelude::*;
use bytes::Bytes;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Pieces waiting for the client at most; the merge waits when it is ahead.
pub const PIECES_QUEUED: usize = 4;

/// A client that takes no piece of its answer for this long loses the rest
/// (the connection is cut), so it cannot hold a merge thread and the upstream
/// answers forever.
const CLIENT_STALL: Duration = Duration::from_secs(60);

/// Merge threads per core. A merge handing its answer on in pieces holds
/// its thread while the client is behind (at most [`CLIENT_STALL`]), so a
/// few more threads than cores keep the cores merging while some clients
/// are slow; past them, merges wait their turn in the actor's mailbox.
const THREADS_PER_CORE: usize = 4;

/// What every merge shares: the upstreams' names, the labels taken out, the
/// metrics, and where large buffers are kept.
#[derive(Clone)]
pub struct Common {
    pub names: Arc<Vec<String>>,
    pub replica_labels: Arc<Vec<String>>,
    pub metrics: Arc<Metrics>,
    pub budget: Arc<Budget>,
}

/// A merged answer, ready to send: whole, or, when it is large, its first
/// piece and a channel bringing the rest as it is merged.
#[derive(Debug)]
pub enum Merged {
    Whole(Bytes),
    Pieces {
        first: Bytes,
        rest: mpsc::Receiver<Piece>,
    },
}

/// Part of a query's merged answer, on its way from the merge thread. The
/// channel closing before a `Last` means the merge broke off.
#[derive(Debug)]
pub enum Piece {
    More(Bytes),
    Last(Bytes),
    /// The merge failed (the proxy's own fault), after the pieces before it.
    Failed(String),
}

/// Why a query produced no merged answer: the one error a query's answer
/// path has, from the merge to the edge (which maps it to a response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// Every upstream failed; one `(upstream URL, why)` per upstream, in priority order.
    AllFailed(Vec<(String, UpstreamError)>),
    /// The proxy itself broke (its parser or merge, panics included; a
    /// stopped actor).
    Internal(String),
    /// The client went away before its answer was ready: not an error.
    ClientLeft,
}

pub struct Merger;

impl Actor for Merger {
    type Context = SyncContext<Self>;
}

impl Merger {
    /// Starts the merge threads.
    pub fn start() -> Addr<Merger> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        SyncArbiter::start(cores * THREADS_PER_CORE, || Merger)
    }
}

/// A query's answers to merge, its pieces of about `piece_bytes` handed on
/// through `pieces` (the timer of `runtime`, the supervisor's, bounds the
/// wait for a slow client).
#[derive(Message)]
#[rtype(result = "()")]
pub struct MergeQuery {
    pub job: MergeJob,
    pub piece_bytes: usize,
    pub pieces: mpsc::Sender<Piece>,
    pub runtime: tokio::runtime::Handle,
}

impl Handler<MergeQuery> for Merger {
    type Result = ();

    fn handle(&mut self, msg: MergeQuery, _: &mut Self::Context) {
        let MergeQuery {
            job,
            piece_bytes,
            pieces,
            runtime,
        } = msg;
        let mut send = |piece| hand_on(&runtime, &pieces, piece);
        match job.merge_catching(Some((piece_bytes, &mut send))) {
            Ok(last) => {
                send(Piece::Last(last.into()));
            }
            Err(MergeStop::Failed(why)) => {
                send(Piece::Failed(why));
            }
            Err(MergeStop::ClientLeft) => {}
        }
        job.release();
    }
}

/// Sends a query's merge to the merger and waits for its first piece: the
/// whole answer, or the first of several.
pub async fn merge_query(
    merger: &Addr<Merger>,
    job: MergeJob,
    piece_bytes: usize,
) -> Result<Merged, ProxyError> {
    let (pieces, mut rx) = mpsc::channel(PIECES_QUEUED);
    let runtime = tokio::runtime::Handle::current();
    merger.do_send(MergeQuery {
        job,
        piece_bytes,
        pieces,
        runtime,
    });
    match rx.recv().await {
        Some(Piece::Last(whole)) => Ok(Merged::Whole(whole)),
        Some(Piece::More(first)) => Ok(Merged::Pieces { first, rest: rx }),
        Some(Piece::Failed(why)) => Err(ProxyError::Internal(why)),
        // Closed with nothing sent: the client had left.
        None => Err(ProxyError::ClientLeft),
    }
}

/// Another endpoint's answers (series, labels, rules, …) to merge as `kind`
/// says: each upstream's body, or why it has none.
#[derive(Message)]
#[rtype(result = "Result<Merged, ProxyError>")]
pub struct MergeMeta {
    pub common: Common,
    pub path: String,
    pub kind: MetaKind,
    pub outcomes: Vec<Result<Body, UpstreamError>>,
    pub limit: Option<usize>,
    pub limit_per_metric: Option<usize>,
}

impl Handler<MergeMeta> for Merger {
    type Result = Result<Merged, ProxyError>;

    fn handle(&mut self, msg: MergeMeta, _: &mut Self::Context) -> Self::Result {
        std::panic::catch_unwind(AssertUnwindSafe(|| merge_meta(msg)))
            .unwrap_or_else(|_| Err(ProxyError::Internal("the merge panicked".into())))
    }
}

fn merge_meta(msg: MergeMeta) -> Result<Merged, ProxyError> {
    let started = Instant::now();
    let MergeMeta {
        common,
        path,
        kind,
        mut outcomes,
        limit,
        limit_per_metric,
    } = msg;
    let tapes: Vec<Result<_, UpstreamError>> = outcomes
        .iter_mut()
        .map(|o| match o {
            Ok(body) => meta::parse(&mut body.bytes).map_err(UpstreamError::from),
            Err(e) => Err(e.clone()),
        })
        .collect();
    let answers: Vec<Result<MetaAnswer<'_, '_>, UpstreamError>> = tapes
        .iter()
        .map(|t| match t {
            Ok(tape) => MetaAnswer::read(kind, tape).map_err(UpstreamError::from),
            Err(e) => Err(e.clone()),
        })
        .collect();
    if answers.iter().all(Result::is_err) {
        return Err(ProxyError::AllFailed(failures(&common.names, &answers)));
    }
    let warnings = failure_warnings(&common.names, &answers);
    let answers: Vec<Option<MetaAnswer<'_, '_>>> = answers.into_iter().map(Result::ok).collect();
    let opts = MetaOptions {
        replica_labels: &common.replica_labels,
        limit,
        limit_per_metric,
    };
    let mut body = Vec::new();
    meta::merge_meta(kind, &answers, &warnings, &opts, &mut body);
    common.metrics.merged(&path, started.elapsed(), 0);
    Ok(Merged::Whole(body.into()))
}

/// Sends a piece of an answer from the merge thread, waiting while the client
/// is behind, up to [`CLIENT_STALL`]; false when the client is gone or stalled.
fn hand_on(runtime: &tokio::runtime::Handle, tx: &mpsc::Sender<Piece>, piece: Piece) -> bool {
    // The timer is driven by the arbiter that spawned the merge, which runs on.
    runtime
        .block_on(async { tokio::time::timeout(CLIENT_STALL, tx.send(piece)).await })
        .is_ok_and(|sent| sent.is_ok())
}

/// Each failed upstream's name and why, in priority order.
pub fn failures<T>(
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
pub fn failure_warnings<T>(names: &[String], outcomes: &[Result<T, UpstreamError>]) -> Vec<String> {
    failures(names, outcomes)
        .into_iter()
        .map(|(n, e)| format!("upstream {n}: {e}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::PADDING;

    fn body(budget: &Arc<Budget>, text: &str) -> Result<Body, UpstreamError> {
        let mut bytes = Vec::with_capacity(text.len() + PADDING);
        bytes.extend_from_slice(text.as_bytes());
        Ok(Body {
            status: 200,
            content_type: None,
            bytes,
            reservation: budget.reserve(text.len() + PADDING).unwrap(),
        })
    }

    fn meta(outcomes: Vec<Result<Body, UpstreamError>>, budget: Arc<Budget>) -> MergeMeta {
        MergeMeta {
            common: Common {
                names: Arc::new(vec!["a".into(), "b".into()]),
                replica_labels: Arc::new(Vec::new()),
                metrics: Arc::new(Metrics::new()),
                budget,
            },
            path: "/api/v1/label/job/values".into(),
            kind: MetaKind::LabelValues,
            outcomes,
            limit: None,
            limit_per_metric: None,
        }
    }

    #[actix_web::test]
    async fn the_merger_answers_a_union_and_names_every_upstream_that_failed() {
        let merger = Merger::start();
        let budget = Budget::new(1 << 20);
        let a = body(&budget, r#"{"status":"success","data":["api","db"]}"#);
        let b = body(&budget, r#"{"status":"success","data":["api","web"]}"#);
        let merged = merger.send(meta(vec![a, b], budget.clone())).await.unwrap();
        let Ok(Merged::Whole(bytes)) = merged else {
            panic!("{merged:?}")
        };
        assert_eq!(
            &bytes[..],
            br#"{"status":"success","data":["api","db","web"]}"#
        );
        let down = Err(UpstreamError::Connect("refused".into()));
        let garbage = body(&budget, "not json");
        let failed = merger
            .send(meta(vec![down, garbage], budget))
            .await
            .unwrap();
        match failed {
            Err(ProxyError::AllFailed(failures)) => {
                let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
