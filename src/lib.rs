//! prom-ha-proxy: one Prometheus API in front of several replicas, with their
//! answers merged so that a hole in one is filled from another.
//!
//! See ARCHITECTURE.md for the map of modules.

pub mod backend;
pub mod budget;
pub mod config;
pub mod http;
pub mod merge;
pub mod metrics;
pub mod query;
pub mod routes;
pub mod settled;
pub mod status;
pub mod supervisor;
pub mod time;
