//! The supervisor actor: owns one [`Backend`] per upstream, fans each query out
//! to all of them, and hands the answers to the merger.
//!
//! It decides what a set of upstream outcomes means (merge, or which error),
//! and nothing about HTTP: the edge maps [`ProxyError`] to a response.

use crate::backend::{ApiRequest, Backend, Fetch, SharedHealth, UpstreamError};
use crate::config::{Config, CoverageConfig, HealthConfig, UpstreamConfig};
use crate::merge::answer::Answer;
use crate::merge::coverage::StepMask;
use crate::merge::{self, AllEligible, Eligibility, MergeOptions, MergeReport, Upstream};
use crate::query::{self, QueryShape, Reads};
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
}

/// A merged answer, ready to send.
#[derive(Debug)]
pub struct Merged {
    pub body: Vec<u8>,
    pub report: MergeReport,
}

/// Why a query produced no merged answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// Every upstream failed; one `(upstream URL, why)` per upstream, in priority order.
    AllFailed(Vec<(String, UpstreamError)>),
    /// The proxy itself broke (a panicked merge, a stopped actor).
    Internal(String),
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
}

impl Supervisor {
    /// Starts one backend per upstream, each on an arbiter of its own.
    pub fn new(config: &Config) -> Self {
        let backends: Vec<BackendHandle> = config
            .upstreams
            .iter()
            .map(|u| {
                let upstream = Arc::new(u.clone());
                let health = Arc::new(SharedHealth::default());
                let (max_body, cfg) = (config.max_upstream_body_bytes, config.health.clone());
                let (for_actor, shared) = (upstream.clone(), health.clone());
                let arbiter = Arbiter::new();
                // Under actix' supervisor: a backend that stops is started again
                // with the same settings, the others untouched.
                let addr = actix::Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                    Backend::new(for_actor, max_body, cfg, shared)
                });
                BackendHandle {
                    config: upstream,
                    addr,
                    health,
                }
            })
            .collect();
        Supervisor {
            names: Arc::new(backends.iter().map(|b| display_name(&b.config)).collect()),
            backends,
            replica_labels: Arc::new(config.replica_labels.clone()),
            coverage: config.coverage.clone(),
            health: config.health.clone(),
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// The name an upstream goes by in warnings and errors: its URL without credentials.
fn display_name(u: &UpstreamConfig) -> String {
    let mut url = u.url.clone();
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.as_str().trim_end_matches('/').to_string()
}

impl Handler<Query> for Supervisor {
    type Result = ResponseFuture<Result<Merged, ProxyError>>;

    fn handle(&mut self, query: Query, _: &mut Self::Context) -> Self::Result {
        // The coverage query goes out with the user's, to every upstream at once.
        let coverage_request = match (&self.coverage, &query.shape.reads) {
            (Some(cov), Reads::Stretches(stretches)) => Some(Arc::new(
                query
                    .request
                    .with_query(&query::coverage_query(&cov.selector, stretches)),
            )),
            _ => None,
        };
        let request = Arc::new(query.request);
        // Only healthy upstreams are asked; if none is, all are (a probe can be wrong).
        let any_healthy = self.backends.iter().any(|b| b.health.is_healthy());
        let fetches: Vec<_> = self
            .backends
            .iter()
            .map(|b| {
                let skip = any_healthy && !b.health.is_healthy();
                let down_reason = skip.then(|| b.health.reason());
                let deadline = match query.client_timeout {
                    Some(t) if !t.is_zero() => t.min(b.config.timeout),
                    _ => b.config.timeout,
                };
                let fetch = |request: Arc<ApiRequest>| {
                    let send = b.addr.send(Fetch { request, deadline });
                    async move { send.await.unwrap_or(Err(UpstreamError::Unavailable)) }
                };
                let main = (!skip).then(|| fetch(request.clone()));
                let coverage = (!skip)
                    .then(|| coverage_request.clone().map(fetch))
                    .flatten();
                async move {
                    let Some(main) = main else {
                        return (
                            Err(UpstreamError::Down(down_reason.unwrap_or_default())),
                            None,
                        );
                    };
                    match coverage {
                        Some(c) => {
                            let (m, c) = futures_util::future::join(main, c).await;
                            (m, Some(c))
                        }
                        None => (main.await, None),
                    }
                }
            })
            .collect();
        let names = self.names.clone();
        let replica_labels = self.replica_labels.clone();
        let reorder = query.shape.reorder;
        let straggler_timeout = self.health.straggler_timeout;
        Box::pin(async move {
            let (outcomes, coverage) = gather(fetches, straggler_timeout).await;
            if outcomes.iter().all(Result::is_err) {
                let failures = names
                    .iter()
                    .zip(outcomes)
                    .filter_map(|(n, o)| o.err().map(|e| (n.clone(), e)))
                    .collect();
                return Err(ProxyError::AllFailed(failures));
            }
            // The merge is CPU work: keep it off the threads that serve HTTP.
            actix_web::rt::task::spawn_blocking(move || {
                let mut warnings: Vec<String> = names
                    .iter()
                    .zip(&outcomes)
                    .filter_map(|(n, o)| o.as_ref().err().map(|e| format!("upstream {n}: {e}")))
                    .collect();
                let upstreams: Vec<Upstream<'_>> = names
                    .iter()
                    .zip(&outcomes)
                    .map(|(n, o)| Upstream {
                        name: n,
                        answer: o.as_ref().ok(),
                    })
                    .collect();
                let opts = MergeOptions {
                    replica_labels: &replica_labels,
                    reorder,
                };
                let mask = step_mask(&names, &outcomes, &coverage, &mut warnings);
                let mut body = Vec::new();
                let report = match &mask {
                    Some(mask) => run_merge(&upstreams, &warnings, &opts, mask, &mut body),
                    None => run_merge(&upstreams, &warnings, &opts, &AllEligible, &mut body),
                }?;
                Ok(Merged { body, report })
            })
            .await
            .map_err(|e| ProxyError::Internal(format!("merge failed: {e}")))?
        })
    }
}

fn run_merge<E: Eligibility>(
    upstreams: &[Upstream<'_>],
    warnings: &[String],
    opts: &MergeOptions<'_>,
    eligibility: &E,
    body: &mut Vec<u8>,
) -> Result<MergeReport, ProxyError> {
    merge::merge(upstreams, warnings, opts, eligibility, body)
        .map_err(|e| ProxyError::Internal(e.to_string()))
}

type Outcome = Result<Answer, UpstreamError>;

/// Awaits every upstream's outcome, but once one has answered, the others get
/// at most `straggler_timeout` more; those still out are stragglers.
async fn gather(
    fetches: Vec<impl std::future::Future<Output = (Outcome, Option<Outcome>)>>,
    straggler_timeout: Duration,
) -> (Vec<Outcome>, Vec<Option<Outcome>>) {
    let n = fetches.len();
    let mut pending: FuturesUnordered<_> = fetches
        .into_iter()
        .enumerate()
        .map(|(i, f)| async move { (i, f.await) })
        .collect();
    let mut results: Vec<Option<(Outcome, Option<Outcome>)>> = (0..n).map(|_| None).collect();
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
        if cutoff.is_none() && outcome.0.is_ok() {
            cutoff = Some(tokio::time::Instant::now() + straggler_timeout);
        }
        results[i] = Some(outcome);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or((Err(UpstreamError::Straggler(straggler_timeout)), None)))
        .unzip()
}

/// The per-step eligibility from the coverage answers, or None for the plain
/// priority merge (no coverage asked, or none known). Says in `warnings` what degraded.
fn step_mask(
    names: &[String],
    outcomes: &[Outcome],
    coverage: &[Option<Outcome>],
    warnings: &mut Vec<String>,
) -> Option<StepMask> {
    if coverage.iter().all(Option::is_none) {
        return None;
    }
    let answered: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
    let mut known = 0;
    for ((name, cov), answered) in names.iter().zip(coverage).zip(&answered) {
        match cov {
            Some(Ok(_)) if *answered => known += 1,
            Some(Err(e)) if *answered => warnings.push(format!(
                "upstream {name}: coverage query failed ({e}); its data is used only where no other upstream's completeness is known"
            )),
            _ => {}
        }
    }
    if known == 0 {
        warnings.push(
            "completeness unknown on every upstream: answered by plain priority merge".to_string(),
        );
        return None;
    }
    let answers: Vec<Option<&Answer>> = coverage
        .iter()
        .map(|c| c.as_ref().and_then(|r| r.as_ref().ok()))
        .collect();
    Some(StepMask::from_coverage(
        &answers,
        &answered,
        query::COVERAGE_LABEL,
    ))
}
