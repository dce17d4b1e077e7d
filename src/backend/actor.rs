//! The backend actor: one per upstream, on the supervisor's arbiter. It
//! admits requests under the in-flight cap, runs their exchanges, records
//! each outcome in the upstream's health, and probes `/-/ready`.

use super::error::UpstreamError;
use super::exchange::{
    Body, Reader, Reading, exchange_within, fetch, upstream_url, with_credentials,
};
use super::health::{Health, SharedHealth, Transition};
use super::protocol::{Fetch, FetchBody, Fetched};
use crate::budget::Budget;
use crate::config::{HealthConfig, UpstreamConfig};
use crate::metrics::Metrics;
use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Backend {
    upstream: Arc<UpstreamConfig>,
    budget: Arc<Budget>,
    /// The upstream's name in logs and metrics (its URL without credentials).
    name: String,
    metrics: Arc<Metrics>,
    client: awc::Client,
    reading: Reading,
    cfg: HealthConfig,
    health: Health,
    shared: Arc<SharedHealth>,
    probing: bool,
    /// The probes' timer, cancelled when the upstream is retired.
    probe_timer: Option<SpawnHandle>,
    /// Removed from the configuration: its health is no longer published.
    retired: bool,
}

impl Backend {
    /// Must run on the arbiter the actor lives on: an awc client is bound to its thread.
    pub fn new(
        upstream: Arc<UpstreamConfig>,
        reading: Reading,
        cfg: HealthConfig,
        shared: Arc<SharedHealth>,
        metrics: Arc<Metrics>,
        budget: Arc<Budget>,
    ) -> Self {
        // Probes and queries share it: one TLS setup, one set of credentials.
        let client =
            crate::tls::upstream::client(upstream.tls.as_ref(), upstream.verify_name.as_deref());
        let name = upstream.display_name();
        metrics.upstream_health(&name, shared.is_healthy());
        Backend {
            upstream,
            budget,
            name,
            metrics,
            client,
            reading,
            cfg,
            health: Health::starting(shared.is_healthy()),
            probe_timer: None,
            shared,
            probing: false,
            retired: false,
        }
    }

    fn reader(&self) -> Reader {
        Reader {
            client: self.client.clone(),
            upstream: self.upstream.clone(),
            reading: self.reading,
            budget: self.budget.clone(),
            kept_buffers: true,
        }
    }

    /// Counts one finished request and applies what it means for health.
    fn record(&mut self, failure: Option<&UpstreamError>, took: Duration, bytes: usize) {
        // A request dropped for another's answer neither failed nor succeeded;
        // one the proxy failed to read is the proxy's failure, not the upstream's.
        let its_failure =
            failure.filter(|e| !matches!(e, UpstreamError::NotNeeded | UpstreamError::Proxy(_)));
        self.shared.count(its_failure, took);
        let outcome = failure.map_or("success", UpstreamError::kind);
        self.metrics
            .upstream_request(&self.name, outcome, took, bytes);
        let t = self.health.record_request(failure, &self.cfg);
        self.apply(t);
    }

    fn apply(&mut self, transition: Option<Transition>) {
        let Some(t) = transition.filter(|_| !self.retired) else {
            return;
        };
        let url = &self.name;
        self.metrics.upstream_health(url, t.healthy);
        if t.healthy {
            log::info!("upstream {url} is healthy: {}", t.reason);
        } else {
            log::warn!("upstream {url} is down: {}", t.reason);
        }
        self.shared.set(t.healthy, &t.reason);
    }

    fn probe(&mut self, ctx: &mut Context<Self>) {
        // One probe at a time: a hung upstream must not pile them up.
        if self.probing {
            return;
        }
        self.probing = true;
        let url = upstream_url(&self.upstream.url, "/-/ready", "");
        let (client, timeout, upstream) = (
            self.client.clone(),
            self.cfg.probe_timeout,
            self.upstream.clone(),
        );
        let probe = async move {
            let req = with_credentials(client.get(url), &upstream);
            match actix_web::rt::time::timeout(timeout, req.send()).await {
                Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                Ok(Ok(resp)) => Err(format!("HTTP {}", resp.status().as_u16())),
                Ok(Err(e)) => Err(format!("connection failed: {e}")),
                Err(_) => Err(format!(
                    "timeout after {}",
                    crate::time::format_duration(timeout)
                )),
            }
        };
        ctx.spawn(probe.into_actor(self).map(|result, backend, _| {
            backend.probing = false;
            let answered = result.is_ok();
            let t = backend.health.record_probe(result, &backend.cfg);
            if t.is_none() && answered && backend.health.healthy {
                backend.shared.confirm("ready probe answered 200");
            }
            backend.apply(t);
        }));
    }
}

impl Actor for Backend {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.probe(ctx);
        self.probe_timer =
            Some(ctx.run_interval(self.cfg.probe_interval, |backend, ctx| backend.probe(ctx)));
    }
}

/// The upstream left the configuration (a reload, or DNS no longer names
/// it): probing stops, its health is no longer published (the supervisor
/// drops the series of a name no longer used), and once the requests in
/// flight are answered and the last address is dropped, the actor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

impl Handler<Retire> for Backend {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Self::Context) {
        if let Some(timer) = self.probe_timer.take() {
            ctx.cancel_future(timer);
        }
        self.retired = true;
        log::info!(
            "upstream {} removed: requests in flight finish, then it stops",
            self.name
        );
    }
}

/// Restarted by actix' supervisor if it stops: probing again.
impl actix::Supervised for Backend {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.probing = false;
        log::warn!("backend for {} restarted", self.upstream.url);
    }
}

impl Handler<Fetch> for Backend {
    type Result = ResponseActFuture<Self, Result<Fetched, UpstreamError>>;

    fn handle(&mut self, msg: Fetch, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let reader = Reader {
            kept_buffers: !msg.part,
            ..self.reader()
        };
        let fut = fetch(reader, msg);
        Box::pin(fut.into_actor(self).map(move |outcome, backend, _| {
            let bytes = outcome.as_ref().map_or(0, |a| a.body_len());
            backend.record(outcome.as_ref().err(), started.elapsed(), bytes);
            outcome
        }))
    }
}

impl Handler<FetchBody> for Backend {
    type Result = ResponseActFuture<Self, Result<Body, UpstreamError>>;

    fn handle(&mut self, msg: FetchBody, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let reader = self.reader();
        let fut =
            async move { exchange_within(&reader, &msg.request, msg.deadline, None, None).await };
        Box::pin(fut.into_actor(self).map(move |outcome, backend, _| {
            // A 5xx is the upstream failing; a 4xx is the client's request.
            let failure = match &outcome {
                Ok(body) if body.status >= 500 => {
                    Some(UpstreamError::from_status(body.status, &body.bytes))
                }
                Ok(_) => None,
                Err(e) => Some(e.clone()),
            };
            let bytes = outcome.as_ref().map_or(0, |b| b.bytes.len());
            backend.record(failure.as_ref(), started.elapsed(), bytes);
            outcome
        }))
    }
}

/// Stops the actor, as a failure would; for the supervision test.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

#[cfg(test)]
impl Handler<Crash> for Backend {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::ApiRequest;
    use super::*;
    use actix_web::http::Method;
    use bytes::Bytes;
    const SCALAR: &str = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;

    /// An upstream on loopback that answers every request after `delay`.
    fn slow_upstream(delay: Duration) -> url::Url {
        answering(delay, SCALAR.to_string())
    }

    /// An upstream on loopback that answers every request with `body` after `delay`.
    fn answering(delay: Duration, body: String) -> url::Url {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let body = body.clone();
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    loop {
                        while !head.ends_with(b"\r\n\r\n") {
                            if stream.read(&mut byte).unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        head.clear();
                        std::thread::sleep(delay);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    fn backend(url: url::Url, cfg: HealthConfig) -> Addr<Backend> {
        backend_sharing(url, cfg, Arc::new(SharedHealth::default()))
    }

    fn backend_sharing(
        url: url::Url,
        cfg: HealthConfig,
        shared: Arc<SharedHealth>,
    ) -> Addr<Backend> {
        let upstream = Arc::new(UpstreamConfig {
            name: "t".into(),
            url,
            timeout: Duration::from_secs(10),
            auth: None,
            headers: vec![],
            forward_authorization: false,
            tls: None,
            discovery: None,
            shown_as: None,
            verify_name: None,
        });
        actix::Supervisor::start(move |_| {
            Backend::new(
                upstream,
                Reading {
                    max_body: 1 << 20,
                    parse_batch_bytes: crate::answer::BATCH_BYTES,
                },
                cfg,
                shared.clone(),
                Arc::new(Metrics::new()),
                Budget::new(1 << 30),
            )
        })
    }

    fn fetch_msg() -> Fetch {
        Fetch {
            request: Arc::new(ApiRequest {
                path: "/api/v1/query".into(),
                method: Method::GET,
                query_string: "query=1".into(),
                form_body: Bytes::new(),
                authorization: None,
            }),
            deadline: Duration::from_secs(10),
            verbatim: None,
            part: false,
            on_arrival: None,
        }
    }

    #[actix_web::test]
    async fn a_stopped_backend_is_restarted_and_the_others_keep_their_requests() {
        let url = slow_upstream(Duration::from_millis(300));
        let (a, b) = (
            backend(url.clone(), HealthConfig::default()),
            backend(url, HealthConfig::default()),
        );
        let in_flight = b.send(fetch_msg());
        a.send(Crash).await.unwrap();
        assert!(
            in_flight.await.unwrap().is_ok(),
            "b's request survived a's failure"
        );
        assert!(
            a.send(fetch_msg()).await.unwrap().is_ok(),
            "a answers again after its restart"
        );
    }

    #[actix_web::test]
    async fn a_panic_in_the_proxys_parser_is_its_own_fault_never_the_upstreams() {
        let planted = std::str::from_utf8(crate::answer::PLANTED_PANIC).unwrap();
        // Small (parsed on the arbiter) and large (on the blocking pool).
        for padding in [0, 2 * crate::backend::INLINE_BYTES] {
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"x":"{planted}","pad":"{}"}},"value":[1,"1"]}}]}}}}"#,
                "p".repeat(padding)
            );
            let shared = Arc::new(SharedHealth::default());
            let cfg = HealthConfig::default();
            let addr =
                backend_sharing(answering(Duration::ZERO, body), cfg.clone(), shared.clone());
            // More than enough failures in a row to mark it down, were they its.
            for _ in 0..cfg.failures_to_down + 2 {
                let e = addr.send(fetch_msg()).await.unwrap().unwrap_err();
                assert!(matches!(e, UpstreamError::Proxy(_)), "{e:?}");
                assert!(e.to_string().contains("planted by a test"), "{e}");
            }
            assert!(shared.is_healthy(), "marked down for the proxy's own bug");
            assert_eq!(shared.snapshot().failures, 0);
            // The actor and its arbiter live on.
            let fine = backend(slow_upstream(Duration::ZERO), HealthConfig::default());
            assert!(fine.send(fetch_msg()).await.unwrap().is_ok());
            assert!(addr.connected());
        }
    }
}
