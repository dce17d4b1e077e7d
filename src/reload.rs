//! SIGHUP: the configuration file is read again, as Prometheus does. A
//! valid one goes to `crate::discovery::run`, which decides the upstreams
//! and tells the supervisor; an invalid one is refused and the running
//! configuration stays. Either way `config_last_reload_successful` says so.

use crate::config::{Config, Overrides};
use crate::metrics::Metrics;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Where the configuration came from, to read it again the same way.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

/// What a reload updates besides the upstreams.
pub struct Reloading {
    pub source: Source,
    pub configs: watch::Sender<Arc<Config>>,
    pub config_view: Arc<RwLock<Vec<(String, String)>>>,
    pub metrics: Arc<Metrics>,
}

impl Reloading {
    /// Reads the configuration on every SIGHUP, until the process ends.
    pub async fn run(self) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot watch SIGHUP, reloads are off: {e}");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            self.reload();
        }
    }

    fn reload(&self) {
        let source = &self.source;
        let new = match Config::load(source.file.as_deref(), &source.overrides) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload refused, the running configuration stays: {e}");
                self.metrics.reloaded(false);
                return;
            }
        };
        let running = self.configs.borrow().clone();
        let not_applied = needing_restart(&running, &new);
        if !not_applied.is_empty() {
            log::warn!(
                "reload: {} changed; this takes a restart, the running value stays",
                not_applied.join(", ")
            );
        }
        log::info!(
            "configuration reloaded: {} upstream tables",
            new.upstreams.len()
        );
        if let Ok(mut view) = self.config_view.write() {
            *view = new.describe();
        }
        self.metrics.reloaded(true);
        let _ = self.configs.send(Arc::new(new));
    }
}

/// The keys that changed but are read once, at start-up: all but the
/// upstreams and `[dns]`.
fn needing_restart(running: &Config, new: &Config) -> Vec<String> {
    let live = |key: &str| key.starts_with("upstreams.") || key.starts_with("dns.");
    let old: std::collections::BTreeMap<_, _> = running.describe().into_iter().collect();
    let mut changed: Vec<String> = new
        .describe()
        .into_iter()
        .filter(|(k, v)| !live(k) && old.get(k) != Some(v))
        .map(|(k, _)| k)
        .collect();
    changed.extend(
        old.keys()
            .filter(|k| !live(k) && !new.describe().iter().any(|(n, _)| n == *k))
            .cloned(),
    );
    if running.web != new.web && !changed.iter().any(|k| k.starts_with("web")) {
        changed.push("web_config_file".into());
    }
    changed
}
