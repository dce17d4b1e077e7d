//! The proxy's settings: read from an optional TOML file and the environment
//! (`PROM_HA_PROXY__…`, `__` between key parts), overridden by the command
//! line, and checked once at start-up.
//!
//! Everything after [`Config::load`] sees only validated values: absolute
//! http URLs, positive durations, at least one upstream, in priority order.

use crate::time::{format_duration, parse_duration};
use crate::tls::TlsVersion;
use crate::tls::upstream::{TlsSettings, UpstreamTls};
use crate::web_config::WebConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9090";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 4 << 20;
pub const DEFAULT_MAX_UPSTREAM_BODY_BYTES: usize = 512 << 20;
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 2 << 30;
/// A query's merged answer goes out in pieces of about this size, the first
/// while the rest is merged; a smaller answer goes out whole.
pub const DEFAULT_ANSWER_PIECE_BYTES: usize = 256 << 10;
/// Room for the buffers of one large query against two replicas (two 64 MB
/// bodies and their sample tables) kept for the next one.
pub const DEFAULT_KEEP_BUFFER_BYTES: usize = 256 << 20;
/// Client queries run against the upstreams at once. Prometheus runs 20
/// queries at once by default (`--query.max-concurrency`); an admitted
/// query asks each replica its query and its coverage side by side, two of
/// those places, so 10 keep a replica's engine busy without a queue inside
/// it, where the proxy could not keep the order.
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 10;
/// Client queries waiting to be admitted, at most; past it, 503 at once.
pub const DEFAULT_MAX_QUEUED_QUERIES: usize = 1024;
const ENV_PREFIX: &str = "PROM_HA_PROXY";

/// One upstream Prometheus, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// The key it was configured under (or its position, from the command line).
    pub name: String,
    /// Base URL; a path prefix (`http://host/prometheus`) is kept.
    pub url: Url,
    /// Longest time one request to it may take, body included.
    pub timeout: Duration,
    pub auth: Option<Auth>,
    pub headers: Vec<(String, String)>,
    /// Pass the client's `Authorization` header on to this upstream (only
    /// when no credentials are configured for it). Off by default: a proxy
    /// must not hand one service's credentials to another unasked.
    pub forward_authorization: bool,
    /// `[upstreams.NAME.tls]`, or the system roots for an `https` URL
    /// without one; None for `http`.
    pub tls: Option<UpstreamTls>,
    /// A table whose URL names DNS records (`dns+`, `dnssrv+`): a template,
    /// expanded by `crate::discovery` into one upstream per address found.
    pub discovery: Option<Discovery>,
    /// For an address found by DNS: its name, `TABLE/host:port`.
    pub shown_as: Option<String>,
    /// For an address found by DNS over https: the name its certificate is
    /// checked against when the table sets no `server_name` (the SRV target,
    /// or the name looked up).
    pub verify_name: Option<String>,
}

/// How a table's upstreams are found in DNS (Thanos' convention).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `dns+http://NAME:PORT`: every A/AAAA address of NAME, on PORT.
    Addresses { name: String, port: u16 },
    /// `dnssrv+http://_web._tcp.NAME`: every SRV record's target and port.
    Services { name: String },
}

/// `[dns]`: how DNS names of upstreams are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// How often names are resolved again.
    pub refresh_interval: Duration,
    /// Name servers asked instead of the system's (`IP:PORT`); empty: the system's.
    pub nameservers: Vec<std::net::SocketAddr>,
}

pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);

impl UpstreamConfig {
    /// The name it goes by in warnings, errors, logs and metrics: its URL
    /// without credentials or a trailing slash.
    pub fn display_name(&self) -> String {
        if let Some(shown) = &self.shown_as {
            return shown.clone();
        }
        let mut url = self.url.clone();
        let _ = url.set_password(None);
        let _ = url.set_username("");
        url.as_str().trim_end_matches('/').to_string()
    }
}

#[derive(Clone, PartialEq)]
pub enum Auth {
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: String,
    pub replica_labels: Vec<String>,
    pub max_request_body_bytes: usize,
    pub max_upstream_body_bytes: usize,
    /// Upstream answer bytes held at once, across all queries.
    pub max_in_flight_bytes: usize,
    /// Query answers are parsed in batches of about this many bytes as they arrive.
    pub parse_batch_bytes: usize,
    /// Merged query answers larger than this are sent in pieces of about this size as they are merged.
    pub answer_piece_bytes: usize,
    /// Large buffers of merged answers kept for the next answers, at most (0: none).
    pub keep_buffer_bytes: usize,
    /// Client queries run against the upstreams at once.
    pub max_concurrent_queries: usize,
    /// Client queries waiting to be admitted, at most.
    pub max_queued_queries: usize,
    /// Highest priority first.
    pub upstreams: Vec<UpstreamConfig>,
    /// The coverage-aware merge; None when turned off.
    pub coverage: Option<CoverageConfig>,
    /// The cache of settled history; None when turned off.
    pub cache: Option<CacheConfig>,
    pub health: HealthConfig,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// The listener's TLS and users (`--web.config.file`); None: plain HTTP, open.
    pub web: Option<WebConfig>,
    pub dns: DnsConfig,
}

/// How upstream health is judged, and how long stragglers are waited for.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Consecutive failed requests that mark an upstream down.
    pub failures_to_down: u32,
    /// How often each backend probes its upstream's `/-/ready`.
    pub probe_interval: Duration,
    /// Deadline of one probe.
    pub probe_timeout: Duration,
    /// Consecutive good probes that bring a down upstream back.
    pub probes_to_up: u32,
    /// Once one upstream has answered, how much longer the others are awaited.
    pub straggler_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            failures_to_down: 3,
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(2),
            probes_to_up: 2,
            straggler_timeout: Duration::from_secs(3),
        }
    }
}

pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Settings of the cache of settled history (`src/cache/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub backend: CacheBackend,
    /// Bytes of answers held at most in memory (least recently used out
    /// first); an answer over an eighth of it is not kept, in Redis either.
    pub max_bytes: usize,
    /// No part of an answer is served longer than this after it was asked.
    pub ttl: Duration,
    /// A step is settled, and cached, once everything it reads ended this long ago.
    pub settle: Duration,
}

/// A Redis URL for the status page: its password, if any, masked.
fn masked_redis(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<secret>"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Where cached answers are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    Memory,
    /// Shared by every proxy naming this server (`redis://HOST:PORT/DB`).
    Redis {
        url: String,
    },
}

pub const DEFAULT_CACHE_MAX_BYTES: usize = 128 << 20;
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(3600);

/// Settings of the coverage-aware merge (see docs/coverage-merge.md).
#[derive(Debug, Clone, PartialEq)]
pub struct CoverageConfig {
    /// A plain selector every replica scrapes alike (say `up`), counted in
    /// place of the query's own selectors; None counts the query's own.
    pub selector: Option<String>,
    /// The upstreams' look-back delta (`--query.lookback-delta`), used when the
    /// client sends no `lookback_delta`.
    pub lookback_delta: Duration,
    /// The replicas' scrape interval (the longest, if they differ): windows
    /// narrower than two of it are counted over two (`query::narrowest_counted`).
    pub scrape_interval: Duration,
    /// What of the coarse coverage counts is remembered (`settled.rs`).
    pub remembering: crate::settled::Remembering,
}

pub const DEFAULT_REMEMBER_FOR: Duration = Duration::from_secs(600);
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(300);

pub const DEFAULT_LOOKBACK_DELTA: Duration = Duration::from_secs(300);

/// The scrape interval of Prometheus' example configuration, and the most
/// common one.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(15);

/// What the command line may set over the file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    /// When non-empty, replaces the configured upstreams, in this priority order.
    pub upstream_urls: Vec<String>,
    /// `--web.config.file`, over `web_config_file`.
    pub web_config_file: Option<PathBuf>,
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "invalid configuration: {}", self.reason)
        } else {
            write!(f, "invalid configuration: {}: {}", self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    #[serde(default)]
    replica_labels: Vec<String>,
    max_request_body_bytes: Option<i64>,
    max_upstream_body_bytes: Option<i64>,
    max_in_flight_bytes: Option<i64>,
    parse_batch_bytes: Option<i64>,
    answer_piece_bytes: Option<i64>,
    keep_buffer_bytes: Option<i64>,
    max_concurrent_queries: Option<i64>,
    max_queued_queries: Option<i64>,
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    coverage: RawCoverage,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    health: RawHealth,
    shutdown_grace: Option<RawDuration>,
    web_config_file: Option<String>,
    #[serde(default)]
    dns: RawDns,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    enabled: Option<bool>,
    backend: Option<String>,
    url: Option<String>,
    max_bytes: Option<i64>,
    ttl: Option<RawDuration>,
    settle: Option<RawDuration>,
}

impl RawCache {
    fn resolve(self) -> Result<Option<CacheConfig>, ConfigError> {
        let backend = match (self.backend.as_deref(), self.url) {
            (None | Some("memory"), None) => CacheBackend::Memory,
            (Some("redis"), Some(url)) => {
                if let Err(e) = redis::Client::open(url.as_str()) {
                    return Err(invalid("cache.url", format!("{url:?}: {e}")));
                }
                CacheBackend::Redis { url }
            }
            (Some("redis"), None) => {
                return Err(invalid(
                    "cache.url",
                    "backend \"redis\" needs url = \"redis://HOST:PORT/DB\"",
                ));
            }
            (None | Some("memory"), Some(_)) => {
                return Err(invalid("cache.url", "only with backend = \"redis\""));
            }
            (Some(other), _) => {
                return Err(invalid(
                    "cache.backend",
                    format!("{other:?}: \"memory\" or \"redis\""),
                ));
            }
        };
        let config = CacheConfig {
            backend,
            max_bytes: size("cache.max_bytes", self.max_bytes, DEFAULT_CACHE_MAX_BYTES)?,
            ttl: duration_key("cache.ttl", self.ttl, DEFAULT_CACHE_TTL)?,
            settle: duration_key("cache.settle", self.settle, DEFAULT_SETTLE)?,
        };
        Ok(self.enabled.unwrap_or(true).then_some(config))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDns {
    refresh_interval: Option<RawDuration>,
    #[serde(default)]
    nameservers: Vec<String>,
}

impl RawDns {
    fn resolve(self) -> Result<DnsConfig, ConfigError> {
        let nameservers = self
            .nameservers
            .iter()
            .map(|n| {
                n.parse().map_err(|_| {
                    invalid(
                        "dns.nameservers",
                        format!("{n:?} is not an IP:PORT address"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(DnsConfig {
            refresh_interval: duration_key(
                "dns.refresh_interval",
                self.refresh_interval,
                DEFAULT_DNS_REFRESH,
            )?,
            nameservers,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    failures_to_down: Option<i64>,
    probe_interval: Option<RawDuration>,
    probe_timeout: Option<RawDuration>,
    probes_to_up: Option<i64>,
    straggler_timeout: Option<RawDuration>,
    /// Retired: a per-upstream cap that skipped the upstream once the
    /// proxy's own requests filled it. Read, so old files still load, and
    /// ignored, with a warning; `max_concurrent_queries` bounds the work.
    max_in_flight: Option<i64>,
}

impl RawHealth {
    fn resolve(self) -> Result<HealthConfig, ConfigError> {
        if self.max_in_flight.is_some() {
            log::warn!(
                "health.max_in_flight is no longer used and is ignored: client queries are \
                 admitted by max_concurrent_queries and wait in a queue of max_queued_queries"
            );
        }
        let d = HealthConfig::default();
        let duration = |key: &str, raw: Option<RawDuration>, default: Duration| {
            duration_key(&format!("health.{key}"), raw, default)
        };
        let count = |key: &str, raw: Option<i64>, default: u32| {
            whole(&format!("health.{key}"), raw, default as usize, 1).map(|n| n as u32)
        };
        Ok(HealthConfig {
            failures_to_down: count(
                "failures_to_down",
                self.failures_to_down,
                d.failures_to_down,
            )?,
            probe_interval: duration("probe_interval", self.probe_interval, d.probe_interval)?,
            probe_timeout: duration("probe_timeout", self.probe_timeout, d.probe_timeout)?,
            probes_to_up: count("probes_to_up", self.probes_to_up, d.probes_to_up)?,
            straggler_timeout: duration(
                "straggler_timeout",
                self.straggler_timeout,
                d.straggler_timeout,
            )?,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCoverage {
    enabled: Option<bool>,
    selector: Option<String>,
    lookback_delta: Option<RawDuration>,
    scrape_interval: Option<RawDuration>,
    remember_for: Option<RawDuration>,
    settle: Option<RawDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<String>,
    priority: Option<i64>,
    timeout: Option<RawDuration>,
    bearer_token: Option<String>,
    basic_auth: Option<RawBasicAuth>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    forward_authorization: Option<bool>,
    tls: Option<RawTls>,
}

/// `[upstreams.NAME.tls]`, in the names of Prometheus' `tls_config`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    server_name: Option<String>,
    insecure_skip_verify: Option<bool>,
    min_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    #[serde(default)]
    password: String,
}

/// `"30s"`, `"1m30s"` (Prometheus durations) or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(f64),
    Text(String),
}

impl Config {
    /// Every setting in effect as (key, value) text, for the status page;
    /// secrets (passwords, tokens, credential-like headers) masked.
    pub fn describe(&self) -> Vec<(String, String)> {
        let d = |d: Duration| format_duration(d);
        let mut rows = vec![
            ("listen".to_string(), self.listen.clone()),
            (
                "replica_labels".into(),
                format!("{:?}", self.replica_labels),
            ),
            (
                "max_request_body_bytes".into(),
                self.max_request_body_bytes.to_string(),
            ),
            (
                "max_upstream_body_bytes".into(),
                self.max_upstream_body_bytes.to_string(),
            ),
            (
                "max_in_flight_bytes".into(),
                self.max_in_flight_bytes.to_string(),
            ),
            (
                "parse_batch_bytes".into(),
                self.parse_batch_bytes.to_string(),
            ),
            (
                "max_concurrent_queries".into(),
                self.max_concurrent_queries.to_string(),
            ),
            (
                "max_queued_queries".into(),
                self.max_queued_queries.to_string(),
            ),
            (
                "answer_piece_bytes".into(),
                self.answer_piece_bytes.to_string(),
            ),
            (
                "keep_buffer_bytes".into(),
                self.keep_buffer_bytes.to_string(),
            ),
            ("shutdown_grace".into(), d(self.shutdown_grace)),
            (
                "coverage.enabled".into(),
                self.coverage.is_some().to_string(),
            ),
        ];
        if let Some(c) = &self.coverage {
            let selector = c.selector.as_deref().unwrap_or("(the query's own)");
            rows.push(("coverage.selector".into(), selector.to_string()));
            rows.push(("coverage.lookback_delta".into(), d(c.lookback_delta)));
            rows.push(("coverage.scrape_interval".into(), d(c.scrape_interval)));
            rows.push((
                "coverage.remember_for".into(),
                d(c.remembering.remember_for),
            ));
            rows.push(("coverage.settle".into(), d(c.remembering.settle)));
        }
        rows.push(("cache.enabled".into(), self.cache.is_some().to_string()));
        if let Some(c) = &self.cache {
            let backend = match &c.backend {
                CacheBackend::Memory => "memory".to_string(),
                CacheBackend::Redis { url } => format!("redis {}", masked_redis(url)),
            };
            rows.push(("cache.backend".into(), backend));
            rows.push(("cache.max_bytes".into(), c.max_bytes.to_string()));
            rows.push(("cache.ttl".into(), d(c.ttl)));
            rows.push(("cache.settle".into(), d(c.settle)));
        }
        let h = &self.health;
        rows.extend([
            (
                "health.failures_to_down".into(),
                h.failures_to_down.to_string(),
            ),
            ("health.probe_interval".into(), d(h.probe_interval)),
            ("health.probe_timeout".into(), d(h.probe_timeout)),
            ("health.probes_to_up".into(), h.probes_to_up.to_string()),
            ("health.straggler_timeout".into(), d(h.straggler_timeout)),
        ]);
        for (i, u) in self.upstreams.iter().enumerate() {
            rows.extend(u.describe(i + 1));
        }
        if self.upstreams.iter().any(|u| u.discovery.is_some()) {
            rows.push(("dns.refresh_interval".into(), d(self.dns.refresh_interval)));
            let servers: Vec<String> = self.dns.nameservers.iter().map(|s| s.to_string()).collect();
            let servers = if servers.is_empty() {
                "(the system's)".to_string()
            } else {
                servers.join(", ")
            };
            rows.push(("dns.nameservers".into(), servers));
        }
        if let Some(web) = &self.web {
            rows.push(("web_config_file".into(), web.path.display().to_string()));
            rows.push(("web.tls".into(), web.tls.is_some().to_string()));
            // How many, never who or their hashes.
            rows.push(("web.basic_auth_users".into(), web.users.len().to_string()));
        }
        rows
    }

    /// Reads the file (if any) and the environment, applies `overrides`, validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, env, overrides)
    }

    /// [`Config::load`] with the environment given, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: Vec<(String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    format!("{}: no such file", path.display()),
                ));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env_map: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("replica_labels")
                .try_parsing(true)
                .source(Some(env_map)),
        );
        let raw: RawConfig = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(from_config_error)?;
        // Relative paths in the file are read from its folder, as Prometheus does.
        let dir = file
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        raw.resolve(overrides, &dir)
    }
}

/// The config crate names the key in its message; keep it on one line.
fn from_config_error(e: config::ConfigError) -> ConfigError {
    let text = e.to_string().replace('\n', " ");
    invalid("", text)
}

impl RawConfig {
    fn resolve(self, overrides: &Overrides, dir: &Path) -> Result<Config, ConfigError> {
        let mut upstreams = Vec::new();
        if overrides.upstream_urls.is_empty() {
            let mut named: Vec<(i64, String, RawUpstream)> = self
                .upstreams
                .into_iter()
                .map(|(name, u)| (u.priority.unwrap_or(0), name, u))
                .collect();
            // Lower priority number first; ties by name, so the order never depends on hashing.
            named.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            for (_, name, raw) in named {
                upstreams.push(raw.resolve(&name, dir)?);
            }
        } else {
            for (i, url) in overrides.upstream_urls.iter().enumerate() {
                let raw = RawUpstream {
                    url: Some(url.clone()),
                    ..Default::default()
                };
                upstreams.push(raw.resolve(&(i + 1).to_string(), dir)?);
            }
        }
        if upstreams.is_empty() {
            return Err(invalid(
                "upstreams",
                "no upstream configured (give URLs on the command line or [upstreams.NAME] url = \"…\")",
            ));
        }
        for label in &self.replica_labels {
            if label.is_empty() {
                return Err(invalid("replica_labels", "empty label name"));
            }
        }
        if upstreams.len() > crate::merge::coverage::MAX_UPSTREAMS {
            return Err(invalid(
                "upstreams",
                format!(
                    "at most {} upstreams",
                    crate::merge::coverage::MAX_UPSTREAMS
                ),
            ));
        }
        let coverage = self.coverage.resolve()?;
        let cache = self.cache.resolve()?;
        let health = self.health.resolve()?;
        let web = web_config(overrides, self.web_config_file, dir)?;
        let dns = self.dns.resolve()?;
        let shutdown_grace = duration_key(
            "shutdown_grace",
            self.shutdown_grace,
            DEFAULT_SHUTDOWN_GRACE,
        )?;
        Ok(Config {
            coverage,
            cache,
            health,
            shutdown_grace,
            web,
            dns,
            listen: overrides
                .listen
                .clone()
                .or(self.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
            replica_labels: self.replica_labels,
            max_request_body_bytes: size(
                "max_request_body_bytes",
                self.max_request_body_bytes,
                DEFAULT_MAX_REQUEST_BODY_BYTES,
            )?,
            max_upstream_body_bytes: size(
                "max_upstream_body_bytes",
                self.max_upstream_body_bytes,
                DEFAULT_MAX_UPSTREAM_BODY_BYTES,
            )?
            .min(u32::MAX as usize - crate::answer::PADDING),
            max_in_flight_bytes: size(
                "max_in_flight_bytes",
                self.max_in_flight_bytes,
                DEFAULT_MAX_IN_FLIGHT_BYTES,
            )?,
            parse_batch_bytes: size(
                "parse_batch_bytes",
                self.parse_batch_bytes,
                crate::answer::BATCH_BYTES,
            )?,
            answer_piece_bytes: size(
                "answer_piece_bytes",
                self.answer_piece_bytes,
                DEFAULT_ANSWER_PIECE_BYTES,
            )?,
            keep_buffer_bytes: match self.keep_buffer_bytes {
                Some(0) => 0,
                v => size("keep_buffer_bytes", v, DEFAULT_KEEP_BUFFER_BYTES)?,
            },
            max_concurrent_queries: whole(
                "max_concurrent_queries",
                self.max_concurrent_queries,
                DEFAULT_MAX_CONCURRENT_QUERIES,
                1,
            )?,
            // 0: no queue, a query finding every place taken is refused.
            max_queued_queries: whole(
                "max_queued_queries",
                self.max_queued_queries,
                DEFAULT_MAX_QUEUED_QUERIES,
                0,
            )?,
            upstreams,
        })
    }
}

impl RawCoverage {
    fn resolve(self) -> Result<Option<CoverageConfig>, ConfigError> {
        // Empty is the default: the query's own selectors.
        let selector = self.selector.filter(|s| !s.is_empty());
        if let Some(selector) = &selector {
            match promql_parser::parser::parse(selector) {
                Ok(promql_parser::parser::Expr::VectorSelector(vs))
                    if vs.offset.is_none() && vs.at.is_none() => {}
                _ => {
                    return Err(invalid(
                        "coverage.selector",
                        format!("{selector:?} is not a plain selector like up{{job=\"node\"}}"),
                    ));
                }
            }
        }
        let lookback_delta = duration_key(
            "coverage.lookback_delta",
            self.lookback_delta,
            DEFAULT_LOOKBACK_DELTA,
        )?;
        let scrape_interval = duration_key(
            "coverage.scrape_interval",
            self.scrape_interval,
            DEFAULT_SCRAPE_INTERVAL,
        )?;
        // Zero remembers nothing.
        let remember_for = match self.remember_for {
            Some(RawDuration::Seconds(0.0)) => Duration::ZERO,
            Some(RawDuration::Text(t))
                if parse_duration(t.trim_end_matches(|c: char| c.is_ascii_alphabetic()))
                    == Some(Duration::ZERO) =>
            {
                Duration::ZERO
            }
            raw => duration_key("coverage.remember_for", raw, DEFAULT_REMEMBER_FOR)?,
        };
        let settle = duration_key("coverage.settle", self.settle, DEFAULT_SETTLE)?;
        Ok(self.enabled.unwrap_or(true).then_some(CoverageConfig {
            selector,
            lookback_delta,
            scrape_interval,
            remembering: crate::settled::Remembering {
                remember_for,
                settle,
            },
        }))
    }
}

fn size(key: &str, value: Option<i64>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v > 0 => Ok(v as usize),
        Some(v) => Err(invalid(
            key,
            format!("must be a positive number of bytes, not {v}"),
        )),
    }
}

/// A whole number of at least `least`.
fn whole(key: &str, value: Option<i64>, default: usize, least: i64) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v >= least && v <= u32::MAX as i64 => Ok(v as usize),
        Some(v) => Err(invalid(
            key,
            format!("must be a whole number from {least}, not {v}"),
        )),
    }
}

impl RawUpstream {
    fn resolve(self, name: &str, dir: &Path) -> Result<UpstreamConfig, ConfigError> {
        let key = |k: &str| format!("upstreams.{name}.{k}");
        let text = self.url.ok_or_else(|| invalid(key("url"), "missing"))?;
        let (url, discovery) =
            parse_upstream_url(&text).map_err(|reason| invalid(key("url"), reason))?;
        let timeout = duration_key(&key("timeout"), self.timeout, DEFAULT_TIMEOUT)?;
        let tls = upstream_tls(self.tls, &url, dir).map_err(|(k, e)| invalid(key(&k), e))?;
        let auth = match (self.basic_auth, self.bearer_token) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key("bearer_token"),
                    "set either basic_auth or bearer_token, not both",
                ));
            }
            (Some(b), None) => Some(Auth::Basic {
                username: b.username,
                password: b.password,
            }),
            (None, Some(t)) => Some(Auth::Bearer(t)),
            (None, None) => None,
        };
        for (header, value) in &self.headers {
            if actix_web::http::header::HeaderName::try_from(header.as_str()).is_err()
                || actix_web::http::header::HeaderValue::try_from(value.as_str()).is_err()
            {
                return Err(invalid(
                    key(&format!("headers.{header}")),
                    "not a valid HTTP header",
                ));
            }
        }
        Ok(UpstreamConfig {
            name: name.to_string(),
            url,
            timeout,
            auth,
            headers: self.headers.into_iter().collect(),
            forward_authorization: self.forward_authorization.unwrap_or(false),
            tls,
            discovery,
            shown_as: None,
            verify_name: None,
        })
    }
}

/// The TLS an upstream is reached with: its table's, the system roots for
/// `https` without one, none for `http` (where a table is a mistake).
fn upstream_tls(
    raw: Option<RawTls>,
    url: &Url,
    dir: &Path,
) -> Result<Option<UpstreamTls>, (String, String)> {
    let https = url.scheme() == "https";
    let Some(raw) = raw else {
        return match https {
            true => UpstreamTls::system()
                .map(Some)
                .map_err(|(k, e)| (format!("tls.{k}"), e)),
            false => Ok(None),
        };
    };
    if !https {
        return Err(("tls".into(), "set for an http:// URL; use https://".into()));
    }
    let min_version = raw
        .min_version
        .map(|v| TlsVersion::parse(&v))
        .transpose()
        .map_err(|e| ("tls.min_version".to_string(), e))?;
    let path = |p: Option<String>| p.filter(|p| !p.is_empty()).map(|p| dir.join(p));
    let settings = TlsSettings {
        ca_file: path(raw.ca_file),
        cert_file: path(raw.cert_file),
        key_file: path(raw.key_file),
        server_name: raw.server_name.filter(|n| !n.is_empty()),
        insecure_skip_verify: raw.insecure_skip_verify.unwrap_or(false),
        min_version,
    };
    UpstreamTls::build(settings)
        .map(Some)
        .map_err(|(k, e)| (format!("tls.{k}"), e))
}

impl UpstreamConfig {
    /// This upstream's rows of [`Config::describe`], `order` its place in
    /// priority order; secrets masked.
    fn describe(&self, order: usize) -> Vec<(String, String)> {
        const MASK: &str = "***";
        let u = self;
        let d = |d: Duration| format_duration(d);
        let mut rows = Vec::new();
        let key = |k: &str| format!("upstreams.{}.{k}", self.name);
        let mut url = u.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some(MASK));
        }
        let prefix = match &self.discovery {
            Some(Discovery::Addresses { .. }) => "dns+",
            Some(Discovery::Services { .. }) => "dnssrv+",
            None => "",
        };
        rows.push((key("url"), format!("{prefix}{url}")));
        rows.push((key("priority order"), order.to_string()));
        rows.push((key("timeout"), d(u.timeout)));
        match &u.auth {
            Some(Auth::Bearer(_)) => rows.push((key("bearer_token"), MASK.into())),
            Some(Auth::Basic { username, .. }) => {
                rows.push((key("basic_auth"), format!("{username}:{MASK}")))
            }
            None => {}
        }
        for (name, value) in &u.headers {
            let lower = name.to_ascii_lowercase();
            let secret = ["auth", "token", "key", "secret", "cookie", "password"]
                .iter()
                .any(|s| lower.contains(s));
            let shown = if secret { MASK } else { value.as_str() };
            rows.push((key(&format!("headers.{name}")), shown.to_string()));
        }
        rows.push((
            key("forward_authorization"),
            u.forward_authorization.to_string(),
        ));
        if let Some(tls) = &u.tls {
            rows.extend(tls_rows(&tls.settings).map(|(k, v)| (key(k), v)));
        }
        rows
    }
}

/// An upstream's TLS settings for the status page: paths, never contents.
fn tls_rows(t: &TlsSettings) -> impl Iterator<Item = (&'static str, String)> {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    [
        ("tls.ca_file", path(&t.ca_file).or(Some("(system)".into()))),
        ("tls.cert_file", path(&t.cert_file)),
        ("tls.key_file", path(&t.key_file)),
        ("tls.server_name", t.server_name.clone()),
        (
            "tls.insecure_skip_verify",
            Some(t.insecure_skip_verify.to_string()),
        ),
        ("tls.min_version", t.min_version.map(|v| format!("{v:?}"))),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
}

/// `--web.config.file` or `web_config_file`, read and checked.
fn web_config(
    overrides: &Overrides,
    from_file: Option<String>,
    dir: &Path,
) -> Result<Option<WebConfig>, ConfigError> {
    let (key, path) = match (&overrides.web_config_file, from_file) {
        (Some(p), _) => ("--web.config.file", p.clone()),
        (None, Some(p)) if !p.is_empty() => ("web_config_file", dir.join(p)),
        (None, _) => return Ok(None),
    };
    WebConfig::load(&path).map(Some).map_err(|e| {
        let at = if e.key.is_empty() {
            format!("{key} {}", path.display())
        } else {
            format!("{key} {}: {}", path.display(), e.key)
        };
        invalid(at, e.reason)
    })
}

/// An upstream URL, or a DNS template (`dns+http://NAME:PORT`,
/// `dnssrv+http://NAME`), whose URL then keeps NAME as its host.
fn parse_upstream_url(text: &str) -> Result<(Url, Option<Discovery>), String> {
    let (kind, plain) = match text.split_once('+') {
        Some((kind @ ("dns" | "dnssrv"), rest)) => (Some(kind), rest),
        _ => (None, text),
    };
    let url = plain_upstream_url(plain).map_err(|e| e.replace(plain, text))?;
    let host = url.host_str().unwrap_or_default().to_string();
    let discovery = match kind {
        None => None,
        Some("dns") => Some(Discovery::Addresses {
            name: host,
            port: url
                .port()
                .ok_or_else(|| format!("{text:?}: dns+ needs a port (dns+http://NAME:PORT)"))?,
        }),
        Some(_) if url.port().is_some() => {
            return Err(format!(
                "{text:?}: dnssrv+ takes the port from the SRV records, not the URL"
            ));
        }
        Some(_) => Some(Discovery::Services { name: host }),
    };
    Ok((url, discovery))
}

fn plain_upstream_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("{text:?}: scheme {other:?} is not http or https")),
    }
    if url.host().is_none() {
        return Err(format!("{text:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?} must not carry a query or fragment"));
    }
    Ok(url)
}

/// An optional duration key: its default when absent, else a positive duration,
/// or an error naming the key.
fn duration_key(
    key: &str,
    raw: Option<RawDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match raw {
        None => Ok(default),
        Some(d) => parse_positive_duration(d).map_err(|reason| invalid(key, reason)),
    }
}

fn parse_positive_duration(raw: RawDuration) -> Result<Duration, String> {
    let d = match raw {
        RawDuration::Seconds(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
        RawDuration::Seconds(s) => return Err(format!("must be a positive duration, not {s}")),
        RawDuration::Text(t) => parse_duration(&t)
            .ok_or_else(|| format!("{t:?} is not a positive duration like \"30s\""))?,
    };
    if d.is_zero() {
        return Err("must be a positive duration, not 0".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(
        toml: &str,
        env: &[(&str, &str)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(Some(file.path()), env, overrides)
    }

    #[test]
    fn the_described_config_masks_every_secret() {
        let toml = r#"
            [upstreams.a]
            url = "http://user:pa55word@h:9090"
            bearer_token = "t0ken"
            headers = { "X-Scope-OrgID" = "team-a", "X-Api-Key" = "k3y" }
            [upstreams.b]
            url = "http://h2:9090"
            basic_auth = { username = "proxy", password = "s3cret" }
            forward_authorization = true
        "#;
        let c = load(toml, &[], &Overrides::default()).unwrap();
        let text = format!("{:?}", c.describe());
        for secret in ["pa55word", "t0ken", "k3y", "s3cret"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        for shown in [
            "team-a",
            "proxy:***",
            "http://user:***@h:9090/",
            "upstreams.b.forward_authorization\", \"true",
        ] {
            assert!(text.contains(shown), "{shown} missing: {text}");
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prom-ha-proxy.toml");
        let c = Config::load_from(Some(&path), vec![], &Overrides::default()).unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(c.upstreams[0].name, "a");
        assert!(c.upstreams[1].url.as_str().ends_with("/prometheus"));
        assert_eq!(c.keep_buffer_bytes, DEFAULT_KEEP_BUFFER_BYTES);
        let none = load(
            "keep_buffer_bytes=0\n[upstreams.a]\nurl='http://a:1'\n",
            &[],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(none.keep_buffer_bytes, 0, "0 keeps no buffers");
    }

    #[test]
    fn admission_is_configured_and_the_old_per_upstream_cap_still_loads() {
        let up = "[upstreams.a]\nurl='http://a:1'\n";
        let d = load(up, &[], &Overrides::default()).unwrap();
        assert_eq!(
            (d.max_concurrent_queries, d.max_queued_queries),
            (DEFAULT_MAX_CONCURRENT_QUERIES, DEFAULT_MAX_QUEUED_QUERIES)
        );
        let toml = format!(
            "max_concurrent_queries=3\nmax_queued_queries=0\n[health]\nmax_in_flight=64\n{up}"
        );
        let c = load(&toml, &[], &Overrides::default()).unwrap();
        assert_eq!((c.max_concurrent_queries, c.max_queued_queries), (3, 0));
        for (bad, key) in [
            ("max_concurrent_queries=0", "max_concurrent_queries"),
            ("max_queued_queries=-1", "max_queued_queries"),
        ] {
            let e = load(&format!("{bad}\n{up}"), &[], &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn priority_then_name_orders_upstreams() {
        let c = load(
            "[upstreams.x]\nurl='http://x:1'\npriority=2\n[upstreams.y]\nurl='http://y:1'\npriority=1\n[upstreams.a]\nurl='http://a:1'\npriority=2\n",
            &[],
            &Overrides::default(),
        )
        .unwrap();
        let names: Vec<_> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["y", "a", "x"]);
    }

    #[test]
    fn environment_overrides_any_key() {
        let c = load(
            "listen='127.0.0.1:1'\n[upstreams.a]\nurl='http://a:1'\ntimeout='10s'\n",
            &[
                ("PROM_HA_PROXY__LISTEN", "127.0.0.1:2"),
                ("PROM_HA_PROXY__UPSTREAMS__A__TIMEOUT", "5s"),
                ("PROM_HA_PROXY__UPSTREAMS__B__URL", "http://b:1/prefix"),
                ("PROM_HA_PROXY__UPSTREAMS__B__PRIORITY", "1"),
                ("PROM_HA_PROXY__REPLICA_LABELS", "replica,cluster"),
            ],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.upstreams[0].timeout, Duration::from_secs(5));
        assert_eq!(c.upstreams[1].url.as_str(), "http://b:1/prefix");
        assert_eq!(c.replica_labels, ["replica", "cluster"]);
    }

    #[test]
    fn command_line_urls_replace_configured_upstreams() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:3".into()),
            upstream_urls: vec!["http://p:1".into(), "http://q:1".into()],
            ..Default::default()
        };
        let c = load("[upstreams.a]\nurl='http://a:1'\n", &[], &overrides).unwrap();
        let urls: Vec<_> = c.upstreams.iter().map(|u| u.url.as_str()).collect();
        assert_eq!(urls, ["http://p:1/", "http://q:1/"]);
        assert_eq!(c.listen, "127.0.0.1:3");
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let cases = [
            ("", "upstreams"),
            ("[upstreams.a]\nurl='not a url'\n", "upstreams.a.url"),
            ("[upstreams.a]\nurl='ftp://a'\n", "upstreams.a.url"),
            (
                "[upstreams.a]\nurl='http://a:1'\ntimeout=-5\n",
                "upstreams.a.timeout",
            ),
            (
                "[upstreams.a]\nurl='http://a:1'\ntimeout='-5s'\n",
                "upstreams.a.timeout",
            ),
            (
                "max_upstream_body_bytes=-1\n[upstreams.a]\nurl='http://a:1'\n",
                "max_upstream_body_bytes",
            ),
            (
                "keep_buffer_bytes=-1\n[upstreams.a]\nurl='http://a:1'\n",
                "keep_buffer_bytes",
            ),
        ];
        for (toml, key) in cases {
            let err = load(toml, &[], &Overrides::default()).unwrap_err();
            assert_eq!(err.key, key, "{toml}: {err}");
            assert!(!err.to_string().contains('\n'));
        }
        let err = load(
            "[upstreams.a]\nurl='http://a:1'\ncolour='red'\n",
            &[],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = load(
            "bogus=1\n[upstreams.a]\nurl='http://a:1'\n",
            &[],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn coverage_is_on_by_default_and_can_be_turned_off() {
        let c = load(
            "[upstreams.a]\nurl='http://a:1'\n",
            &[],
            &Overrides::default(),
        )
        .unwrap();
        let cov = c.coverage.unwrap();
        assert_eq!(
            (cov.selector, cov.lookback_delta, cov.scrape_interval),
            (None, Duration::from_secs(300), Duration::from_secs(15))
        );
        let c = load(
            "[upstreams.a]\nurl='http://a:1'\n",
            &[("PROM_HA_PROXY__COVERAGE__ENABLED", "false")],
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.coverage, None);
        let zero = load(
            "[upstreams.a]\nurl='http://a:1'\n[coverage]\nscrape_interval='0s'\n",
            &[],
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(zero.key, "coverage.scrape_interval");
    }

    #[test]
    fn the_cache_is_in_memory_by_default_and_a_broken_cache_table_names_its_key() {
        let load_cache = |table: &str| {
            load(
                &format!("[upstreams.a]\nurl='http://a:1'\n[cache]\n{table}"),
                &[],
                &Overrides::default(),
            )
        };
        let c = load_cache("").unwrap().cache.unwrap();
        assert_eq!(
            (c.backend, c.max_bytes, c.ttl, c.settle),
            (
                CacheBackend::Memory,
                DEFAULT_CACHE_MAX_BYTES,
                DEFAULT_CACHE_TTL,
                DEFAULT_SETTLE
            )
        );
        let redis = load_cache("backend='redis'\nurl='redis://127.0.0.1:6379/0'\n").unwrap();
        assert!(matches!(
            redis.cache.unwrap().backend,
            CacheBackend::Redis { .. }
        ));
        assert_eq!(load_cache("enabled=false\n").unwrap().cache, None);
        for (table, key) in [
            ("backend='memcached'\n", "cache.backend"),
            ("backend='redis'\n", "cache.url"),
            ("backend='redis'\nurl='http://x'\n", "cache.url"),
            ("url='redis://x'\n", "cache.url"),
            ("max_bytes=0\n", "cache.max_bytes"),
            ("ttl='0s'\n", "cache.ttl"),
            ("size=1\n", ""),
        ] {
            let e = load_cache(table).unwrap_err();
            assert!(e.key == key || key.is_empty(), "{table}: {e}");
        }
    }

    #[test]
    fn coverage_counts_are_remembered_for_ten_minutes_unless_told_otherwise() {
        let remembering = |env: &[(&str, &str)]| {
            load(
                "[upstreams.a]\nurl='http://a:1'\n",
                env,
                &Overrides::default(),
            )
            .map(|c| c.coverage.unwrap().remembering)
        };
        let r = remembering(&[]).unwrap();
        assert_eq!(
            (r.remember_for, r.settle),
            (Duration::from_secs(600), Duration::from_secs(300))
        );
        for zero in ["0", "0s"] {
            let r = remembering(&[("PROM_HA_PROXY__COVERAGE__REMEMBER_FOR", zero)]).unwrap();
            assert_eq!(r.remember_for, Duration::ZERO, "{zero}");
        }
        let r = remembering(&[("PROM_HA_PROXY__COVERAGE__SETTLE", "2m")]).unwrap();
        assert_eq!(r.settle, Duration::from_secs(120));
        let err = remembering(&[("PROM_HA_PROXY__COVERAGE__SETTLE", "0s")]).unwrap_err();
        assert_eq!(err.key, "coverage.settle");
    }

    #[test]
    fn durations_parse_like_prometheus() {
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("soon"), None);
    }
}
