//! One actor per upstream Prometheus: it sends that upstream its requests,
//! reads and parses the answers, and owns the upstream's health: passive
//! (consecutive failed requests), active (probing `/-/ready`), published
//! through a [`SharedHealth`] the supervisor reads when it routes a query.
//!
//! Every backend runs on the supervisor's arbiter (one thread for all their
//! I/O: a message between them wakes no other thread); parsing a large
//! answer runs on parse threads and the blocking pool, so it never stalls
//! that arbiter. What leaves this module is a parsed
//! [`Answer`] (owned buffer + spans) for queries (or, where the supervisor has
//! picked this upstream's answer to go out as it came, its untouched body:
//! [`Fetched`]), the raw [`Body`] for the other endpoints, or a typed
//! [`UpstreamError`]. Every request is counted in the
//! upstream's [`SharedHealth`] and in the proxy's metrics.

use crate::budget::{Budget, Held, Reservation};
use crate::config::{Auth, HealthConfig, UpstreamConfig};
use crate::merge::answer::{self, Answer, AnswerError, PADDING, Parser};
use crate::metrics::Metrics;
use actix::prelude::*;
use actix_web::http::{Method, header};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A client's read request, as it is forwarded: path, method, and the exact
/// query string and form body the client sent.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// Path below the upstream's base URL, e.g. `/api/v1/query`.
    pub path: String,
    pub method: Method,
    pub query_string: String,
    /// The `application/x-www-form-urlencoded` body of a POST; empty for GET.
    pub form_body: Bytes,
    /// The client's `Authorization` header: sent on only to upstreams whose
    /// config says `forward_authorization = true`.
    pub authorization: Option<String>,
}

impl ApiRequest {
    /// The same request with its `query` parameter replaced, every other
    /// parameter kept (same time range, step, timeout, look-back).
    pub fn with_query(&self, query: &str) -> ApiRequest {
        self.rewritten(&self.path, Some(query), &[], &[])
    }

    /// This range query over its steps from `start_ms` to `end_ms` alone,
    /// everything else kept (its query, step, look-back, timeout, …).
    pub fn over_steps(&self, start_ms: i64, end_ms: i64) -> ApiRequest {
        let added = [("start", seconds(start_ms)), ("end", seconds(end_ms))];
        self.rewritten(&self.path, None, &["start", "end"], &added)
    }

    /// The same request as a range query of `query` from `start_ms` to
    /// `end_ms` every `step_ms`, its other parameters (look-back, timeout, …)
    /// kept: an instant query's coverage, asked over the steps before it.
    pub fn as_range(&self, query: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> ApiRequest {
        let added = [
            ("start", seconds(start_ms)),
            ("end", seconds(end_ms)),
            ("step", seconds(step_ms)),
        ];
        let drop = ["time", "start", "end", "step"];
        self.rewritten("/api/v1/query_range", Some(query), &drop, &added)
    }

    /// This request at `path` with `query` for its query (None: its own),
    /// the parameters in `drop` (and `stats`, `limit`) removed, and `add`
    /// added where the client put its parameters (the form body of a POST,
    /// else the query string).
    fn rewritten(
        &self,
        path: &str,
        query: Option<&str>,
        drop: &[&str],
        add: &[(&str, String)],
    ) -> ApiRequest {
        let rewrite = |encoded: &[u8], add: &[(&str, String)]| {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(encoded).unwrap_or_default();
            let mut pairs: Vec<(String, String)> = pairs
                .into_iter()
                .filter(|(k, _)| k != "stats" && k != "limit" && !drop.contains(&k.as_str()))
                .map(|(k, v)| match query {
                    Some(query) if k == "query" => (k, query.to_string()),
                    _ => (k, v),
                })
                .collect();
            pairs.extend(add.iter().map(|(k, v)| (k.to_string(), v.clone())));
            serde_urlencoded::to_string(pairs).unwrap_or_default()
        };
        let (in_url, in_form) = if self.method == Method::POST {
            (&[][..], add)
        } else {
            (add, &[][..])
        };
        ApiRequest {
            path: path.to_string(),
            method: self.method.clone(),
            query_string: rewrite(self.query_string.as_bytes(), in_url),
            form_body: Bytes::from(rewrite(&self.form_body, in_form)),
            authorization: self.authorization.clone(),
        }
    }
}

/// The wall clock, in milliseconds since the epoch (0 before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds as Prometheus reads a time parameter: seconds, three decimals.
pub fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// A time parameter as milliseconds, read as Prometheus reads it: seconds
/// (`1700000000.123`, rounded to the millisecond) or RFC 3339
/// (`2023-11-14T22:13:20.123Z`, cut to the millisecond); None otherwise.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = text.parse::<f64>() {
        if !t.is_finite() || t.abs() > 1e15 {
            return None;
        }
        let whole = t.trunc();
        return Some(whole as i64 * 1000 + ((t - whole) * 1000.0).round() as i64);
    }
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(t.timestamp_millis())
}

/// Why one upstream gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Could not connect or send.
    Connect(String),
    /// The whole request (body included) did not finish within the deadline.
    Timeout(Duration),
    /// A Prometheus error answer (`"status":"error"`), with its HTTP status.
    Rejected {
        status: u16,
        error_type: String,
        error: String,
    },
    /// A non-2xx answer that is not a Prometheus error.
    Status { status: u16, detail: String },
    /// A redirect (3xx), never followed; where it pointed.
    Redirect { status: u16, location: String },
    /// The body was larger than the configured limit.
    TooLarge { limit: usize },
    /// The connection broke while the body was being read.
    Body(String),
    /// A 2xx body that is not a Prometheus query answer.
    Answer(AnswerError),
    /// The backend actor was gone (it is restarted by its supervisor).
    Unavailable,
    /// Skipped: the upstream is marked down, for this reason.
    Down(String),
    /// Skipped: this many requests were already in flight to it.
    Overloaded(usize),
    /// Not read: the proxy's in-flight bytes budget (this many bytes) was spent.
    OverBudget { limit: usize },
    /// No answer within the straggler timeout after the first upstream answered.
    Straggler(Duration),
    /// Dropped unread: another upstream's answer went out alone.
    NotNeeded,
}

impl UpstreamError {
    /// The error a non-2xx answer stands for: a Prometheus error answer keeps
    /// its type and message; anything else is summarised.
    pub fn from_status(status: u16, body: &[u8]) -> UpstreamError {
        match Answer::parse(body.to_vec()) {
            Err(AnswerError::Status { error_type, error }) => UpstreamError::Rejected {
                status,
                error_type,
                error,
            },
            _ => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                let detail = text.split_whitespace().collect::<Vec<_>>().join(" ");
                UpstreamError::Status {
                    status,
                    detail: if detail.is_empty() {
                        actix_web::http::StatusCode::from_u16(status)
                            .ok()
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("")
                            .to_string()
                    } else {
                        detail
                    },
                }
            }
        }
    }

    /// A short name for the kind of failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Rejected { .. } => "rejected",
            UpstreamError::Status { .. } => "http_error",
            UpstreamError::Redirect { .. } => "redirect",
            UpstreamError::TooLarge { .. } => "too_large",
            UpstreamError::Body(_) => "cut_off",
            UpstreamError::Answer(_) => "bad_answer",
            UpstreamError::Unavailable => "unavailable",
            UpstreamError::Down(_) => "down",
            UpstreamError::Overloaded(_) => "overloaded",
            UpstreamError::OverBudget { .. } => "over_budget",
            UpstreamError::Straggler(_) => "straggler",
            UpstreamError::NotNeeded => "not_needed",
        }
    }

    /// Says nothing about the upstream's health: the client's mistake, or the
    /// proxy's own limit.
    pub fn is_not_the_upstreams_fault(&self) -> bool {
        self.is_client_error()
            || matches!(
                self,
                UpstreamError::OverBudget { .. } | UpstreamError::NotNeeded
            )
    }

    /// A client's mistake (bad PromQL, bad parameters), not an outage.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            UpstreamError::Rejected {
                status: 400 | 422,
                ..
            }
        )
    }
}

/// A 2xx body that is not a usable answer: a Prometheus error answer keeps its
/// type and message (as a rejection with status 200); anything else is a bad answer.
impl From<AnswerError> for UpstreamError {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::Status { error_type, error } => UpstreamError::Rejected {
                status: 200,
                error_type,
                error,
            },
            other => UpstreamError::Answer(other),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connection failed: {e}"),
            UpstreamError::Timeout(d) => {
                write!(f, "timeout after {}", crate::config::format_duration(*d))
            }
            UpstreamError::Rejected {
                status,
                error_type,
                error,
            } => {
                write!(f, "HTTP {status}: {error_type}: {error}")
            }
            UpstreamError::Status { status, detail } => write!(f, "HTTP {status}: {detail}"),
            UpstreamError::Redirect { status, location } => {
                write!(f, "HTTP {status}: redirect to {location:?} not followed")
            }
            UpstreamError::TooLarge { limit } => {
                write!(f, "answer larger than the {limit}-byte limit")
            }
            UpstreamError::Body(e) => write!(f, "answer cut off: {e}"),
            UpstreamError::Answer(e) => write!(f, "{e}"),
            UpstreamError::Unavailable => f.write_str("backend unavailable"),
            UpstreamError::Down(why) => write!(f, "down, not asked ({why})"),
            UpstreamError::Overloaded(n) => write!(f, "not asked: {n} requests already in flight"),
            UpstreamError::OverBudget { limit } => write!(
                f,
                "answer not read: the proxy's {limit}-byte budget for answers in flight is spent"
            ),
            UpstreamError::Straggler(d) => write!(
                f,
                "no answer within {} of the first upstream's; answered without it",
                crate::config::format_duration(*d)
            ),
            UpstreamError::NotNeeded => {
                write!(f, "not read: another upstream's answer went out alone")
            }
        }
    }
}

/// An upstream's health and request record as the supervisor, the status
/// page and `/-/ready` see it: read without a message.
#[derive(Debug)]
pub struct SharedHealth {
    healthy: AtomicBool,
    /// Why it is in its state, and since when.
    state: Mutex<(String, SystemTime)>,
    requests: AtomicU64,
    failures: AtomicU64,
    last_latency_us: AtomicU64,
    last_failure: Mutex<String>,
    /// Moves whenever the upstream may have lost or gained data behind the
    /// proxy's back: its state changes, or a request to it fails on its side.
    generation: AtomicU64,
}

impl Default for SharedHealth {
    fn default() -> Self {
        SharedHealth {
            healthy: AtomicBool::new(true),
            state: Mutex::new((NOT_PROBED.into(), SystemTime::now())),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_latency_us: AtomicU64::new(0),
            last_failure: Mutex::new(String::new()),
            generation: AtomicU64::new(0),
        }
    }
}

const NOT_PROBED: &str = "not probed yet";

/// A copy of [`SharedHealth`] at one moment, for display.
#[derive(Debug, Clone)]
pub struct HealthSnapshot {
    pub healthy: bool,
    pub reason: String,
    pub since: SystemTime,
    pub requests: u64,
    pub failures: u64,
    /// Of the last request that got an answer; None before the first.
    pub last_latency: Option<Duration>,
    pub last_failure: String,
}

impl SharedHealth {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// See the field: what the proxy remembers of the upstream's data is
    /// good within one generation only.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Why the upstream is in its current state.
    pub fn reason(&self) -> String {
        self.state.lock().map(|r| r.0.clone()).unwrap_or_default()
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let (reason, since) = self
            .state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| (String::new(), SystemTime::UNIX_EPOCH));
        let latency = self.last_latency_us.load(Ordering::Relaxed);
        HealthSnapshot {
            healthy: self.is_healthy(),
            reason,
            since,
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_latency: (latency > 0).then(|| Duration::from_micros(latency)),
            last_failure: self
                .last_failure
                .lock()
                .map(|f| f.clone())
                .unwrap_or_default(),
        }
    }

    fn set(&self, healthy: bool, reason: &str) {
        if let Ok(mut state) = self.state.lock() {
            *state = (reason.to_string(), SystemTime::now());
        }
        self.healthy.store(healthy, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces the start-up reason ("not probed yet") once a probe confirms the state.
    fn confirm(&self, reason: &str) {
        if let Ok(mut state) = self.state.lock()
            && state.0 == NOT_PROBED
        {
            *state = (reason.to_string(), SystemTime::now());
        }
    }

    fn count(&self, failure: Option<&UpstreamError>, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_latency_us
            .store(took.as_micros().max(1) as u64, Ordering::Relaxed);
        if let Some(e) = failure {
            if !e.is_not_the_upstreams_fault() {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            self.failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_failure.lock() {
                *last = e.to_string();
            }
        }
    }
}

/// The upstream's health record: the state machine of the health model.
#[derive(Debug, Clone)]
pub struct Health {
    pub healthy: bool,
    consecutive_failures: u32,
    good_probes: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            healthy: true,
            consecutive_failures: 0,
            good_probes: 0,
        }
    }
}

/// A change of state, to be logged once and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub healthy: bool,
    pub reason: String,
}

impl Health {
    fn change(&mut self, healthy: bool, reason: String) -> Option<Transition> {
        if healthy == self.healthy {
            return None;
        }
        self.healthy = healthy;
        self.consecutive_failures = 0;
        self.good_probes = 0;
        Some(Transition { healthy, reason })
    }

    /// Passive health: `failures_to_down` failed requests in a row mark the upstream down.
    pub fn record_request(
        &mut self,
        failure: Option<&UpstreamError>,
        cfg: &HealthConfig,
    ) -> Option<Transition> {
        match failure {
            None => {
                self.consecutive_failures = 0;
                None
            }
            // A client's mistake, or the proxy's budget, says nothing about the upstream.
            Some(e) if e.is_not_the_upstreams_fault() => None,
            Some(e) => {
                self.consecutive_failures += 1;
                if self.consecutive_failures >= cfg.failures_to_down {
                    let n = self.consecutive_failures;
                    self.change(
                        false,
                        format!("{n} requests in a row failed, the last: {e}"),
                    )
                } else {
                    None
                }
            }
        }
    }

    /// Active health: a failed probe marks the upstream down at once (Prometheus
    /// answers 503 while it replays its WAL); `probes_to_up` good ones bring it back.
    pub fn record_probe(
        &mut self,
        probe: Result<(), String>,
        cfg: &HealthConfig,
    ) -> Option<Transition> {
        match probe {
            Err(why) => {
                self.good_probes = 0;
                self.change(false, format!("ready probe failed: {why}"))
            }
            Ok(()) if self.healthy => None,
            Ok(()) => {
                self.good_probes += 1;
                if self.good_probes >= cfg.probes_to_up {
                    let n = self.good_probes;
                    self.change(true, format!("ready probe answered 200 {n} times in a row"))
                } else {
                    None
                }
            }
        }
    }
}

/// Ask the backend for one answer, to arrive within `deadline`.
#[derive(Message)]
#[rtype(result = "Result<Fetched, UpstreamError>")]
pub struct Fetch {
    pub request: Arc<ApiRequest>,
    pub deadline: Duration,
    /// For a query's main answer that may go out as one upstream gave it:
    /// which one, once the supervisor knows.
    pub verbatim: Option<VerbatimWatch>,
    /// A part of a range (some of its steps): small beside the whole answers
    /// asked with it, so it takes none of the budget's kept buffers, which
    /// are sized for those.
    pub part: bool,
    /// Told, once a 2xx body is in (before it waits for the verbatim
    /// decision), whether it holds no result at all: the supervisor asks the
    /// others at once when the first upstream holds nothing of the window.
    pub on_arrival: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl Fetch {
    /// A whole answer, to go through the merge.
    pub fn new(request: Arc<ApiRequest>, deadline: Duration) -> Fetch {
        Fetch {
            request,
            deadline,
            verbatim: None,
            part: false,
            on_arrival: None,
        }
    }
}

/// A query answer as the backend hands it over.
#[derive(Debug)]
pub enum Fetched {
    /// Parsed, for the merge.
    Parsed(Held<Answer>),
    /// The 2xx body as it came, never parsed: the supervisor picked this
    /// upstream's answer to go out alone before any of it was parsed.
    Verbatim(Body),
}

impl Fetched {
    pub fn body_len(&self) -> usize {
        match self {
            Fetched::Parsed(held) => held.body_len(),
            Fetched::Verbatim(body) => body.bytes.len(),
        }
    }

    /// The parsed answer; a body that came verbatim is parsed now.
    pub fn into_parsed(self) -> Result<Held<Answer>, UpstreamError> {
        match self {
            Fetched::Parsed(held) => Ok(held),
            Fetched::Verbatim(body) => {
                let len = body.bytes.len();
                let answer = Answer::parse_padded(body.bytes, len)?;
                Ok(Held::new(answer, body.reservation))
            }
        }
    }
}

/// Whether one upstream's answer to a query goes to the client as it came:
/// the supervisor decides once the coverage shows every upstream holds the
/// same samples; each backend reading a main answer watches for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbatim {
    /// Not decided yet: read and parse as usual.
    Open,
    /// The answers are merged.
    Merged,
    /// This upstream's (by index) answer goes out alone; the others' are
    /// not needed, and are dropped unread.
    From(usize),
}

/// One backend's view of a query's [`Verbatim`] decision.
#[derive(Clone, Debug)]
pub struct VerbatimWatch {
    pub decision: tokio::sync::watch::Receiver<Verbatim>,
    /// This upstream's index, in priority order.
    pub me: usize,
}

impl VerbatimWatch {
    fn mine(&self) -> bool {
        *self.decision.borrow() == Verbatim::From(self.me)
    }

    /// The decision, once made; `Open` if it never will be.
    async fn decided(&self) -> Verbatim {
        let mut decision = self.decision.clone();
        let decided = decision.wait_for(|d| *d != Verbatim::Open).await;
        decided.map_or(Verbatim::Open, |d| *d)
    }

    /// Resolves once another upstream's answer is picked to go out alone;
    /// never if none is (decided without this: read on).
    async fn passed_over(self) {
        let me = self.me;
        until(
            self.decision,
            |d| matches!(d, Verbatim::From(u) if *u != me),
        )
        .await
    }
}

/// Resolves once `watch` holds a value `ready` accepts; never if its sender
/// goes first.
pub async fn until<T>(mut watch: tokio::sync::watch::Receiver<T>, ready: impl FnMut(&T) -> bool) {
    if watch.wait_for(ready).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Ask the backend for the upstream's answer as it comes (any HTTP status),
/// within `deadline`: for the endpoints merged without spans, and pass-through.
#[derive(Message)]
#[rtype(result = "Result<Body, UpstreamError>")]
pub struct FetchBody {
    pub request: Arc<ApiRequest>,
    pub deadline: Duration,
}

/// An upstream's answer as it came.
#[derive(Debug)]
pub struct Body {
    pub status: u16,
    pub content_type: Option<String>,
    /// The body; its capacity leaves room for simd-json's padding.
    pub bytes: Vec<u8>,
    /// Its share of the in-flight budget, held while the body lives.
    pub reservation: Reservation,
}

/// How upstream bodies are read.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    /// Larger bodies fail the upstream.
    pub max_body: usize,
    /// Query answers are parsed in batches of about this many bytes as they arrive.
    pub parse_batch_bytes: usize,
}

/// What one exchange with the upstream needs; cloned into each request's future.
#[derive(Clone)]
struct Reader {
    client: awc::Client,
    upstream: Arc<UpstreamConfig>,
    reading: Reading,
    budget: Arc<Budget>,
    /// Whether the body and its sample table may take the budget's kept buffers.
    kept_buffers: bool,
}

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
    in_flight: usize,
    probing: bool,
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
        let client = awc::Client::builder()
            // The deadline is applied around the whole exchange in `fetch`.
            .disable_timeout()
            // A redirect would take a request to a path the allow-list never
            // chose, on a server the configuration never named.
            .disable_redirects()
            .finish();
        let name = upstream.display_name();
        metrics.upstream_health(&name, true);
        Backend {
            upstream,
            budget,
            name,
            metrics,
            client,
            reading,
            cfg,
            health: Health::default(),
            shared,
            in_flight: 0,
            probing: false,
        }
    }

    /// Takes a request in under the in-flight cap (past it, the upstream is
    /// skipped rather than queued); returns when it started.
    fn admit(&mut self) -> Result<Instant, UpstreamError> {
        if self.in_flight >= self.cfg.max_in_flight {
            return Err(UpstreamError::Overloaded(self.in_flight));
        }
        self.in_flight += 1;
        Ok(Instant::now())
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
        // A request dropped for another's answer neither failed nor succeeded.
        self.shared
            .count(failure.filter(|e| **e != UpstreamError::NotNeeded), took);
        let outcome = failure.map_or("success", UpstreamError::kind);
        self.metrics
            .upstream_request(&self.name, outcome, took, bytes);
        let t = self.health.record_request(failure, &self.cfg);
        self.apply(t);
    }

    fn apply(&mut self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
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
                    crate::config::format_duration(timeout)
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
        ctx.run_interval(self.cfg.probe_interval, |backend, ctx| backend.probe(ctx));
    }
}

/// Restarted by actix' supervisor if it stops: probing again, nothing in flight.
impl actix::Supervised for Backend {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.in_flight = 0;
        self.probing = false;
        log::warn!("backend for {} restarted", self.upstream.url);
    }
}

impl Handler<Fetch> for Backend {
    type Result = ResponseActFuture<Self, Result<Fetched, UpstreamError>>;

    fn handle(&mut self, msg: Fetch, _: &mut Self::Context) -> Self::Result {
        let started = match self.admit() {
            Ok(started) => started,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let reader = Reader {
            kept_buffers: !msg.part,
            ..self.reader()
        };
        let fut = fetch(reader, msg);
        Box::pin(fut.into_actor(self).map(move |outcome, backend, _| {
            backend.in_flight -= 1;
            let bytes = outcome.as_ref().map_or(0, |a| a.body_len());
            backend.record(outcome.as_ref().err(), started.elapsed(), bytes);
            outcome
        }))
    }
}

impl Handler<FetchBody> for Backend {
    type Result = ResponseActFuture<Self, Result<Body, UpstreamError>>;

    fn handle(&mut self, msg: FetchBody, _: &mut Self::Context) -> Self::Result {
        let started = match self.admit() {
            Ok(started) => started,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let reader = self.reader();
        let fut =
            async move { exchange_within(&reader, &msg.request, msg.deadline, None, None).await };
        Box::pin(fut.into_actor(self).map(move |outcome, backend, _| {
            backend.in_flight -= 1;
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

/// Adds the upstream's configured headers and credentials to a request.
fn with_credentials(mut req: awc::ClientRequest, upstream: &UpstreamConfig) -> awc::ClientRequest {
    for (name, value) in &upstream.headers {
        req = req.insert_header((name.as_str(), value.as_str()));
    }
    match &upstream.auth {
        Some(Auth::Basic { username, password }) => req.basic_auth(username, password),
        Some(Auth::Bearer(token)) => req.bearer_auth(token),
        None => req,
    }
}

/// [`with_credentials`], plus the client's `Authorization` where the config
/// allows it and configures no credentials of its own.
fn with_client_credentials(
    req: awc::ClientRequest,
    upstream: &UpstreamConfig,
    request: &ApiRequest,
) -> awc::ClientRequest {
    let req = with_credentials(req, upstream);
    match &request.authorization {
        Some(auth) if upstream.forward_authorization && upstream.auth.is_none() => {
            req.insert_header((header::AUTHORIZATION, auth.as_str()))
        }
        _ => req,
    }
}

/// The upstream URL for `path`, keeping the base URL's own path prefix.
pub fn upstream_url(base: &url::Url, path: &str, query_string: &str) -> String {
    let mut url = base.as_str().trim_end_matches('/').to_string();
    url.push_str(path);
    if !query_string.is_empty() {
        url.push('?');
        url.push_str(query_string);
    }
    url
}

/// Bodies up to this size are parsed, and merges of answers up to this size
/// in all run, on the arbiter the backends share with the supervisor: a
/// hand-off to the blocking pool and back costs tens of microseconds of
/// wake-ups here, more than simd-json takes for 64 KiB, and a small query
/// would make several. Larger work still goes to the pool, so one big answer
/// never stalls that arbiter.
pub const INLINE_BYTES: usize = 64 << 10;

async fn fetch(reader: Reader, mut msg: Fetch) -> Result<Fetched, UpstreamError> {
    let started = Instant::now();
    let mut parser = Parser::new(reader.reading.parse_batch_bytes);
    if reader.kept_buffers {
        parser = parser.with_spare_tables(reader.budget.clone());
    }
    let exchange = exchange_within(
        &reader,
        &msg.request,
        msg.deadline,
        Some(&mut parser),
        msg.verbatim.as_ref(),
    );
    let body = match msg.verbatim.clone() {
        None => exchange.await?,
        // Dropping the exchange closes the connection, and Prometheus stops
        // evaluating a query whose client has gone.
        Some(watch) => match futures_util::future::select(
            std::pin::pin!(exchange),
            std::pin::pin!(watch.passed_over()),
        )
        .await
        {
            futures_util::future::Either::Left((body, _)) => body?,
            futures_util::future::Either::Right(_) => return Err(UpstreamError::NotNeeded),
        },
    };
    if !(200..300).contains(&body.status) {
        return Err(UpstreamError::from_status(body.status, &body.bytes));
    }
    if let Some(tell) = msg.on_arrival.take() {
        // A body with a series has had a batch cut by the parser, or will.
        let _ = tell.send(!parser.has_cut() && answer::holds_no_result(&body.bytes));
    }
    // Untouched by the parser: wait for the decision (it comes with the
    // coverage the merge would wait for anyway), so that an answer picked to
    // go out alone is never parsed, and one not needed is dropped.
    if let Some(watch) = msg.verbatim.as_ref().filter(|_| !parser.has_cut()) {
        match watch.decided().await {
            Verbatim::From(u) if u == watch.me => return Ok(Fetched::Verbatim(body)),
            Verbatim::From(_) => return Err(UpstreamError::NotNeeded),
            _ => {}
        }
    }
    let len = body.bytes.len();
    let (buf, reservation) = (body.bytes, body.reservation);
    // What is left after the last batch parsed on arrival: CPU work, off the
    // arbiter, unless the body is small enough that the trip to the blocking
    // pool and back would cost more than parsing it here.
    let answer = if len <= INLINE_BYTES {
        parser.finish(buf, len)?
    } else {
        actix_web::rt::task::spawn_blocking(move || parser.finish(buf, len))
            .await
            .map_err(|_| UpstreamError::Unavailable)??
    };
    log::debug!(
        "{}: {len} bytes parsed {:?} after the request",
        reader.upstream.url,
        started.elapsed()
    );
    Ok(Fetched::Parsed(Held::new(answer, reservation)))
}

/// [`exchange`] with `deadline` around the whole of it, body included.
async fn exchange_within(
    reader: &Reader,
    request: &ApiRequest,
    deadline: Duration,
    parser: Option<&mut Parser>,
    verbatim: Option<&VerbatimWatch>,
) -> Result<Body, UpstreamError> {
    actix_web::rt::time::timeout(deadline, exchange(reader, request, parser, verbatim))
        .await
        .unwrap_or(Err(UpstreamError::Timeout(deadline)))
}

/// Sends the request and reads the whole body, whatever its status, into a
/// buffer with room for simd-json's padding. With a `parser`, a successful
/// body's complete batches of series are parsed as they arrive, so most of
/// the parse overlaps the transfer (each batch is ~0.5 ms of this arbiter's
/// time; the rest is left for `Parser::finish`), until this upstream's answer
/// is picked to go out as it came (`verbatim`) before the first batch.
async fn exchange(
    reader: &Reader,
    request: &ApiRequest,
    mut parser: Option<&mut Parser>,
    verbatim: Option<&VerbatimWatch>,
) -> Result<Body, UpstreamError> {
    let asked = Instant::now();
    let (client, upstream, max_body) = (&reader.client, &*reader.upstream, reader.reading.max_body);
    let url = upstream_url(&upstream.url, &request.path, &request.query_string);
    let mut req = client
        .request(request.method.clone(), url)
        // Compression costs both ends CPU and buys nothing next to the replicas.
        .insert_header((header::ACCEPT_ENCODING, "identity"))
        .no_decompress();
    req = with_client_credentials(req, upstream, request);
    let sent = if request.method == Method::POST {
        req.content_type("application/x-www-form-urlencoded")
            .send_body(request.form_body.clone())
            .await
    } else {
        req.send().await
    };
    let mut resp = sent.map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let headed = Instant::now();
    let status = resp.status();
    if status.is_redirection() {
        let location = resp.headers().get(header::LOCATION);
        return Err(UpstreamError::Redirect {
            status: status.as_u16(),
            location: location.map_or_else(String::new, |l| {
                String::from_utf8_lossy(l.as_bytes()).into_owned()
            }),
        });
    }
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let hinted = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if hinted.is_some_and(|n| n > max_body) {
        return Err(UpstreamError::TooLarge { limit: max_body });
    }
    // Error bodies are small; a huge one is not worth reading whole.
    let limit = if status.is_success() {
        max_body
    } else {
        max_body.min(1 << 20)
    };
    // Without a length (Prometheus chunks every answer over 2 KiB), start
    // small: a larger first buffer, freed at once, makes the allocator give
    // the top of its heap back to the kernel and take it again every query.
    let capacity = hinted.unwrap_or(UNKNOWN_LENGTH_BYTES).min(limit) + PADDING;
    let over_budget = || UpstreamError::OverBudget {
        limit: reader.budget.limit(),
    };
    // The whole body up front when its length is known; else as it comes.
    let mut reservation = reader.budget.reserve(capacity).ok_or_else(over_budget)?;
    let mut buf = Vec::with_capacity(capacity.min(SPARE_FROM_BYTES));
    // A large answer moves into a kept buffer when it outgrows its first one.
    let mut spare = (status.is_success() && reader.kept_buffers).then_some(&*reader.budget);
    if capacity > buf.capacity() {
        move_to_spare(&mut spare, &mut buf, capacity);
    }
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::Body(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            if !status.is_success() {
                break;
            }
            return Err(UpstreamError::TooLarge { limit: max_body });
        }
        let needed = buf.len() + chunk.len() + PADDING;
        if needed > reservation.bytes()
            && !reservation.grow(needed.max(2 * reservation.bytes()) - reservation.bytes())
        {
            return Err(over_budget());
        }
        if needed > buf.capacity() {
            move_to_spare(&mut spare, &mut buf, needed);
        }
        buf.extend_from_slice(&chunk);
        if verbatim.is_some_and(VerbatimWatch::mine)
            && parser.as_ref().is_some_and(|p| !p.has_cut())
        {
            parser = None;
        }
        if let Some(parser) = parser.as_mut().filter(|_| status.is_success()) {
            let len = buf.len();
            parser.feed(&mut buf, len)?;
        }
    }
    log::debug!(
        "{}: response head {:?} after the request, then {} bytes in {:?}",
        upstream.url,
        headed - asked,
        buf.len(),
        headed.elapsed()
    );
    Ok(Body {
        status: status.as_u16(),
        content_type,
        bytes: buf,
        reservation,
    })
}

/// The first buffer for a body whose length is not given.
const UNKNOWN_LENGTH_BYTES: usize = 16 << 10;

/// A body is moved into a kept buffer (see [`Budget::keep`]) once it needs
/// this much room: later, the copy would cost more, and smaller answers do
/// not take a large buffer.
const SPARE_FROM_BYTES: usize = 512 << 10;

/// Moves `buf` into the budget's largest kept buffer, once (`spare` is
/// taken), and makes room for `needed` bytes; the allocator grows it otherwise.
fn move_to_spare(spare: &mut Option<&Budget>, buf: &mut Vec<u8>, needed: usize) {
    if needed < SPARE_FROM_BYTES {
        return;
    }
    if let Some(mut kept) = spare.take().and_then(Budget::spare_body) {
        kept.extend_from_slice(buf);
        *buf = kept;
    }
    buf.reserve(needed - buf.len());
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
    use super::*;

    /// An upstream on loopback that answers every request after `delay`.
    fn slow_upstream(delay: Duration) -> url::Url {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
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
                        let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#;
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
        let upstream = Arc::new(UpstreamConfig {
            name: "t".into(),
            url,
            timeout: Duration::from_secs(10),
            auth: None,
            headers: vec![],
            forward_authorization: false,
        });
        actix::Supervisor::start(move |_| {
            Backend::new(
                upstream,
                Reading {
                    max_body: 1 << 20,
                    parse_batch_bytes: crate::merge::answer::BATCH_BYTES,
                },
                cfg,
                Arc::new(SharedHealth::default()),
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
    async fn past_the_in_flight_cap_an_upstream_is_skipped_not_queued() {
        let url = slow_upstream(Duration::from_millis(300));
        let cfg = HealthConfig {
            max_in_flight: 1,
            ..HealthConfig::default()
        };
        let a = backend(url, cfg);
        let first = a.send(fetch_msg());
        let second = a.send(fetch_msg()).await.unwrap();
        assert_eq!(second.unwrap_err(), UpstreamError::Overloaded(1));
        assert!(first.await.unwrap().is_ok());
    }

    #[test]
    fn a_large_body_moves_into_a_kept_buffer_once_keeping_what_it_read() {
        let budget = Budget::keeping(1 << 30, 1 << 30);
        let mut kept = vec![b'x'; crate::budget::KEPT_FROM_BYTES];
        kept.clear();
        budget.keep(kept, Default::default());
        let mut spare = Some(&*budget);
        let mut buf = b"{\"status\"".to_vec();
        move_to_spare(&mut spare, &mut buf, 1000);
        assert_eq!(
            budget.kept_bytes(),
            crate::budget::KEPT_FROM_BYTES,
            "small: not taken"
        );
        move_to_spare(&mut spare, &mut buf, SPARE_FROM_BYTES);
        assert_eq!(budget.kept_bytes(), 0, "taken");
        assert_eq!(buf, b"{\"status\"", "what was read moves with it");
        assert!(buf.capacity() >= crate::budget::KEPT_FROM_BYTES);
        assert!(spare.is_none(), "a body takes one kept buffer at most");
        move_to_spare(&mut spare, &mut buf, 3 * crate::budget::KEPT_FROM_BYTES);
        assert!(buf.capacity() >= 3 * crate::budget::KEPT_FROM_BYTES);
        assert_eq!(buf, b"{\"status\"");
    }

    #[test]
    fn a_range_over_some_of_its_steps_keeps_its_query_and_step() {
        for method in [Method::GET, Method::POST] {
            let params = "query=rate(x%5B5m%5D)&start=100&end=200&step=15&timeout=9s";
            let (query_string, form_body) = match method {
                Method::GET => (params.to_string(), Bytes::new()),
                _ => (String::new(), Bytes::from(params)),
            };
            let r = ApiRequest {
                path: "/api/v1/query_range".into(),
                method: method.clone(),
                query_string,
                form_body,
                authorization: None,
            };
            let over = r.over_steps(130_000, 160_000);
            let sent = match method {
                Method::GET => over.query_string.clone(),
                _ => String::from_utf8(over.form_body.to_vec()).unwrap(),
            };
            assert_eq!(
                sent, "query=rate%28x%5B5m%5D%29&step=15&timeout=9s&start=130.000&end=160.000",
                "{method}"
            );
            assert_eq!(over.path, "/api/v1/query_range");
        }
    }

    #[test]
    fn urls_keep_the_path_prefix() {
        let base = url::Url::parse("http://h:9090/prometheus/").unwrap();
        assert_eq!(
            upstream_url(&base, "/api/v1/query", "query=up&time=1"),
            "http://h:9090/prometheus/api/v1/query?query=up&time=1"
        );
        let base = url::Url::parse("http://h:9090").unwrap();
        assert_eq!(
            upstream_url(&base, "/api/v1/query_range", ""),
            "http://h:9090/api/v1/query_range"
        );
    }

    #[test]
    fn with_query_replaces_only_the_query() {
        let r = ApiRequest {
            path: "/api/v1/query_range".into(),
            method: Method::POST,
            query_string: "x=1".into(),
            form_body: Bytes::from_static(b"query=up&start=1&end=2&step=15&stats=all"),
            authorization: None,
        };
        let c = r.with_query("sum(up)");
        assert_eq!(
            c.form_body,
            Bytes::from_static(b"query=sum%28up%29&start=1&end=2&step=15")
        );
        assert_eq!(c.query_string, "x=1");
    }

    #[test]
    fn an_instants_coverage_is_a_range_ending_at_the_instant() {
        let post = ApiRequest {
            path: "/api/v1/query".into(),
            method: Method::POST,
            query_string: "x=1".into(),
            form_body: Bytes::from_static(b"query=up&time=1700000000.5&lookback_delta=1m"),
            authorization: None,
        };
        let c = post.as_range("sum(up)", 1_699_999_944_500, 1_700_000_000_500, 7000);
        assert_eq!(c.path, "/api/v1/query_range");
        assert_eq!(
            c.form_body,
            Bytes::from_static(
                b"query=sum%28up%29&lookback_delta=1m&start=1699999944.500&end=1700000000.500&step=7.000"
            )
        );
        assert_eq!(c.query_string, "x=1");
        let get = ApiRequest {
            method: Method::GET,
            query_string: "query=up&time=1700000000".into(),
            form_body: Bytes::new(),
            ..post
        };
        let c = get.as_range("sum(up)", 0, 56_000, 7000);
        assert_eq!(
            c.query_string,
            "query=sum%28up%29&start=0.000&end=56.000&step=7.000"
        );
    }

    #[test]
    fn time_parameters_are_read_as_prometheus_reads_them() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.1236"), Some(1_700_000_000_124));
        assert_eq!(parse_time("-1.5"), Some(-1500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.1239+01:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(seconds(-1500), "-1.500");
        assert_eq!(parse_time(&seconds(-1500)), Some(-1500));
        assert_eq!(seconds(1_700_000_000_124), "1700000000.124");
    }

    fn failed() -> UpstreamError {
        UpstreamError::Connect("refused".into())
    }

    #[test]
    fn consecutive_failures_mark_down_and_good_probes_bring_back() {
        let cfg = HealthConfig::default();
        let mut h = Health::default();
        assert_eq!(h.record_request(Some(&failed()), &cfg), None);
        assert_eq!(h.record_request(Some(&failed()), &cfg), None);
        let down = h
            .record_request(Some(&failed()), &cfg)
            .expect("third failure marks down");
        assert!(
            !down.healthy && down.reason.contains("3 requests in a row failed"),
            "{down:?}"
        );
        assert_eq!(
            h.record_probe(Ok(()), &cfg),
            None,
            "one good probe is not enough"
        );
        let up = h.record_probe(Ok(()), &cfg).expect("second good probe");
        assert!(up.healthy);
        // A success in between resets the count; a client error does not count.
        h.record_request(Some(&failed()), &cfg);
        h.record_request(Some(&failed()), &cfg);
        let bad_query = Some(UpstreamError::Rejected {
            status: 400,
            error_type: "bad_data".into(),
            error: "x".into(),
        });
        assert_eq!(h.record_request(bad_query.as_ref(), &cfg), None);
        assert!(h.healthy);
    }

    #[test]
    fn a_failed_probe_marks_down_at_once_and_is_reported_once() {
        let cfg = HealthConfig::default();
        let mut h = Health::default();
        let t = h.record_probe(Err("HTTP 503".into()), &cfg).unwrap();
        assert_eq!(
            t,
            Transition {
                healthy: false,
                reason: "ready probe failed: HTTP 503".into()
            }
        );
        assert_eq!(h.record_probe(Err("HTTP 503".into()), &cfg), None);
        assert_eq!(h.record_probe(Ok(()), &cfg), None);
        assert_eq!(
            h.record_probe(Err("timeout".into()), &cfg),
            None,
            "still down: no new transition"
        );
        assert_eq!(h.record_probe(Ok(()), &cfg), None, "the count started over");
        assert!(h.record_probe(Ok(()), &cfg).is_some());
    }

    #[test]
    fn client_errors_are_told_apart_from_outages() {
        let bad = UpstreamError::Rejected {
            status: 400,
            error_type: "bad_data".into(),
            error: "x".into(),
        };
        assert!(bad.is_client_error());
        assert!(!UpstreamError::Timeout(Duration::from_secs(1)).is_client_error());
        assert_eq!(
            UpstreamError::Timeout(Duration::from_secs(60)).to_string(),
            "timeout after 60s"
        );
    }
}
