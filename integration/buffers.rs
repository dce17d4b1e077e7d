//! Large answers from real replicas through a proxy that keeps merged answers'
//! buffers for the next ones: each answer read into a kept buffer (which held
//! a larger answer before) is byte for byte what a proxy keeping none sends,
//! and the kept buffers are reused rather than joined by new ones. And a
//! series list large enough to be merged on the blocking pool.

use crate::harness::*;
use crate::proxy_binary;
use std::path::Path;

/// Enough series for range answers over 4 MiB, the smallest buffers kept.
const SERIES: usize = 400;

fn kept_bytes(proxy: &Proxy) -> i64 {
    let (status, text) = http_get(&format!("{}/metrics", proxy.url)).unwrap();
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix("prom_ha_proxy_kept_buffer_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("prom_ha_proxy_kept_buffer_bytes in /metrics")
}

#[test]
fn answers_read_into_kept_buffers_equal_those_of_a_proxy_keeping_none() {
    let tl = Timeline::recent();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("buffers");
    let (a, b) = start_big_replicas(&root, &tl, SERIES);
    // Remembering no coverage counts, so that a query asked again reads the
    // same answers: a's whole range, read into kept buffers, and b's parts
    // around the holes, asked once the counts are in, which take none.
    let keep = |bytes: &str| {
        Proxy::start_with_env(
            proxy_binary(),
            &[&a.url, &b.url],
            &[],
            &[
                ("PROM_HA_PROXY__KEEP_BUFFER_BYTES", bytes),
                ("PROM_HA_PROXY__COVERAGE__REMEMBER_FOR", "0s"),
            ],
        )
    };
    let (keeping, keeping_none) = (keep("1073741824"), keep("0"));
    let agent = agent();
    let all = range_path(&tl, "big_series");
    let fewer = range_path(&tl, "big_series{shard!=\"3\"}");
    let (status, alone) = get_identity(&agent, &format!("{}{all}", a.url));
    assert_eq!(status, 200);
    assert!(
        alone.len() > 4 << 20,
        "{} bytes: too small to be kept",
        alone.len()
    );
    assert_eq!(kept_bytes(&keeping), 0);
    let mut kept_after = 0;
    // The smaller answer lands in buffers that held the larger one. The
    // second query may grow one of them, once (seen once in CI under load,
    // +6 MiB, when both replicas' answers took kept buffers); from the
    // second query on, the kept set holds still.
    let queries = [&all, &fewer, &all, &fewer, &all, &fewer];
    for (i, pq) in queries.into_iter().enumerate() {
        let (status, got) = get_identity(&agent, &format!("{}{pq}", keeping.url));
        assert_eq!(status, 200, "{got}");
        let (status, want) = get_identity(&agent, &format!("{}{pq}", keeping_none.url));
        assert_eq!(status, 200, "{want}");
        assert!(
            got == want,
            "answer {i} differs when read into kept buffers"
        );
        if i == 0 {
            // a's hole is filled from b.
            assert!(got.len() > alone.len());
        }
        let kept = kept_bytes(&keeping);
        match i {
            0 => assert!(kept >= 2 * (4 << 20), "a's body and its table kept: {kept}"),
            1 => assert!(kept <= kept_after + (8 << 20), "{kept} after {kept_after}"),
            _ => assert_eq!(
                kept, kept_after,
                "answer {i} took new buffers, not the kept ones"
            ),
        }
        kept_after = kept;
    }
    assert_eq!(kept_bytes(&keeping_none), 0);
}

#[test]
fn series_lists_over_64_kib_in_all_are_merged_off_the_arbiter_alike() {
    // 1,200 series: two lists of about 70 KB, over INLINE_BYTES in all.
    let tl = Timeline::recent();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("series-lists");
    let (a, b) = start_big_replicas(&root, &tl, 1200);
    let proxy = Proxy::start(proxy_binary(), &[&a.url, &b.url], &[]);
    let agent = agent();
    let series = format!(
        "/api/v1/series?{}",
        query_string(&[
            ("match[]", "big_series"),
            ("start", &tl.start.to_string()),
            ("end", &tl.end.to_string()),
        ])
    );
    let (status, direct) = get_identity(&agent, &format!("{}{series}", a.url));
    assert_eq!(status, 200);
    assert!(
        2 * direct.len() > 64 << 10,
        "{} bytes: merged inline",
        direct.len()
    );
    let (status, merged) = get_identity(&agent, &format!("{}{series}", proxy.url));
    assert_eq!(status, 200, "{merged}");
    let data =
        |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["data"].clone();
    // Each replica lists every series: the union is a's list, each once.
    assert_eq!(data(&merged), data(&direct));
    assert_eq!(data(&merged).as_array().map(Vec::len), Some(1200));
}
