//! The command line: `--check-config` validates a file without starting.

use crate::proxy_binary;
use std::path::Path;
use std::process::Command;

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(proxy_binary())
        .arg("--check-config")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_valid_file_and_names_the_broken_key_of_another() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prom-ha-proxy.toml");
    let (code, stdout, _) = check(&["--config", example.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("configuration valid: 2 upstreams"),
        "{stdout}"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-config");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, toml, key) in [
        (
            "timeout",
            "[upstreams.a]\nurl='http://a:1'\ntimeout='-5s'\n",
            "upstreams.a.timeout",
        ),
        (
            "queue",
            "max_concurrent_queries=0\n[upstreams.a]\nurl='http://a:1'\n",
            "max_concurrent_queries",
        ),
        (
            "unknown",
            "[upstreams.a]\nurl='http://a:1'\ntimeuot='5s'\n",
            "timeuot",
        ),
        ("none", "listen='127.0.0.1:1'\n", "upstreams"),
    ] {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, toml).unwrap();
        let (code, _, stderr) = check(&["--config", file.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(key), "{name}: {stderr}");
    }
}
