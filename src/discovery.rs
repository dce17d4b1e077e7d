//! Upstreams found in DNS, in Thanos' convention: a table whose URL is
//! `dns+http://NAME:PORT` stands for every A/AAAA address of NAME on PORT,
//! `dnssrv+http://NAME` for every SRV record's target and port. Each
//! address found is an upstream of its own (`TABLE/host:port`), and the
//! names are resolved again every `[dns] refresh_interval`.
//!
//! [`run`] is the one place the set of upstreams is decided after start-up:
//! it takes each configuration (the first, then every reload), expands it,
//! and sends the supervisor a [`Reconfigure`] whenever the set changes.

use crate::config::{Config, Discovery, DnsConfig, UpstreamConfig};
use crate::metrics::Metrics;
use crate::supervisor::{Reconfigure, Supervisor};
use actix::Addr;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// One address a template stands for: what it is ordered and named by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    /// The SRV target (pod `-0` before `-1`), or the name looked up.
    target: String,
    ip: IpAddr,
    port: u16,
}

/// What a table last resolved to, kept through failures.
#[derive(Default)]
struct Last {
    found: Vec<Found>,
    /// An empty answer where there were addresses is believed only the
    /// second time in a row.
    empty_once: bool,
}

pub struct Discoverer {
    resolver: Option<TokioResolver>,
    last: HashMap<String, Last>,
    metrics: Arc<Metrics>,
}

impl Discoverer {
    pub fn new(dns: &DnsConfig, metrics: Arc<Metrics>) -> Discoverer {
        let resolver = resolver(dns)
            .map_err(|e| log::error!("DNS resolver: {e}; dns+ and dnssrv+ upstreams find nothing"))
            .ok();
        Discoverer {
            resolver,
            last: HashMap::new(),
            metrics,
        }
    }

    /// The upstreams, in priority order, each template replaced by the
    /// addresses it stands for (sorted by target name, then address).
    pub async fn expand(&mut self, templates: &[UpstreamConfig]) -> Vec<UpstreamConfig> {
        let mut out = Vec::new();
        for template in templates {
            let Some(discovery) = &template.discovery else {
                out.push(template.clone());
                continue;
            };
            let found = self.resolve(&template.name, discovery).await;
            out.extend(found.iter().map(|f| instance(template, discovery, f)));
        }
        out
    }

    /// The table's addresses now, or the last good ones.
    async fn resolve(&mut self, table: &str, discovery: &Discovery) -> Vec<Found> {
        let answer = match &self.resolver {
            Some(resolver) => lookup(resolver, discovery).await,
            None => Err("no resolver".into()),
        };
        let last = self.last.entry(table.to_string()).or_default();
        match answer {
            Ok(found) if found.is_empty() && !last.found.is_empty() && !last.empty_once => {
                log::warn!(
                    "upstreams.{table}: DNS names no address; keeping the last ones once more"
                );
                last.empty_once = true;
            }
            Ok(mut found) => {
                found.sort();
                found.dedup();
                if found != last.found {
                    log::info!("upstreams.{table}: DNS names {} addresses", found.len());
                }
                last.found = found;
                last.empty_once = false;
            }
            Err(e) => {
                self.metrics.dns_failure(table);
                log::warn!("upstreams.{table}: DNS lookup failed, keeping the last addresses: {e}");
            }
        }
        last.found.clone()
    }
}

fn resolver(dns: &DnsConfig) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if dns.nameservers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| e.to_string())?
    } else {
        let servers = dns
            .nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    // Every refresh asks the server: records that move must be seen moving.
    // A server that does not answer costs one short wait a refresh, and the
    // last addresses stay.
    let options = builder.options_mut();
    options.cache_size = 0;
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    builder.build().map_err(|e| e.to_string())
}

async fn lookup(resolver: &TokioResolver, discovery: &Discovery) -> Result<Vec<Found>, String> {
    match discovery {
        Discovery::Addresses { name, port } => {
            let ips = addresses(resolver, name).await?;
            Ok(ips
                .into_iter()
                .map(|ip| Found {
                    target: name.clone(),
                    ip,
                    port: *port,
                })
                .collect())
        }
        Discovery::Services { name } => {
            let lookup = resolver
                .lookup(fqdn(name), RecordType::SRV)
                .await
                .map_err(|e| e.to_string());
            let records = match lookup {
                Ok(l) => l.answers().to_vec(),
                Err(e) if e.contains("no record") || e.contains("NXDomain") => Vec::new(),
                Err(e) => return Err(e),
            };
            let mut found = Vec::new();
            for record in records {
                let RData::SRV(srv) = &record.data else {
                    continue;
                };
                let target = srv.target.to_string().trim_end_matches('.').to_string();
                // A target's first address: one upstream per SRV record.
                if let Some(ip) = addresses(resolver, &target).await?.into_iter().min() {
                    found.push(Found {
                        target,
                        ip,
                        port: srv.port,
                    });
                }
            }
            Ok(found)
        }
    }
}

async fn addresses(resolver: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    match resolver.lookup_ip(fqdn(name)).await {
        Ok(ips) => Ok(ips.iter().collect()),
        Err(e) if e.to_string().contains("no record") => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// Names are looked up as given, not under the search domains.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// The upstream one address of a template stands for.
fn instance(template: &UpstreamConfig, discovery: &Discovery, found: &Found) -> UpstreamConfig {
    let mut u = template.clone();
    let _ = u.url.set_ip_host(found.ip);
    let _ = u.url.set_port(Some(found.port));
    let host = match discovery {
        Discovery::Addresses { .. } => found.ip.to_string(),
        Discovery::Services { .. } => found.target.clone(),
    };
    u.shown_as = Some(format!("{}/{host}:{}", template.name, found.port));
    u.verify_name = (u.url.scheme() == "https").then(|| found.target.clone());
    u.discovery = None;
    u
}

/// Decides the upstreams from each configuration (the first, then every
/// reload) and DNS, and tells the supervisor whenever they change. Runs
/// until the sender of configurations is gone.
pub async fn run(
    mut configs: watch::Receiver<Arc<Config>>,
    supervisor: Addr<Supervisor>,
    metrics: Arc<Metrics>,
) {
    let mut config = configs.borrow_and_update().clone();
    let mut discoverer = Discoverer::new(&config.dns, metrics.clone());
    // What the supervisor started with: the tables that name one server.
    let mut sent: Vec<UpstreamConfig> = config
        .upstreams
        .iter()
        .filter(|u| u.discovery.is_none())
        .cloned()
        .collect();
    loop {
        let upstreams = discoverer.expand(&config.upstreams).await;
        if upstreams != sent {
            supervisor.do_send(Reconfigure {
                upstreams: upstreams.clone(),
            });
            sent = upstreams;
        }
        let uses_dns = config.upstreams.iter().any(|u| u.discovery.is_some());
        tokio::select! {
            _ = tokio::time::sleep(config.dns.refresh_interval), if uses_dns => {}
            changed = configs.changed() => {
                if changed.is_err() {
                    return;
                }
                let next = configs.borrow_and_update().clone();
                if next.dns != config.dns {
                    discoverer = Discoverer::new(&next.dns, metrics.clone());
                }
                config = next;
            }
        }
    }
}
