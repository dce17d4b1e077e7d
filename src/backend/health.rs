//! An upstream's health: the state machine its backend drives (passive
//! failures, active `/-/ready` probes) and what it publishes for the
//! supervisor, `/-/ready` and the status page to read without a message.

use super::error::UpstreamError;
use crate::config::HealthConfig;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

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

    /// An upstream that joins a running proxy (found by DNS, added by a
    /// reload): down until its probes show it ready, so no query meets it
    /// half started.
    pub fn joining() -> SharedHealth {
        SharedHealth {
            healthy: AtomicBool::new(false),
            ..SharedHealth::default()
        }
    }

    pub(super) fn set(&self, healthy: bool, reason: &str) {
        if let Ok(mut state) = self.state.lock() {
            *state = (reason.to_string(), SystemTime::now());
        }
        self.healthy.store(healthy, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces the start-up reason ("not probed yet") once a probe confirms the state.
    pub(super) fn confirm(&self, reason: &str) {
        if let Ok(mut state) = self.state.lock()
            && state.0 == NOT_PROBED
        {
            *state = (reason.to_string(), SystemTime::now());
        }
    }

    pub(super) fn count(&self, failure: Option<&UpstreamError>, took: Duration) {
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

impl Health {
    /// Starting in the state its shared record starts in.
    pub fn starting(healthy: bool) -> Health {
        Health {
            healthy,
            ..Health::default()
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
