//! The series map: every upstream's series, keyed by label set, in priority order.
//!
//! Keys borrow label text straight from the answers' buffers. Answers whose
//! series already come sorted (Prometheus sorts range answers) are merged in
//! one pass; others go through a map built with ahash, because it is hashed
//! once per series per upstream on the hot path, then sorted (matrices) or
//! kept in the answers' order (vectors).

use crate::answer::Answer;
use hashbrown::HashTable;
use smallvec::SmallVec;

/// A label set, sorted by name, with replica labels removed.
pub type LabelKey<'a> = SmallVec<[Label<'a>; 8]>;

/// One label, name and value, as the bytes of the answer they came from.
pub type Label<'a> = (&'a [u8], &'a [u8]);

/// Where one upstream's copy of a series sits: (upstream index, series index).
pub type Copies = SmallVec<[(u16, u32); 4]>;

/// Label set → every upstream's copy of that series, highest priority first.
///
/// The entries sit in a vector in first-seen order; the hash table holds only
/// their indexes. A label set is large (its pairs inline), so a table of whole
/// entries would be tens of MB for a large vector, and rehashing or sorting it
/// would move every entry many times; a table of `u32`s stays in cache.
pub struct SeriesMap<'a> {
    entries: Vec<(LabelKey<'a>, Copies)>,
}

impl<'a> SeriesMap<'a> {
    /// Every label set of the answers (given in priority order, `None` for an
    /// upstream that failed or was excluded) with its copies, sorted the way
    /// Prometheus sorts series (label by label: name, then value; a prefix
    /// sorts first).
    ///
    /// Prometheus sends range answers sorted: while every answer's label sets
    /// keep ascending they are merged in one pass, with no hashing and no sort.
    /// At the first one out of order, the map takes over from scratch.
    pub fn sorted(
        answers: &[Option<&'a Answer>],
        replica_labels: &[String],
    ) -> Vec<(LabelKey<'a>, Copies)> {
        merge_if_sorted(answers, replica_labels)
            .unwrap_or_else(|| SeriesMap::build(answers, replica_labels).into_sorted())
    }

    /// Every label set of the answers with its copies, in the answers' own
    /// order: the first answer's, then label sets only later answers hold, in
    /// theirs (or sorted, when every answer is). For instant vectors, whose
    /// order Prometheus leaves unspecified: the highest-priority replica's
    /// order is kept, as it would answer alone, and no sort is paid.
    pub fn in_answer_order(
        answers: &[Option<&'a Answer>],
        replica_labels: &[String],
    ) -> Vec<(LabelKey<'a>, Copies)> {
        merge_if_sorted(answers, replica_labels)
            .unwrap_or_else(|| SeriesMap::build(answers, replica_labels).entries)
    }

    fn build(answers: &[Option<&'a Answer>], replica_labels: &[String]) -> Self {
        let capacity = answers
            .iter()
            .flatten()
            .map(|a| a.series.len())
            .max()
            .unwrap_or(0);
        let hasher = ahash::RandomState::new();
        let mut table: HashTable<u32> = HashTable::with_capacity(capacity);
        let mut entries: Vec<(LabelKey<'a>, Copies)> = Vec::with_capacity(capacity);
        for (u, answer) in answers.iter().enumerate() {
            let Some(answer) = answer else { continue };
            for (i, series) in answer.series.iter().enumerate() {
                let key = label_key(answer, series, replica_labels);
                let copy = (u as u16, i as u32);
                let entry = table.entry(
                    hasher.hash_one(&key),
                    |&e| entries[e as usize].0 == key,
                    |&e| hasher.hash_one(&entries[e as usize].0),
                );
                match entry {
                    hashbrown::hash_table::Entry::Occupied(e) => {
                        entries[*e.get() as usize].1.push(copy)
                    }
                    hashbrown::hash_table::Entry::Vacant(v) => {
                        v.insert(entries.len() as u32);
                        entries.push((key, smallvec::smallvec![copy]));
                    }
                }
            }
        }
        SeriesMap { entries }
    }

    /// The entries sorted by label set the way Prometheus sorts series.
    fn into_sorted(self) -> Vec<(LabelKey<'a>, Copies)> {
        // The order is sorted, not the entries: each is moved once, not at every swap.
        let mut order: Vec<u32> = (0..self.entries.len() as u32).collect();
        order
            .sort_unstable_by(|&a, &b| self.entries[a as usize].0.cmp(&self.entries[b as usize].0));
        let mut slots: Vec<Option<(LabelKey<'a>, Copies)>> =
            self.entries.into_iter().map(Some).collect();
        order
            .into_iter()
            .map(|e| slots[e as usize].take().expect("each entry is placed once"))
            .collect()
    }
}

/// One answer's place in [`merge_if_sorted`]: its next series and that series' key.
struct Cursor<'a> {
    upstream: u16,
    answer: &'a Answer,
    next: u32,
    head: Option<LabelKey<'a>>,
}

impl<'a> Cursor<'a> {
    fn advance(&mut self, replica_labels: &[String]) {
        self.next += 1;
        self.head = self
            .answer
            .series
            .get(self.next as usize)
            .map(|s| label_key(self.answer, s, replica_labels));
    }
}

/// Merges the answers' label sets as ascending lists: at each step the least
/// head, with every upstream whose head it is, in priority order. None as soon
/// as a list does not strictly ascend.
fn merge_if_sorted<'a>(
    answers: &[Option<&'a Answer>],
    replica_labels: &[String],
) -> Option<Vec<(LabelKey<'a>, Copies)>> {
    let mut cursors: SmallVec<[Cursor<'a>; 4]> = answers
        .iter()
        .enumerate()
        .filter_map(|(u, a)| {
            let answer = (*a)?;
            let head = answer
                .series
                .first()
                .map(|s| label_key(answer, s, replica_labels));
            Some(Cursor {
                upstream: u as u16,
                answer,
                next: 0,
                head,
            })
        })
        .collect();
    let most = cursors.iter().map(|c| c.answer.series.len()).max();
    let mut entries: Vec<(LabelKey<'a>, Copies)> = Vec::with_capacity(most.unwrap_or(0));
    loop {
        let mut least: Option<usize> = None;
        for (c, cursor) in cursors.iter().enumerate() {
            if let Some(head) = &cursor.head
                && least.is_none_or(|l| Some(head) < cursors[l].head.as_ref())
            {
                least = Some(c);
            }
        }
        let Some(l) = least else { break };
        let key = cursors[l].head.take().expect("the least cursor has a head");
        let mut copies = Copies::new();
        // Cursors before `l` have no head equal to `key`: one of them would be least.
        for (c, cursor) in cursors.iter_mut().enumerate().skip(l) {
            if c != l && cursor.head.as_ref() != Some(&key) {
                continue;
            }
            copies.push((cursor.upstream, cursor.next));
            cursor.advance(replica_labels);
            if cursor.head.as_ref().is_some_and(|next| *next <= key) {
                return None;
            }
        }
        entries.push((key, copies));
    }
    Some(entries)
}

fn label_key<'a>(
    answer: &'a Answer,
    series: &crate::answer::Series,
    replica_labels: &[String],
) -> LabelKey<'a> {
    let mut key: LabelKey<'a> = answer
        .series_labels(series)
        .iter()
        .map(|l| (answer.bytes(l.name), answer.bytes(l.value)))
        .filter(|(name, _)| !replica_labels.iter().any(|r| r.as_bytes() == *name))
        .collect();
    if !key.is_sorted_by(|a, b| a.0 <= b.0) {
        key.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix answer holding the label sets `sets` (as `name=value,...`).
    fn answer(sets: &[String]) -> Answer {
        let series: Vec<String> = sets
            .iter()
            .map(|set| {
                let labels: Vec<String> = set
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (n, v) = l.split_once('=').unwrap();
                        format!("\"{n}\":\"{v}\"")
                    })
                    .collect();
                format!(
                    "{{\"metric\":{{{}}},\"values\":[[1,\"1\"]]}}",
                    labels.join(",")
                )
            })
            .collect();
        let body = format!(
            "{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":[{}]}}}}",
            series.join(",")
        );
        Answer::parse(body.into_bytes()).unwrap()
    }

    #[test]
    fn sorted_answers_merge_in_one_pass_as_the_map_sorts_them() {
        let names = ["a", "b", "c", "d"];
        // Upstream u holds label sets i where (i + u) % 5 != 0; three layouts,
        // so a prefix of another label set sorts first; `r` is a replica label.
        let answers: Vec<Answer> = (0..4)
            .map(|u| {
                let mut sets: Vec<(LabelKey<'_>, String)> = (0..40)
                    .filter(|i| (i + u) % 5 != 0)
                    .map(|i: usize| {
                        let mut key = LabelKey::new();
                        key.push((b"a", names[i % 4].as_bytes()));
                        if !i.is_multiple_of(3) {
                            key.push((b"b", names[(i / 4) % 4].as_bytes()));
                        }
                        if i % 5 == 1 {
                            key.push((b"c", names[(i / 16) % 4].as_bytes()));
                        }
                        let text: Vec<String> = key
                            .iter()
                            .map(|(n, v)| format!("{}={}", n.escape_ascii(), v.escape_ascii()))
                            .collect();
                        (key, format!("{},r={u}", text.join(",")))
                    })
                    .collect();
                sets.sort();
                sets.dedup_by(|x, y| x.0 == y.0);
                answer(&sets.into_iter().map(|(_, t)| t).collect::<Vec<_>>())
            })
            .collect();
        let mut refs: Vec<Option<&Answer>> = answers.iter().map(Some).collect();
        refs.insert(1, None);
        let replica = ["r".to_string()];
        let merged = merge_if_sorted(&refs, &replica).expect("sorted answers");
        assert_eq!(merged, SeriesMap::build(&refs, &replica).into_sorted());
        assert!(merged.iter().any(|(_, c)| c.len() == 4));
        assert!(merged.iter().any(|(_, c)| c.len() < 4));
        // Out of order, or a label set twice (once replica labels are gone): the map.
        let unsorted = answer(&["a=b".into(), "a=a".into()]);
        let twice = answer(&["a=a,r=1".into(), "a=a,r=2".into()]);
        for odd in [&unsorted, &twice] {
            let refs = [Some(&answers[0]), Some(odd)];
            assert!(merge_if_sorted(&refs, &replica).is_none());
            assert_eq!(
                SeriesMap::sorted(&refs, &replica),
                SeriesMap::build(&refs, &replica).into_sorted()
            );
        }
    }
}
