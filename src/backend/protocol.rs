//! The messages a backend takes, and the watch through which a main answer
//! learns whether it goes out as it came.

use super::error::UpstreamError;
use super::exchange::Body;
use super::request::ApiRequest;
use crate::answer::Answer;
use crate::budget::Held;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

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
/// the supervisor decides once the coverage shows the first holds as many
/// samples as any; each backend reading a main answer watches for it.
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
    pub(super) fn mine(&self) -> bool {
        *self.decision.borrow() == Verbatim::From(self.me)
    }

    /// The decision, once made; `Open` if it never will be.
    pub(super) async fn decided(&self) -> Verbatim {
        let mut decision = self.decision.clone();
        let decided = decision.wait_for(|d| *d != Verbatim::Open).await;
        decided.map_or(Verbatim::Open, |d| *d)
    }

    /// Resolves once another upstream's answer is picked to go out alone;
    /// never if none is (decided without this: read on).
    pub(super) async fn passed_over(self) {
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
