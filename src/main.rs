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
    /// Prometheus web configuration file (YAML: tls_server_config,
    /// basic_auth_users, http_server_config), as Prometheus reads it.
    #[arg(long = "web.config.file", value_name = "FILE")]
    web_config_file: Option<PathBuf>,
    /// Validate the configuration and exit: 0 if it is valid, else 2 with
    /// the error on one line (as `promtool check config` does).
    #[arg(long)]
    check_config: bool,
}

fn main() {
    map_large_buffers_apart();
    env_logger::Builder::new()
        // A malformed request line is answered 400 by actix, which also logs
        // it as an error: any client could fill the operator's log.
        .filter_module("actix_http::h1::dispatcher", log::LevelFilter::Off)
        .parse_env(env_logger::Env::default().default_filter_or("info"))
        .init();
    let args = Args::parse();
    let overrides = Overrides {
        listen: args.listen,
        upstream_urls: args.upstreams,
        web_config_file: args.web_config_file,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("prom-ha-proxy: {e}");
            std::process::exit(2);
        }
    };
    if args.check_config {
        println!(
            "prom-ha-proxy: configuration valid: {} upstreams, listen {}",
            config.upstreams.len(),
            config.listen
        );
        return;
    }
    let source = prom_ha_proxy::reload::Source {
        file: args.config,
        overrides,
    };
    let serving = prom_ha_proxy::http::serve_reloading(config, Some(source));
    if let Err(e) = actix_web::rt::System::new().block_on(serving) {
        eprintln!("prom-ha-proxy: {e}");
        std::process::exit(1);
    }
}

/// Gives every allocation of 4 MiB and more (upstream bodies, their sample
/// tables) a mapping of its own. Growing one then never copies it, and freeing
/// one returns its memory at once. Left alone, glibc raises this threshold to
/// 32 MiB after the first large answer is freed and serves such buffers from
/// its arenas, where tables growing side by side copy and leave holes: 10 MB
/// more peak memory for one 38 MB answer from each of two replicas (measured).
fn map_large_buffers_apart() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}
