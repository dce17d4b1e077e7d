//! The Kubernetes manifests in `deploy/kubernetes/` hold together: the
//! ConfigMap's TOML passes `--check-config`, the container's arguments parse,
//! every probe path is one the proxy serves, and the objects point at each
//! other.

use crate::harness::*;
use crate::{cluster, proxy_binary};
use serde_yaml_ng::Value;
use std::path::Path;
use std::process::Command;

fn manifest(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

#[test]
fn the_kubernetes_manifests_check_out_against_the_binary() {
    let (config, deployment) = (manifest("configmap.yaml"), manifest("deployment.yaml"));
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];

    // The mounted file, where the container's arguments name it.
    let mount = text(&container["volumeMounts"][0]["mountPath"]);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubernetes");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = text(&config["data"]["prom-ha-proxy.toml"]);
    let file = dir.join("prom-ha-proxy.toml");
    std::fs::write(&file, toml).unwrap();
    assert!(
        toml.contains("dnssrv+http://_web._tcp.prometheus-operated.monitoring.svc.cluster.local")
    );
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| text(a).replace(mount, dir.to_str().unwrap()))
        .collect();
    assert!(
        args.iter().any(|a| a.ends_with("prom-ha-proxy.toml")),
        "{args:?}"
    );
    let out = Command::new(proxy_binary())
        .args(&args)
        .arg("--check-config")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("configuration valid: 1 upstreams"), "{said}");

    // Every probe path is served: by the router, and by a running proxy.
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = text(&container[probe]["httpGet"]["path"]);
        assert!(
            prom_ha_proxy::routes::route("GET", path).is_ok(),
            "{probe} {path}"
        );
        let (status, body) = http_get(&format!("{}{path}", cluster().proxy.url)).unwrap();
        assert_eq!(status, 200, "{probe} {path}: {body}");
        assert_eq!(text(&container[probe]["httpGet"]["port"]), "http");
    }
    assert_eq!(text(&container["ports"][0]["name"]), "http");
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(9090));

    // Non-root, read-only, bounded; two replicas; Service and PDB select them.
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    for kind in ["requests", "limits"] {
        assert!(container["resources"][kind]["memory"].is_string(), "{kind}");
    }
    let labels = &spec_labels(&deployment);
    assert_eq!(&manifest("service.yaml")["spec"]["selector"], labels);
    assert_eq!(
        &manifest("pdb.yaml")["spec"]["selector"]["matchLabels"],
        labels
    );
    assert_eq!(
        text(&manifest("service.yaml")["spec"]["ports"][0]["targetPort"]),
        "http"
    );
}

fn spec_labels(deployment: &Value) -> Value {
    let labels = deployment["spec"]["template"]["metadata"]["labels"].clone();
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], labels);
    labels
}
