//! One actor per upstream Prometheus: it sends that upstream its requests,
//! reads and parses the answers, and owns the upstream's health: passive
//! (consecutive failed requests), active (probing `/-/ready`), published
//! through a [`SharedHealth`] the supervisor reads when it routes a query.
//!
//! Every backend runs on the supervisor's arbiter (one thread for all their
//! I/O: a message between them wakes no other thread); parsing a large
//! answer runs on parse threads and the blocking pool, so it never stalls
//! that arbiter. What leaves this module is a parsed `Answer` (an owned
//! buffer and its spans) for queries (or, where the supervisor has picked this upstream's
//! answer to go out as it came, its untouched body: [`Fetched`]), the raw
//! [`Body`] for the other endpoints, or a typed [`UpstreamError`].
//!
//! - `request`: the client's request as it goes upstream, and its rewrites;
//! - `error`: the upstream error taxonomy;
//! - `health`: the health state machine and what it publishes;
//! - `protocol`: the messages, and the verbatim decision's watch;
//! - `exchange`: one request and its body, under one deadline;
//! - `actor`: the actor, its admission and its probes.

mod actor;
mod error;
mod exchange;
mod health;
mod protocol;
mod request;

pub use actor::{Backend, Retire};
pub use error::UpstreamError;
pub use exchange::{Body, INLINE_BYTES, Reading, upstream_url};
pub use health::{Health, HealthSnapshot, SharedHealth, Transition};
pub use protocol::{Fetch, FetchBody, Fetched, Verbatim, VerbatimWatch, until};
pub use request::ApiRequest;
