//! Admission: how many client queries the proxy runs against its upstreams
//! at once, and the queue the others wait in, first come, first served.
//!
//! A client query is one budget, whatever the proxy asks the upstreams for it
//! (its main request, its coverage rounds, its spans): so the cap means what
//! Prometheus' `--query.max-concurrency` means, and a burst that one
//! Prometheus would queue is queued here too, never refused while the queue
//! has room. Beyond `max_queued_queries` waiting, a query is refused at once
//! (503, `Retry-After`); one that waits longer than its deadline gets
//! Prometheus' own timeout error.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a query was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The queue already holds this many queries.
    QueueFull(usize),
    /// The query waited its whole deadline.
    TimedOut(Duration),
}

/// The gate every client query passes before it reaches an upstream.
pub struct Admission {
    running: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
    metrics: Arc<Metrics>,
}

/// A query's place among those running: held until its upstream work is done.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.metrics.running_queries(-1);
    }
}

impl Admission {
    pub fn new(max_running: usize, max_queued: usize, metrics: Arc<Metrics>) -> Admission {
        Admission {
            running: Arc::new(Semaphore::new(max_running)),
            queued: AtomicUsize::new(0),
            max_queued,
            metrics,
        }
    }

    /// Waits for a place among the running queries, in arrival order (tokio's
    /// semaphore is fair), at most `deadline`.
    pub async fn admit(&self, deadline: Duration) -> Result<Admitted, Refused> {
        let admitted = |permit| {
            self.metrics.running_queries(1);
            Admitted {
                _permit: permit,
                metrics: self.metrics.clone(),
            }
        };
        // Not queued at all where a place is free.
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            self.metrics.queue_wait(Duration::ZERO);
            return Ok(admitted(permit));
        }
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.refused_query();
            return Err(Refused::QueueFull(queued));
        }
        self.metrics.queued_queries(1);
        let started = Instant::now();
        let waited = tokio::time::timeout(deadline, self.running.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.metrics.queued_queries(-1);
        self.metrics.queue_wait(started.elapsed());
        match waited {
            Ok(Ok(permit)) => Ok(admitted(permit)),
            // The semaphore is never closed; a timeout is the one way out.
            _ => Err(Refused::TimedOut(deadline)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn queries_wait_in_order_and_only_the_excess_is_refused() {
        let metrics = Arc::new(Metrics::new());
        let gate = Arc::new(Admission::new(1, 2, metrics.clone()));
        let first = gate.admit(Duration::from_secs(60)).await.unwrap();
        let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for i in 0..2 {
            let (queue, tx) = (gate.clone(), tx.clone());
            waiting.push(tokio::spawn(async move {
                let admitted = queue.admit(Duration::from_secs(60)).await;
                tx.send(i).unwrap();
                admitted
            }));
            // Each in the queue before the next arrives.
            while gate.queued.load(Ordering::Acquire) <= i {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(
            gate.admit(Duration::from_secs(60)).await.err(),
            Some(Refused::QueueFull(2))
        );
        drop(first);
        let second = waiting.remove(0).await.unwrap().unwrap();
        assert_eq!(order.recv().await, Some(0), "first come, first served");
        drop(second);
        assert!(waiting.remove(0).await.unwrap().is_ok());
        assert_eq!(order.recv().await, Some(1));
        let text = metrics.encode();
        assert!(
            text.contains("prom_ha_proxy_refused_queries_total 1\n"),
            "{text}"
        );
        assert!(text.contains("prom_ha_proxy_queued_queries 0\n"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_waiting_past_its_deadline_is_timed_out_alone() {
        let gate = Admission::new(1, 8, Arc::new(Metrics::new()));
        let _running = gate.admit(Duration::from_secs(60)).await.unwrap();
        let deadline = Duration::from_secs(2);
        assert_eq!(
            gate.admit(deadline).await.err(),
            Some(Refused::TimedOut(deadline))
        );
        assert_eq!(gate.queued.load(Ordering::Acquire), 0, "it left the queue");
    }
}
