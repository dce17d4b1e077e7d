//! The series map: every upstream's series, keyed by label set, in priority order.
//!
//! Keys borrow label text straight from the answers' buffers; the map is built
//! with ahash because it is hashed once per series per upstream on the hot path.

use super::answer::Answer;
use smallvec::SmallVec;
use std::collections::HashMap;

/// A label set, sorted by name, with replica labels removed.
pub type LabelKey<'a> = SmallVec<[(&'a str, &'a str); 8]>;

/// Where one upstream's copy of a series sits: (upstream index, series index).
pub type Copies = SmallVec<[(u16, u32); 4]>;

/// Label set → every upstream's copy of that series, highest priority first.
pub struct SeriesMap<'a> {
    map: HashMap<LabelKey<'a>, Copies, ahash::RandomState>,
}

impl<'a> SeriesMap<'a> {
    /// Builds the map from the answers, given in priority order (`None` for an
    /// upstream that failed or was excluded).
    pub fn build(answers: &[Option<&'a Answer>], replica_labels: &[String]) -> Self {
        let capacity = answers
            .iter()
            .flatten()
            .map(|a| a.series.len())
            .max()
            .unwrap_or(0);
        let mut map: HashMap<LabelKey<'a>, Copies, ahash::RandomState> =
            HashMap::with_capacity_and_hasher(capacity, ahash::RandomState::new());
        for (u, answer) in answers.iter().enumerate() {
            let Some(answer) = answer else { continue };
            for (i, series) in answer.series.iter().enumerate() {
                let key = label_key(answer, series, replica_labels);
                map.entry(key).or_default().push((u as u16, i as u32));
            }
        }
        SeriesMap { map }
    }

    /// The entries sorted by label set the way Prometheus sorts series
    /// (label by label: name, then value; a prefix sorts first).
    pub fn into_sorted(self) -> Vec<(LabelKey<'a>, Copies)> {
        let mut entries: Vec<_> = self.map.into_iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        entries
    }
}

fn label_key<'a>(
    answer: &'a Answer,
    series: &super::answer::Series,
    replica_labels: &[String],
) -> LabelKey<'a> {
    let mut key: LabelKey<'a> = answer
        .series_labels(series)
        .iter()
        .map(|l| (answer.text(l.name), answer.text(l.value)))
        .filter(|(name, _)| !replica_labels.iter().any(|r| r == name))
        .collect();
    if !key.is_sorted_by(|a, b| a.0 <= b.0) {
        key.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    key
}
