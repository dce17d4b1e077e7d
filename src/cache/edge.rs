//! A query answered through the cache: the cached steps joined with what
//! the upstreams answer for the others, and every clean answer kept.

use super::{Cache, Entry, Plan, fresh_start, join};
use crate::answer::Answer;
use crate::http::ApiError;
use crate::supervisor::{Merged, Piece, Query};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;

/// Answers `query` as `plan` allows, asking what the cache lacks with `ask`
/// (which admits and sends a query to the supervisor).
pub async fn answer<F, Fut>(
    cache: &Arc<Cache>,
    plan: Plan,
    query: Query,
    ask: F,
) -> Result<Merged, ApiError>
where
    F: Fn(Query) -> Fut,
    Fut: Future<Output = Result<Merged, ApiError>>,
{
    match plan {
        Plan::Never(why) => {
            log::debug!("not cached: {why}");
            cache.counted("uncacheable", 0);
            ask(query).await
        }
        Plan::Instant { key } => {
            if let Some(entry) = cache.get(&key).await {
                cache.counted("hit", 0);
                return Ok(Merged::Whole(entry.body));
            }
            cache.counted("miss", 0);
            let t = query.instant_ms.unwrap_or_default();
            let merged = ask(query).await?;
            Ok(kept(cache, merged, key, t, t, crate::time::now_ms()))
        }
        Plan::Range {
            key,
            start_ms,
            end_ms,
            step_ms,
            settled_to_ms,
        } => {
            let usable = |e: &Entry| e.from_ms <= start_ms && start_ms <= e.settled_to_ms;
            let Some(entry) = cache.get(&key).await.filter(usable) else {
                cache.counted("miss", 0);
                let merged = ask(query).await?;
                return Ok(kept(
                    cache,
                    merged,
                    key,
                    start_ms,
                    settled_to_ms,
                    crate::time::now_ms(),
                ));
            };
            let cached_to = entry.settled_to_ms.min(end_ms);
            let saved = ((cached_to - start_ms) / step_ms + 1) as u64;
            let fresh_from = fresh_start(start_ms, cached_to, step_ms);
            if fresh_from > end_ms {
                return match joined(entry.body, None, start_ms, end_ms).await {
                    Joined::Body(body) => {
                        cache.counted("hit", saved);
                        Ok(Merged::Whole(body))
                    }
                    not => not_joined(cache, not, ask(query).await),
                };
            }
            let fresh = over_steps(&query, fresh_from, end_ms);
            let fresh = collect(ask(fresh).await?).await.ok();
            let body = match joined(entry.body, Some(fresh), start_ms, cached_to).await {
                Joined::Body(body) => body,
                not => return not_joined(cache, not, ask(query).await),
            };
            cache.counted("partial", saved);
            let kept = Entry {
                body: body.clone(),
                from_ms: start_ms,
                settled_to_ms: settled_to_ms.max(cached_to),
                asked_at_ms: entry.asked_at_ms,
            };
            cache.put(key, kept);
            Ok(Merged::Whole(body))
        }
    }
}

/// `query` over its steps from `start_ms` to `end_ms` alone.
fn over_steps(query: &Query, start_ms: i64, end_ms: i64) -> Query {
    let (_, _, step_ms) = query.range_ms.unwrap_or_default();
    Query {
        request: query.request.over_steps(start_ms, end_ms),
        client_timeout: query.client_timeout,
        shape: query.shape.clone(),
        instant_ms: None,
        range_ms: Some((start_ms, end_ms, step_ms)),
    }
}

/// What joining a cached answer with the fresh one gave.
enum Joined {
    Body(Bytes),
    /// The fresh steps carry a warning (an upstream failed) or their merge
    /// broke: the whole range is asked as if nothing were cached, and
    /// nothing is kept.
    FreshNotClean,
    /// The cached entry is not an answer (another program's value in a
    /// shared Redis, say): likewise, with a warning.
    Unusable(String),
}

/// The query asked whole, for an answer that could not be joined; a miss.
fn not_joined(
    cache: &Cache,
    not: Joined,
    asked: Result<Merged, ApiError>,
) -> Result<Merged, ApiError> {
    if let Joined::Unusable(why) = not {
        log::warn!("cache: an entry not used: {why}");
    }
    cache.counted("miss", 0);
    asked
}

/// The cached answer's steps in `[from_ms, to_ms]` joined with the fresh
/// answer's, each parsed once, off the arbiter. `fresh`: None for no fresh
/// steps (a hit); Some(None) for fresh steps whose merge broke.
async fn joined(cached: Bytes, fresh: Option<Option<Bytes>>, from_ms: i64, to_ms: i64) -> Joined {
    let work = move || {
        let fresh = match fresh {
            None => None,
            Some(body) => match body.and_then(|b| Answer::parse(b.to_vec()).ok()) {
                Some(answer) if is_clean(&answer) => Some(answer),
                _ => return Joined::FreshNotClean,
            },
        };
        match Answer::parse(cached.to_vec()) {
            Ok(cached) => Joined::Body(join(&cached, from_ms, to_ms, fresh.as_ref()).into()),
            Err(e) => Joined::Unusable(format!("cached answer: {e}")),
        }
    };
    actix_web::web::block(work)
        .await
        .unwrap_or_else(|e| Joined::Unusable(e.to_string()))
}

/// Whether `body` is an answer to keep: a success without warnings or infos.
fn clean(body: &[u8]) -> bool {
    Answer::parse(body.to_vec()).is_ok_and(|a| is_clean(&a))
}

fn is_clean(a: &Answer) -> bool {
    a.warnings.is_empty() && a.infos.is_empty() && a.stats.is_none()
}

/// Every piece of `merged`, as one body.
async fn collect(merged: Merged) -> Result<Bytes, String> {
    let (first, mut rest) = match merged {
        Merged::Whole(body) => return Ok(body),
        Merged::Pieces { first, rest } => (first, rest),
    };
    let mut body = first.to_vec();
    loop {
        match rest.recv().await {
            Some(Piece::More(piece)) => body.extend_from_slice(&piece),
            Some(Piece::Last(piece)) => {
                body.extend_from_slice(&piece);
                return Ok(body.into());
            }
            Some(Piece::Failed(why)) => return Err(why),
            None => return Err("the merge stopped".into()),
        }
    }
}

/// `merged` as it goes to the client, kept under `key` once whole if clean
/// (and no larger than the cache keeps).
fn kept(
    cache: &Arc<Cache>,
    merged: Merged,
    key: String,
    from_ms: i64,
    settled_to_ms: i64,
    asked_at_ms: i64,
) -> Merged {
    let most = cache.largest_entry();
    let cache = cache.clone();
    let keep = move |body: Bytes| {
        // Parsed to be judged: off the arbiter.
        actix_web::rt::task::spawn_blocking(move || {
            if clean(&body) {
                let entry = Entry {
                    body,
                    from_ms,
                    settled_to_ms,
                    asked_at_ms,
                };
                cache.put(key, entry);
            }
        });
    };
    match merged {
        Merged::Whole(body) => {
            keep(body.clone());
            Merged::Whole(body)
        }
        Merged::Pieces { first, rest } => tee(first, rest, most, keep),
    }
}

/// The pieces passed on as they come, and handed to `keep` once all came,
/// if they came to no more than `most` bytes.
fn tee(
    first: Bytes,
    mut rest: tokio::sync::mpsc::Receiver<Piece>,
    most: usize,
    keep: impl FnOnce(Bytes) + 'static,
) -> Merged {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut whole = Some(first.to_vec()).filter(|b| b.len() <= most);
    actix_web::rt::spawn(async move {
        while let Some(piece) = rest.recv().await {
            let (bytes, last) = match &piece {
                Piece::More(b) => (b.clone(), false),
                Piece::Last(b) => (b.clone(), true),
                Piece::Failed(_) => (Bytes::new(), false),
            };
            let failed = matches!(piece, Piece::Failed(_));
            if let Some(w) = whole.as_mut() {
                w.extend_from_slice(&bytes);
            }
            whole = whole.filter(|w| w.len() <= most && !failed);
            if tx.send(piece).await.is_err() || failed {
                return;
            }
            if last {
                if let Some(w) = whole.take() {
                    keep(w.into());
                }
                return;
            }
        }
    });
    Merged::Pieces { first, rest: rx }
}
