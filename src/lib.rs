//! prom-ha-proxy: one Prometheus API in front of several replicas, with their
//! answers merged so that a hole in one is filled from another.
//!
//! The modules, from the edge inwards (ARCHITECTURE.md has the full map):
//!
//! - [`http`]: the actix-web edge; every request routed by [`routes`], errors
//!   made Prometheus-format here alone.
//! - [`listener`]: the port, plain or TLS, and the guard in front of every
//!   path (credentials, configured headers).
//! - [`auth`]: basic authentication on the listener, verified passwords cached.
//! - [`tls`]: rustls on both sides: the upstreams' `tls` tables, the
//!   listener's certificates (re-read as they change).
//! - [`routes`]: the allow-list of served paths and the path discipline (pure).
//! - [`admission`]: how many client queries run at once; the queue of the rest.
//! - [`cache`]: merged answers for settled history, joined with the fresh
//!   steps the upstreams answer (planning and joining pure; the store).
//! - [`supervisor`]: the actor that fans a request out to the backends and
//!   carries out a query's plan.
//! - [`plan`]: what each upstream is asked for a query, and when (pure).
//! - [`merger`]: the actor where every merge runs, on threads of its own.
//! - [`backend`]: one actor per upstream: the exchange, its health.
//! - [`answer`]: the parser: an upstream body in, byte spans out (pure).
//! - [`merge`]: the mergers, parsed answers in, bytes out (pure).
//! - [`query`]: what the proxy reads from PromQL: the stretches a query reads,
//!   the coverage queries (pure).
//! - [`settled`]: coverage counts of settled history, remembered (pure).
//! - [`budget`]: the bytes in flight, and the large buffers kept.
//! - [`metrics`], [`status`]: the proxy's own metrics and status page.
//! - [`discovery`]: the upstreams decided from each configuration and DNS
//!   (`dns+`, `dnssrv+`); [`reload`]: the configuration read again on SIGHUP.
//! - [`config`], [`web_config`], [`time`]: settings; the listener's web
//!   configuration file (Prometheus' YAML); time and duration parameters.

pub mod admission;
pub mod answer;
pub mod auth;
pub mod backend;
pub mod budget;
pub mod cache;
pub mod config;
pub mod discovery;
pub mod http;
pub mod listener;
pub mod merge;
pub mod merger;
pub mod metrics;
pub mod plan;
pub mod query;
pub mod reload;
pub mod routes;
pub mod settled;
pub mod status;
pub mod supervisor;
pub mod time;
pub mod tls;
pub mod web_config;
