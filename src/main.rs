//! The `prom-ha-proxy` command: reads the configuration, starts the supervisor
//! and its backends, and serves the Prometheus API.

use clap::Parser;
use prom_ha_proxy::config::{Config, Overrides};
use std::path::PathBuf;

/// A high-availability query proxy for Prometheus: sends each query to every
/// replica and merges the answers, so a hole in one is filled from the others.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Upstream Prometheus base URLs, highest priority first (replace any in the config).
    upstreams: Vec<String>,
    /// TOML configuration file (see config/prom-ha-proxy.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:9090].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let overrides = Overrides {
        listen: args.listen,
        upstream_urls: args.upstreams,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("prom-ha-proxy: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = actix_web::rt::System::new().block_on(prom_ha_proxy::http::serve(config)) {
        eprintln!("prom-ha-proxy: {e}");
        std::process::exit(1);
    }
}
