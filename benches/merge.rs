//! Merge cost against the floor: simd-json parsing the same bytes.
//!
//! One criterion group per shape, body size and upstream count, holding
//! `parse_only` (simd-json's tape of every upstream body, nothing else) and
//! `merge` (our parse + series map + output written); for query answers also
//! `index_only` (our parse alone) and `merge_masked` (the coverage-aware path).
//! The ratio merge / parse_only is the figure the performance issue tracks;
//! `scripts/bench-ratios` prints it as a table.
//!
//! Environment: BENCH_MB (default "2,20") megabytes per upstream body;
//! BENCH_N (default "2,3,5") upstream counts; BENCH_SHAPES (default all) a
//! comma list of the shapes below.

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use prom_ha_proxy::answer::{Answer, PADDING};
use prom_ha_proxy::merge::coverage::{Coverage, StepMask};
use prom_ha_proxy::merge::meta::{self, MetaAnswer, MetaKind, MetaOptions};
use prom_ha_proxy::merge::{AllEligible, Eligibility, MergeOptions, Upstream, merge};
use std::fmt::Write;
use std::time::Duration;

/// What one upstream answer holds.
#[derive(Clone, Copy)]
enum Shape {
    /// A matrix of float series, `points` samples each.
    Floats { points: usize },
    /// A matrix of classic histogram buckets (`le` labels), `points` samples each.
    Buckets { points: usize },
    /// A matrix of native histograms (`histograms`), `points` samples each.
    Native { points: usize },
    /// An instant vector: one sample per series.
    Vector,
    /// A `label/<name>/values` answer.
    LabelValues,
}

const SHAPES: [(&str, Shape); 6] = [
    ("many_short", Shape::Floats { points: 60 }),
    ("few_long", Shape::Floats { points: 11_000 }),
    ("buckets", Shape::Buckets { points: 240 }),
    ("native", Shape::Native { points: 240 }),
    ("vector", Shape::Vector),
    ("label_values", Shape::LabelValues),
];

const LE: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

/// Writes series `s`'s metric; returns its label values in label-name order
/// (`\0`-separated), which sorts the way Prometheus sorts series.
fn labels(out: &mut String, shape: Shape, s: usize) -> String {
    let le = match shape {
        Shape::Buckets { .. } => Some(LE[s % LE.len()]),
        _ => None,
    };
    let bucket = le.map(|le| format!(r#","le":"{le}""#)).unwrap_or_default();
    let (code, instance, method) = (
        [200, 404, 500][s % 3],
        format!("host-{}:9100", s / 6),
        ["GET", "POST"][s % 2],
    );
    write!(
        out,
        r#"{{"metric":{{"__name__":"http_requests_total","code":"{code}","instance":"{instance}","job":"api"{bucket},"method":"{method}"}},"#,
    )
    .unwrap();
    format!("{code}\0{instance}\0api\0{}\0{method}", le.unwrap_or(""))
}

/// Replica `r` of `n` of an answer of about `bytes` bytes (or exactly
/// `series` series when given), each replica missing its own tenth of the
/// time range, or of the list, so the merge has gaps to fill. Matrix series
/// come sorted by label set, as Prometheus sends them; vector series do not
/// (the merge's slower path). Returns the body and its series count.
fn answer(
    shape: Shape,
    bytes: usize,
    series: Option<usize>,
    r: usize,
    n: usize,
) -> (Vec<u8>, usize) {
    let points = match shape {
        Shape::Floats { points } | Shape::Buckets { points } | Shape::Native { points } => points,
        Shape::Vector | Shape::LabelValues => 10,
    };
    let hole = (points * r / n)..(points * r / n + points / 10);
    let head = match shape {
        Shape::Vector => r#"{"status":"success","data":{"resultType":"vector","result":["#,
        Shape::LabelValues => r#"{"status":"success","data":["#,
        _ => r#"{"status":"success","data":{"resultType":"matrix","result":["#,
    };
    let mut out = String::from(head);
    let mut pieces: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    let mut s = 0;
    let more = |s: usize, len: usize| match series {
        Some(count) => s < count,
        None => len < bytes,
    };
    while more(s, out.len()) {
        if s > 0 {
            out.push(',');
        }
        let t = |p: usize| format!("{}.{:03}", 1_700_000_000 + p * 15, (s * 7) % 1000);
        match shape {
            Shape::LabelValues => {
                // Each replica lacks its own tenth of the values (never the first).
                if s % (n * 10) == r + 1 {
                    out.pop();
                } else {
                    write!(out, r#""value-{s:09}""#).unwrap();
                }
            }
            Shape::Vector => {
                labels(&mut out, shape, s);
                write!(out, r#""value":[{},"{}"]}}"#, t(0), s as f64 * 0.25).unwrap();
            }
            Shape::Floats { .. } | Shape::Buckets { .. } | Shape::Native { .. } => {
                let native = matches!(shape, Shape::Native { .. });
                let start = out.len();
                let key = labels(&mut out, shape, s);
                out.push_str(if native {
                    r#""histograms":["#
                } else {
                    r#""values":["#
                });
                let mut first = true;
                for p in (0..points).filter(|p| !hole.contains(p)) {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    let c = p * (s + 1);
                    if native {
                        write!(
                            out,
                            r#"[{},{{"count":"{}","sum":"{}","buckets":[[0,"0.5","1","{c}"],[0,"1","2","{c}"],[0,"2","4","{c}"]]}}]"#,
                            t(p),
                            3 * c,
                            c as f64 * 1.5,
                        )
                        .unwrap();
                    } else {
                        write!(out, r#"[{},"{}"]"#, t(p), c as f64 * 0.25).unwrap();
                    }
                }
                out.push_str("]}");
                pieces.push((key, start..out.len()));
            }
        }
        s += 1;
    }
    if !pieces.is_empty() {
        pieces.sort_by(|a, b| a.0.cmp(&b.0));
        let series: Vec<&str> = pieces.iter().map(|(_, r)| &out[r.clone()]).collect();
        out = format!("{head}{}", series.join(","));
    }
    out.push_str(match shape {
        Shape::LabelValues => "]}",
        _ => "]}}",
    });
    (out.into_bytes(), s)
}

/// Coverage saying `complete` samples over 4 targets at each of `points` steps.
fn coverage(points: usize, complete: f64) -> Coverage {
    Coverage::from_counts(
        (0..points).map(|p| ((1_700_000_000 + p as i64 * 15) * 1000, complete, 4.0)),
    )
}

/// `n` upstream answers of `shape`, the first of about `mb` MB.
fn bodies(shape: Shape, mb: usize, n: usize) -> Vec<Vec<u8>> {
    let (first, series) = answer(shape, mb << 20, None, 0, n);
    let mut bodies = vec![first];
    bodies.extend((1..n).map(|r| answer(shape, 0, Some(series), r, n).0));
    bodies
}

/// The floor: simd-json's tape of every body, nothing else.
fn tape_all(bufs: &mut [Vec<u8>], bodies: &[Vec<u8>]) {
    let mut buffers = simd_json::Buffers::new(0);
    for (buf, body) in bufs.iter_mut().zip(bodies) {
        let mut tape = simd_json::Tape::null();
        simd_json::fill_tape_padded(buf, body.len(), &mut buffers, &mut tape).unwrap();
        std::hint::black_box(&tape);
    }
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

/// Parses the bodies as label-value answers and merges them.
fn parse_and_merge_values(mut bufs: Vec<Vec<u8>>, bodies: &[Vec<u8>]) -> Vec<u8> {
    let tapes: Vec<_> = bufs
        .iter_mut()
        .zip(bodies)
        .map(|(buf, body)| {
            buf.truncate(body.len());
            meta::parse(buf).unwrap()
        })
        .collect();
    let answers: Vec<Option<MetaAnswer<'_, '_>>> = tapes
        .iter()
        .map(|t| Some(MetaAnswer::read(MetaKind::LabelValues, t).unwrap()))
        .collect();
    let opts = MetaOptions {
        replica_labels: &[],
        limit: None,
        limit_per_metric: None,
    };
    let mut out = Vec::new();
    meta::merge_meta(MetaKind::LabelValues, &answers, &[], &opts, &mut out);
    out
}

fn padded(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + PADDING);
    v.extend_from_slice(body);
    v.resize(body.len() + PADDING, 0);
    v
}

fn list<T: std::str::FromStr>(var: &str, default: &str) -> Vec<T> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn bench(c: &mut Criterion) {
    let sizes: Vec<usize> = list("BENCH_MB", "2,20");
    let counts: Vec<usize> = list("BENCH_N", "2,3,5");
    let wanted: Vec<String> = list("BENCH_SHAPES", "");
    for mb in sizes {
        for (name, shape) in SHAPES {
            if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
                continue;
            }
            for &n in &counts {
                let bodies = bodies(shape, mb, n);
                let total: usize = bodies.iter().map(Vec::len).sum();
                let mut group = c.benchmark_group(format!("{name}_{mb}MB_x{n}"));
                group
                    .sample_size(10)
                    .warm_up_time(Duration::from_millis(500))
                    .measurement_time(Duration::from_secs(2))
                    .throughput(Throughput::Bytes(total as u64));
                let fresh = || bodies.iter().map(|x| padded(x)).collect::<Vec<_>>();
                group.bench_function("parse_only", |b| {
                    b.iter_batched(
                        fresh,
                        |mut bufs| tape_all(&mut bufs, &bodies),
                        BatchSize::PerIteration,
                    )
                });
                if let Shape::LabelValues = shape {
                    group.bench_function("merge", |b| {
                        b.iter_batched(
                            fresh,
                            |bufs| std::hint::black_box(parse_and_merge_values(bufs, &bodies)),
                            BatchSize::PerIteration,
                        )
                    });
                    group.finish();
                    continue;
                }
                group.bench_function("index_only", |b| {
                    b.iter_batched(
                        fresh,
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
                        fresh,
                        |bufs| std::hint::black_box(parse_and_merge(bufs, &bodies, &AllEligible)),
                        BatchSize::PerIteration,
                    )
                });
                // The path queries take with the coverage-aware merge on: every
                // sample asks the step mask (built here from coverage answers
                // in which the last upstream is one sample short everywhere).
                let points = match shape {
                    Shape::Floats { points }
                    | Shape::Buckets { points }
                    | Shape::Native { points } => points,
                    _ => 1,
                };
                let covs: Vec<Coverage> = (0..n)
                    .map(|r| coverage(points, if r + 1 == n { 79.0 } else { 80.0 }))
                    .collect();
                let cov_refs: Vec<Option<&Coverage>> = covs.iter().map(Some).collect();
                let mask = StepMask::from_coverage(&cov_refs, &vec![true; n], None);
                group.bench_function("merge_masked", |b| {
                    b.iter_batched(
                        fresh,
                        |bufs| std::hint::black_box(parse_and_merge(bufs, &bodies, &mask)),
                        BatchSize::PerIteration,
                    )
                });
                group.finish();
            }
        }
    }
}

/// `BENCH_PAIRED=<rounds>`: each matrix group's parse_only and merge timed
/// one after the other (in turn first), round after round, and the median
/// of the rounds' ratios printed beside each one's median. On this shared
/// machine one function's median, taken in criterion's window of seconds,
/// drifts by a third from one run to the next at 2 MB (parse_only of
/// few_long 2 MB x 2: 6.3 to 8.2 ms in five runs); a ratio within one round
/// drifts with both.
fn paired(rounds: usize) {
    let sizes: Vec<usize> = list("BENCH_MB", "2,20");
    let counts: Vec<usize> = list("BENCH_N", "2,3,5");
    let wanted: Vec<String> = list("BENCH_SHAPES", "many_short,few_long,buckets,native");
    println!("| group | parse_only ms | merge ms | merge / parse, paired | p10 .. p90 |");
    println!("|---|---|---|---|---|");
    let median = |mut xs: Vec<f64>, q: f64| {
        xs.sort_by(f64::total_cmp);
        xs[((xs.len() - 1) as f64 * q).round() as usize]
    };
    for mb in sizes {
        for (name, shape) in SHAPES {
            let matrix = matches!(
                shape,
                Shape::Floats { .. } | Shape::Buckets { .. } | Shape::Native { .. }
            );
            if !matrix || !wanted.iter().any(|w| w == name) {
                continue;
            }
            for &n in &counts {
                let bodies = bodies(shape, mb, n);
                let fresh = || bodies.iter().map(|x| padded(x)).collect::<Vec<_>>();
                // As criterion times them: the input buffers freed within,
                // the merged output after.
                let parse = || {
                    let mut bufs = fresh();
                    let t = std::time::Instant::now();
                    tape_all(&mut bufs, &bodies);
                    drop(bufs);
                    t.elapsed().as_secs_f64() * 1e3
                };
                let merge = || {
                    let bufs = fresh();
                    let t = std::time::Instant::now();
                    let out = std::hint::black_box(parse_and_merge(bufs, &bodies, &AllEligible));
                    let took = t.elapsed().as_secs_f64() * 1e3;
                    drop(out);
                    took
                };
                // One of each first, unmeasured: the allocator's and the caches' warm-up.
                parse();
                merge();
                let (mut p, mut m, mut r) = (Vec::new(), Vec::new(), Vec::new());
                for round in 0..rounds {
                    let (pt, mt) = if round % 2 == 0 {
                        let pt = parse();
                        (pt, merge())
                    } else {
                        let mt = merge();
                        (parse(), mt)
                    };
                    p.push(pt);
                    m.push(mt);
                    r.push(mt / pt);
                }
                println!(
                    "| {name}_{mb}MB_x{n} | {:.2} | {:.2} | {:.3} | {:.2} .. {:.2} |",
                    median(p, 0.5),
                    median(m, 0.5),
                    median(r.clone(), 0.5),
                    median(r.clone(), 0.1),
                    median(r, 0.9)
                );
            }
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    match std::env::var("BENCH_PAIRED")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        Some(rounds) => paired(rounds),
        None => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
