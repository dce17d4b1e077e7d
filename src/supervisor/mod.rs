//! The supervisor actor: owns one [`Backend`] per upstream, fans each query out
//! to all of them, and hands the answers to the merger ([`Query`] for queries,
//! [`MetaQuery`] for the other merged endpoints); or sends a request to the
//! highest-priority upstream that answers it ([`Forward`]).
//!
//! It decides what a set of upstream outcomes means (merge, or which error);
//! the edge maps [`ProxyError`] to a response.
//!
//! - this file: the actor, its messages, routing by health, the meta and
//!   forwarded requests, and the straggler cutoff (`gather`);
//! - `query.rs`: one query's wiring, the plan (`crate::plan`) carried out;
//! - `spans.rs`: the coverage read span by span, and the step mask;
//!
//! Every merge runs in the merger actor (`crate::merger`).

mod query;
mod reconfigure;
mod spans;

pub use reconfigure::Reconfigure;

use crate::backend::{
    ApiRequest, Backend, Body, Fetch, FetchBody, Fetched, Reading, SharedHealth, UpstreamError,
};
use crate::budget::Budget;
use crate::config::{Config, CoverageConfig, HealthConfig, UpstreamConfig};
use crate::merge::meta::MetaKind;
use crate::merger::{Common, MergeMeta, Merger};
pub use crate::merger::{Merged, Piece, ProxyError};
use crate::metrics::Metrics;
use crate::plan::Outcome;
use crate::query::QueryShape;
use crate::settled::{Memory, Remembering};
use actix::prelude::*;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::sync::Arc;
use std::time::Duration;

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

struct BackendHandle {
    config: Arc<UpstreamConfig>,
    addr: Addr<Backend>,
    health: Arc<SharedHealth>,
}

/// Each upstream's name and health record, in priority order, shared with
/// the edge (readiness, the status page).
pub type UpstreamView = Arc<std::sync::RwLock<Vec<(String, Arc<SharedHealth>)>>>;

pub struct Supervisor {
    backends: Vec<BackendHandle>,
    /// Each upstream's name in warnings and errors, in priority order; a
    /// query keeps the names it began with.
    names: Arc<Vec<String>>,
    view: UpstreamView,
    reading: Reading,
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
    /// Where every merge runs.
    merger: Addr<Merger>,
}

impl Supervisor {
    /// Starts one backend per upstream, on the current arbiter, where the
    /// supervisor is started too: a message between them is then no wake-up
    /// of another thread (see `INLINE_BYTES` for the CPU work).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        // One budget for every upstream's answers in flight, and their kept buffers.
        let budget = Budget::keeping(config.max_in_flight_bytes, config.keep_buffer_bytes);
        let mut supervisor = Supervisor {
            names: Arc::new(Vec::new()),
            backends: Vec::new(),
            view: UpstreamView::default(),
            reading: Reading {
                max_body: config.max_upstream_body_bytes,
                parse_batch_bytes: config.parse_batch_bytes,
            },
            replica_labels: Arc::new(config.replica_labels.clone()),
            coverage: config.coverage.clone(),
            health: config.health.clone(),
            metrics,
            piece_bytes: config.answer_piece_bytes,
            budget,
            merger: Merger::start(),
            settled: Arc::new(std::sync::Mutex::new(Memory::new(
                config
                    .coverage
                    .as_ref()
                    .map_or(Remembering::default(), |c| c.remembering),
            ))),
        };
        // The upstreams of the start are taken as healthy until probed:
        // a proxy starting beside its replicas answers at once.
        // Tables that name DNS records join once `crate::discovery` found them.
        supervisor.backends = config
            .upstreams
            .iter()
            .filter(|u| u.discovery.is_none())
            .map(|u| supervisor.start_backend(u, SharedHealth::default()))
            .collect();
        supervisor.publish();
        supervisor
    }

    /// Starts a backend for `upstream`, under actix' supervisor: one that
    /// stops is started again with the same settings, the others untouched.
    fn start_backend(&self, upstream: &UpstreamConfig, health: SharedHealth) -> BackendHandle {
        let upstream = Arc::new(upstream.clone());
        let health = Arc::new(health);
        let (for_actor, shared, metrics, budget) = (
            upstream.clone(),
            health.clone(),
            self.metrics.clone(),
            self.budget.clone(),
        );
        let (reading, cfg) = (self.reading, self.health.clone());
        let addr = actix::Supervisor::start(move |_| {
            Backend::new(for_actor, reading, cfg, shared, metrics, budget)
        });
        BackendHandle {
            config: upstream,
            addr,
            health,
        }
    }

    /// Names and the shared view follow the backends.
    fn publish(&mut self) {
        self.names = Arc::new(
            self.backends
                .iter()
                .map(|b| b.config.display_name())
                .collect(),
        );
        let view: Vec<_> = self
            .names
            .iter()
            .cloned()
            .zip(self.backends.iter().map(|b| b.health.clone()))
            .collect();
        if let Ok(mut shared) = self.view.write() {
            *shared = view;
        }
    }

    /// What every merge shares.
    fn common(&self) -> Common {
        Common {
            names: self.names.clone(),
            replica_labels: self.replica_labels.clone(),
            metrics: self.metrics.clone(),
            budget: self.budget.clone(),
        }
    }

    /// Each upstream's name and health record, in priority order, as it
    /// stands after every reconfiguration.
    pub fn upstreams(&self) -> UpstreamView {
        self.view.clone()
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
        let (common, merger) = (self.common(), self.merger.clone());
        let straggler_timeout = self.health.straggler_timeout;
        let path = request.path.clone();
        Box::pin(async move {
            let outcomes = gather(fetches, straggler_timeout, Result::is_ok, || {
                Err(UpstreamError::Straggler(straggler_timeout))
            })
            .await;
            let merge = MergeMeta {
                common,
                path,
                kind: query.kind,
                outcomes,
                limit: query.limit,
                limit_per_metric: query.limit_per_metric,
            };
            match merger.send(merge).await {
                Ok(merged) => merged,
                Err(e) => Err(ProxyError::Internal(format!("the merger is gone: {e}"))),
            }
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
