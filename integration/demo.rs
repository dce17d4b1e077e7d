//! The demo: two real Prometheus replicas, each with a different hole in its
//! data, a gap-free reference, and prom-ha-proxy in front of the replicas.
//!
//! Run with `scripts/demo` (installs Prometheus if needed). Ctrl-C stops all.

#[path = "harness.rs"]
mod harness;

use harness::*;
use prom_ha_proxy::config::{Config, Overrides};
use std::path::Path;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".to_string());
    let tl = Timeline::recent();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/demo");
    println!("Backfilling three Prometheus servers with 3 hours of data…");
    let (a, b) = start_replicas(&root, &tl);
    let reference = Prometheus::start(
        "reference",
        &root.join("reference"),
        &openmetrics(&tl, &[], PHASE_S),
    );
    let config = Config::load(
        None,
        &Overrides {
            listen: Some(listen.clone()),
            upstream_urls: vec![a.url.clone(), b.url.clone()],
            ..Default::default()
        },
    )
    .expect("demo config");
    let in_hole = tl.hole_a.start + 12 * 60;
    let q = "query=count(up)";
    println!(
        "
  replica a  {a}   (misses {ha0}..{ha1}, 20 minutes)
  replica b  {b}   (misses {hb0}..{hb1}, 15 minutes)
  reference  {r}   (misses nothing)
  proxy      http://{listen}   (in front of a, then b)

Inside replica a's hole, a alone knows nothing:
  curl -s '{a}/api/v1/query?{q}&time={in_hole}'
The proxy fills the hole from b, and agrees with the reference:
  curl -s 'http://{listen}/api/v1/query?{q}&time={in_hole}'
  curl -s '{r}/api/v1/query?{q}&time={in_hole}'
A range over both holes, as Grafana asks for it:
  curl -s 'http://{listen}/api/v1/query_range' --data-urlencode 'query=sum(rate(http_requests_total[5m]))' -d start={s} -d end={e} -d step=60
Grafana's label browser, series and metadata, merged:
  curl -s 'http://{listen}/api/v1/label/__name__/values?start={s}&end={e}'
The proxy's own status page, metrics and readiness:
  http://{listen}/    http://{listen}/metrics    http://{listen}/-/ready

Ctrl-C to stop.",
        a = a.url,
        b = b.url,
        r = reference.url,
        ha0 = tl.hole_a.start,
        ha1 = tl.hole_a.end,
        hb0 = tl.hole_b.start,
        hb1 = tl.hole_b.end,
        s = tl.start,
        e = tl.end,
    );
    let result = actix_web::rt::System::new().block_on(prom_ha_proxy::http::serve(config));
    if let Err(e) = result {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
    drop((a, b, reference));
}
