//! The supervisor actor: owns one [`Backend`] per upstream, fans each query out
//! to all of them, and hands the answers to the merger.
//!
//! It decides what a set of upstream outcomes means (merge, or which error),
//! and nothing about HTTP: the edge maps [`ProxyError`] to a response.

use crate::backend::{ApiRequest, Backend, Fetch, UpstreamError};
use crate::config::{Config, UpstreamConfig};
use crate::merge::{self, AllEligible, MergeOptions, MergeReport, Upstream};
use crate::query::QueryShape;
use actix::prelude::*;
use futures_util::future::join_all;
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
}

pub struct Supervisor {
    backends: Vec<BackendHandle>,
    replica_labels: Arc<Vec<String>>,
}

impl Supervisor {
    /// Starts one backend per upstream, each on an arbiter of its own.
    pub fn new(config: &Config) -> Self {
        let backends = config
            .upstreams
            .iter()
            .map(|u| {
                let upstream = Arc::new(u.clone());
                let max_body = config.max_upstream_body_bytes;
                let for_actor = upstream.clone();
                let arbiter = Arbiter::new();
                let addr = Backend::start_in_arbiter(&arbiter.handle(), move |_| {
                    Backend::new(for_actor, max_body)
                });
                BackendHandle {
                    config: upstream,
                    addr,
                }
            })
            .collect();
        Supervisor {
            backends,
            replica_labels: Arc::new(config.replica_labels.clone()),
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
        let request = Arc::new(query.request);
        let fetches: Vec<_> = self
            .backends
            .iter()
            .map(|b| {
                let deadline = match query.client_timeout {
                    Some(t) if !t.is_zero() => t.min(b.config.timeout),
                    _ => b.config.timeout,
                };
                let send = b.addr.send(Fetch {
                    request: request.clone(),
                    deadline,
                });
                async move { send.await.unwrap_or(Err(UpstreamError::Unavailable)) }
            })
            .collect();
        let names: Vec<String> = self
            .backends
            .iter()
            .map(|b| display_name(&b.config))
            .collect();
        let replica_labels = self.replica_labels.clone();
        let reorder = query.shape.reorder;
        Box::pin(async move {
            let outcomes = join_all(fetches).await;
            if outcomes.iter().all(Result::is_err) {
                let failures = names
                    .into_iter()
                    .zip(outcomes)
                    .filter_map(|(n, o)| o.err().map(|e| (n, e)))
                    .collect();
                return Err(ProxyError::AllFailed(failures));
            }
            // The merge is CPU work: keep it off the threads that serve HTTP.
            actix_web::rt::task::spawn_blocking(move || {
                let warnings: Vec<String> = names
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
                let mut body = Vec::new();
                let report = merge::merge(&upstreams, &warnings, &opts, &AllEligible, &mut body)
                    .map_err(|e| ProxyError::Internal(e.to_string()))?;
                Ok(Merged { body, report })
            })
            .await
            .map_err(|e| ProxyError::Internal(format!("merge failed: {e}")))?
        })
    }
}
