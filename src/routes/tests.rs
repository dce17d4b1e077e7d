use super::*;

#[path = "../../integration/spellings.rs"]
mod spellings;

/// Prometheus' read endpoints below `/api/v1` and the methods it serves each
/// with, as its API registers them in 2.x and 3.x (web/api/v1/api.go and the
/// OpenAPI path list of 3.x). `/read` (remote read, protobuf) and
/// `/notifications/live` (a server-sent event stream) are read endpoints the
/// proxy does not serve.
const PROMETHEUS_READ_ENDPOINTS: [(&str, &[&str]); 25] = [
    ("/query", &["GET", "POST"]),
    ("/query_range", &["GET", "POST"]),
    ("/query_exemplars", &["GET", "POST"]),
    ("/format_query", &["GET", "POST"]),
    ("/parse_query", &["GET", "POST"]),
    ("/labels", &["GET", "POST"]),
    ("/label/{name}/values", &["GET"]),
    ("/series", &["GET", "POST"]),
    ("/metadata", &["GET"]),
    ("/scrape_pools", &["GET"]),
    ("/targets", &["GET"]),
    ("/targets/metadata", &["GET"]),
    ("/targets/relabel_steps", &["GET"]),
    ("/rules", &["GET"]),
    ("/alerts", &["GET"]),
    ("/alertmanagers", &["GET"]),
    ("/status/config", &["GET"]),
    ("/status/runtimeinfo", &["GET"]),
    ("/status/buildinfo", &["GET"]),
    ("/status/flags", &["GET"]),
    ("/status/tsdb", &["GET"]),
    ("/status/tsdb/blocks", &["GET"]),
    ("/status/walreplay", &["GET"]),
    ("/notifications", &["GET"]),
    ("/read", &["POST"]),
];

#[test]
fn every_upstream_entry_is_a_prometheus_read_endpoint_served_as_prometheus_serves_it() {
    let upstream = ENDPOINTS
        .iter()
        .filter(|e| !matches!(e.handling, Handling::Local(_)));
    for e in upstream {
        let below = e.pattern.strip_prefix("/api/v1").expect(e.pattern);
        let (_, methods) = PROMETHEUS_READ_ENDPOINTS
            .iter()
            .find(|(p, _)| *p == below)
            .unwrap_or_else(|| panic!("{} is not a Prometheus read endpoint", e.pattern));
        assert_eq!(e.upstream_post, methods.contains(&"POST"), "{}", e.pattern);
        assert!(methods.contains(&"GET"), "{}", e.pattern);
    }
    let locals = ENDPOINTS
        .iter()
        .filter(|e| matches!(e.handling, Handling::Local(_)));
    let paths: Vec<&str> = locals.map(|e| e.pattern).collect();
    assert_eq!(paths, ["/", "/-/healthy", "/-/ready", "/metrics"]);
}

#[test]
fn no_entry_names_a_state_changing_path() {
    for e in ENDPOINTS {
        assert!(!names_state_changing(e.pattern), "{}", e.pattern);
        for word in ["admin", "write", "otlp", "reload", "quit", "read"] {
            let segments: Vec<&str> = e.pattern.split('/').collect();
            assert!(!segments.contains(&word), "{}", e.pattern);
        }
    }
}

#[test]
fn every_spelling_of_a_state_changing_path_is_refused_with_any_method() {
    let mut read_only = 0;
    let mut total = 0;
    for (path, _) in spellings::STATE_CHANGING {
        for spelling in spellings::spellings(path) {
            for method in spellings::METHODS {
                let decision = route(method, &spelling);
                assert!(decision.is_err(), "{method} {spelling}: {decision:?}");
                read_only += usize::from(decision == Err(Refusal::ReadOnly));
                total += 1;
            }
        }
    }
    // Most are named read-only; the rest (a `;` or `#` glued to the last
    // segment) name no path Prometheus serves either, and are 404s.
    assert!(total > 2000, "{total}");
    assert!(read_only * 10 > total * 9, "{read_only} of {total}");
}

#[test]
fn paths_spelled_to_mislead_are_bad_data() {
    for (path, why) in [
        ("/api/v1/query/", "empty segment"),
        ("//api/v1/query", "empty segment"),
        ("/api/v1//query", "empty segment"),
        ("/api/v1/./query", "dot segment"),
        ("/api/v1/x/../query", "dot segment"),
        ("/api/v1/label/%2e%2e/values", "encoded ."),
        ("/api/v1/label/a%2Fb/values", "encoded /"),
        ("/api/v1/label/a%252Fb/values", "encoded %"),
        ("/api/v1/label/a%5cb/values", "encoded backslash"),
        ("/api/v1\\query", "backslash"),
        ("/api/v1/label/a%0ab/values", "control character"),
        ("/api/v1/label/a%zzb/values", "malformed percent escape"),
        ("/api/v1/label/%ff/values", "not UTF-8"),
        ("api/v1/query", "does not start with /"),
    ] {
        match route("GET", path) {
            Err(Refusal::BadPath(reason)) => assert!(reason.contains(why), "{path}: {reason}"),
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[test]
fn the_upstream_path_is_built_from_the_entry_and_the_decoded_parameter() {
    let cases = [
        ("/api/v1/query", "/api/v1/query"),
        ("/api/v1/label/job/values", "/api/v1/label/job/values"),
        ("/api/v1/label/%6Aob/values", "/api/v1/label/job/values"),
        (
            "/api/v1/label/U__a_2e_b/values",
            "/api/v1/label/U__a_2e_b/values",
        ),
        ("/api/v1/label/a%20b/values", "/api/v1/label/a%20b/values"),
        (
            "/api/v1/label/caf%C3%A9/values",
            "/api/v1/label/caf%C3%A9/values",
        ),
        ("/api/v1/%73tatus/flags", "/api/v1/status/flags"),
        ("/", "/"),
    ];
    for (raw, upstream) in cases {
        let r = route("GET", raw).unwrap_or_else(|e| panic!("{raw}: {e:?}"));
        assert_eq!(r.upstream_path, upstream, "{raw}");
        assert_eq!(route("GET", upstream).unwrap(), r, "{raw}: not canonical");
    }
    let label = route("POST", "/api/v1/label/job/values").unwrap();
    assert_eq!(
        label.endpoint.handling,
        Handling::Merged(MetaKind::LabelValues)
    );
}

#[test]
fn unknown_paths_are_not_found_and_other_methods_not_allowed() {
    for path in [
        "/api/v1/no_such_endpoint",
        "/federate",
        "/api/v1/read",
        "/api/v1/notifications/live",
        "/API/V1/QUERY",
        "/graph",
    ] {
        assert_eq!(route("GET", path), Err(Refusal::NotFound), "{path}");
    }
    for (method, path) in [
        ("PUT", "/api/v1/query"),
        ("DELETE", "/api/v1/series"),
        ("HEAD", "/api/v1/labels"),
        ("POST", "/-/healthy"),
        ("POST", "/metrics"),
    ] {
        assert_eq!(route(method, path), Err(Refusal::Method), "{method} {path}");
    }
    for (method, path) in [("GET", "/-/ready"), ("POST", "/api/v1/status/config")] {
        assert!(route(method, path).is_ok(), "{method} {path}");
    }
}

/// The fuzz target's promise, on paths stitched from the pieces a bypass is
/// made of (a bounded, seeded run; `scripts/fuzz 120 paths` searches longer).
#[test]
fn whatever_is_let_through_goes_upstream_as_an_entrys_own_path() {
    const PIECES: [&str; 23] = [
        "api", "v1", "admin", "tsdb", "snapshot", "label", "values", "query", "status", "-",
        "quit", ".", "..", "%2F", "%2e", "%25", "%5C", "\\", "%41", "job", "%C3%A9", "?", ";",
    ];
    let mut rng = fastrand::Rng::with_seed(29);
    let mut let_through = 0;
    for _ in 0..200_000 {
        // Half start from an allowed path, so that much gets through at all.
        let mut path = match rng.bool() {
            true => ENDPOINTS[rng.usize(..ENDPOINTS.len())]
                .pattern
                .replace("{name}", "job"),
            false => String::new(),
        };
        for _ in 0..rng.usize(0..4) {
            let at = rng.usize(..=path.len());
            if !path.is_char_boundary(at) {
                continue;
            }
            let glue = ["/", "", "/"][rng.usize(..3)];
            path.insert_str(at, &format!("{glue}{}", PIECES[rng.usize(..PIECES.len())]));
        }
        let method = ["GET", "POST", "PUT"][rng.usize(..3)];
        if let Ok(r) = route(method, &path) {
            assert!(r.is_canonical(), "{path:?} -> {}", r.upstream_path);
            assert!(!names_state_changing(&r.upstream_path), "{path:?}");
            let_through += 1;
        }
    }
    assert!(let_through > 100, "{let_through}");
}
