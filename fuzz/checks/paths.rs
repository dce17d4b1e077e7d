//! The paths fuzz target's check, shared by `fuzz_targets/paths.rs` and the
//! test suite's replay of `fuzz/corpus/paths/`: arbitrary request paths and
//! methods into the router: it never panics, and whatever it lets through
//! goes upstream as an allow-list entry's own path (`Route::is_canonical`).

use prom_ha_proxy::routes::{ENDPOINTS, route};

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "HEAD", "get"];

/// One fuzz input: a method byte, then the path.
pub fn check_input(input: &[u8]) {
    let Some((&m, path)) = input.split_first() else {
        return;
    };
    let path = String::from_utf8_lossy(path);
    let method = METHODS[usize::from(m) % METHODS.len()];
    let Ok(r) = route(method, &path) else {
        return;
    };
    assert!(
        ENDPOINTS.iter().any(|e| std::ptr::eq(e, r.endpoint)),
        "{path:?}: not an allow-list entry"
    );
    assert!(r.is_canonical(), "{path:?} -> {}", r.upstream_path);
}
