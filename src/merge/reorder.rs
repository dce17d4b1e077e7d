//! Re-applying the query's outermost `topk`/`bottomk`/`limitk`/`sort`/`sort_desc`
//! after the merge, so the merged answer obeys the query.
//!
//! Each replica answers `topk(3, x)` with its own top 3; the union of those can
//! hold more than 3 series, so k is applied again per group and per timestamp.
//! This module only knows the plain description in [`Reorder`]; turning PromQL
//! into one is the `query` module's job.

use super::series::Label;
use std::cmp::Ordering;
use std::collections::HashMap;

/// How series are grouped, as in an aggregation's `by`/`without` clause.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Grouping {
    /// No clause: one group.
    #[default]
    Everything,
    By(Vec<String>),
    /// `without` also drops the metric name, as Prometheus does.
    Without(Vec<String>),
}

/// What the merged answer must be re-shaped by.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Reorder {
    #[default]
    None,
    /// `sort` / `sort_desc`: instant vectors ordered by value, NaN last.
    Sort { descending: bool },
    /// `topk` / `bottomk`: at most k series per group at each timestamp.
    TopK {
        k: usize,
        bottom: bool,
        grouping: Grouping,
    },
    /// `limitk`: at most k series per group at each timestamp, the first in the merged order.
    LimitK { k: usize, grouping: Grouping },
}

/// One float sample competing for a place: which series, at what time, its value.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// Index of the series in the merged order (also the tie-breaker).
    pub series: u32,
    /// Index of the sample within that series' picks.
    pub pick: u32,
    /// The upstream the sample came from.
    pub upstream: u16,
    pub t: i64,
    pub value: f64,
}

impl Reorder {
    pub fn limits_per_group(&self) -> bool {
        matches!(self, Reorder::TopK { .. } | Reorder::LimitK { .. })
    }

    fn grouping(&self) -> Option<&Grouping> {
        match self {
            Reorder::TopK { grouping, .. } | Reorder::LimitK { grouping, .. } => Some(grouping),
            _ => None,
        }
    }

    /// Assigns each series (given as label sets, pairs sorted by name) a group number.
    pub fn groups<'a>(&self, label_sets: impl Iterator<Item = &'a [Label<'a>]>) -> Vec<u32> {
        let Some(grouping) = self.grouping() else {
            return label_sets.map(|_| 0).collect();
        };
        let mut ids: HashMap<Vec<Label<'_>>, u32, ahash::RandomState> = HashMap::default();
        label_sets
            .map(|labels| {
                let key: Vec<Label<'_>> = match grouping {
                    Grouping::Everything => Vec::new(),
                    Grouping::By(names) => labels
                        .iter()
                        .filter(|(n, _)| names.iter().any(|g| g.as_bytes() == *n))
                        .copied()
                        .collect(),
                    Grouping::Without(names) => labels
                        .iter()
                        .filter(|(n, _)| {
                            *n != b"__name__" && !names.iter().any(|g| g.as_bytes() == *n)
                        })
                        .copied()
                        .collect(),
                };
                let next = ids.len() as u32;
                *ids.entry(key).or_insert(next)
            })
            .collect()
    }

    /// Keeps at most k candidates per (timestamp, group); returns the kept ones.
    ///
    /// A top-k set is only right if it comes from one replica's data: mixing
    /// a's top 3 with a series from b's (computed from other samples) can
    /// promote a series that is not in the true top 3. So each (timestamp,
    /// group) keeps only the candidates of the highest-priority upstream that
    /// has any there, and then k of those.
    pub fn select(&self, mut cands: Vec<Candidate>, groups: &[u32]) -> Vec<Candidate> {
        let (k, cmp): (usize, fn(f64, f64) -> Ordering) = match self {
            Reorder::TopK {
                k, bottom: false, ..
            } => (*k, |a, b| desc_nan_last(a, b)),
            Reorder::TopK {
                k, bottom: true, ..
            } => (*k, |a, b| asc_nan_last(a, b)),
            Reorder::LimitK { k, .. } => (*k, |_, _| Ordering::Equal),
            _ => return cands,
        };
        cands.sort_unstable_by(|a, b| {
            a.t.cmp(&b.t)
                .then(groups[a.series as usize].cmp(&groups[b.series as usize]))
                .then(a.upstream.cmp(&b.upstream))
                .then_with(|| cmp(a.value, b.value))
                .then(a.series.cmp(&b.series))
        });
        let mut kept = Vec::with_capacity(cands.len());
        let mut current = None;
        let mut taken = 0;
        let mut source = 0;
        for c in cands {
            let slot = (c.t, groups[c.series as usize]);
            if current != Some(slot) {
                current = Some(slot);
                taken = 0;
                source = c.upstream;
            }
            if c.upstream == source && taken < k {
                kept.push(c);
                taken += 1;
            }
        }
        kept
    }

    /// The order instant-vector series are written in: indices into the label-ordered list.
    pub fn vector_order(&self, values: &[f64], groups: &[u32]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..values.len()).collect();
        match self {
            Reorder::Sort { descending } => {
                let cmp = if *descending {
                    desc_nan_last
                } else {
                    asc_nan_last
                };
                order.sort_by(|&a, &b| cmp(values[a], values[b]).then(a.cmp(&b)));
            }
            Reorder::TopK { bottom, .. } => {
                let cmp = if *bottom { asc_nan_last } else { desc_nan_last };
                order.sort_by(|&a, &b| {
                    groups[a]
                        .cmp(&groups[b])
                        .then_with(|| cmp(values[a], values[b]))
                        .then(a.cmp(&b))
                });
            }
            _ => {}
        }
        order
    }
}

fn desc_nan_last(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
        (x, y) => x.cmp(&y),
    }
}

fn asc_nan_last(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        (x, y) => x.cmp(&y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(series: u32, t: i64, value: f64) -> Candidate {
        Candidate {
            series,
            pick: 0,
            upstream: 0,
            t,
            value,
        }
    }

    #[test]
    fn each_group_takes_its_set_from_one_upstream() {
        let r = Reorder::TopK {
            k: 2,
            bottom: false,
            grouping: Grouping::Everything,
        };
        let from_b = Candidate {
            upstream: 1,
            ..c(2, 1, 100.0)
        };
        let kept = r.select(vec![c(0, 1, 1.0), c(1, 1, 2.0), from_b], &[0, 0, 0]);
        assert_eq!(kept.iter().map(|c| c.series).collect::<Vec<_>>(), [1, 0]);
    }

    #[test]
    fn topk_keeps_k_per_group_and_timestamp() {
        let r = Reorder::TopK {
            k: 1,
            bottom: false,
            grouping: Grouping::By(vec!["g".into()]),
        };
        let a: &[(&[u8], &[u8])] = &[(b"g", b"1"), (b"i", b"a")];
        let b: &[(&[u8], &[u8])] = &[(b"g", b"1"), (b"i", b"b")];
        let d: &[(&[u8], &[u8])] = &[(b"g", b"2"), (b"i", b"c")];
        let groups = r.groups([a, b, d].into_iter());
        assert_eq!(groups, [0, 0, 1]);
        let kept = r.select(
            vec![
                c(0, 1, 1.0),
                c(1, 1, 2.0),
                c(2, 1, 0.5),
                c(0, 2, 5.0),
                c(1, 2, f64::NAN),
            ],
            &groups,
        );
        let got: Vec<_> = kept.iter().map(|c| (c.series, c.t)).collect();
        assert_eq!(got, [(1, 1), (2, 1), (0, 2)]);
    }

    #[test]
    fn bottomk_and_sort_put_nan_last() {
        let r = Reorder::TopK {
            k: 2,
            bottom: true,
            grouping: Grouping::Everything,
        };
        let kept = r.select(
            vec![c(0, 1, f64::NAN), c(1, 1, 3.0), c(2, 1, -1.0)],
            &[0, 0, 0],
        );
        assert_eq!(kept.iter().map(|c| c.series).collect::<Vec<_>>(), [2, 1]);
        let sort = Reorder::Sort { descending: true };
        assert_eq!(
            sort.vector_order(&[1.0, f64::NAN, 3.0], &[0, 0, 0]),
            [2, 0, 1]
        );
    }

    #[test]
    fn without_ignores_the_metric_name() {
        let r = Reorder::LimitK {
            k: 1,
            grouping: Grouping::Without(vec!["i".into()]),
        };
        let a: &[(&[u8], &[u8])] = &[(b"__name__", b"x"), (b"i", b"a")];
        let b: &[(&[u8], &[u8])] = &[(b"__name__", b"y"), (b"i", b"b")];
        assert_eq!(r.groups([a, b].into_iter()), [0, 0]);
    }
}
