//! One exchange with an upstream: the request sent with its credentials, the
//! whole body read under one deadline into a budgeted buffer, and a query
//! answer parsed in batches as it arrives.

use super::error::UpstreamError;
use super::protocol::{Fetch, Fetched, Verbatim, VerbatimWatch};
use super::request::ApiRequest;
use crate::answer::{self, PADDING, Parser};
use crate::budget::{Budget, Held, Reservation};
use crate::config::{Auth, UpstreamConfig};
use actix_web::http::{Method, header};
use futures_util::StreamExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
pub(super) struct Reader {
    pub(super) client: awc::Client,
    pub(super) upstream: Arc<UpstreamConfig>,
    pub(super) reading: Reading,
    pub(super) budget: Arc<Budget>,
    /// Whether the body and its sample table may take the budget's kept buffers.
    pub(super) kept_buffers: bool,
}

/// Adds the upstream's configured headers and credentials to a request.
pub(super) fn with_credentials(
    mut req: awc::ClientRequest,
    upstream: &UpstreamConfig,
) -> awc::ClientRequest {
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

/// Bodies up to this size are parsed on the arbiter the backends share with
/// the supervisor: a hand-off to the blocking pool and back costs tens of
/// microseconds of wake-ups here, more than simd-json takes for 64 KiB.
/// Larger bodies still go to the pool, so one big answer never stalls that
/// arbiter. (Merges all run in the merger actor, `crate::merger`.)
pub const INLINE_BYTES: usize = 64 << 10;

pub(super) async fn fetch(reader: Reader, mut msg: Fetch) -> Result<Fetched, UpstreamError> {
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
    // A panic in the parser is the proxy's bug: caught here, it fails this
    // query as an internal error, never the shared arbiter or the upstream.
    let finish = move || {
        std::panic::catch_unwind(AssertUnwindSafe(|| parser.finish(buf, len)))
            .map_err(|p| UpstreamError::from_panic(&*p))
    };
    let answer = if len <= INLINE_BYTES {
        finish()??
    } else {
        actix_web::rt::task::spawn_blocking(finish)
            .await
            .map_err(|e| UpstreamError::Proxy(format!("the parse task failed: {e}")))???
    };
    log::debug!(
        "{}: {len} bytes parsed {:?} after the request",
        reader.upstream.url,
        started.elapsed()
    );
    Ok(Fetched::Parsed(Held::new(answer, reservation)))
}

/// [`exchange`] with `deadline` around the whole of it, body included.
pub(super) async fn exchange_within(
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
            std::panic::catch_unwind(AssertUnwindSafe(|| parser.feed(&mut buf, len)))
                .map_err(|p| UpstreamError::from_panic(&*p))??;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
