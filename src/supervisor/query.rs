//! One query's wiring: the plan (`crate::plan`) carried out against the
//! backends. The first upstream's main request, the others' (asked at once,
//! or once the coarse counts are in), the coverage rounds, and the gather
//! with the straggler cutoff, each a function of its own; the channels
//! between them held by role in [`Signals`].

use super::spans::read_spans;
use super::{Merged, ProxyError, Query, Supervisor, deadline, fetch, gather, parsed};
use crate::answer;
use crate::backend::{
    ApiRequest, Backend, Fetch, Fetched, UpstreamError, Verbatim, VerbatimWatch, until,
};
use crate::merge::coverage::Differs;
use crate::merger::{self, MergeJob, Merger, SpanCoverage, failures};
use crate::plan::{Asks, CoarseRound, CoveragePlan, FineSpan, MainPlan, Outcome, When};
use crate::query::Reads;
use crate::settled::Memory;
use actix::prelude::*;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{Either, OptionFuture};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// One upstream's part in a query: its backend and its deadline; None: it
/// is not asked (down).
type Asked = Option<(Addr<Backend>, Duration)>;

/// One upstream's main answer on its way.
type MainFuture = std::pin::Pin<Box<dyn Future<Output = Main>>>;

/// Every upstream's coverage, per span of steps asked.
type SpansCoverage = Vec<Vec<SpanCoverage>>;

impl Handler<Query> for Supervisor {
    type Result = ResponseFuture<Result<Merged, ProxyError>>;

    fn handle(&mut self, query: Query, _: &mut Self::Context) -> Self::Result {
        let when = When {
            instant_ms: query.instant_ms,
            range_ms: query.range_ms,
        };
        let request = Arc::new(query.request);
        let (mut plan, coverage_window_ms) = match (&self.coverage, &query.shape.reads) {
            (Some(cov), Reads::Stretches(stretches)) => {
                let (plan, width) = CoveragePlan::for_query(&request, when, cov, stretches);
                (Some(plan), width)
            }
            _ => (None, None),
        };
        // Who is asked, and within what: the down are not.
        let routing = self.routing();
        let legs: Vec<Asked> = self
            .backends
            .iter()
            .zip(&routing)
            .map(|(b, down)| {
                down.is_none()
                    .then(|| (b.addr.clone(), deadline(query.client_timeout, &b.config)))
            })
            .collect();
        let asked_upstreams: Vec<bool> = legs.iter().map(Option::is_some).collect();
        if let Some(coarse) = plan.as_mut().and_then(|p| p.coarse.as_mut()) {
            self.recall(coarse, &asked_upstreams);
        }
        let main = MainPlan::decide(
            plan.as_ref().and_then(|p| p.coarse.as_ref()),
            when,
            !self.replica_labels.is_empty(),
            routing.iter().all(Option::is_none),
            &asked_upstreams,
        );
        // Done before any answer takes a kept buffer, so that the same
        // largest ones serve each such query.
        if main.trims_kept_buffers(when) {
            self.budget.keep_at_most(1);
        }
        let run = Run {
            merger: self.merger.clone(),
            request,
            legs,
            asked_upstreams,
            straggler_timeout: self.health.straggler_timeout,
            asked: Instant::now(),
        };
        let (mut signals, decision) = Signals::new(main.asks_now.clone());
        let mains = run.mains(&routing, &main, &mut signals, &decision);
        let coverage = run
            .clone()
            .coverage_rounds(plan, main, signals, self.settled.clone());
        let reorder = query.shape.reorder;
        let job = MergeJob::new(
            &self.common(),
            &run.request.path,
            reorder,
            coverage_window_ms,
        );
        Box::pin(run.finish(mains, coverage, decision, job, self.piece_bytes))
    }
}

impl Supervisor {
    /// Takes what is remembered of each asked upstream's coarse counts.
    fn recall(&self, coarse: &mut CoarseRound, asked: &[bool]) {
        let generations: Vec<u64> = self
            .backends
            .iter()
            .map(|b| b.health.generation())
            .collect();
        if let Ok(mut settled) = self.settled.lock() {
            coarse.recall(&mut settled.windows, asked, generations);
        }
    }
}

/// The channels between one query's futures, each named by its role.
struct Signals {
    /// The decision: one upstream's answer goes out as it came, or all are merged.
    decide: watch::Sender<Verbatim>,
    /// What the upstreams after the first are asked; None until the counts say.
    tell_asks: Arc<watch::Sender<Option<Asks>>>,
    asks: watch::Receiver<Option<Asks>>,
    /// Set once the first upstream's main answer is in (or given up); taken
    /// by the first's main future, dropped at once if it is not asked.
    first_in: Option<watch::Sender<bool>>,
    first_answered: watch::Receiver<bool>,
    /// Set to give the first upstream's main answer up, as a straggler's.
    give_up_first: Arc<watch::Sender<bool>>,
    first_given_up: watch::Receiver<bool>,
}

impl Signals {
    /// The signals, and the decision's receiving end.
    fn new(asks_now: Option<Asks>) -> (Signals, watch::Receiver<Verbatim>) {
        let (decide, decision) = watch::channel(Verbatim::Open);
        let (tell_asks, asks) = watch::channel(asks_now);
        let (first_in, first_answered) = watch::channel(false);
        let (give_up_first, first_given_up) = watch::channel(false);
        let signals = Signals {
            decide,
            tell_asks: Arc::new(tell_asks),
            asks,
            first_in: Some(first_in),
            first_answered,
            give_up_first: Arc::new(give_up_first),
            first_given_up,
        };
        (signals, decision)
    }
}

/// What every part of one query's run shares.
#[derive(Clone)]
struct Run {
    merger: Addr<Merger>,
    request: Arc<ApiRequest>,
    /// Per upstream, in priority order.
    legs: Vec<Asked>,
    asked_upstreams: Vec<bool>,
    straggler_timeout: Duration,
    /// When the query went out.
    asked: Instant,
}

impl Run {
    /// Every upstream's main answer, on its way: the first's asked at once,
    /// the others' as the plan says.
    fn mains(
        &self,
        routing: &[Option<String>],
        main: &MainPlan,
        signals: &mut Signals,
        decision: &watch::Receiver<Verbatim>,
    ) -> Vec<MainFuture> {
        let others = Others {
            asks: signals.asks.clone(),
            first_in: signals.first_answered.clone(),
            give_up_first: signals.give_up_first.clone(),
            hedge: self.straggler_timeout,
        };
        let mut first_in = signals.first_in.take();
        let signals = &*signals;
        self.legs
            .iter()
            .zip(routing)
            .enumerate()
            .map(|(me, (leg, down))| -> MainFuture {
                let verbatim = main.verbatim_from.map(|_| VerbatimWatch {
                    decision: decision.clone(),
                    me,
                });
                let Some((addr, deadline)) = leg else {
                    let down = Err(UpstreamError::Down(down.clone().unwrap_or_default()));
                    return Box::pin(async move { Main::whole(down) });
                };
                let whole = Fetch {
                    verbatim,
                    ..Fetch::new(self.request.clone(), *deadline)
                };
                if me > 0 {
                    return Box::pin(other_main(addr.clone(), whole, others.clone()));
                }
                let first_in = first_in.take();
                Box::pin(self.first_main(addr, whole, main.deferred, signals, first_in))
            })
            .collect()
    }

    /// The first upstream's main answer, asked at once (`send` hands the
    /// message over at once), unless it is given up.
    fn first_main(
        &self,
        addr: &Addr<Backend>,
        whole: Fetch,
        deferred: bool,
        signals: &Signals,
        first_in: Option<watch::Sender<bool>>,
    ) -> impl Future<Output = Main> + use<> {
        let on_arrival = deferred.then(|| ask_others_if_first_is_empty(&signals.tell_asks));
        let whole = fetch(
            addr,
            Fetch {
                on_arrival,
                ..whole
            },
        );
        let given_up = until(signals.first_given_up.clone(), |g| *g);
        let straggler_timeout = self.straggler_timeout;
        async move {
            let answer =
                match futures_util::future::select(std::pin::pin!(whole), std::pin::pin!(given_up))
                    .await
                {
                    Either::Left((answer, _)) => answer,
                    Either::Right(_) => Err(UpstreamError::Straggler(straggler_timeout)),
                };
            if let Some(first_in) = first_in {
                let _ = first_in.send(true);
            }
            Main::whole(answer)
        }
    }
}

/// Where the others wait for the counts: the first's answer, in before
/// them and of no series, says it holds nothing of what the query reads
/// (all of it inside its hole), or the query matches nothing anywhere. The
/// others are asked whole at once: the counts would have them asked so in
/// the first case, only after the round (an instant inside the first's
/// hole cost 1.5 times b alone); in the second, the decision to send the
/// first's answer drops theirs unread, and a query empty everywhere costs
/// the others a request they start. Returns the end the first's fetch tells.
fn ask_others_if_first_is_empty(
    tell_asks: &Arc<watch::Sender<Option<Asks>>>,
) -> oneshot::Sender<bool> {
    let (arrived, arrival) = oneshot::channel();
    let tell_asks = tell_asks.clone();
    // Apart from the answer: it ends when the body is in, or when the fetch
    // is dropped (given up), whichever is first.
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
}

impl Run {
    /// The coverage, asked with the user's query, of every upstream at once:
    /// the coarse round first where there is one, and the coverage over the
    /// query's own steps only where another upstream counted more than the
    /// first (`CoarseRound::differs`), one request per
    /// span of steps. Tells the others what they are asked, and decides
    /// whether one answer goes out as it came.
    async fn coverage_rounds(
        self,
        plan: Option<CoveragePlan>,
        main: MainPlan,
        signals: Signals,
        settled: Arc<Mutex<Memory>>,
    ) -> SpansCoverage {
        // No coverage for anyone: the plain priority merge.
        let Some(plan) = plan else {
            return Vec::new();
        };
        // An upstream that did not answer the coarse round within the
        // stragglers' time is hung: not asked again, but failed at once.
        let mut hung = vec![false; self.legs.len()];
        let (fine, spent) = match &plan.coarse {
            None => (vec![FineSpan::whole(plan.fine.clone())], Duration::ZERO),
            Some(coarse) => {
                let differs = self
                    .coarse_round(coarse, &main, &signals, &settled, &mut hung)
                    .await;
                match self
                    .fine_spans(&plan, coarse, differs, &settled, &hung)
                    .await
                {
                    Ok(fine) => (fine, self.asked.elapsed()),
                    Err(done) => return done,
                }
            }
        };
        let answers = futures_util::future::join_all(fine.iter().map(|f| {
            OptionFuture::from(f.request.as_ref().map(|r| self.ask_all(r, spent, &hung)))
        }))
        .await;
        read_spans(fine, answers, &settled)
    }

    /// Asks the coarse round (what is not remembered), remembers its counts,
    /// decides verbatim or merged, and tells the others what they are asked.
    /// Where the upstreams differ, or None where one answers alone. An
    /// upstream that did not answer within the stragglers' time is `hung`.
    async fn coarse_round(
        &self,
        coarse: &CoarseRound,
        main: &MainPlan,
        signals: &Signals,
        settled: &Mutex<Memory>,
        hung: &mut [bool],
    ) -> Option<Differs> {
        let answers = OptionFuture::from(
            coarse
                .request
                .as_ref()
                .map(|r| self.ask_all(r, Duration::ZERO, &[])),
        )
        .await;
        for (hung, answer) in hung.iter_mut().zip(answers.iter().flatten()) {
            *hung = matches!(answer, Some(Err(UpstreamError::Straggler(_))));
        }
        let totals = coarse.totals(answers.as_deref(), &self.asked_upstreams);
        if let (Some(answers), Ok(mut settled)) = (&answers, settled.lock()) {
            coarse.remember(&mut settled.windows, answers);
        }
        // Known before the query went out where every count was remembered.
        let differs = main
            .foreseen
            .clone()
            .unwrap_or_else(|| coarse.differs(&totals));
        // The first holds as many samples as any, or (an instant) one holds
        // them all and the others none: one answers alone.
        let alone = main.verbatim_from.and_then(|first| match differs {
            Differs::Nowhere => Some(first),
            _ => coarse.sole_holder(&totals),
        });
        let _ = signals
            .decide
            .send(alone.map_or(Verbatim::Merged, Verbatim::From));
        if main.deferred {
            // The first did not answer the coarse round within the
            // stragglers' time: it is hung, and its main answer is given up
            // with it (the others are asked whole).
            if hung.first().is_some_and(|h| *h) {
                let _ = signals.give_up_first.send(true);
            }
            let _ = signals.tell_asks.send(Some(match alone {
                Some(u) if u > 0 => Asks::Whole,
                Some(_) => Asks::Nothing,
                None => Asks::after(&differs),
            }));
        }
        alone.is_none().then_some(differs)
    }

    /// The spans of steps whose coverage is asked, where the coarse counts
    /// differ; or, as `Err`, the coverage already complete (none needed, or
    /// an instant's history, asked whole here).
    async fn fine_spans(
        &self,
        plan: &CoveragePlan,
        coarse: &CoarseRound,
        differs: Option<Differs>,
        settled: &Mutex<Memory>,
        hung: &[bool],
    ) -> Result<Vec<FineSpan>, SpansCoverage> {
        let spans = match (differs, coarse.steps.last()) {
            (None | Some(Differs::Nowhere), _) => return Err(Vec::new()),
            (Some(Differs::Within(spans)), _) => spans,
            // An instant's history is asked whole.
            (Some(Differs::Throughout), _) if coarse.windows.is_none() => {
                let whole = vec![FineSpan::whole(plan.fine.clone())];
                let answers = self.ask_all(&plan.fine, self.asked.elapsed(), hung).await;
                return Err(read_spans(whole, vec![Some(answers)], settled));
            }
            (Some(Differs::Throughout), Some(last)) => vec![(coarse.steps.start_ms, last)],
            // A range of no step at all: nothing to ask.
            (Some(Differs::Throughout), None) => return Err(Vec::new()),
        };
        let Ok(mut settled) = settled.lock() else {
            return Err(Vec::new());
        };
        Ok(spans
            .into_iter()
            .map(|(from, to)| {
                let steps = &mut settled.steps;
                coarse.fine_span(&plan.fine, from, to, steps, &self.asked_upstreams)
            })
            .collect())
    }

    /// Asks every upstream asked (but the `hung`) one coverage request,
    /// within what an earlier round left of its deadline (`spent`), and
    /// gathers the answers with the straggler cutoff.
    async fn ask_all(
        &self,
        request: &Arc<ApiRequest>,
        spent: Duration,
        hung: &[bool],
    ) -> Vec<Option<Outcome>> {
        let straggler = self.straggler_timeout;
        let asks: Vec<_> = self
            .legs
            .iter()
            .enumerate()
            .map(|(u, leg)| {
                let hung = hung.get(u).copied().unwrap_or(false);
                OptionFuture::from(leg.as_ref().map(|(addr, deadline)| {
                    let deadline = deadline.saturating_sub(spent);
                    OptionFuture::from((!hung).then(|| {
                        fetch(addr, Fetch::new(request.clone(), deadline))
                            .map(|answer| answer.and_then(Fetched::into_parsed))
                    }))
                    .map(move |answer| answer.unwrap_or(Err(UpstreamError::Straggler(straggler))))
                }))
            })
            .collect();
        gather(
            asks,
            straggler,
            |c| matches!(c, Some(Ok(_))),
            || Some(Err(UpstreamError::Straggler(straggler))),
        )
        .await
    }
}

/// Each upstream's main answer (or first part), whether it was asked parts,
/// and the other parts with their upstream's index.
type Split = (
    Vec<Result<Fetched, UpstreamError>>,
    Vec<bool>,
    Vec<(usize, Result<Fetched, UpstreamError>)>,
);

impl Run {
    /// Gathers the main answers (the stragglers cut off) beside the
    /// coverage, then answers: verbatim, or merged once the answers a failure
    /// left wanting are asked again.
    async fn finish(
        self,
        mains: Vec<MainFuture>,
        coverage: impl Future<Output = SpansCoverage>,
        decision: watch::Receiver<Verbatim>,
        mut job: MergeJob,
        piece_bytes: usize,
    ) -> Result<Merged, ProxyError> {
        let straggler = self.straggler_timeout;
        // Only a whole answer starts the stragglers' clock: parts are quick.
        let mains = gather(
            mains,
            straggler,
            |main| main.parts.is_none() && main.answer.is_ok(),
            || Main::whole(Err(UpstreamError::Straggler(straggler))),
        );
        let all;
        (all, job.coverage) = futures_util::future::join(mains, coverage).await;
        let (mut fetched, partial, more) = split_mains(all);
        let picked = match *decision.borrow() {
            Verbatim::From(u) => Some(u),
            _ => None,
        };
        if let Some(body) = verbatim_answer(picked, &mut fetched) {
            job.metrics.verbatim(&job.path);
            return Ok(Merged::Whole(body));
        }
        job.outcomes = futures_util::future::join_all(fetched.into_iter().map(parsed)).await;
        let more: Vec<(usize, Outcome)> = futures_util::future::join_all(
            more.into_iter()
                .map(|(u, part)| async move { (u, parsed(part).await) }),
        )
        .await;
        let again = self.settle_parts(&mut job, picked, partial, more);
        self.ask_again(&again, &mut job.outcomes).await;
        log::debug!(
            "{}: every answer in {:?} after the request",
            job.path,
            self.asked.elapsed()
        );
        judge(&job)?;
        merger::merge_query(&self.merger, job, piece_bytes).await
    }

    /// Fails an upstream whose part failed, decides who is asked again
    /// whole, and keeps the parts that serve.
    fn settle_parts(
        &self,
        job: &mut MergeJob,
        picked: Option<usize>,
        partial: Vec<bool>,
        mut more: Vec<(usize, Outcome)>,
    ) -> Vec<bool> {
        // A part that failed fails its upstream: its other parts alone
        // would leave a hole no warning explains.
        for (u, part) in &more {
            if let (Err(e), Ok(_)) = (part, &job.outcomes[*u]) {
                job.outcomes[*u] = Err(e.clone());
            }
        }
        let again = asked_again(&job.outcomes, picked, &partial, self.legs.len());
        more.retain(|(u, part)| part.is_ok() && job.outcomes[*u].is_ok() && !again[*u]);
        job.more = more;
        job.partial = partial.iter().zip(&again).map(|(p, a)| *p && !a).collect();
        again
    }

    /// Asks the upstreams marked `again` the whole query once more, within
    /// what is left of their deadlines; their answers replace their outcomes.
    async fn ask_again(&self, again: &[bool], outcomes: &mut [Outcome]) {
        if !again.iter().any(|a| *a) {
            return;
        }
        let asks = again.iter().zip(&self.legs).map(|(again, leg)| {
            OptionFuture::from(leg.as_ref().filter(|_| *again).map(|(addr, deadline)| {
                let left = deadline.saturating_sub(self.asked.elapsed());
                fetch(addr, Fetch::new(self.request.clone(), left)).then(parsed)
            }))
        });
        let answers = futures_util::future::join_all(asks).await;
        for (outcome, answer) in outcomes.iter_mut().zip(answers) {
            if let Some(answer) = answer {
                *outcome = answer;
            }
        }
    }
}

fn split_mains(all: Vec<Main>) -> Split {
    let (mut fetched, mut partial, mut more) = (Vec::new(), Vec::new(), Vec::new());
    for (u, main) in all.into_iter().enumerate() {
        fetched.push(main.answer);
        partial.push(main.parts.is_some());
        more.extend(main.parts.into_iter().flatten().map(|part| (u, part)));
    }
    (fetched, partial, more)
}

/// The one picked holds as many samples as any: it answers alone, as
/// it came. Its framing (length or chunks) said the body is whole; its
/// opening and end say it is a query answer.
fn verbatim_answer(
    picked: Option<usize>,
    fetched: &mut [Result<Fetched, UpstreamError>],
) -> Option<Bytes> {
    let u = picked?;
    let Some(Ok(Fetched::Verbatim(body))) = fetched.get(u) else {
        return None;
    };
    if !answer::looks_like_success(&body.bytes) {
        return None;
    }
    match std::mem::replace(&mut fetched[u], Err(UpstreamError::NotNeeded)) {
        Ok(Fetched::Verbatim(body)) => Some(Bytes::from(body.bytes)),
        _ => None,
    }
}

/// Who is asked the whole query again: where the answer picked to go out
/// alone failed after the others were dropped (its upstream broke off, or
/// it is not an answer), those dropped; where the first upstream's whole
/// answer failed and the others were asked parts, those.
fn asked_again(
    outcomes: &[Outcome],
    picked: Option<usize>,
    partial: &[bool],
    upstreams: usize,
) -> Vec<bool> {
    let failed = |u: usize| outcomes[u].as_ref().is_err_and(|e| !e.is_client_error());
    match picked {
        Some(u) if failed(u) => outcomes
            .iter()
            .map(|o| matches!(o, Err(UpstreamError::NotNeeded)))
            .collect(),
        _ if partial.iter().any(|p| *p) && failed(0) => partial.to_vec(),
        _ => vec![false; upstreams],
    }
}

/// Whether the answers can be merged: not where the proxy failed to read
/// one (its own fault), nor where every upstream failed. An execution error
/// (422) comes from the data the query meets (duplicate series in a match
/// group, say): a replica missing part of it can evaluate cleanly where a
/// whole one fails, and one Prometheus holding all the data would fail too.
fn judge(job: &MergeJob) -> Result<(), ProxyError> {
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
    Ok(())
}

/// The first main answer the proxy failed to read itself (its parser
/// broke): the query is the proxy's failure, not an upstream's.
fn proxy_fault(outcomes: &[Outcome]) -> Option<ProxyError> {
    outcomes.iter().find_map(|o| match o {
        Err(UpstreamError::Proxy(why)) => Some(ProxyError::Internal(why.clone())),
        _ => None,
    })
}

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

/// What the upstreams after the first share about one query.
#[derive(Clone)]
struct Others {
    /// What they are asked; None until the coarse round is in.
    asks: watch::Receiver<Option<Asks>>,
    /// Whether the first upstream's main answer is in.
    first_in: watch::Receiver<bool>,
    /// Gives the first upstream's main answer up (as a straggler's).
    give_up_first: Arc<watch::Sender<bool>>,
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
