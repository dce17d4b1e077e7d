//! Merge cost against the floor: simd-json parsing the same bytes.
//!
//! For each shape and upstream count, the group holds `parse_only` (simd-json
//! tape of every upstream body, nothing else) and `merge` (our parse into
//! spans + series map + output written). Their ratio is the figure the
//! performance issue tracks. Sizes: BENCH_MB (default "2,20") megabytes per
//! upstream body.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prom_ha_proxy::merge::answer::{Answer, PADDING};
use prom_ha_proxy::merge::coverage::StepMask;
use prom_ha_proxy::merge::{AllEligible, Eligibility, MergeOptions, Upstream, merge};
use std::fmt::Write;

/// A matrix answer: `series` series of `points` samples, replica `r` of `n`
/// missing its own tenth of the time range (so the merge has gaps to fill).
fn matrix(series: usize, points: usize, r: usize, n: usize) -> Vec<u8> {
    let mut out = String::from(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    let hole = (points * r / n.max(1))..(points * r / n.max(1) + points / 10);
    for s in 0..series {
        if s > 0 {
            out.push(',');
        }
        write!(
            out,
            r#"{{"metric":{{"__name__":"http_requests_total","code":"{}","instance":"host-{}:9100","job":"api","method":"{}"}},"values":["#,
            [200, 404, 500][s % 3],
            s / 6,
            ["GET", "POST"][s % 2]
        )
        .unwrap();
        let mut first = true;
        for p in (0..points).filter(|p| !hole.contains(p)) {
            if !first {
                out.push(',');
            }
            first = false;
            write!(
                out,
                r#"[{}.{:03},"{}"]"#,
                1_700_000_000 + p * 15,
                (s * 7) % 1000,
                (p * (s + 1)) as f64 * 0.25
            )
            .unwrap();
        }
        out.push_str("]}");
    }
    out.push_str("]}}");
    out.into_bytes()
}

/// A coverage answer saying `complete` samples over 4 targets at each of `points` steps.
fn coverage(points: usize, complete: f64) -> Answer {
    let series = |kind: &str, v: f64| {
        let values: Vec<String> = (0..points)
            .map(|p| format!("[{},\"{v}\"]", 1_700_000_000 + p * 15))
            .collect();
        format!(
            "{{\"metric\":{{\"__prom_ha_proxy_coverage__\":\"{kind}\"}},\"values\":[{}]}}",
            values.join(",")
        )
    };
    let body = format!(
        "{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":[{},{}]}}}}",
        series("samples", complete),
        series("series", 4.0)
    );
    Answer::parse(body.into_bytes()).unwrap()
}

/// Parses the bodies and merges them under `eligibility`.
fn parse_and_merge<E: Eligibility>(
    bufs: Vec<Vec<u8>>,
    bodies: &[Vec<u8>],
    eligibility: &E,
) -> Vec<u8> {
    let answers: Vec<Answer> = bufs
        .into_iter()
        .zip(bodies)
        .map(|(buf, body)| Answer::parse_padded(buf, body.len()).unwrap())
        .collect();
    let ups: Vec<Upstream<'_>> = answers
        .iter()
        .map(|a| Upstream {
            name: "u",
            answer: Some(a),
        })
        .collect();
    let mut out = Vec::new();
    merge(&ups, &[], &MergeOptions::default(), eligibility, &mut out).unwrap();
    out
}

fn padded(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + PADDING);
    v.extend_from_slice(body);
    v.resize(body.len() + PADDING, 0);
    v
}

fn bench(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("BENCH_MB")
        .unwrap_or_else(|_| "2,20".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // (shape, points per series): many short series, few long series.
    let shapes = [("many_short", 60usize), ("few_long", 11_000usize)];
    for mb in sizes {
        for (shape, points) in shapes {
            // ~34 bytes per sample: size the series count to the target body size.
            let series = ((mb << 20) / (points * 34)).max(1);
            for n in [2usize, 3, 5] {
                let bodies: Vec<Vec<u8>> = (0..n).map(|r| matrix(series, points, r, n)).collect();
                let total: usize = bodies.iter().map(Vec::len).sum();
                let mut group = c.benchmark_group(format!("matrix_{shape}_{mb}MB_x{n}"));
                group
                    .sample_size(10)
                    .throughput(Throughput::Bytes(total as u64));
                group.bench_function("parse_only", |b| {
                    b.iter_batched(
                        || bodies.iter().map(|x| padded(x)).collect::<Vec<_>>(),
                        |mut bufs| {
                            let mut buffers = simd_json::Buffers::new(0);
                            for (buf, body) in bufs.iter_mut().zip(&bodies) {
                                let mut tape = simd_json::Tape::null();
                                simd_json::fill_tape_padded(
                                    buf,
                                    body.len(),
                                    &mut buffers,
                                    &mut tape,
                                )
                                .unwrap();
                                std::hint::black_box(&tape);
                            }
                        },
                        BatchSize::PerIteration,
                    )
                });
                group.bench_function("index_only", |b| {
                    b.iter_batched(
                        || bodies.iter().map(|x| padded(x)).collect::<Vec<_>>(),
                        |bufs| {
                            for (buf, body) in bufs.into_iter().zip(&bodies) {
                                let answer = Answer::parse_padded(buf, body.len()).unwrap();
                                std::hint::black_box(&answer);
                            }
                        },
                        BatchSize::PerIteration,
                    )
                });
                group.bench_function("merge", |b| {
                    b.iter_batched(
                        || bodies.iter().map(|x| padded(x)).collect::<Vec<_>>(),
                        |bufs| std::hint::black_box(parse_and_merge(bufs, &bodies, &AllEligible)),
                        BatchSize::PerIteration,
                    )
                });
                // The path queries take with the coverage-aware merge on: every
                // sample asks the step mask (built here from coverage answers
                // in which the last upstream is one sample short everywhere).
                let covs: Vec<Answer> = (0..n)
                    .map(|r| coverage(points, if r + 1 == n { 79.0 } else { 80.0 }))
                    .collect();
                let cov_refs: Vec<Option<&Answer>> = covs.iter().map(Some).collect();
                let mask = StepMask::from_coverage(
                    &cov_refs,
                    &vec![true; n],
                    "__prom_ha_proxy_coverage__",
                );
                group.bench_function("merge_masked", |b| {
                    b.iter_batched(
                        || bodies.iter().map(|x| padded(x)).collect::<Vec<_>>(),
                        |bufs| std::hint::black_box(parse_and_merge(bufs, &bodies, &mask)),
                        BatchSize::PerIteration,
                    )
                });
                group.finish();
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
