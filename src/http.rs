//! The HTTP edge: routes, request parameters, and the one place where errors
//! become Prometheus-format error answers.
//!
//! Every request is routed by the allow-list in [`crate::routes`], from its
//! path as it came: anything not in the table is refused there and never
//! reaches an upstream. Handlers read only what the proxy needs (`query`,
//! `timeout`, `limit`); the client's parameters go upstream as the client
//! sent them, except an instant query's `time`, added where it is missing.
//! Client headers are not forwarded, except `Authorization` to upstreams
//! configured to take it.

use crate::admission::{Admission, Admitted, Refused};
use crate::backend::{ApiRequest, UpstreamError};
use crate::merge::json::write_error;
use crate::merge::meta::MetaKind;
use crate::metrics::Metrics;
use crate::query;
use crate::routes::{self, Handling, Local, Refusal, Route};
use crate::supervisor::{Forward, Merged, MetaQuery, Piece, ProxyError, Query, Supervisor};
use actix::Addr;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::Service;
use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::SystemTime;

/// What every handler shares.
pub struct State {
    pub supervisor: Addr<Supervisor>,
    /// The gate client queries pass before they reach an upstream.
    pub admission: Admission,
    /// How long a query without a `timeout` of its own may wait to be
    /// admitted: the longest upstream timeout.
    pub queue_deadline: std::time::Duration,
    pub max_request_body_bytes: usize,
    /// The upstreams' look-back delta, when the client sends none.
    pub lookback_delta: std::time::Duration,
    /// The narrowest window the coverage counts over (`query::narrowest_counted`).
    pub narrowest_counted: std::time::Duration,
    /// The cache of settled history; None when turned off.
    pub cache: Option<Arc<crate::cache::Cache>>,
    /// Each upstream's name and health, in priority order (kept by the supervisor).
    pub upstreams: crate::supervisor::UpstreamView,
    pub metrics: Arc<Metrics>,
    /// The configuration in effect, secrets masked, for the status page
    /// (replaced by a reload).
    pub config_view: Arc<std::sync::RwLock<Vec<(String, String)>>>,
    pub started: SystemTime,
}

/// Errors as the client sees them: each maps to one status and `errorType`.
#[derive(Debug)]
pub enum ApiError {
    /// The client's request is malformed (400 `bad_data`).
    BadData(String),
    /// A method the endpoint does not serve (405).
    MethodNotAllowed,
    /// A write or admin call: the proxy is read-only (403).
    ReadOnly(String),
    /// No such endpoint (404).
    NotFound(String),
    /// Not admitted: the queue was full (503 with `Retry-After`), or the
    /// query waited its whole deadline (503, Prometheus' timeout error).
    Refused(Refused),
    Proxy(ProxyError),
}

impl ApiError {
    fn response(&self) -> HttpResponse {
        let (status, error_type, message) = match self {
            ApiError::BadData(m) => (StatusCode::BAD_REQUEST, "bad_data".to_string(), m.clone()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_data".to_string(),
                "method not allowed: the API takes GET or POST, the proxy's own pages GET"
                    .to_string(),
            ),
            ApiError::ReadOnly(path) => (
                StatusCode::FORBIDDEN,
                "bad_data".to_string(),
                format!("prom-ha-proxy is read-only: {path} is not proxied"),
            ),
            ApiError::NotFound(path) => (
                StatusCode::NOT_FOUND,
                "not_found".to_string(),
                format!("no such endpoint: {path}"),
            ),
            ApiError::Refused(Refused::QueueFull(n)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable".to_string(),
                format!("too many queries: {n} already waiting to run; try again later"),
            ),
            // Prometheus' own words for a query that timed out in its queue.
            ApiError::Refused(Refused::TimedOut(_)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout".to_string(),
                "query timed out in query queue".to_string(),
            ),
            ApiError::Proxy(ProxyError::Internal(m)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal".to_string(),
                m.clone(),
            ),
            ApiError::Proxy(ProxyError::AllFailed(failures)) => all_failed(failures),
            // Nobody reads it; nginx's "client closed request", for the logs.
            ApiError::Proxy(ProxyError::ClientLeft) => (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "canceled".to_string(),
                "the client went away".to_string(),
            ),
        };
        let mut body = Vec::with_capacity(message.len() + 64);
        write_error(&mut body, &error_type, &message);
        let mut res = HttpResponse::build(status);
        if let ApiError::Refused(Refused::QueueFull(_)) = self {
            res.insert_header((header::RETRY_AFTER, "1"));
        }
        res.insert_header((header::CONTENT_TYPE, "application/json"))
            .body(body)
    }
}

/// When every upstream failed: a client error (bad PromQL) is passed on as the
/// upstream said it; otherwise the outage is reported with every upstream's reason.
fn all_failed(failures: &[(String, UpstreamError)]) -> (StatusCode, String, String) {
    if let Some((
        _,
        UpstreamError::Rejected {
            status,
            error_type,
            error,
        },
    )) = failures.iter().find(|(_, e)| e.is_client_error())
    {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
        return (status, error_type.clone(), error.clone());
    }
    let reasons: Vec<String> = failures
        .iter()
        .map(|(n, e)| format!("upstream {n}: {e}"))
        .collect();
    let message = format!("all upstreams failed: {}", reasons.join("; "));
    let all = |f: fn(&UpstreamError) -> bool| failures.iter().all(|(_, e)| f(e));
    if all(|e| matches!(e, UpstreamError::Timeout(_))) {
        (StatusCode::GATEWAY_TIMEOUT, "timeout".into(), message)
    } else if all(|e| {
        matches!(
            e,
            UpstreamError::Connect(_)
                | UpstreamError::Unavailable
                | UpstreamError::Down(_)
                | UpstreamError::OverBudget { .. }
        )
    }) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable".into(),
            message,
        )
    } else {
        (StatusCode::BAD_GATEWAY, "unavailable".into(), message)
    }
}

/// Starts the supervisor and serves the API until the server stops.
/// Must run inside an actix system.
pub async fn serve(config: crate::config::Config) -> std::io::Result<()> {
    serve_reloading(config, None).await
}

/// [`serve`], reading the configuration again from `source` on SIGHUP.
pub async fn serve_reloading(
    config: crate::config::Config,
    source: Option<crate::reload::Source>,
) -> std::io::Result<()> {
    use actix::Actor;
    let metrics = Arc::new(Metrics::new());
    let supervisor = Supervisor::new(&config, metrics.clone());
    let cache = match &config.cache {
        Some(c) => Some(Arc::new(
            crate::cache::Cache::new(c, metrics.clone()).map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    let upstreams = supervisor.upstreams();
    let queue_deadline = config
        .upstreams
        .iter()
        .map(|u| u.timeout)
        .max()
        .unwrap_or(crate::config::DEFAULT_TIMEOUT);
    let state = web::Data::new(State {
        supervisor: supervisor.start(),
        admission: Admission::new(
            config.max_concurrent_queries,
            config.max_queued_queries,
            metrics.clone(),
        ),
        queue_deadline,
        max_request_body_bytes: config.max_request_body_bytes,
        lookback_delta: config
            .coverage
            .as_ref()
            .map_or(crate::config::DEFAULT_LOOKBACK_DELTA, |c| c.lookback_delta),
        cache,
        narrowest_counted: query::narrowest_counted(
            config
                .coverage
                .as_ref()
                .map_or(crate::config::DEFAULT_SCRAPE_INTERVAL, |c| {
                    c.scrape_interval
                }),
        ),
        upstreams,
        metrics,
        config_view: Arc::new(std::sync::RwLock::new(config.describe())),
        started: SystemTime::now(),
    });
    for (i, u) in config.upstreams.iter().enumerate() {
        log::info!(
            "upstream {} ({}): {}, timeout {:?}",
            i + 1,
            u.name,
            u.url,
            u.timeout
        );
        if u.tls
            .as_ref()
            .is_some_and(|t| t.settings.insecure_skip_verify)
        {
            log::warn!(
                "upstream {}: insecure_skip_verify = true: its certificate is not verified",
                u.name
            );
        }
    }
    let (configs, watched) = tokio::sync::watch::channel(Arc::new(config.clone()));
    actix_web::rt::spawn(crate::discovery::run(
        watched,
        state.supervisor.clone(),
        state.metrics.clone(),
    ));
    state.metrics.reloaded(true);
    // Without reloads the sender is kept here: the discovery goes on while
    // the server runs.
    let _unreloaded = match source {
        Some(source) => {
            let reloading = crate::reload::Reloading {
                source,
                configs,
                config_view: state.config_view.clone(),
                metrics: state.metrics.clone(),
            };
            actix_web::rt::spawn(reloading.run());
            None
        }
        None => Some(configs),
    };
    let web = config.web.clone();
    let server = actix_web::HttpServer::new(move || {
        let metrics = state.metrics.clone();
        actix_web::App::new()
            .app_data(state.clone())
            // Innermost of the three: a 401 is still counted and compressed.
            .wrap(crate::listener::GuardLayer(crate::listener::Guard::new(
                web.as_ref(),
            )))
            // Inside compression, so bytes are counted as the merge wrote them.
            .wrap_fn(move |req, srv| {
                let (metrics, answer) = (metrics.clone(), srv.call(req));
                async move {
                    let res = answer.await?;
                    let sent = match res.response().body().size() {
                        BodySize::Sized(n) => n as usize,
                        _ => 0,
                    };
                    let endpoint = endpoint_label(res.request());
                    metrics.request(endpoint, res.status().as_u16(), sent);
                    Ok(res)
                }
            })
            .wrap(actix_web::middleware::Compress::default())
            .configure(routes)
    })
    // On SIGTERM or SIGINT: stop accepting, let requests in flight finish for up to the grace period.
    .shutdown_timeout(config.shutdown_grace.as_secs().max(1));
    crate::listener::bind(server, &config.listen, config.web.as_ref())?
        .run()
        .await
}

/// The label an answered request is counted under in the metrics: its
/// allow-list entry, set by [`dispatch`].
#[derive(Clone, Copy)]
struct EndpointLabel(&'static str);

fn endpoint_label(req: &HttpRequest) -> &'static str {
    req.extensions()
        .get::<EndpointLabel>()
        .map_or("unmatched", |e| e.0)
}

/// Registers the one handler: every request is routed by the allow-list
/// ([`routes::route`]), from the path exactly as it came, before anything else.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(dispatch));
}

async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let route = match routes::route(req.method().as_str(), req.uri().path()) {
        Ok(route) => route,
        Err(refusal) => return refused(&req, refusal),
    };
    req.extensions_mut()
        .insert(EndpointLabel(route.endpoint.pattern));
    match route.endpoint.handling {
        Handling::Instant | Handling::Range => proxy_query(route, req, payload, state).await,
        Handling::Merged(kind) => meta_query(kind, route, req, payload, state).await,
        Handling::Forwarded => forward(route, req, payload, state).await,
        Handling::Local(Local::StatusPage) => status_page(state).await,
        Handling::Local(Local::Healthy) => healthy().await,
        Handling::Local(Local::Ready) => ready(state).await,
        Handling::Local(Local::Metrics) => metrics(state).await,
    }
}

fn refused(req: &HttpRequest, refusal: Refusal) -> HttpResponse {
    let path = req.uri().path().to_string();
    let error = match refusal {
        Refusal::ReadOnly => ApiError::ReadOnly(path),
        Refusal::BadPath(why) => ApiError::BadData(format!("bad path {path:?}: {why}")),
        Refusal::NotFound => ApiError::NotFound(path),
        Refusal::Method => ApiError::MethodNotAllowed,
    };
    log::debug!("{} {}: refused: {error:?}", req.method(), req.uri().path());
    error.response()
}

async fn healthy() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("prom-ha-proxy is Healthy.\n")
}

/// Ready while at least one upstream is healthy, so a load balancer or a
/// Kubernetes probe takes the proxy out when it could only answer errors.
async fn ready(state: web::Data<State>) -> HttpResponse {
    let upstreams = upstream_snapshots(&state);
    let healthy = upstreams.iter().filter(|(_, h)| h.healthy).count();
    if healthy > 0 {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    }
    .content_type("text/plain; charset=utf-8")
    .body(format!(
        "prom-ha-proxy: {healthy} of {} upstreams healthy.\n",
        upstreams.len()
    ))
}

fn upstream_snapshots(state: &State) -> Vec<(String, crate::backend::HealthSnapshot)> {
    let upstreams = state.upstreams.read().unwrap_or_else(|p| p.into_inner());
    upstreams
        .iter()
        .map(|(name, h)| (name.clone(), h.snapshot()))
        .collect()
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.encode())
}

async fn status_page(state: web::Data<State>) -> HttpResponse {
    let upstreams = upstream_snapshots(&state);
    let config_view = state
        .config_view
        .read()
        .map(|v| v.clone())
        .unwrap_or_default();
    let page = crate::status::render(&upstreams, &config_view, state.started, SystemTime::now());
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}

async fn proxy_query(
    route: Route,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let answer = answer_query(route, &req, payload, &state).await;
    json_answer(&req, &state.metrics, answer)
}

/// A whole answer larger than this goes to actix in slices of this size.
const WHOLE_SLICE_BYTES: usize = 256 << 10;

/// A merged answer as a 200 JSON answer, or the error's Prometheus answer.
fn json_answer(
    req: &HttpRequest,
    metrics: &Arc<Metrics>,
    answer: Result<Merged, ApiError>,
) -> HttpResponse {
    let ok = || {
        let mut res = HttpResponse::Ok();
        res.insert_header((header::CONTENT_TYPE, "application/json"));
        res
    };
    match answer {
        // Given whole, actix would copy a large body into its write buffer
        // at once; a slice at a time, the buffer stays small (the slices
        // share the body).
        Ok(Merged::Whole(body)) if body.len() > WHOLE_SLICE_BYTES => {
            let len = body.len();
            let slices = (0..len).step_by(WHOLE_SLICE_BYTES).map(move |at| {
                Ok::<_, std::io::Error>(body.slice(at..len.min(at + WHOLE_SLICE_BYTES)))
            });
            ok().body(actix_web::body::SizedStream::new(
                len as u64,
                futures_util::stream::iter(slices),
            ))
        }
        Ok(Merged::Whole(body)) => ok().body(body),
        Ok(Merged::Pieces { first, rest }) => {
            // Streamed bytes are counted as they go (the metrics middleware
            // sees only a body of unknown size).
            let endpoint = endpoint_label(req);
            let (metrics, failed) = (metrics.clone(), metrics.clone());
            ok().streaming(pieces(first, rest, failed).inspect(move |piece| {
                if let Ok(bytes) = piece {
                    metrics.sent(endpoint, bytes.len());
                }
            }))
        }
        Err(e) => {
            if matches!(e, ApiError::Proxy(ProxyError::Internal(_))) {
                log::error!("{}: {e:?}", req.path());
                metrics.internal_error();
            } else {
                log::debug!("{}: {e:?}", req.path());
            }
            e.response()
        }
    }
}

/// A merged answer's pieces as a response body. A merge that breaks off ends
/// the body with an error, so the client sees a cut connection rather than a
/// complete-looking, truncated answer.
fn pieces(
    first: bytes::Bytes,
    rest: tokio::sync::mpsc::Receiver<Piece>,
    metrics: Arc<Metrics>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::once(async { Ok(first) }).chain(futures_util::stream::unfold(
        Some(rest),
        move |rest| {
            let metrics = metrics.clone();
            async move {
                let mut rx = rest?;
                let cut = |why: String| Some((Err(std::io::Error::other(why)), None));
                match rx.recv().await {
                    Some(Piece::More(piece)) => Some((Ok(piece), Some(rx))),
                    Some(Piece::Last(piece)) => Some((Ok(piece), None)),
                    Some(Piece::Failed(why)) => {
                        log::error!("a merge broke off: {why}");
                        metrics.internal_error();
                        cut(why)
                    }
                    // The merge gave up on a client that took no piece for long.
                    None => cut("the merge stopped".to_string()),
                }
            }
        },
    ))
}

/// Waits for the query's place among those running, at most its own
/// `timeout`, else the longest upstream timeout.
async fn admit(
    state: &State,
    client_timeout: Option<std::time::Duration>,
) -> Result<Admitted, ApiError> {
    let deadline = client_timeout
        .filter(|t| !t.is_zero())
        .unwrap_or(state.queue_deadline);
    state
        .admission
        .admit(deadline)
        .await
        .map_err(ApiError::Refused)
}

/// Sends `msg` to the supervisor; a stopped supervisor is an internal error.
async fn ask<M, T>(supervisor: &Addr<Supervisor>, msg: M) -> Result<T, ApiError>
where
    M: actix::Message<Result = Result<T, ProxyError>> + Send + 'static,
    T: Send + 'static,
    Supervisor: actix::Handler<M>,
{
    supervisor
        .send(msg)
        .await
        .map_err(|e| ApiError::Proxy(ProxyError::Internal(e.to_string())))?
        .map_err(ApiError::Proxy)
}

/// The client's request as it is forwarded, and its parameters as the proxy
/// reads them. The path is the route's, never the client's spelling of it. A
/// POST goes upstream as a POST only where Prometheus takes one; elsewhere as
/// a GET with the form's parameters first in the URL, where Go's `FormValue`
/// reads them first as it would from the form.
async fn read_request(
    route: &Route,
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
) -> Result<(ApiRequest, Params), ApiError> {
    let form_body = if req.method() == Method::POST {
        read_form_body(req, payload, state.max_request_body_bytes).await?
    } else {
        bytes::Bytes::new()
    };
    let query_string = req.query_string().to_string();
    let params = Params::parse(&form_body, &query_string)?;
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (method, query_string, form_body) = match (req.method(), route.endpoint.upstream_post) {
        (&Method::POST, true) => (Method::POST, query_string, form_body),
        _ if form_body.is_empty() => (Method::GET, query_string, form_body),
        _ => {
            let form = std::str::from_utf8(&form_body).unwrap_or_default();
            let joined = [form, &query_string]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("&");
            (Method::GET, joined, bytes::Bytes::new())
        }
    };
    let request = ApiRequest {
        path: route.upstream_path.clone(),
        method,
        query_string,
        form_body,
        authorization,
    };
    Ok((request, params))
}

async fn answer_query(
    route: Route,
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
) -> Result<Merged, ApiError> {
    let (mut request, params) = read_request(&route, req, payload, state).await?;
    let expr = params
        .first("query")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::BadData("invalid parameter \"query\": no query given".into()))?;
    let client_timeout = params.duration("timeout")?;
    let lookback = match params.duration("lookback_delta")? {
        // Prometheus reads 0 as "the server's default".
        Some(d) if !d.is_zero() => d,
        _ => state.lookback_delta,
    };
    let shape = query::analyse(expr, lookback, state.narrowest_counted);
    let instant = route.endpoint.handling == Handling::Instant;
    let instant_ms = match (instant, params.first("time")) {
        (true, None | Some("")) => {
            // Without `time`, each upstream would answer at its own "now": the
            // answers' timestamps would differ, and the coverage would not line
            // up with them. So every upstream gets the proxy's now.
            let now = crate::time::now_ms();
            if !request.query_string.is_empty() {
                request.query_string.push('&');
            }
            request.query_string.push_str("time=");
            request.query_string.push_str(&crate::time::seconds(now));
            Some(now)
        }
        (true, Some(t)) => crate::time::parse_time(t),
        (false, _) => None,
    };
    let range_ms = if instant { None } else { range_ms(&params) };
    let query = Query {
        request,
        client_timeout,
        shape,
        instant_ms,
        range_ms,
    };
    let Some(cache) = &state.cache else {
        return admitted_ask(state, query).await;
    };
    let upstreams = state
        .upstreams
        .read()
        .map(|view| {
            view.iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let asked = crate::cache::Asked {
        params: &params.0,
        reads: &query.shape.reads,
        lookback_ms: lookback.as_millis() as i64,
        upstreams: &upstreams,
        instant_ms,
        range_ms,
    };
    let plan = cache.plan(&asked);
    crate::cache::answer(cache, plan, query, |q| admitted_ask(state, q)).await
}

/// Sends `query` to the supervisor once admitted. A query that reads
/// nothing stored (`1+1`, `time()`) costs the replicas no read: it is not
/// queued behind those that do.
async fn admitted_ask(state: &State, query: Query) -> Result<Merged, ApiError> {
    let _admitted = match query.shape.reads {
        query::Reads::Nothing => None,
        _ => Some(admit(state, query.client_timeout).await?),
    };
    ask(&state.supervisor, query).await
}

/// A range query's `start`, `end` and `step` in milliseconds, if all three
/// read (times as Unix seconds or RFC 3339, the step as seconds or a
/// duration, as Prometheus takes them); else None, and upstreams judge them.
fn range_ms(params: &Params) -> Option<(i64, i64, i64)> {
    let time = |key| params.first(key).and_then(crate::time::parse_time);
    let step = params.first("step").and_then(|t| {
        t.parse::<f64>()
            .ok()
            .and_then(|_| crate::time::parse_time(t))
            .or_else(|| crate::time::parse_duration(t).map(|d| d.as_millis() as i64))
    })?;
    Some((time("start")?, time("end")?, step))
}

async fn meta_query(
    kind: MetaKind,
    route: Route,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let answer = async {
        let (request, params) = read_request(&route, &req, payload, &state).await?;
        let client_timeout = params.duration("timeout")?;
        let _admitted = admit(&state, client_timeout).await?;
        let query = MetaQuery {
            request,
            client_timeout,
            kind,
            limit: params.count("limit")?,
            limit_per_metric: params.count("limit_per_metric")?,
        };
        ask(&state.supervisor, query).await
    };
    let answer = answer.await;
    json_answer(&req, &state.metrics, answer)
}

async fn forward(
    route: Route,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> HttpResponse {
    let answer = async {
        let (request, params) = read_request(&route, &req, payload, &state).await?;
        let forward = Forward {
            request,
            client_timeout: params.duration("timeout")?,
        };
        ask(&state.supervisor, forward).await
    };
    match answer.await {
        Ok(body) => {
            let status = StatusCode::from_u16(body.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut res = HttpResponse::build(status);
            if let Some(ct) = body.content_type {
                res.insert_header((header::CONTENT_TYPE, ct));
            }
            res.body(body.bytes)
        }
        Err(e) => {
            log::debug!("{}: {e:?}", req.path());
            e.response()
        }
    }
}

/// Reads a POST body up to `limit` bytes; it must be a form.
async fn read_form_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let is_form = content_type.is_empty()
        || content_type.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadData(format!("cannot read request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::BadData(format!(
                "request body larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if !is_form && !body.is_empty() {
        return Err(ApiError::BadData(format!(
            "unsupported Content-Type {content_type:?}: send application/x-www-form-urlencoded"
        )));
    }
    Ok(body.freeze())
}

/// The request's parameters, form body first, as Go's `Request.FormValue` reads them.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(form_body: &[u8], query_string: &str) -> Result<Params, ApiError> {
        let bad = |e: std::str::Utf8Error| {
            ApiError::BadData(format!("malformed request parameters: {e}"))
        };
        std::str::from_utf8(form_body).map_err(bad)?;
        let mut pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(form_body)
            .map_err(|e| ApiError::BadData(format!("malformed request body: {e}")))?;
        let from_url: Vec<(String, String)> = serde_urlencoded::from_str(query_string)
            .map_err(|e| ApiError::BadData(format!("malformed query string: {e}")))?;
        pairs.extend(from_url);
        Ok(Params(pairs))
    }

    /// A duration parameter ("30s" or seconds): None when absent or empty.
    fn duration(&self, key: &str) -> Result<Option<std::time::Duration>, ApiError> {
        match self.first(key) {
            None | Some("") => Ok(None),
            Some(t) => crate::time::parse_duration(t).map(Some).ok_or_else(|| {
                ApiError::BadData(format!(
                    "invalid parameter \"{key}\": cannot parse {t:?} to a valid duration"
                ))
            }),
        }
    }

    /// A whole-number parameter (`limit`): None when absent, empty or 0 (no limit).
    fn count(&self, key: &str) -> Result<Option<usize>, ApiError> {
        match self.first(key) {
            None | Some("") => Ok(None),
            Some(t) => t
                .parse::<usize>()
                .map(|n| (n > 0).then_some(n))
                .map_err(|_| {
                    ApiError::BadData(format!(
                        "invalid parameter \"{key}\": {t:?} is not a non-negative whole number"
                    ))
                }),
        }
    }

    fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_reads_in_seconds_rfc_3339_and_durations() {
        let params = |q: &str| Params(serde_urlencoded::from_str(q).unwrap());
        assert_eq!(
            range_ms(&params("start=1700000000&end=1700003600.5&step=15")),
            Some((1_700_000_000_000, 1_700_003_600_500, 15_000))
        );
        assert_eq!(
            range_ms(&params("start=2023-11-14T22:13:20Z&end=1700000060&step=1m")),
            Some((1_700_000_000_000, 1_700_000_060_000, 60_000))
        );
        assert_eq!(range_ms(&params("start=1&end=2&step=x")), None);
        assert_eq!(range_ms(&params("start=1&step=15")), None);
    }

    #[actix_web::test]
    async fn a_large_whole_answer_keeps_its_length_and_its_bytes_in_slices() {
        let body: Vec<u8> = (0..WHOLE_SLICE_BYTES * 3 + 17).map(|i| i as u8).collect();
        let req = actix_web::test::TestRequest::default().to_http_request();
        let res = json_answer(
            &req,
            &Arc::new(Metrics::new()),
            Ok(Merged::Whole(body.clone().into())),
        );
        assert_eq!(res.body().size(), BodySize::Sized(body.len() as u64));
        let sent = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        assert_eq!(sent, body);
    }

    #[actix_web::test]
    async fn the_proxys_own_failure_is_a_counted_500_and_a_client_gone_is_no_error() {
        let req = actix_web::test::TestRequest::default().to_http_request();
        let metrics = Arc::new(Metrics::new());
        let internal = ApiError::Proxy(ProxyError::Internal("the merge panicked".into()));
        let res = json_answer(&req, &metrics, Err(internal));
        assert_eq!(res.status().as_u16(), 500);
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        assert_eq!(
            &body[..],
            br#"{"status":"error","errorType":"internal","error":"the merge panicked"}"#
        );
        let gone = json_answer(&req, &metrics, Err(ApiError::Proxy(ProxyError::ClientLeft)));
        assert_eq!(gone.status().as_u16(), 499);
        let text = metrics.encode();
        assert!(
            text.contains("prom_ha_proxy_internal_errors_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_query_is_passed_on_as_the_upstream_said() {
        let failures = vec![
            (
                "http://a".to_string(),
                UpstreamError::Connect("refused".into()),
            ),
            (
                "http://b".to_string(),
                UpstreamError::Rejected {
                    status: 400,
                    error_type: "bad_data".into(),
                    error: "parse error".into(),
                },
            ),
        ];
        let (status, ty, msg) = all_failed(&failures);
        assert_eq!(
            (status.as_u16(), ty.as_str(), msg.as_str()),
            (400, "bad_data", "parse error")
        );
    }

    #[test]
    fn outages_get_gateway_statuses_naming_every_upstream() {
        let t = |n: &str| {
            (
                n.to_string(),
                UpstreamError::Timeout(std::time::Duration::from_secs(2)),
            )
        };
        let (status, ty, msg) = all_failed(&[t("http://a"), t("http://b")]);
        assert_eq!((status.as_u16(), ty.as_str()), (504, "timeout"));
        assert_eq!(
            msg,
            "all upstreams failed: upstream http://a: timeout after 2s; upstream http://b: timeout after 2s"
        );
        let c = (
            "http://a".to_string(),
            UpstreamError::Connect("refused".into()),
        );
        assert_eq!(all_failed(std::slice::from_ref(&c)).0.as_u16(), 503);
        let s = (
            "http://b".to_string(),
            UpstreamError::Status {
                status: 500,
                detail: "oops".into(),
            },
        );
        assert_eq!(all_failed(&[c, s]).0.as_u16(), 502);
    }

    #[test]
    fn form_values_come_before_url_values() {
        let p = Params::parse(b"query=up%7Bjob%3D%22a%22%7D&time=1", "query=down").unwrap();
        assert_eq!(p.first("query"), Some("up{job=\"a\"}"));
        assert!(Params::parse(b"\xff", "").is_err());
    }
}
