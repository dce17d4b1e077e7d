//! A new set of upstreams (a reload, or DNS found other addresses), taken
//! in without a restart: an upstream whose settings did not change keeps
//! its backend, health and remembered counts wherever its priority moved;
//! a new one joins down until its probes show it ready; a removed one is
//! retired and drains. Queries in flight finish on the legs they began with.

use super::{BackendHandle, Supervisor};
use crate::backend::{Retire, SharedHealth};
use crate::config::UpstreamConfig;
use crate::merge::coverage::MAX_UPSTREAMS;
use actix::prelude::*;

/// The upstreams to serve from now on, highest priority first.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    pub upstreams: Vec<UpstreamConfig>,
}

impl Handler<Reconfigure> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, _: &mut Self::Context) {
        let mut wanted = msg.upstreams;
        if wanted.len() > MAX_UPSTREAMS {
            log::warn!(
                "{} upstreams configured or found, {MAX_UPSTREAMS} used",
                wanted.len()
            );
            wanted.truncate(MAX_UPSTREAMS);
        }
        let mut old: Vec<Option<BackendHandle>> = self.backends.drain(..).map(Some).collect();
        let mut moved = vec![None; old.len()];
        let mut next = Vec::with_capacity(wanted.len());
        for upstream in &wanted {
            let kept = old
                .iter()
                .position(|h| h.as_ref().is_some_and(|h| *h.config == *upstream));
            let handle = match kept.and_then(|i| Some((i, old[i].take()?))) {
                Some((i, handle)) => {
                    moved[i] = Some(next.len());
                    handle
                }
                None => {
                    log::info!("upstream {} added", upstream.display_name());
                    self.start_backend(upstream, SharedHealth::joining())
                }
            };
            next.push(handle);
        }
        for retired in old.into_iter().flatten() {
            let name = retired.config.display_name();
            // A name still in use (its settings changed) keeps its series.
            if !next.iter().any(|h| h.config.display_name() == name) {
                self.metrics.forget_upstream(&name);
            }
            retired.addr.do_send(Retire);
        }
        self.backends = next;
        if let Ok(mut settled) = self.settled.lock() {
            settled.renumber(&moved);
        }
        self.publish();
    }
}
