//! The supervisor actor: owns one [`Backend`] per upstream, fans each query out
//! to all of them, and hands the answers to the merger ([`Query`] for queries,
//! [`MetaQuery`] for the other merged endpoints); or sends a request to the
//! highest-priority upstream that answers it ([`Forward`]).
//!
//! It decides what a set of upstream outcomes means (merge, or which error),
//! and nothing about HTTP: the edge maps [`ProxyError`] to a response.

use crate::backend::{
    ApiRequest, Backend, Body, Fetch, FetchBody, Fetched, INLINE_BYTES, Reading, SharedHealth,
    UpstreamError, Verbatim, VerbatimWatch, until,
};
use crate::budget::{Budget, Held};
use crate::config::{Config, CoverageConfig, HealthConfig, UpstreamConfig};
use crate::merge::answer::{self, Answer};
use crate::merge::coverage::{self, Coverage, Differs, StepMask, Steps};
use crate::merge::meta::{self, MetaAnswer, MetaKind, MetaOptions};
use crate::merge::reorder::Reorder;
use crate::merge::{self, AllEligible, ByOwner, Eligibility, MergeOptions, MergeReport, Upstream};
use crate::metrics::Metrics;
use crate::query::{self, QueryShape, Reads};
use crate::settled::{Known, Memory, Remembering, SettledCounts, StepCounts};
use actix::prelude::*;
use bytes::Bytes;
use futures_util::future::OptionFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One merged query: the client's request, its `timeout` parameter if any, and its shape.
#[derive(Message)]
#[rtype(result = "Result<Merged, ProxyError>")]
pub struct Query {
    pub request: ApiRequest,
    pub client_timeout: Option<Duration>,
    pub shape: QueryShape,
    /// For an instant query, its `time` in milliseconds, when it is given in
    /// seconds (the HTTP edge adds it when the client sends none).
    pub instant_ms: Option<i64>,
    /// For a range query, its `start`, `end` and `step` in milliseconds,
    /// when the edge could read them (upstreams judge the rest).
    pub range_ms: Option<(i64, i64, i64)>,
}

/// One request to a merged endpoint other than the queries (series, labels, …).
#[derive(Message)]
#[rtype(result = "Result<Merged, ProxyError>")]
pub struct MetaQuery {
    pub request: ApiRequest,
    pub client_timeout: Option<Duration>,
    pub kind: MetaKind,
    /// The client's `limit` and `limit_per_metric`, re-applied after the union.
    pub limit: Option<usize>,
    pub limit_per_metric: Option<usize>,
}

/// A request answered by the highest-priority upstream that answers it at all
/// (connection refused, timeouts and 5xx move on to the next), unchanged.
#[derive(Message)]
#[rtype(result = "Result<Body, ProxyError>")]
pub struct Forward {
    pub request: ApiRequest,
    pub client_timeout: Option<Duration>,
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

/// Why a merge stopped without its answer.
#[derive(Debug)]
enum MergeStop {
    /// The proxy's merge broke: an internal error.
    Failed(String),
    /// The client left, or took no piece for [`CLIENT_STALL`]: no error.
    ClientLeft,
}

/// The first main answer the proxy failed to read itself (its parser
/// broke): the query is the proxy's failure, not an upstream's.
fn proxy_fault(outcomes: &[Outcome]) -> Option<ProxyError> {
    outcomes.iter().find_map(|o| match o {
        Err(UpstreamError::Proxy(why)) => Some(ProxyError::Internal(why.clone())),
        _ => None,
    })
}

/// Pieces waiting for the client at most; the merge waits when it is ahead.
const PIECES_QUEUED: usize = 4;

/// A client that takes no piece of its answer for this long loses the rest
/// (the connection is cut), so it cannot hold a merge thread and the upstream
/// answers forever.
const CLIENT_STALL: Duration = Duration::from_secs(60);

/// Why a query produced no merged answer.
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

struct BackendHandle {
    config: Arc<UpstreamConfig>,
    addr: Addr<Backend>,
    health: Arc<SharedHealth>,
}

pub struct Supervisor {
    backends: Vec<BackendHandle>,
    /// Each upstream's name in warnings and errors, in priority order; fixed at start-up.
    names: Arc<Vec<String>>,
    replica_labels: Arc<Vec<String>>,
    coverage: Option<CoverageConfig>,
    health: HealthConfig,
    metrics: Arc<Metrics>,
    /// A query's answer is handed on in pieces of about this size as it is
    /// merged, so the client is sent the first series while the rest are
    /// merged, and the proxy never holds a large answer whole.
    piece_bytes: usize,
    /// Where merged answers' large buffers are kept for the next ones.
    budget: Arc<Budget>,
    /// The coverage counts of settled windows, per upstream.
    settled: Arc<std::sync::Mutex<Memory>>,
}

impl Supervisor {
    /// Starts one backend per upstream, on the current arbiter, where the
    /// supervisor is started too: a message between them is then no wake-up
    /// of another thread (see `INLINE_BYTES` for the CPU work).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        // One budget for every upstream's answers in flight, and their kept buffers.
        let budget = Budget::keeping(config.max_in_flight_bytes, config.keep_buffer_bytes);
        let backends: Vec<BackendHandle> = config
            .upstreams
            .iter()
            .map(|u| {
                let upstream = Arc::new(u.clone());
                let health = Arc::new(SharedHealth::default());
                let reading = Reading {
                    max_body: config.max_upstream_body_bytes,
                    parse_batch_bytes: config.parse_batch_bytes,
                };
                let cfg = config.health.clone();
                let (for_actor, shared, metrics, budget) = (
                    upstream.clone(),
                    health.clone(),
                    metrics.clone(),
                    budget.clone(),
                );
                // Under actix' supervisor: a backend that stops is started again
                // with the same settings, the others untouched.
                let addr = actix::Supervisor::start(move |_| {
                    Backend::new(for_actor, reading, cfg, shared, metrics, budget)
                });
                BackendHandle {
                    config: upstream,
                    addr,
                    health,
                }
            })
            .collect();
        Supervisor {
            names: Arc::new(backends.iter().map(|b| b.config.display_name()).collect()),
            backends,
            replica_labels: Arc::new(config.replica_labels.clone()),
            coverage: config.coverage.clone(),
            health: config.health.clone(),
            metrics,
            piece_bytes: config.answer_piece_bytes,
            budget,
            settled: Arc::new(std::sync::Mutex::new(Memory::new(
                config
                    .coverage
                    .as_ref()
                    .map_or(Remembering::default(), |c| c.remembering),
            ))),
        }
    }

    /// Each upstream's name and health record, in priority order.
    pub fn upstreams(&self) -> Vec<(String, Arc<SharedHealth>)> {
        self.names
            .iter()
            .cloned()
            .zip(self.backends.iter().map(|b| b.health.clone()))
            .collect()
    }

    /// Every upstream's leg of a request, in priority order.
    fn legs(&self, client_timeout: Option<Duration>) -> Vec<Leg> {
        self.backends
            .iter()
            .zip(self.routing())
            .zip(self.names.iter())
            .map(|((b, down), name)| Leg {
                name: name.clone(),
                addr: b.addr.clone(),
                deadline: deadline(client_timeout, &b.config),
                down,
            })
            .collect()
    }

    /// Per backend: None to ask it, or why it is skipped. Only healthy
    /// upstreams are asked; if none is, all are (a probe can be wrong).
    fn routing(&self) -> Vec<Option<String>> {
        let any_healthy = self.backends.iter().any(|b| b.health.is_healthy());
        self.backends
            .iter()
            .map(|b| (any_healthy && !b.health.is_healthy()).then(|| b.health.reason()))
            .collect()
    }
}

/// One upstream's part in a request: where it goes and by when, or why it is skipped.
struct Leg {
    name: String,
    addr: Addr<Backend>,
    deadline: Duration,
    down: Option<String>,
}

impl Leg {
    /// The upstream's answer as it came, or why there is none (`Down` if skipped).
    async fn fetch(self, request: Arc<ApiRequest>) -> Result<Body, UpstreamError> {
        if let Some(why) = self.down {
            return Err(UpstreamError::Down(why));
        }
        let fetch = FetchBody {
            request,
            deadline: self.deadline,
        };
        self.addr
            .send(fetch)
            .await
            .unwrap_or(Err(UpstreamError::Unavailable))
    }
}

/// The deadline of one upstream request: its own timeout, or the client's if shorter.
fn deadline(client_timeout: Option<Duration>, upstream: &UpstreamConfig) -> Duration {
    match client_timeout {
        Some(t) if !t.is_zero() => t.min(upstream.timeout),
        _ => upstream.timeout,
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<Query> for Supervisor {
    type Result = ResponseFuture<Result<Merged, ProxyError>>;

    fn handle(&mut self, query: Query, _: &mut Self::Context) -> Self::Result {
        let (mut plan, coverage_window_ms) = match (&self.coverage, &query.shape.reads) {
            (Some(cov), Reads::Stretches(stretches)) => {
                let (plan, width) = CoveragePlan::for_query(&query, cov, stretches);
                (Some(plan), width)
            }
            _ => (None, None),
        };
        let request = Arc::new(query.request);
        let straggler_timeout = self.health.straggler_timeout;
        let asked = Instant::now();
        // Who is asked, and within what: the down are not.
        let routing = self.routing();
        let legs: Vec<Option<(Addr<Backend>, Duration)>> = self
            .backends
            .iter()
            .zip(&routing)
            .map(|(b, down)| {
                down.is_none()
                    .then(|| (b.addr.clone(), deadline(query.client_timeout, &b.config)))
            })
            .collect();
        let upstreams_asked: Vec<bool> = legs.iter().map(Option::is_some).collect();
        if let Some(coarse) = plan.as_mut().and_then(|p| p.coarse.as_mut()) {
            let generations: Vec<u64> = self
                .backends
                .iter()
                .map(|b| b.health.generation())
                .collect();
            if let Ok(mut settled) = self.settled.lock() {
                coarse.recall(&mut settled.windows, &upstreams_asked, generations);
            }
        }
        // Where the coarse coverage may show every upstream holding the same
        // samples, the first upstream's answer can go out as it came (see
        // `Verbatim`): not with replica labels to take out, nor with an
        // upstream down, which the answer's warnings must name.
        let (decide, decision) = tokio::sync::watch::channel(Verbatim::Open);
        let coarse = plan.as_ref().and_then(|p| p.coarse.as_ref());
        let verbatim_from = (coarse.is_some()
            && self.replica_labels.is_empty()
            && routing.iter().all(Option::is_none))
        .then_some(0);
        // With every coarse count remembered, where the upstreams differ is
        // known before the query goes out: where nowhere, the first one's
        // answer is all that is asked for; where only within spans of the
        // steps, the others are asked the query over those spans alone (the
        // first's answer serves everywhere else). Not through `@`, whose
        // `start()` and `end()` would move with a span's.
        // So with an instant's one window (remembered where its instant is
        // past: a dashboard over a past hour asks it again at each refresh).
        let foreseen = coarse
            .filter(|c| c.request.is_none() && c.reads_past_ms.is_some())
            .filter(|_| verbatim_from.is_some())
            .map(|c| c.differs(&c.totals(None, &upstreams_asked)));
        // Else, for such a range, the others wait for the coarse counts
        // (`Asks`): the first upstream is asked the whole range at once, and
        // the others, once the counts are in, the spans that differ, or
        // nothing. Their main answers, mostly not needed, would take the
        // replicas' time from the one that is. So does an instant's: the
        // others are asked it whole where its window's counts differ, beside
        // the coverage over its history, which is asked then anyway.
        let deferred = foreseen.is_none()
            && verbatim_from.is_some()
            && coarse.is_some_and(|c| {
                c.request.is_some()
                    && match query.range_ms {
                        Some(_) => c.reads_past_ms.is_some() && c.holds_two_spans(),
                        None => query.instant_ms.is_some(),
                    }
            });
        // (An instant's one step differs nowhere or throughout, never within
        // spans: it is asked whole or not at all.)
        let asks_now = match &foreseen {
            Some(differs) => Some(Asks::after(differs)),
            None if deferred => None,
            None => Some(Asks::Whole),
        };
        // The kept buffers are sized for whole answers, and this query reads
        // one, the first's, unless the others are asked whole after all
        // (their buffers then new): the rest would only sit beside it. Done
        // before any answer takes a kept buffer, so that the same largest
        // ones serve each such query. Not for an instant: its answers are
        // seldom large, and a dashboard's instants between its large ranges
        // would drop the buffers those ranges keep.
        if asks_now != Some(Asks::Whole) && query.range_ms.is_some() {
            self.budget.keep_at_most(1);
        }
        let (tell_asks, asks) = tokio::sync::watch::channel(asks_now);
        let tell_asks = Arc::new(tell_asks);
        // The first upstream's main answer: when it is in, and whether it is
        // given up (it did not answer the coarse round: it is hung).
        let (first_in, first_answered) = tokio::sync::watch::channel(false);
        let (give_up_first, first_given_up) = tokio::sync::watch::channel(false);
        let give_up_first = Arc::new(give_up_first);
        let mut first_in = Some(first_in);
        let others = Others {
            asks,
            first_in: first_answered,
            give_up_first: give_up_first.clone(),
            hedge: straggler_timeout,
        };
        let mains: Vec<MainFuture> = legs
            .iter()
            .zip(routing)
            .enumerate()
            .map(|(me, (leg, down))| -> MainFuture {
                let verbatim = verbatim_from.map(|_| VerbatimWatch {
                    decision: decision.clone(),
                    me,
                });
                let Some((addr, deadline)) = leg else {
                    let down = Err(UpstreamError::Down(down.unwrap_or_default()));
                    return Box::pin(async move { Main::whole(down) });
                };
                if me > 0 {
                    return Box::pin(other_main(
                        addr.clone(),
                        Fetch {
                            verbatim,
                            ..Fetch::new(request.clone(), *deadline)
                        },
                        others.clone(),
                    ));
                }
                // Where the others wait for the counts: the first's answer,
                // in before them and of no series, says it holds nothing of
                // what the query reads (all of it inside its hole), or the
                // query matches nothing anywhere. The others are asked whole
                // at once: the counts would have them asked so in the first
                // case, only after the round (an instant inside the first's
                // hole cost 1.5 times b alone); in the second, the decision
                // to send the first's answer drops theirs unread, and a query
                // empty everywhere costs the others a request they start.
                let on_arrival = deferred.then(|| {
                    let (arrived, arrival) = tokio::sync::oneshot::channel();
                    let tell_asks = tell_asks.clone();
                    // Apart from the answer: it ends when the body is in, or
                    // when the fetch is dropped (given up), whichever is first.
                    actix_web::rt::spawn(async move {
                        if arrival.await == Ok(true) {
                            tell_asks.send_if_modified(|asks| {
                                let waiting = asks.is_none();
                                if waiting {
                                    *asks = Some(Asks::Whole);
                                }
                                waiting
                            });
                        }
                    });
                    arrived
                });
                // (`send` hands the message over at once: asked now.)
                let whole = fetch(
                    addr,
                    Fetch {
                        verbatim,
                        on_arrival,
                        ..Fetch::new(request.clone(), *deadline)
                    },
                );
                let given_up = until(first_given_up.clone(), |g| *g);
                let first_in = first_in.take();
                Box::pin(async move {
                    let answer = match futures_util::future::select(
                        std::pin::pin!(whole),
                        std::pin::pin!(given_up),
                    )
                    .await
                    {
                        futures_util::future::Either::Left((answer, _)) => answer,
                        futures_util::future::Either::Right(_) => {
                            Err(UpstreamError::Straggler(straggler_timeout))
                        }
                    };
                    if let Some(first_in) = first_in {
                        let _ = first_in.send(true);
                    }
                    Main::whole(answer)
                })
            })
            .collect();
        let coverage_legs = legs.clone();
        let settled = self.settled.clone();
        let coverage_asked = upstreams_asked.clone();
        // The coverage goes out with the user's query, to every upstream at
        // once: the coarse one first where there is one, and the one over the
        // query's own steps only where the coarse counts differ. Each round
        // asked step by step is one span of steps, and each upstream's answer to it.
        let coverage = async move {
            let (legs, upstreams_asked) = (coverage_legs, coverage_asked);
            // No coverage for anyone: the plain priority merge.
            let Some(plan) = plan else {
                return Vec::new();
            };
            // An upstream that did not answer the coarse round within the
            // stragglers' time is hung: not asked again, but failed at once.
            let hung: Vec<std::cell::Cell<bool>> =
                legs.iter().map(|_| Default::default()).collect();
            // `spent`: of each upstream's deadline, what an earlier round used.
            let ask_all = |request: &Arc<ApiRequest>, spent: Duration| {
                let asks: Vec<_> = legs
                    .iter()
                    .zip(&hung)
                    .map(|(leg, hung)| {
                        let hung = hung.get();
                        OptionFuture::from(leg.as_ref().map(|(addr, deadline)| {
                            let deadline = deadline.saturating_sub(spent);
                            OptionFuture::from((!hung).then(|| {
                                fetch(addr, Fetch::new(request.clone(), deadline))
                                    .map(|answer| answer.and_then(Fetched::into_parsed))
                            }))
                            .map(|answer| {
                                answer.unwrap_or(Err(UpstreamError::Straggler(straggler_timeout)))
                            })
                        }))
                    })
                    .collect();
                gather(
                    asks,
                    straggler_timeout,
                    |c| matches!(c, Some(Ok(_))),
                    || Some(Err(UpstreamError::Straggler(straggler_timeout))),
                )
            };
            let (fine, spent) = match &plan.coarse {
                None => (vec![FineSpan::whole(plan.fine.clone())], Duration::ZERO),
                Some(coarse) => {
                    let answers = OptionFuture::from(
                        coarse.request.as_ref().map(|r| ask_all(r, Duration::ZERO)),
                    )
                    .await;
                    for (hung, answer) in hung.iter().zip(answers.iter().flatten()) {
                        hung.set(matches!(answer, Some(Err(UpstreamError::Straggler(_)))));
                    }
                    let totals = coarse.totals(answers.as_deref(), &upstreams_asked);
                    if let (Some(answers), Ok(mut settled)) = (&answers, settled.lock()) {
                        coarse.remember(&mut settled.windows, answers);
                    }
                    // Known before the query went out where every count was remembered.
                    let differs = foreseen.unwrap_or_else(|| coarse.differs(&totals));
                    // Every upstream holds the same samples, or (an instant)
                    // one holds them all and the others none: one answers alone.
                    let alone = verbatim_from.and_then(|first| match differs {
                        Differs::Nowhere => Some(first),
                        _ => coarse.sole_holder(&totals),
                    });
                    let _ = decide.send(alone.map_or(Verbatim::Merged, Verbatim::From));
                    if deferred {
                        // The first did not answer the coarse round within the
                        // stragglers' time: it is hung, and its main answer is
                        // given up with it (the others are asked whole).
                        if hung.first().is_some_and(std::cell::Cell::get) {
                            let _ = give_up_first.send(true);
                        }
                        let _ = tell_asks.send(Some(match alone {
                            Some(u) if u > 0 => Asks::Whole,
                            Some(_) => Asks::Nothing,
                            None => Asks::after(&differs),
                        }));
                    }
                    if alone.is_some() {
                        return Vec::new();
                    }
                    let spans = match (differs, coarse.steps.last()) {
                        (Differs::Nowhere, _) => return Vec::new(),
                        (Differs::Within(spans), _) => spans,
                        // An instant's history is asked whole.
                        (Differs::Throughout, _) if coarse.windows.is_none() => {
                            return read_spans(
                                vec![FineSpan::whole(plan.fine.clone())],
                                vec![Some(ask_all(&plan.fine, asked.elapsed()).await)],
                                &settled,
                            );
                        }
                        (Differs::Throughout, Some(last)) => vec![(coarse.steps.start_ms, last)],
                        // A range of no step at all: nothing to ask.
                        (Differs::Throughout, None) => return Vec::new(),
                    };
                    let fine: Vec<FineSpan> = match settled.lock() {
                        Ok(mut settled) => spans
                            .into_iter()
                            .map(|(from, to)| {
                                coarse.fine_span(
                                    &plan.fine,
                                    from,
                                    to,
                                    &mut settled.steps,
                                    &upstreams_asked,
                                )
                            })
                            .collect(),
                        Err(_) => return Vec::new(),
                    };
                    (fine, asked.elapsed())
                }
            };
            let answers = futures_util::future::join_all(
                fine.iter()
                    .map(|f| OptionFuture::from(f.request.as_ref().map(|r| ask_all(r, spent)))),
            )
            .await;
            read_spans(fine, answers, &settled)
        };
        let job = MergeJob {
            names: self.names.clone(),
            replica_labels: self.replica_labels.clone(),
            reorder: query.shape.reorder,
            metrics: self.metrics.clone(),
            path: request.path.clone(),
            budget: self.budget.clone(),
            outcomes: Vec::new(),
            more: Vec::new(),
            partial: Vec::new(),
            coverage: Vec::new(),
            coverage_window_ms,
        };
        let piece_bytes = self.piece_bytes;
        Box::pin(async move {
            let mut job = job;
            // Only a whole answer starts the stragglers' clock: parts are quick.
            let mains = gather(
                mains,
                straggler_timeout,
                |main| main.parts.is_none() && main.answer.is_ok(),
                || Main::whole(Err(UpstreamError::Straggler(straggler_timeout))),
            );
            let all;
            (all, job.coverage) = futures_util::future::join(mains, coverage).await;
            // Each upstream's main answer (or first part), and the other parts.
            let mut fetched: Vec<Result<Fetched, UpstreamError>> = Vec::new();
            let mut partial: Vec<bool> = Vec::new();
            let mut more: Vec<(usize, Result<Fetched, UpstreamError>)> = Vec::new();
            for (u, main) in all.into_iter().enumerate() {
                fetched.push(main.answer);
                partial.push(main.parts.is_some());
                more.extend(main.parts.into_iter().flatten().map(|part| (u, part)));
            }
            let picked = match *decision.borrow() {
                Verbatim::From(u) => Some(u),
                _ => None,
            };
            // Every upstream holds the same samples: the one picked answers
            // alone, as it came. Its framing (length or chunks) said the body
            // is whole; its opening and end say it is a query answer.
            if let Some(u) = picked
                && let Some(Ok(Fetched::Verbatim(body))) = fetched.get(u)
                && answer::looks_like_success(&body.bytes)
                && let Ok(Fetched::Verbatim(body)) =
                    std::mem::replace(&mut fetched[u], Err(UpstreamError::NotNeeded))
            {
                job.metrics.verbatim(&job.path);
                return Ok(Merged::Whole(Bytes::from(body.bytes)));
            }
            job.outcomes = futures_util::future::join_all(fetched.into_iter().map(parsed)).await;
            let mut more: Vec<(usize, Outcome)> = futures_util::future::join_all(
                more.into_iter()
                    .map(|(u, part)| async move { (u, parsed(part).await) }),
            )
            .await;
            // A part that failed fails its upstream: its other parts alone
            // would leave a hole no warning explains.
            for (u, part) in &more {
                if let (Err(e), Ok(_)) = (part, &job.outcomes[*u]) {
                    job.outcomes[*u] = Err(e.clone());
                }
            }
            // The answer picked to go out alone failed after the others were
            // dropped (its upstream broke off, or it is not an answer), or the
            // first upstream's whole answer failed where the others were asked
            // for parts: ask those again, whole.
            let failed = |u: usize| {
                job.outcomes[u]
                    .as_ref()
                    .is_err_and(|e| !e.is_client_error())
            };
            let again: Vec<bool> = match picked {
                Some(u) if failed(u) => job
                    .outcomes
                    .iter()
                    .map(|o| matches!(o, Err(UpstreamError::NotNeeded)))
                    .collect(),
                _ if partial.iter().any(|p| *p) && failed(0) => partial.clone(),
                _ => vec![false; legs.len()],
            };
            more.retain(|(u, part)| part.is_ok() && job.outcomes[*u].is_ok() && !again[*u]);
            job.more = more;
            job.partial = partial.iter().zip(&again).map(|(p, a)| *p && !a).collect();
            if again.iter().any(|a| *a) {
                let asks = again.iter().zip(&legs).map(|(again, leg)| {
                    OptionFuture::from(leg.as_ref().filter(|_| *again).map(|(addr, deadline)| {
                        let left = deadline.saturating_sub(asked.elapsed());
                        fetch(addr, Fetch::new(request.clone(), left)).then(parsed)
                    }))
                });
                let answers = futures_util::future::join_all(asks).await;
                for (outcome, answer) in job.outcomes.iter_mut().zip(answers) {
                    if let Some(answer) = answer {
                        *outcome = answer;
                    }
                }
            }
            log::debug!(
                "{}: every answer in {:?} after the request",
                job.path,
                asked.elapsed()
            );
            // An execution error (422) comes from the data the query meets
            // (duplicate series in a match group, say): a replica missing part
            // of it can evaluate cleanly where a whole one fails, and one
            // Prometheus holding all the data would fail too.
            if let Some(fault) = proxy_fault(&job.outcomes) {
                return Err(fault);
            }
            let data_failed = job.outcomes.iter().any(|o| {
                matches!(o, Err(UpstreamError::Rejected { status: 422, error_type, .. })
                    if error_type == "execution")
            });
            if data_failed || job.outcomes.iter().all(Result::is_err) {
                return Err(ProxyError::AllFailed(failures(&job.names, &job.outcomes)));
            }
            if job.input_bytes() <= INLINE_BYTES {
                // Small enough to merge here (see INLINE_BYTES), and whole.
                let merged = job.merge_catching(None);
                job.release();
                return match merged {
                    Ok(whole) => Ok(Merged::Whole(whole.into())),
                    Err(MergeStop::Failed(why)) => Err(ProxyError::Internal(why)),
                    Err(MergeStop::ClientLeft) => Err(ProxyError::ClientLeft),
                };
            }
            // The merge is CPU work: keep it off the threads that serve HTTP.
            let (tx, mut rx) = mpsc::channel(PIECES_QUEUED);
            let runtime = tokio::runtime::Handle::current();
            actix_web::rt::task::spawn_blocking(move || {
                let mut send = |piece| hand_on(&runtime, &tx, piece);
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
            });
            match rx.recv().await {
                Some(Piece::Last(whole)) => Ok(Merged::Whole(whole)),
                Some(Piece::More(first)) => Ok(Merged::Pieces { first, rest: rx }),
                Some(Piece::Failed(why)) => Err(ProxyError::Internal(why)),
                // Closed with nothing sent: the client had left.
                None => Err(ProxyError::ClientLeft),
            }
        })
    }
}

/// One upstream's main answer on its way.
type MainFuture = std::pin::Pin<Box<dyn Future<Output = Main>>>;

/// One upstream's main answer: whole, or where it was asked the query over
/// spans of the steps, its first part and the others.
struct Main {
    answer: Result<Fetched, UpstreamError>,
    /// The other parts; None: `answer` is whole (or no answer).
    parts: Option<Vec<Result<Fetched, UpstreamError>>>,
}

impl Main {
    fn whole(answer: Result<Fetched, UpstreamError>) -> Main {
        Main {
            answer,
            parts: None,
        }
    }
}

/// What an upstream after the first is asked, for a range the first is
/// asked whole (the coverage then known to differ, if anywhere, where the
/// coarse counts do).
#[derive(Clone, Debug, PartialEq)]
enum Asks {
    /// The whole range.
    Whole,
    /// The range over these spans of its steps alone.
    Parts(Vec<(i64, i64)>),
    /// Nothing: the first's answer serves throughout.
    Nothing,
}

impl Asks {
    fn after(differs: &Differs) -> Asks {
        match differs {
            Differs::Nowhere => Asks::Nothing,
            Differs::Within(spans) => Asks::Parts(spans.clone()),
            Differs::Throughout => Asks::Whole,
        }
    }
}

/// What the upstreams after the first share about one query.
#[derive(Clone)]
struct Others {
    /// What they are asked; None until the coarse round is in.
    asks: tokio::sync::watch::Receiver<Option<Asks>>,
    /// Whether the first upstream's main answer is in.
    first_in: tokio::sync::watch::Receiver<bool>,
    /// Gives the first upstream's main answer up (as a straggler's).
    give_up_first: Arc<tokio::sync::watch::Sender<bool>>,
    /// How long the first's answer is awaited, past the coarse round, before
    /// one asked parts or nothing is asked the whole range after all.
    hedge: Duration,
}

/// An upstream after the first: asked what `asks` says, once it says it
/// (`whole` is the whole range, with its deadline). Where that is parts or
/// nothing, it is asked the whole range after all if the first upstream's
/// answer is not in within `hedge` of that, and once that whole answer is
/// in, the first's is given up: a slow first upstream then costs what a
/// straggler does, not its whole deadline.
async fn other_main(addr: Addr<Backend>, whole: Fetch, others: Others) -> Main {
    let Others {
        mut asks,
        first_in,
        give_up_first,
        hedge,
    } = others;
    let started = Instant::now();
    // Of the deadline, what waiting for the counts (and the parts) left.
    let left = |deadline: Duration| deadline.saturating_sub(started.elapsed());
    // A round that ends without a word (it broke off), or is not in within
    // half the deadline (an upstream hung in it, with a client's timeout
    // shorter than the stragglers' time, which would leave nothing): whole.
    // Not sooner: a heavy query's counts may take seconds, and its whole
    // answer asked of every upstream would cost them all that much more.
    let told = tokio::time::timeout(whole.deadline / 2, asks.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|told| told.ok().and_then(|a| a.clone()));
    let spans = match told.unwrap_or(Asks::Whole) {
        Asks::Whole => {
            let whole = Fetch {
                deadline: left(whole.deadline),
                ..whole
            };
            return Main::whole(fetch(&addr, whole).await);
        }
        Asks::Nothing => Vec::new(),
        Asks::Parts(spans) => spans,
    };
    let hedge = tokio::time::sleep(hedge);
    let parts_left = left(whole.deadline);
    let parts = futures_util::future::join_all(spans.iter().map(|&(from, to)| {
        let part = Arc::new(whole.request.over_steps(from, to));
        fetch(
            &addr,
            Fetch {
                part: true,
                ..Fetch::new(part, parts_left)
            },
        )
    }))
    .await;
    let first = until(first_in, |answered| *answered);
    if let futures_util::future::Either::Right(_) =
        futures_util::future::select(std::pin::pin!(first), std::pin::pin!(hedge)).await
    {
        // Not with the decision to send the first's answer alone, which
        // would drop it.
        let whole = fetch(&addr, Fetch::new(whole.request, left(whole.deadline))).await;
        if whole.is_ok() {
            let _ = give_up_first.send(true);
        }
        return Main::whole(whole);
    }
    let mut parts = parts.into_iter();
    match parts.next() {
        None => Main::whole(Err(UpstreamError::NotNeeded)),
        Some(first) => Main {
            answer: first,
            parts: Some(parts.collect()),
        },
    }
}

/// Sends one `Fetch`; a backend that is gone (it is being restarted) is `Unavailable`.
fn fetch(
    addr: &Addr<Backend>,
    msg: Fetch,
) -> impl Future<Output = Result<Fetched, UpstreamError>> + use<> {
    let send = addr.send(msg);
    async move { send.await.unwrap_or(Err(UpstreamError::Unavailable)) }
}

/// A main answer ready for the merge: one that came verbatim but is not to go
/// out so is parsed now, off the arbiter.
async fn parsed(fetched: Result<Fetched, UpstreamError>) -> Outcome {
    match fetched? {
        Fetched::Parsed(held) => Ok(held),
        verbatim => actix_web::rt::task::spawn_blocking(move || verbatim.into_parsed())
            .await
            .unwrap_or_else(|e| Err(UpstreamError::Proxy(format!("the parse task failed: {e}")))),
    }
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
fn coarse_pays(start_ms: i64, end_ms: i64, step_ms: i64, width_ms: i64, reach_ms: i64) -> bool {
    let steps = (end_ms - start_ms) / step_ms + 1;
    width_ms >= COARSE_STEPS * step_ms || steps >= 8 * one_span_steps(reach_ms, step_ms)
}

/// How many steps one hole's span asks besides the hole's own: the widest
/// moving stretch and the margin, on each side (`CoarseRound::differs`).
fn one_span_steps(reach_ms: i64, step_ms: i64) -> i64 {
    2 * (reach_ms + margin_ms(reach_ms, step_ms)) / step_ms + 1
}

/// How far past what differs a span asked apart reaches on each side,
/// besides the widest moving stretch (`reach_ms`): steps to learn each
/// upstream's usual deficit from.
fn margin_ms(reach_ms: i64, step_ms: i64) -> i64 {
    reach_ms.max(LEARN_MARGIN_STEPS * step_ms)
}

/// Steps learnt from on each side of a span asked apart, at the least (see
/// `CoarseRound::differs`): an upstream's usual deficit is its 80th percentile
/// over the steps outside holes, and a scrape offset recurs within a few steps.
const LEARN_MARGIN_STEPS: i64 = 16;

/// How a query's coverage is asked.
struct CoveragePlan {
    /// Over the query's own steps (for an instant, the steps before it).
    fine: Arc<ApiRequest>,
    /// For a range of many steps, the same counts in windows one stretch
    /// wide and one stretch apart; for an instant, in its own window: asked
    /// first, and `fine` is asked only where the upstreams' counts differ.
    coarse: Option<CoarseRound>,
}

impl CoveragePlan {
    /// The coverage a query asks, counting the stretches it reads (or the
    /// configured selector over them); and how wide its moving stretches
    /// are in all (`query::mean_width_ms`).
    fn for_query(
        query: &Query,
        cov: &CoverageConfig,
        stretches: &[query::Stretch],
    ) -> (CoveragePlan, Option<i64>) {
        let stretches: std::borrow::Cow<'_, [query::Stretch]> =
            match (query.instant_ms, query.range_ms) {
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
        let fine = match query.instant_ms {
            // An instant's coverage over the steps before it too, to
            // learn each upstream's usual deficit as over a range.
            Some(t) => {
                let step = query::INSTANT_HISTORY_STEP_MS;
                let start = t - query::INSTANT_HISTORY_STEPS * step;
                let coverage = query::instant_coverage_query(&stretches, t);
                query.request.as_range(&coverage, start, t, step)
            }
            // A range too short to learn from its own steps counts each
            // stretch's least-sampled series too, as an instant does.
            None => match query.range_ms.map(|(start_ms, end_ms, step_ms)| Steps {
                start_ms,
                end_ms,
                step_ms,
            }) {
                Some(steps)
                    if steps.last().is_some_and(|last| {
                        steps.count((steps.start_ms, last)) < coverage::LEARN_FROM_STEPS as i64
                    }) =>
                {
                    query
                        .request
                        .with_query(&query::short_range_coverage_query(&stretches))
                }
                _ => query.request.with_query(&coverage),
            },
        };
        let samples = || query::coverage_samples_query(&stretches);
        let coarse = match (
            query.instant_ms,
            query.range_ms,
            query::coarse_step_ms(&stretches),
            query::widest_moving_ms(&stretches),
        ) {
            // An instant's coarse round is its own window, once: a
            // range of one step, so differing counts ask the
            // coverage over its history whole.
            (Some(t), ..) => Some(CoarseRound {
                request: Some(Arc::new(query.request.with_query(&samples()))),
                steps: Steps {
                    start_ms: t,
                    end_ms: t,
                    step_ms: 1,
                },
                reach_ms: 0,
                coverage: coverage.clone(),
                windows: None,
                samples: samples(),
                known: Vec::new(),
                generations: Vec::new(),
                asked_from: t,
                reads_past_ms: query::reads_past_ms(&stretches),
            }),
            (None, Some((start_ms, end_ms, step_ms)), Some(width), Some(reach_ms))
                if step_ms > 0
                    && end_ms >= start_ms
                    && coarse_pays(start_ms, end_ms, step_ms, width, reach_ms) =>
            {
                // Windows one stretch apart (where the stretch is
                // narrower than a step, the query's own steps), on
                // multiples of their width, so that a range asked
                // again with its start moved on (a dashboard
                // refreshing) counts at the same times and what is
                // remembered serves; the first at or before `start`,
                // the last at or past `end`.
                let width = width.max(step_ms);
                let first = start_ms.div_euclid(width) * width;
                let tiles = (end_ms - first + width - 1) / width;
                let samples = samples();
                Some(CoarseRound {
                    request: Some(Arc::new(query.request.as_range(
                        &samples,
                        first,
                        first + tiles * width,
                        width,
                    ))),
                    steps: Steps {
                        start_ms,
                        end_ms,
                        step_ms,
                    },
                    reach_ms,
                    coverage: coverage.clone(),
                    windows: Some(Steps {
                        start_ms: first,
                        end_ms: first + tiles * width,
                        step_ms: width,
                    }),
                    samples,
                    known: Vec::new(),
                    generations: Vec::new(),
                    asked_from: first,
                    reads_past_ms: query::reads_past_ms(&stretches),
                })
            }
            _ => None,
        };
        let plan = CoveragePlan {
            fine: Arc::new(fine),
            coarse,
        };
        (plan, query::mean_width_ms(&stretches))
    }
}

/// A query's coarse coverage round, and what it takes to ask the coverage
/// over only some of a range's steps afterwards. An instant's is one window,
/// its own, counted at its time (`steps` is that one step): where every
/// upstream holds the very same samples there, its history is not asked.
struct CoarseRound {
    /// None when every count needed is remembered.
    request: Option<Arc<ApiRequest>>,
    steps: Steps,
    /// The widest stretch moving with the steps.
    reach_ms: i64,
    /// The coverage query over the steps.
    coverage: String,
    /// A range's windows' ends; None for an instant, whose one window ends
    /// at its time (`steps`), remembered as a range's are.
    windows: Option<Steps>,
    /// The query counting the samples in each window: what is remembered by.
    samples: String,
    /// Per upstream asked (None: not asked), its counts remembered, up to
    /// where `request` starts.
    known: Known<Option<f64>>,
    /// Each upstream's health generation when they were recalled.
    generations: Vec<u64>,
    /// The first window `request` asks.
    asked_from: i64,
    /// How far past a window's end its count reads (`query::reads_past_ms`);
    /// None: never settled, not remembered.
    reads_past_ms: Option<i64>,
}

/// Each asked upstream's coarse coverage answer read as counts (None if unreadable).
fn totals(answers: &[Option<Outcome>]) -> Vec<Option<Vec<(i64, f64)>>> {
    answers
        .iter()
        .flatten()
        .map(|a| a.as_ref().ok().and_then(|held| coverage::totals(held)))
        .collect()
}

impl CoarseRound {
    /// Takes what is remembered of each asked upstream's counts, and asks only
    /// the windows from the first that one of them does not know.
    fn recall(
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
    fn totals(
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
    fn fine_span(
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
    fn remember(&self, settled: &mut SettledCounts<Option<f64>>, answers: &[Option<Outcome>]) {
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

    /// Where the upstreams asked answered the coarse coverage with other
    /// counts. Where every upstream holds the very same samples in every
    /// window a step reads, none lacks a sample another holds (short of two
    /// holes of one size within one window), that step's mask would admit
    /// them all, and it needs no coverage of its own; elsewhere the coverage
    /// over the query's steps is asked, span by span (a span reaching
    /// `LEARN_MARGIN_STEPS` steps, and one stretch, past what differs, to
    /// learn each upstream's usual deficit from). Costs each replica one read
    /// of the selectors' samples, against two plus a count at every step for
    /// the coverage over the query's steps.
    fn differs(&self, totals: &[Option<Vec<(i64, f64)>>]) -> Differs {
        let margin_ms = margin_ms(self.reach_ms, self.steps.step_ms);
        coverage::differing_spans(totals, self.steps, self.reach_ms, margin_ms)
    }

    /// Whether the range holds twice the steps one hole's span asks (a
    /// hole's own steps aside; see `differs`): then a hole, unless it is
    /// long, leaves most steps to the first upstream's answer alone, and
    /// the others are asked the spans. In a shorter range one hole often
    /// differs throughout, and the others, asked only once the counts are
    /// in, would answer a round trip later than asked with the first (the
    /// last 15 minutes of a dashboard just after a restart); such a range
    /// is cheap to ask of every replica anyway.
    fn holds_two_spans(&self) -> bool {
        let steps = self.steps;
        steps.last().is_some_and(|last| {
            steps.count((steps.start_ms, last)) >= 2 * one_span_steps(self.reach_ms, steps.step_ms)
        })
    }

    /// For an instant (a round of one step), the upstream that holds every
    /// sample its window holds anywhere, where the others hold none there
    /// (`coverage::sole_holder`): its answer is the answer.
    fn sole_holder(&self, totals: &[Option<Vec<(i64, f64)>>]) -> Option<usize> {
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
struct FineSpan {
    /// None when every asked upstream remembers every step of it.
    request: Option<Arc<ApiRequest>>,
    /// Where its counts are remembered; None: they are not (an instant's
    /// history, a range without a coarse round, a pinned stretch).
    remembered: Option<Remembered>,
    /// Per upstream (None: not asked), its counts remembered before `asked_from`.
    known: Known<StepCounts>,
    /// The first step `request` asks.
    asked_from: i64,
}

/// How a span's counts are remembered.
struct Remembered {
    steps: Steps,
    query: String,
    generations: Vec<u64>,
    reads_past_ms: i64,
}

impl FineSpan {
    /// Asked whole, not remembered.
    fn whole(request: Arc<ApiRequest>) -> FineSpan {
        FineSpan {
            request: Some(request),
            remembered: None,
            known: Vec::new(),
            asked_from: 0,
        }
    }
}

/// One upstream's coverage over one span of steps.
enum SpanCoverage {
    NotAsked,
    Failed(UpstreamError),
    /// None: its answer was unreadable.
    Read(Option<Coverage>),
}

/// Each span's coverage per upstream: remembered counts, then those its
/// answer (`answers`, per span, if asked) brings, which are remembered.
fn read_spans(
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

/// One query's upstream answers and what their merge needs.
struct MergeJob {
    names: Arc<Vec<String>>,
    replica_labels: Arc<Vec<String>>,
    reorder: Reorder,
    metrics: Arc<Metrics>,
    path: String,
    budget: Arc<Budget>,
    /// Each upstream's answer to the user's query, in priority order (where
    /// it was asked in parts over spans of the steps, its first part).
    outcomes: Vec<Outcome>,
    /// The other parts: (upstream, its answer over one span of the steps).
    more: Vec<(usize, Outcome)>,
    /// Per upstream, whether it was asked in parts (and not again whole).
    partial: Vec<bool>,
    /// Per span of steps asked (the whole range, or the spans where the
    /// coarse counts differ; none if no coverage was asked or needed), each
    /// upstream's answer to the coverage query over it, if asked.
    coverage: Vec<Vec<SpanCoverage>>,
    /// How wide the coverage query's moving stretches are in all.
    coverage_window_ms: Option<i64>,
}

impl MergeJob {
    /// The answers' body bytes (the coverage answers, small and read
    /// already, left out).
    fn input_bytes(&self) -> usize {
        let len = |o: &Outcome| o.as_ref().map_or(0, |held| held.body_len());
        self.outcomes.iter().map(len).sum::<usize>()
            + self.more.iter().map(|(_, o)| len(o)).sum::<usize>()
    }

    /// Merges the answers. With `pieces`, each `piece_bytes` of output is
    /// handed on as `Piece::More` as soon as it is written, `hand_on` saying
    /// whether the client is still there; without, the answer is built whole.
    /// [`MergeJob::merge`], a panic in it caught: the proxy's bug fails this
    /// query as an internal error, never the thread it runs on.
    fn merge_catching(
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
    fn release(self) {
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
fn hand_on(runtime: &tokio::runtime::Handle, tx: &mpsc::Sender<Piece>, piece: Piece) -> bool {
    // The timer is driven by the arbiter that spawned the merge, which runs on.
    runtime
        .block_on(async { tokio::time::timeout(CLIENT_STALL, tx.send(piece)).await })
        .is_ok_and(|sent| sent.is_ok())
}

type Outcome = Result<Held<Answer>, UpstreamError>;

/// Each failed upstream's name and why, in priority order.
fn failures<T>(
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
fn failure_warnings<T>(names: &[String], outcomes: &[Result<T, UpstreamError>]) -> Vec<String> {
    failures(names, outcomes)
        .into_iter()
        .map(|(n, e)| format!("upstream {n}: {e}"))
        .collect()
}

/// Awaits every upstream's outcome, in priority order, but once one has
/// `answered`, the others get at most `straggler_timeout` more; those still
/// out then are given the `straggler` outcome.
async fn gather<T>(
    fetches: Vec<impl std::future::Future<Output = T>>,
    straggler_timeout: Duration,
    answered: impl Fn(&T) -> bool,
    straggler: impl Fn() -> T,
) -> Vec<T> {
    let n = fetches.len();
    let mut pending: FuturesUnordered<_> = fetches
        .into_iter()
        .enumerate()
        .map(|(i, f)| async move { (i, f.await) })
        .collect();
    let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut cutoff = None;
    loop {
        let next = match cutoff {
            None => pending.next().await,
            Some(at) => match tokio::time::timeout_at(at, pending.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let Some((i, outcome)) = next else { break };
        if cutoff.is_none() && answered(&outcome) {
            cutoff = Some(tokio::time::Instant::now() + straggler_timeout);
        }
        results[i] = Some(outcome);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(&straggler))
        .collect()
}

impl Handler<MetaQuery> for Supervisor {
    type Result = ResponseFuture<Result<Merged, ProxyError>>;

    fn handle(&mut self, query: MetaQuery, _: &mut Self::Context) -> Self::Result {
        let request = Arc::new(query.request);
        let fetches: Vec<_> = self
            .legs(query.client_timeout)
            .into_iter()
            .map(|leg| {
                let request = request.clone();
                async move {
                    match leg.fetch(request).await {
                        Ok(body) if (200..300).contains(&body.status) => Ok(body),
                        Ok(body) => Err(UpstreamError::from_status(body.status, &body.bytes)),
                        Err(e) => Err(e),
                    }
                }
            })
            .collect();
        let (names, replica_labels, metrics) = (
            self.names.clone(),
            self.replica_labels.clone(),
            self.metrics.clone(),
        );
        let straggler_timeout = self.health.straggler_timeout;
        let path = request.path.clone();
        Box::pin(async move {
            let outcomes = gather(fetches, straggler_timeout, Result::is_ok, || {
                Err(UpstreamError::Straggler(straggler_timeout))
            })
            .await;
            let input: usize = outcomes.iter().flatten().map(|b| b.bytes.len()).sum();
            let merge = move || {
                let started = Instant::now();
                let mut outcomes = outcomes;
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
                        Ok(tape) => MetaAnswer::read(query.kind, tape).map_err(UpstreamError::from),
                        Err(e) => Err(e.clone()),
                    })
                    .collect();
                if answers.iter().all(Result::is_err) {
                    return Err(ProxyError::AllFailed(failures(&names, &answers)));
                }
                let warnings = failure_warnings(&names, &answers);
                let answers: Vec<Option<MetaAnswer<'_, '_>>> =
                    answers.into_iter().map(Result::ok).collect();
                let opts = MetaOptions {
                    replica_labels: &replica_labels,
                    limit: query.limit,
                    limit_per_metric: query.limit_per_metric,
                };
                let mut body = Vec::new();
                meta::merge_meta(query.kind, &answers, &warnings, &opts, &mut body);
                metrics.merged(&path, started.elapsed(), 0);
                Ok(Merged::Whole(body.into()))
            };
            // Small enough to merge here (see INLINE_BYTES); else off the HTTP threads.
            if input <= INLINE_BYTES {
                return merge();
            }
            actix_web::rt::task::spawn_blocking(merge)
                .await
                .map_err(|e| ProxyError::Internal(format!("merge failed: {e}")))?
        })
    }
}

impl Handler<Forward> for Supervisor {
    type Result = ResponseFuture<Result<Body, ProxyError>>;

    fn handle(&mut self, forward: Forward, _: &mut Self::Context) -> Self::Result {
        let request = Arc::new(forward.request);
        let legs = self.legs(forward.client_timeout);
        Box::pin(async move {
            let mut failures = Vec::new();
            for leg in legs {
                let name = leg.name.clone();
                match leg.fetch(request.clone()).await {
                    Ok(body) if body.status < 500 => return Ok(body),
                    Ok(body) => {
                        failures.push((name, UpstreamError::from_status(body.status, &body.bytes)))
                    }
                    Err(e) => failures.push((name, e)),
                }
            }
            Err(ProxyError::AllFailed(failures))
        })
    }
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

    #[test]
    fn a_coarse_round_is_asked_where_it_saves_more_than_a_hole_costs() {
        let (minute, hour) = (60_000, 3_600_000);
        // A stretch of four steps or more: always (3 h at 15 s, 5-minute look-back).
        assert!(coarse_pays(0, 3 * hour, 15_000, 5 * minute, 5 * minute));
        // A stretch of about a step: only over many steps. 3 h at 30 s
        // (361 steps) with `rate(x[1m])`: one hole's span asks 2 x (2 + 16)
        // + 1 = 37 steps, an eighth of 296.
        assert!(coarse_pays(0, 3 * hour, 30_000, minute, minute));
        assert!(!coarse_pays(0, 3 * hour, minute, 2 * minute, 2 * minute));
        // 7 days at 10 minutes, `$__rate_interval` a little over a step.
        assert!(coarse_pays(0, 7 * 24 * hour, 10 * minute, 615_000, 615_000));
        // Steps wider than the stretch: the same rule.
        assert!(!coarse_pays(
            0,
            3 * hour,
            5 * minute,
            5 * minute,
            5 * minute
        ));
        assert!(coarse_pays(0, 30 * 24 * hour, hour, 5 * minute, 5 * minute));
    }

    /// A range's coarse round over windows `first..=last`, `width` apart.
    fn coarse_round(first: i64, last: i64, width: i64) -> CoarseRound {
        let request = ApiRequest {
            path: "/api/v1/query_range".into(),
            method: actix_web::http::Method::GET,
            query_string: "query=x".into(),
            form_body: Bytes::new(),
            authorization: None,
        };
        CoarseRound {
            request: Some(Arc::new(request.as_range("count", first, last, width))),
            steps: Steps {
                start_ms: first,
                end_ms: last,
                step_ms: 15_000,
            },
            reach_ms: width,
            coverage: String::new(),
            windows: Some(Steps {
                start_ms: first,
                end_ms: last,
                step_ms: width,
            }),
            samples: "count".into(),
            known: Vec::new(),
            generations: Vec::new(),
            asked_from: first,
            reads_past_ms: Some(0),
        }
    }

    #[test]
    fn the_others_wait_for_the_coarse_counts_in_a_range_holding_two_spans_of_a_hole() {
        let minute = 60_000;
        // At 15-second steps with a 5-minute look-back, one hole's span asks
        // 2 x (20 + 20) + 1 = 81 steps: 162 steps (40.25 minutes) or more.
        assert!(coarse_round(0, 3 * 60 * minute, 5 * minute).holds_two_spans());
        assert!(coarse_round(0, 161 * 15_000, 5 * minute).holds_two_spans());
        assert!(!coarse_round(0, 160 * 15_000, 5 * minute).holds_two_spans());
        assert!(!coarse_round(0, 15 * minute, 5 * minute).holds_two_spans());
        // A 1-minute stretch: 16 steps each side to learn from, 2 x (4 + 16)
        // + 1 = 41 steps, so 82 (20.25 minutes).
        assert!(coarse_round(0, 21 * minute, minute).holds_two_spans());
        assert!(!coarse_round(0, 20 * minute, minute).holds_two_spans());
        assert!(!coarse_round(0, 10 * minute, minute).holds_two_spans());
    }

    #[test]
    fn a_range_asks_its_coarse_counts_from_the_first_window_an_upstream_does_not_remember() {
        let (minute, now) = (60_000, Instant::now());
        let windows = |to: i64| (0..=to).step_by(5 * minute as usize);
        let mut settled = SettledCounts::new(Remembering {
            remember_for: Duration::from_secs(600),
            settle: Duration::from_secs(300),
        });
        // All settled long ago. Upstream 0 knows the windows to 20 minutes,
        // upstream 1 to 10 (none counted at 5).
        let long_after = 1000 * minute;
        let count = |t: i64| (t != 5 * minute).then_some(3.0);
        settled.remember(
            0,
            7,
            "count",
            windows(20 * minute).map(|t| (t, Some(3.0))),
            long_after,
            now,
        );
        settled.remember(
            1,
            7,
            "count",
            windows(10 * minute).map(|t| (t, count(t))),
            long_after,
            now,
        );
        let mut round = coarse_round(0, 30 * minute, 5 * minute);
        round.recall(&mut settled, &[true, true], vec![7, 7]);
        let asked = round.request.clone().unwrap().query_string.clone();
        assert!(
            asked.contains("start=900.000&end=1800.000&step=300.000"),
            "{asked}"
        );
        assert_eq!(round.asked_from, 15 * minute);
        // What each knows before it, and nothing of the answers (none came).
        let totals = round.totals(None, &[true, true]);
        let three = |ts: &[i64]| Some(ts.iter().map(|t| (t * minute, 3.0)).collect::<Vec<_>>());
        assert_eq!(totals, vec![three(&[0, 5, 10]), three(&[0, 10])]);
        // Both knowing every window: nothing is asked. An upstream not asked has no counts.
        settled.remember(
            1,
            7,
            "count",
            windows(30 * minute).map(|t| (t, Some(3.0))),
            long_after,
            now,
        );
        settled.remember(
            0,
            7,
            "count",
            windows(30 * minute).map(|t| (t, Some(3.0))),
            long_after,
            now,
        );
        let mut round = coarse_round(0, 30 * minute, 5 * minute);
        round.recall(&mut settled, &[true, false], vec![7, 7]);
        assert!(round.request.is_none());
        assert_eq!(
            round.totals(None, &[true, false]),
            vec![three(&[0, 5, 10, 15, 20, 25, 30])]
        );
        // A count of a pinned stretch (`@`) is never taken as known.
        let mut round = coarse_round(0, 30 * minute, 5 * minute);
        round.reads_past_ms = None;
        round.recall(&mut settled, &[true, true], vec![7, 7]);
        assert!(round.request.is_some() && round.known.is_empty());
        // Upstream 0's health moved since: everything is asked again.
        let mut round = coarse_round(0, 30 * minute, 5 * minute);
        round.recall(&mut settled, &[true, true], vec![8, 7]);
        assert_eq!(round.asked_from, 0);
        assert!(round.request.is_some());
    }

    #[test]
    fn a_span_of_steps_is_asked_from_the_first_step_an_upstream_does_not_remember() {
        let (minute, now) = (60_000, Instant::now());
        let mut steps: SettledCounts<StepCounts> = SettledCounts::new(Remembering {
            remember_for: Duration::from_secs(600),
            settle: Duration::from_secs(300),
        });
        let mut round = coarse_round(0, 60 * minute, 5 * minute);
        round.generations = vec![3, 3];
        round.coverage = "cov".into();
        let long_after = 1000 * minute;
        let known = |to: i64| (0..=to).step_by(15_000).map(|t| (t, Some((8.0, 4.0))));
        steps.remember(0, 3, "cov", known(10 * minute), long_after, now);
        steps.remember(1, 3, "cov", known(5 * minute), long_after, now);
        let fine = coarse_round(0, 60 * minute, 15_000).request.unwrap();
        // Steps from 2 to 20 minutes: upstream 1 knows them to 5.
        let span = round.fine_span(&fine, 2 * minute, 20 * minute, &mut steps, &[true, true]);
        assert_eq!(span.asked_from, 5 * minute + 15_000);
        let asked = span.request.as_ref().unwrap().query_string.clone();
        assert!(
            asked.contains("start=315.000&end=1200.000&step=15.000"),
            "{asked}"
        );
        assert_eq!(span.known[0].as_ref().unwrap().len(), 13);
        // Both knowing the span: nothing asked.
        let span = round.fine_span(&fine, 2 * minute, 5 * minute, &mut steps, &[true, true]);
        assert!(span.request.is_none());
        // A pinned stretch: all of it asked, nothing remembered.
        round.reads_past_ms = None;
        let span = round.fine_span(&fine, 2 * minute, 5 * minute, &mut steps, &[true, true]);
        assert!(span.request.is_some() && span.remembered.is_none());
    }
}
