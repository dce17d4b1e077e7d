//! The comparison every correctness test makes between an answer and the
//! reference's. It must be able to fail: the planted-defect tests at the
//! end show it reports each defect it exists to catch.
//!
//! - Values: equal, or within rounding (servers sum in their own order);
//!   a value of Unix-time magnitude is a time and gets 1 ms, not a relative
//!   tolerance (1e-5 of 1.8e9 s would be five hours).
//! - Series: the result type is part of the answer; a series twice in one
//!   answer is a defect, never folded.
//! - Order: for an outermost `sort`, `sort_desc`, `topk` or `bottomk`, the
//!   values must come in the reference's order ([`order_differs`]).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// An answer's samples: label set → timestamp (ms) → value (read as that
/// map), and its result type, so two answers of different types differ
/// however alike their samples are.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Points {
    pub kind: String,
    pub series: BTreeMap<String, BTreeMap<i64, f64>>,
}

impl std::ops::Deref for Points {
    type Target = BTreeMap<String, BTreeMap<i64, f64>>;

    fn deref(&self) -> &Self::Target {
        &self.series
    }
}

fn ms(t: &Value) -> i64 {
    (t.as_f64().unwrap() * 1000.0).round() as i64
}

fn val(s: &Value) -> f64 {
    s.as_str()
        .unwrap()
        .replace("+Inf", "inf")
        .parse::<f64>()
        .unwrap()
}

/// Every sample of a matrix, vector or scalar answer, or why it is malformed.
pub fn try_points(v: &Value) -> Result<Points, String> {
    let kind = v["data"]["resultType"].as_str().ok_or("no resultType")?;
    let mut out = Points {
        kind: kind.to_string(),
        series: BTreeMap::new(),
    };
    let result = &v["data"]["result"];
    match kind {
        "matrix" | "vector" => {
            for s in result.as_array().ok_or("result is not a list")? {
                let key = s["metric"].to_string();
                if out.contains_key(&key) {
                    return Err(format!("series {key} twice in one answer"));
                }
                let e = out.series.entry(key.clone()).or_default();
                let samples = match kind {
                    "matrix" => s["values"].as_array().cloned().unwrap_or_default(),
                    _ => vec![s["value"].clone()],
                };
                for p in &samples {
                    if e.insert(ms(&p[0]), val(&p[1])).is_some() {
                        return Err(format!("sample at {} twice in {key}", p[0]));
                    }
                }
            }
        }
        _ => {
            out.series
                .entry(String::new())
                .or_default()
                .insert(ms(&result[0]), val(&result[1]));
        }
    }
    Ok(out)
}

/// [`try_points`], asserting the answer is well formed.
pub fn points(v: &Value) -> Points {
    try_points(v).unwrap_or_else(|e| panic!("{e}: {v}"))
}

/// Equal but for rounding: servers sum series in their own order, and a
/// variance of nearly equal values is rounding noise near zero (1e-32 vs
/// 3e-32). Times (`timestamp()`, `time()`: values from 1e8 to 1e11) get an
/// absolute millisecond.
pub fn same(x: f64, y: f64) -> bool {
    if (x.is_nan() && y.is_nan()) || x == y {
        return true;
    }
    let big = x.abs().max(y.abs());
    if (1e8..1e11).contains(&big) {
        return (x - y).abs() <= 1e-3;
    }
    (x - y).abs() <= 1e-12 + 1e-5 * big
}

/// Compares every point; returns the timestamps (seconds) where they differ.
pub fn differences(got: &Points, want: &Points) -> Vec<(String, i64)> {
    let mut diffs = Vec::new();
    if got.kind != want.kind {
        diffs.push((format!("resultType {} for {}", got.kind, want.kind), 0));
    }
    let keys: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    for key in keys {
        let empty = BTreeMap::new();
        let (g, w) = (
            got.get(key).unwrap_or(&empty),
            want.get(key).unwrap_or(&empty),
        );
        let times: BTreeSet<&i64> = g.keys().chain(w.keys()).collect();
        for t in times {
            let ok = matches!((g.get(t), w.get(t)), (Some(x), Some(y)) if same(*x, *y));
            if !ok {
                diffs.push((key.clone(), t / 1000));
            }
        }
    }
    diffs
}

/// The samples of every series at step `t_ms`, as label set -> value.
fn at_step(p: &Points, t_ms: i64) -> BTreeMap<&String, f64> {
    p.iter()
        .filter_map(|(k, s)| Some((k, *s.get(&t_ms)?)))
        .collect()
}

/// Where `got` differs from `want` at step `t_ms` (series set and values),
/// said; None where they agree.
pub fn step_differs(got: &Points, want: &Points, t_ms: i64) -> Option<String> {
    let (g, w) = (at_step(got, t_ms), at_step(want, t_ms));
    let same_step = g.len() == w.len()
        && g.iter()
            .all(|(k, x)| w.get(k).is_some_and(|y| same(*x, *y)));
    (!same_step).then(|| format!("got {g:?}, want {w:?}"))
}

/// Steps judged against one of two replicas' own answers, as the tests of
/// replicas that scrape at their own moments judge them: where the first's
/// data is complete for a step, its answer; where only the second's is,
/// the second's.
#[derive(Default)]
pub struct Judged {
    pub against_a: usize,
    pub against_b: usize,
    pub wrong: Vec<String>,
}

impl Judged {
    /// Judges `got` at step `t_s` (seconds) against `want`, the first's
    /// answer (`against_a`) or the second's; `what` names the step.
    pub fn step(&mut self, got: &Points, want: &Points, against_a: bool, t_s: i64, what: &str) {
        if against_a {
            self.against_a += 1;
        } else {
            self.against_b += 1;
        }
        if let Some(d) = step_differs(got, want, t_s * 1000) {
            self.wrong.push(format!("{what}: {d}"));
        }
    }

    /// Fails unless at least `a` and `b` steps were judged each way and
    /// none was wrong.
    pub fn assert_right(&self, a: usize, b: usize) {
        let (judged_a, judged_b) = (self.against_a, self.against_b);
        assert!(
            judged_a > a && judged_b > b,
            "{judged_a} steps judged against a, {judged_b} against b"
        );
        let wrong = &self.wrong;
        assert!(
            wrong.is_empty(),
            "{} steps wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}

/// Whether the query's outermost operation orders its result (Prometheus
/// sorts these instant vectors by value).
fn ordered(query: &str) -> bool {
    let q = query.trim_start();
    [
        "sort(",
        "sort_desc(",
        "topk(",
        "bottomk(",
        "topk ",
        "bottomk ",
    ]
    .iter()
    .any(|f| q.starts_with(f))
}

/// For an instant query whose outermost operation orders its result, where
/// the answer's values come in another order than the reference's.
pub fn order_differs(query: &str, got: &Value, want: &Value) -> Option<String> {
    if !ordered(query) || want["data"]["resultType"] != "vector" {
        return None;
    }
    let values = |v: &Value| -> Vec<f64> {
        v["data"]["result"]
            .as_array()
            .map(|r| r.iter().map(|s| val(&s["value"][1])).collect())
            .unwrap_or_default()
    };
    let (g, w) = (values(got), values(want));
    let alike = g.len() == w.len() && g.iter().zip(&w).all(|(x, y)| same(*x, *y));
    (!alike).then(|| format!("{query}: values in the order {g:?}, the reference's {w:?}"))
}

#[cfg(test)]
mod planted {
    //! Each defect the oracle exists to catch, planted in a good answer.
    use super::*;
    use serde_json::json;

    fn vector(samples: &[(&str, f64, &str)]) -> Value {
        let result: Vec<Value> = samples
            .iter()
            .map(|(i, t, v)| json!({"metric": {"instance": i}, "value": [t, v]}))
            .collect();
        json!({"status": "success", "data": {"resultType": "vector", "result": result}})
    }

    #[test]
    fn a_time_four_seconds_off_is_a_difference() {
        let t = 1_796_396_400.0;
        let want = vector(&[("a", t, "1796396393")]);
        let got = vector(&[("a", t, "1796396397")]);
        assert!(!differences(&points(&got), &points(&want)).is_empty());
        let close = vector(&[("a", t, "1796396393.0004")]);
        assert!(differences(&points(&close), &points(&want)).is_empty());
    }

    #[test]
    fn sorted_values_in_another_order_are_a_difference() {
        let t = 1_796_396_400.0;
        let want = vector(&[("a", t, "3"), ("b", t, "2")]);
        let swapped = vector(&[("b", t, "2"), ("a", t, "3")]);
        assert!(order_differs("sort_desc(x)", &swapped, &want).is_some());
        assert!(order_differs("topk(2, x)", &swapped, &want).is_some());
        assert!(order_differs("sort_desc(x)", &want, &want).is_none());
        // Unordered results compare as sets.
        assert!(order_differs("sum by (i) (x)", &swapped, &want).is_none());
        assert!(differences(&points(&swapped), &points(&want)).is_empty());
    }

    #[test]
    fn a_series_twice_is_a_defect_not_folded() {
        let twice = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"i": "a"}, "values": [[1, "1"]]},
            {"metric": {"i": "a"}, "values": [[2, "1"]]},
        ]}});
        assert!(try_points(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn another_result_type_is_a_difference() {
        let t = 1_796_396_400.0;
        let vector = vector(&[("a", t, "1")]);
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"instance": "a"}, "values": [[t, "1"]]},
        ]}});
        assert!(!differences(&points(&matrix), &points(&vector)).is_empty());
    }
}
