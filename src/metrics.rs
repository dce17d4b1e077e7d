//! The proxy's own metrics, kept with the `prometheus-client` crate and
//! served at `/metrics` in the OpenMetrics text format.
//!
//! Owns the registry and every metric family. Recording is lock-free on the
//! hot path (atomic counters behind a family's read lock); encoding happens
//! only when `/metrics` is scraped. Knows nothing about HTTP routing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOutcomeLabels {
    pub upstream: String,
    /// `success`, or the kind of failure (`timeout`, `connect`, `http_5xx`, …).
    pub outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream_duration: HistogramFamily<UpstreamOutcomeLabels>,
    upstream_up: Family<UpstreamLabels, Gauge>,
    merge_duration: HistogramFamily<EndpointLabels>,
    received_bytes: Family<UpstreamLabels, Counter>,
    sent_bytes: Family<EndpointLabels, Counter>,
    verbatim_answers: Family<EndpointLabels, Counter>,
    filled_samples: Counter,
    internal_errors: Counter,
    kept_buffer_bytes: Gauge,
    queued_queries: Gauge,
    running_queries: Gauge,
    queue_wait: Histogram,
    refused_queries: Counter,
    reload_successful: Gauge,
    reload_success_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    dns_failures: Family<TableLabels, Counter>,
    cache_requests: Family<ResultLabels, Counter>,
    cache_bytes: Gauge,
    cache_saved_steps: Counter,
    cache_store_errors: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 16 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("prom_ha_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by endpoint and HTTP status code",
            requests.clone(),
        );
        let upstream_duration: HistogramFamily<UpstreamOutcomeLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_request_duration_seconds",
            "Time of one upstream request, body included, by upstream and outcome",
            upstream_duration.clone(),
        );
        let upstream_up = Family::<UpstreamLabels, Gauge>::default();
        registry.register(
            "upstream_up",
            "1 while the upstream is healthy (asked), 0 while it is down",
            upstream_up.clone(),
        );
        let merge_duration: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "merge_duration_seconds",
            "Time to merge the upstreams' answers into one, by endpoint (a large answer streamed in pieces: until its last piece is handed on, waits for the client included)",
            merge_duration.clone(),
        );
        let received_bytes = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_received_bytes",
            "Answer body bytes received from each upstream",
            received_bytes.clone(),
        );
        let sent_bytes = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "sent_bytes",
            "Answer body bytes sent to clients, before compression, by endpoint",
            sent_bytes.clone(),
        );
        let verbatim_answers = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "verbatim_answers",
            "Query answers sent as the first upstream gave them, unparsed, the coverage having shown it holds as many samples as any, by endpoint",
            verbatim_answers.clone(),
        );
        let filled_samples = Counter::default();
        registry.register(
            "filled_samples",
            "Samples answered from a lower-priority upstream because a higher one had a gap there",
            filled_samples.clone(),
        );
        let internal_errors = Counter::default();
        registry.register(
            "internal_errors",
            "Queries the proxy failed itself (its parser or merge broke, panics included), answered 500 or cut off; never counted against an upstream",
            internal_errors.clone(),
        );
        let kept_buffer_bytes = Gauge::default();
        registry.register(
            "kept_buffer_bytes",
            "Capacity of the merged answers' large buffers kept for the next answers (idle memory), after the last merge",
            kept_buffer_bytes.clone(),
        );
        let queued_queries = Gauge::default();
        registry.register(
            "queued_queries",
            "Client queries waiting for a place among the running ones",
            queued_queries.clone(),
        );
        let running_queries = Gauge::default();
        registry.register(
            "running_queries",
            "Client queries admitted and at work against the upstreams",
            running_queries.clone(),
        );
        let queue_wait = latency_histogram();
        registry.register(
            "queue_wait_seconds",
            "How long each client query waited to be admitted",
            queue_wait.clone(),
        );
        let refused_queries = Counter::default();
        registry.register(
            "refused_queries",
            "Client queries refused at once (503) because the queue was full",
            refused_queries.clone(),
        );
        let reload_successful = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "Whether the last configuration reload attempt was successful",
            reload_successful.clone(),
        );
        let reload_success_time = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload",
            reload_success_time.clone(),
        );
        let dns_failures = Family::<TableLabels, Counter>::default();
        registry.register(
            "dns_lookup_failures",
            "DNS lookups of an upstream table that failed (its last addresses kept)",
            dns_failures.clone(),
        );
        let cache_requests = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cache_requests",
            "Query answers by what the cache of settled history held: hit, partial, miss, uncacheable",
            cache_requests.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_bytes",
            "Bytes of answers the in-memory cache holds",
            cache_bytes.clone(),
        );
        let cache_saved_steps = Counter::default();
        registry.register(
            "cache_saved_steps",
            "Range query steps answered from the cache, not asked of the upstreams",
            cache_saved_steps.clone(),
        );
        let cache_store_errors = Counter::default();
        registry.register(
            "cache_store_errors",
            "Operations on the shared cache (Redis) that failed or timed out; the query went on without it",
            cache_store_errors.clone(),
        );
        Metrics {
            cache_store_errors,
            cache_requests,
            cache_bytes,
            cache_saved_steps,
            reload_successful,
            reload_success_time,
            dns_failures,
            queued_queries,
            running_queries,
            queue_wait,
            refused_queries,
            registry,
            requests,
            upstream_duration,
            upstream_up,
            merge_duration,
            received_bytes,
            sent_bytes,
            verbatim_answers,
            filled_samples,
            internal_errors,
            kept_buffer_bytes,
        }
    }

    pub fn request(&self, endpoint: &str, code: u16, sent: usize) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.sent(endpoint, sent);
    }

    /// Counts bytes of an answer sent on `endpoint` (before compression).
    pub fn sent(&self, endpoint: &str, bytes: usize) {
        self.sent_bytes
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .inc_by(bytes as u64);
    }

    /// Moves the number of client queries waiting to be admitted.
    pub fn queued_queries(&self, by: i64) {
        self.queued_queries.inc_by(by);
    }

    /// Moves the number of client queries admitted and running.
    pub fn running_queries(&self, by: i64) {
        self.running_queries.inc_by(by);
    }

    /// Records how long a client query waited to be admitted.
    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// Counts a client query refused because the queue was full.
    pub fn refused_query(&self) {
        self.refused_queries.inc();
    }

    /// Counts a query the proxy failed itself.
    pub fn internal_error(&self) {
        self.internal_errors.inc();
    }

    pub fn upstream_request(&self, upstream: &str, outcome: &str, took: Duration, bytes: usize) {
        self.upstream_duration
            .get_or_create(&UpstreamOutcomeLabels {
                upstream: upstream.to_string(),
                outcome: outcome.to_string(),
            })
            .observe(took.as_secs_f64());
        self.received_bytes
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
            })
            .inc_by(bytes as u64);
    }

    pub fn upstream_health(&self, upstream: &str, healthy: bool) {
        self.upstream_up
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_string(),
            })
            .set(i64::from(healthy));
    }

    /// A configuration was read (at start-up, or on SIGHUP), or refused.
    pub fn reloaded(&self, successful: bool) {
        self.reload_successful.set(i64::from(successful));
        if successful {
            self.reload_success_time
                .set(crate::time::now_ms() as f64 / 1000.0);
        }
    }

    pub fn dns_failure(&self, table: &str) {
        self.dns_failures
            .get_or_create(&TableLabels {
                table: table.to_string(),
            })
            .inc();
    }

    /// A query answer, by what the cache held for it (`hit`, `partial`,
    /// `miss`, `uncacheable`), and the range steps it saved asking for.
    pub fn cache_request(&self, result: &str, saved_steps: u64) {
        self.cache_requests
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        self.cache_saved_steps.inc_by(saved_steps);
    }

    pub fn cache_store_error(&self) {
        self.cache_store_errors.inc();
    }

    pub fn cache_bytes(&self, bytes: usize) {
        self.cache_bytes.set(bytes as i64);
    }

    /// An upstream left the configuration: its health series goes too.
    pub fn forget_upstream(&self, upstream: &str) {
        self.upstream_up.remove(&UpstreamLabels {
            upstream: upstream.to_string(),
        });
    }

    pub fn merged(&self, endpoint: &str, took: Duration, filled_samples: usize) {
        self.merge_duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(took.as_secs_f64());
        self.filled_samples.inc_by(filled_samples as u64);
    }

    pub fn verbatim(&self, endpoint: &str) {
        self.verbatim_answers
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .inc();
    }

    pub fn kept_buffers(&self, bytes: usize) {
        self.kept_buffer_bytes.set(bytes as i64);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_reach_the_exposition() {
        let m = Metrics::new();
        m.request("/api/v1/query", 200, 77);
        m.upstream_request("http://a:9090", "success", Duration::from_millis(3), 1000);
        m.upstream_health("http://a:9090", false);
        m.merged("/api/v1/query_range", Duration::from_millis(1), 42);
        m.kept_buffers(1 << 20);
        let text = m.encode();
        for line in [
            "prom_ha_proxy_http_requests_total{endpoint=\"/api/v1/query\",code=\"200\"} 1",
            "prom_ha_proxy_sent_bytes_total{endpoint=\"/api/v1/query\"} 77",
            "prom_ha_proxy_upstream_up{upstream=\"http://a:9090\"} 0",
            "prom_ha_proxy_upstream_received_bytes_total{upstream=\"http://a:9090\"} 1000",
            "prom_ha_proxy_filled_samples_total 42",
            "prom_ha_proxy_kept_buffer_bytes 1048576",
            "prom_ha_proxy_upstream_request_duration_seconds_count{upstream=\"http://a:9090\",outcome=\"success\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
