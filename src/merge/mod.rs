//! The merger: N parsed upstream answers in, one Prometheus answer's bytes out.
//!
//! Pure and synchronous: it knows nothing about actors, HTTP or PromQL. The
//! caller hands it the answers in priority order, a description of any
//! `topk`/`sort` to re-apply ([`Reorder`]), and an [`Eligibility`] saying which
//! upstream may contribute at which timestamp.
//!
//! Rules (see README "Merge rules"): per label set and timestamp, the sample of
//! the highest-priority eligible upstream wins; series sorted like Prometheus;
//! warnings unioned; output bytes for values and timestamps copied from the input.

pub mod coverage;
pub mod json;
pub mod meta;
pub mod reorder;
pub mod series;

use crate::answer::{Answer, ResultKind};
use reorder::{Candidate, Reorder};
use series::{Copies, LabelKey, SeriesMap};
use std::collections::HashSet;

pub use crate::answer::AnswerError;

/// Which upstream may contribute a sample at which timestamp.
///
/// The core merge passes [`AllEligible`]; per-step coverage can narrow it.
pub trait Eligibility {
    fn allows(&self, upstream: usize, t_ms: i64) -> bool;
    /// True when `allows` is always true, so the merger can skip asking.
    fn is_all(&self) -> bool {
        false
    }
    /// The times, ascending, at which `allows` may be false for some
    /// upstream: everywhere else every upstream is allowed, so the merger
    /// takes runs of samples without asking at each. None: not known (asked
    /// at every sample).
    fn closed(&self) -> Option<&[i64]> {
        self.is_all().then_some(&[])
    }
    /// The one upstream that may contribute at the times `closed` leaves
    /// open; None: every upstream may there.
    fn leader(&self) -> Option<usize> {
        None
    }
}

/// An eligibility over upstreams, read by answer, where one upstream may
/// give several answers (each over some of the steps): answer `i` is
/// upstream `owner[i]`'s.
pub struct ByOwner<'a, E> {
    pub eligibility: &'a E,
    pub owner: &'a [usize],
}

impl<E: Eligibility> Eligibility for ByOwner<'_, E> {
    #[inline]
    fn allows(&self, answer: usize, t_ms: i64) -> bool {
        self.eligibility.allows(self.owner[answer], t_ms)
    }

    fn is_all(&self) -> bool {
        self.eligibility.is_all()
    }

    fn closed(&self) -> Option<&[i64]> {
        self.eligibility.closed()
    }
}

/// At a step where the coverage leaves no upstream out, every upstream is
/// as complete as the best: the first is, so the answer there is the
/// first's alone, series set included, as one Prometheus answers. Another
/// replica's series, there only because it scraped at other moments and
/// read other values (`count_values`, `x > 0.5`), must not join it. Where
/// some upstream is left out, the union of the others, as before.
pub struct Led<'a, E> {
    pub eligibility: &'a E,
    /// The first upstream that answered.
    pub leader: usize,
}

impl<E: Eligibility> Eligibility for Led<'_, E> {
    #[inline]
    fn allows(&self, upstream: usize, t_ms: i64) -> bool {
        if upstream == self.leader {
            return self.eligibility.allows(upstream, t_ms);
        }
        let closed = self.eligibility.closed().unwrap_or_default();
        closed.binary_search(&t_ms).is_ok() && self.eligibility.allows(upstream, t_ms)
    }

    fn closed(&self) -> Option<&[i64]> {
        self.eligibility.closed()
    }

    fn leader(&self) -> Option<usize> {
        Some(self.leader)
    }
}

/// Every upstream may contribute everywhere.
pub struct AllEligible;

impl Eligibility for AllEligible {
    #[inline]
    fn allows(&self, _: usize, _: i64) -> bool {
        true
    }
    fn is_all(&self) -> bool {
        true
    }
}

/// What the merge needs besides the answers.
#[derive(Default)]
pub struct MergeOptions<'a> {
    /// Labels removed before series are matched (like Thanos' replica label).
    pub replica_labels: &'a [String],
    pub reorder: Reorder,
}

/// Figures about one merge, for metrics and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeReport {
    pub series: usize,
    pub samples: usize,
    /// Samples that came from a lower-priority upstream because a higher one had none.
    pub filled_samples: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeError {
    /// Every upstream failed; there is nothing to merge.
    NoAnswers,
}

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no upstream answered")
    }
}

impl std::error::Error for MergeError {}

/// An upstream's place in the merge: its answer (None if it failed) and its name for warnings.
pub struct Upstream<'a> {
    pub name: &'a str,
    pub answer: Option<&'a Answer>,
}

/// Merges the answers (in priority order) into `out`.
///
/// `warnings` are appended after the upstreams' own (the caller's notes about
/// failed upstreams).
pub fn merge<E: Eligibility>(
    upstreams: &[Upstream<'_>],
    warnings: &[String],
    opts: &MergeOptions<'_>,
    eligibility: &E,
    out: &mut Vec<u8>,
) -> Result<MergeReport, MergeError> {
    let largest = upstreams
        .iter()
        .filter_map(|u| u.answer)
        .map(Answer::body_len)
        .max()
        .unwrap_or(0);
    out.reserve(largest + 256);
    merge_in_pieces(upstreams, warnings, opts, eligibility, out, &mut |_| true)
}

/// [`merge`], calling `spill` after each series with the bytes written so far,
/// so that a caller can send a large answer on in pieces while the rest is
/// merged (and never hold it whole). `spill` may take any prefix of `out`,
/// usually all of it; returning false stops the merge (nobody wants the
/// rest), leaving `out` incomplete.
pub fn merge_in_pieces<E: Eligibility>(
    upstreams: &[Upstream<'_>],
    warnings: &[String],
    opts: &MergeOptions<'_>,
    eligibility: &E,
    out: &mut Vec<u8>,
    spill: &mut dyn FnMut(&mut Vec<u8>) -> bool,
) -> Result<MergeReport, MergeError> {
    let first = upstreams
        .iter()
        .position(|u| u.answer.is_some())
        .ok_or(MergeError::NoAnswers)?;
    let kind = upstreams[first]
        .answer
        .map(|a| a.kind)
        .ok_or(MergeError::NoAnswers)?;
    // Replicas of one Prometheus answer one query with one result type; one
    // that does not (a different version, say) is left out rather than mixed in.
    let mut notes: Vec<String> = Vec::new();
    let answers: Vec<Option<&Answer>> = upstreams
        .iter()
        .map(|u| match u.answer {
            Some(a) if a.kind != kind => {
                notes.push(format!(
                    "upstream {}: answered a {} where the others answered a {}; left out",
                    u.name,
                    a.kind.as_str(),
                    kind.as_str()
                ));
                None
            }
            other => other,
        })
        .collect();

    out.extend_from_slice(b"{\"status\":\"success\",\"data\":{\"resultType\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"result\":");
    let mut report = MergeReport::default();
    match kind {
        ResultKind::Matrix => {
            merge_matrix(&answers, first, opts, eligibility, out, spill, &mut report)
        }
        ResultKind::Vector => {
            merge_vector(&answers, first, opts, eligibility, out, spill, &mut report)
        }
        ResultKind::Scalar | ResultKind::String => merge_single(&answers, first, eligibility, out),
    }
    if let Some((a, stats)) = answers
        .iter()
        .flatten()
        .find_map(|a| a.stats.map(|s| (a, s)))
    {
        out.extend_from_slice(b",\"stats\":");
        out.extend_from_slice(a.bytes(stats));
    }
    out.push(b'}');
    let all_warnings = answers
        .iter()
        .flatten()
        .flat_map(|a| a.warnings.iter().map(|&w| a.text(w)));
    let extra = warnings.iter().chain(notes.iter()).map(String::as_str);
    write_string_set(out, "warnings", all_warnings.chain(extra));
    let infos = answers
        .iter()
        .flatten()
        .flat_map(|a| a.infos.iter().map(|&w| a.text(w)));
    write_string_set(out, "infos", infos);
    out.push(b'}');
    Ok(report)
}

/// Writes `,"key":[...]` with duplicates removed, first occurrence first; nothing when empty.
pub(crate) fn write_string_set<'a>(
    out: &mut Vec<u8>,
    key: &str,
    items: impl Iterator<Item = &'a str>,
) {
    let mut seen: HashSet<&str, ahash::RandomState> = HashSet::default();
    for item in items {
        if !seen.insert(item) {
            continue;
        }
        if seen.len() == 1 {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":[");
        } else {
            out.push(b',');
        }
        json::write_str(out, item);
    }
    if !seen.is_empty() {
        out.push(b']');
    }
}

/// A chosen sample: which upstream's answer, which sample in it.
#[derive(Clone, Copy, Debug)]
struct Pick {
    upstream: u16,
    sample: u32,
    histogram: bool,
}

fn merge_matrix<E: Eligibility>(
    answers: &[Option<&Answer>],
    first: usize,
    opts: &MergeOptions<'_>,
    eligibility: &E,
    out: &mut Vec<u8>,
    spill: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    report: &mut MergeReport,
) {
    let entries = SeriesMap::sorted(answers, opts.replica_labels);
    out.push(b'[');
    let mut picks = Vec::new();
    let mut times = Vec::new();
    if !opts.reorder.limits_per_group() {
        let mut wrote = false;
        for (key, copies) in &entries {
            picks.clear();
            pick_samples(answers, copies, eligibility, &mut picks, &mut times);
            if write_matrix_series(answers, key, &picks, first, wrote, out, report) {
                wrote = true;
                if !spill(out) {
                    return;
                }
            }
        }
        out.push(b']');
        return;
    }
    // topk/bottomk/limitk: every series' picks first, then at most k per group and timestamp.
    let mut all: Vec<Vec<Pick>> = Vec::with_capacity(entries.len());
    let mut cands = Vec::new();
    for (s, (_, copies)) in entries.iter().enumerate() {
        let mut picks = Vec::new();
        pick_samples(answers, copies, eligibility, &mut picks, &mut times);
        for (p, pick) in picks.iter().enumerate().filter(|(_, p)| !p.histogram) {
            let (t, value) = time_and_value(answers, pick);
            cands.push(Candidate {
                series: s as u32,
                pick: p as u32,
                upstream: pick.upstream,
                t,
                value,
            });
        }
        all.push(picks);
    }
    let groups = opts
        .reorder
        .groups(entries.iter().map(|(k, _)| k.as_slice()));
    let mut keep: Vec<Vec<bool>> = all
        .iter()
        .map(|p| p.iter().map(|p| p.histogram).collect())
        .collect();
    for c in opts.reorder.select(cands, &groups) {
        keep[c.series as usize][c.pick as usize] = true;
    }
    let mut wrote = false;
    for (((key, _), picks), keep) in entries.iter().zip(&all).zip(&keep) {
        let kept: Vec<Pick> = picks
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(p, _)| *p)
            .collect();
        if write_matrix_series(answers, key, &kept, first, wrote, out, report) {
            wrote = true;
            if !spill(out) {
                return;
            }
        }
    }
    out.push(b']');
}

fn time_and_value(answers: &[Option<&Answer>], pick: &Pick) -> (i64, f64) {
    let answer = answers[pick.upstream as usize].expect("picks only name answering upstreams");
    (answer.t(pick.sample), answer.sample_value(pick.sample))
}

/// One upstream's copy of a series: upstream, answer, float and histogram sample ranges.
type CopyRanges<'a> = (u16, &'a Answer, std::ops::Range<u32>, std::ops::Range<u32>);

/// For one label set, chooses per timestamp the sample of the highest-priority
/// eligible upstream, over float and histogram samples alike. `times`:
/// room for each copy's times, reused from series to series.
fn pick_samples<E: Eligibility>(
    answers: &[Option<&Answer>],
    copies: &Copies,
    eligibility: &E,
    picks: &mut Vec<Pick>,
    times: &mut Vec<Vec<i64>>,
) {
    let lists: smallvec::SmallVec<[CopyRanges<'_>; 4]> = copies
        .iter()
        .map(|&(u, i)| {
            let a = answers[u as usize].expect("series map only holds answering upstreams");
            let s = &a.series[i as usize];
            (u, a, s.floats.clone(), s.histograms.clone())
        })
        .collect();
    // The usual case: one copy, everyone eligible: take it whole.
    if lists.len() == 1 && eligibility.is_all() {
        let (u, _, floats, hists) = &lists[0];
        picks.extend(floats.clone().map(|i| Pick {
            upstream: *u,
            sample: i,
            histogram: false,
        }));
        picks.extend(hists.clone().map(|i| Pick {
            upstream: *u,
            sample: i,
            histogram: true,
        }));
        return;
    }
    if lists.iter().all(|(_, _, _, h)| h.is_empty()) {
        pick_floats(&lists, eligibility, picks, times);
        return;
    }
    let mut heads: smallvec::SmallVec<[(u32, u32); 4]> = lists
        .iter()
        .map(|(_, _, f, h)| (f.start, h.start))
        .collect();
    loop {
        // The earliest timestamp any copy still has.
        let mut t_min = i64::MAX;
        for ((_, a, f, h), (fi, hi)) in lists.iter().zip(&heads) {
            if *fi < f.end {
                t_min = t_min.min(a.t(*fi));
            }
            if *hi < h.end {
                t_min = t_min.min(a.t(*hi));
            }
        }
        if t_min == i64::MAX {
            break;
        }
        let mut chosen = None;
        for ((u, a, f, h), (fi, hi)) in lists.iter().zip(heads.iter_mut()) {
            let float_here = *fi < f.end && a.t(*fi) == t_min;
            let hist_here = *hi < h.end && a.t(*hi) == t_min;
            if chosen.is_none()
                && (float_here || hist_here)
                && eligibility.allows(*u as usize, t_min)
            {
                chosen = Some(if float_here {
                    Pick {
                        upstream: *u,
                        sample: *fi,
                        histogram: false,
                    }
                } else {
                    Pick {
                        upstream: *u,
                        sample: *hi,
                        histogram: true,
                    }
                });
            }
            *fi += float_here as u32;
            *hi += hist_here as u32;
        }
        if let Some(p) = chosen {
            picks.push(p);
        }
    }
}

/// [`pick_samples`] for copies holding float samples only (the usual case):
/// a k-way merge over slices, highest priority first at each timestamp.
fn pick_floats<E: Eligibility>(
    lists: &[CopyRanges<'_>],
    eligibility: &E,
    picks: &mut Vec<Pick>,
    times: &mut Vec<Vec<i64>>,
) {
    if times.len() < lists.len() {
        times.resize_with(lists.len(), Vec::new);
    }
    for ((_, a, f, _), room) in lists.iter().zip(times.iter_mut()) {
        a.times_into(f.clone(), room);
    }
    let copies: smallvec::SmallVec<[(u16, &[i64], u32); 4]> = lists
        .iter()
        .zip(times.iter())
        .map(|((u, _, f, _), times)| (*u, times.as_slice(), f.start))
        .collect();
    let mut heads: smallvec::SmallVec<[usize; 4]> = smallvec::smallvec![0; copies.len()];
    // An eligibility open everywhere (`is_all`) closes no step.
    let (closed, leader) = (eligibility.closed(), eligibility.leader());
    // `closed[next]` is the first closed time at or after the last `t_min`.
    let mut next = 0;
    loop {
        // The earliest head, which copy holds it (the first, if several do),
        // and the earliest head of every other copy.
        let (mut t_min, mut holder, mut t_others) = (i64::MAX, 0, i64::MAX);
        for (c, ((_, times, _), &h)) in copies.iter().zip(&heads).enumerate() {
            if let Some(&t) = times.get(h) {
                if t < t_min {
                    (t_min, holder, t_others) = (t, c, t_min);
                } else {
                    t_others = t_others.min(t);
                }
            }
        }
        if t_min == i64::MAX {
            break;
        }
        // One copy alone until the others' next sample, where every upstream
        // is allowed (the usual stretch: a replica's samples between the
        // spans another fills): its run is taken at once, not sample by
        // sample. The run stops where times stop rising, so an answer out of
        // order is picked as the loop below would.
        let open_until = match closed {
            Some(closed) => {
                next = next_closed(closed, next, t_min);
                closed.get(next).copied().unwrap_or(i64::MAX)
            }
            None => t_min,
        };
        let is_open = t_min < open_until;
        let bound = t_others.min(open_until);
        if t_min < bound {
            let (u, times, base) = copies[holder];
            let h = heads[holder];
            let mut end = h + 1;
            while end < times.len() && times[end] > times[end - 1] && times[end] < bound {
                end += 1;
            }
            heads[holder] = end;
            if is_open && leader.is_some_and(|l| l != u as usize) {
                continue;
            }
            picks.extend((h..end).map(|i| Pick {
                upstream: u,
                sample: base + i as u32,
                histogram: false,
            }));
            continue;
        }
        let mut chosen = false;
        for ((u, times, base), h) in copies.iter().zip(heads.iter_mut()) {
            if times.get(*h) == Some(&t_min) {
                let allowed = match is_open {
                    true => leader.is_none_or(|l| l == *u as usize),
                    false => eligibility.allows(*u as usize, t_min),
                };
                if !chosen && allowed {
                    picks.push(Pick {
                        upstream: *u,
                        sample: base + *h as u32,
                        histogram: false,
                    });
                    chosen = true;
                }
                *h += 1;
            }
        }
    }
}

/// The first of `closed` (ascending) at or after `t`, from `from`, the
/// answer for an earlier `t`: a few steps on as times rise, searched where
/// they jump ahead or fall back (the next series, an answer out of order).
fn next_closed(closed: &[i64], from: usize, t: i64) -> usize {
    if from > 0 && closed[from - 1] >= t {
        return closed.partition_point(|&s| s < t);
    }
    let mut at = from;
    for _ in 0..4 {
        match closed.get(at) {
            Some(&s) if s < t => at += 1,
            _ => return at,
        }
    }
    at + closed[at..].partition_point(|&s| s < t)
}

/// Writes one series from its picks; returns false (writing nothing) when it has none.
fn write_matrix_series(
    answers: &[Option<&Answer>],
    key: &LabelKey<'_>,
    picks: &[Pick],
    first: usize,
    comma: bool,
    out: &mut Vec<u8>,
    report: &mut MergeReport,
) -> bool {
    if picks.is_empty() {
        return false;
    }
    if comma {
        out.push(b',');
    }
    write_metric(out, key);
    for (histogram, field) in [
        (false, &b",\"values\":["[..]),
        (true, &b",\"histograms\":["[..]),
    ] {
        let mut any = false;
        // Floats and histograms were picked in one time-ordered pass; each list
        // stays ascending. Consecutive samples of one upstream's array are one
        // stretch of its body (the commas between them included: JSON allows
        // nothing else there but white space), so each run is copied at once.
        let mut kind = picks.iter().filter(|p| p.histogram == histogram).peekable();
        while let Some(first_pick) = kind.next() {
            let mut last = first_pick.sample;
            while let Some(next) =
                kind.next_if(|n| n.upstream == first_pick.upstream && n.sample == last + 1)
            {
                last = next.sample;
            }
            out.extend_from_slice(if any { b"," } else { field });
            any = true;
            let a = answers[first_pick.upstream as usize].expect("picked upstream answered");
            out.extend_from_slice(a.run(first_pick.sample, last));
            if first_pick.upstream as usize != first {
                report.filled_samples += (last - first_pick.sample + 1) as usize;
            }
        }
        if any {
            out.push(b']');
        }
    }
    out.push(b'}');
    report.series += 1;
    report.samples += picks.len();
    true
}

fn write_metric(out: &mut Vec<u8>, key: &LabelKey<'_>) {
    out.extend_from_slice(b"{\"metric\":");
    json::write_labels(out, key);
}

fn merge_vector<E: Eligibility>(
    answers: &[Option<&Answer>],
    first: usize,
    opts: &MergeOptions<'_>,
    eligibility: &E,
    out: &mut Vec<u8>,
    spill: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    report: &mut MergeReport,
) {
    let entries = SeriesMap::in_answer_order(answers, opts.replica_labels);
    // One sample per label set: the first copy, in priority order, that may contribute.
    let chosen: Vec<(usize, Pick)> = entries
        .iter()
        .enumerate()
        .filter_map(|(s, (_, copies))| {
            copies.iter().find_map(|&(u, i)| {
                let a = answers[u as usize]?;
                let series = &a.series[i as usize];
                let (sample, histogram) = match (
                    series.floats.start < series.floats.end,
                    series.histograms.start < series.histograms.end,
                ) {
                    (true, _) => (series.floats.start, false),
                    (false, true) => (series.histograms.start, true),
                    (false, false) => return None,
                };
                eligibility.allows(u as usize, a.t(sample)).then_some((
                    s,
                    Pick {
                        upstream: u,
                        sample,
                        histogram,
                    },
                ))
            })
        })
        .collect();
    let groups = opts
        .reorder
        .groups(chosen.iter().map(|(s, _)| entries[*s].0.as_slice()));
    // Values are parsed only to re-apply an ordering or a per-group limit.
    let values: Vec<f64> = match opts.reorder {
        Reorder::None => vec![f64::NAN; chosen.len()],
        _ => chosen
            .iter()
            .map(|(_, p)| {
                if p.histogram {
                    f64::NAN
                } else {
                    time_and_value(answers, p).1
                }
            })
            .collect(),
    };
    let mut keep = vec![true; chosen.len()];
    if opts.reorder.limits_per_group() {
        keep.fill(false);
        let cands = chosen
            .iter()
            .enumerate()
            .filter(|(_, (_, p))| !p.histogram)
            .map(|(i, (_, p))| Candidate {
                series: i as u32,
                pick: 0,
                upstream: p.upstream,
                t: 0,
                value: values[i],
            })
            .collect();
        for c in opts.reorder.select(cands, &groups) {
            keep[c.series as usize] = true;
        }
    }
    out.push(b'[');
    let mut wrote = false;
    for i in opts.reorder.vector_order(&values, &groups) {
        if !keep[i] {
            continue;
        }
        let (s, p) = &chosen[i];
        if wrote {
            out.push(b',');
        }
        wrote = true;
        write_metric(out, &entries[*s].0);
        out.extend_from_slice(if p.histogram {
            b",\"histogram\":"
        } else {
            b",\"value\":"
        });
        let a = answers[p.upstream as usize].expect("picked upstream answered");
        out.extend_from_slice(a.raw(p.sample));
        out.push(b'}');
        report.series += 1;
        report.samples += 1;
        report.filled_samples += (p.upstream as usize != first) as usize;
        if !spill(out) {
            return;
        }
    }
    out.push(b']');
}

fn merge_single<E: Eligibility>(
    answers: &[Option<&Answer>],
    first: usize,
    eligibility: &E,
    out: &mut Vec<u8>,
) {
    let single = answers
        .iter()
        .enumerate()
        .filter_map(|(u, a)| Some((u, (*a)?, (*a)?.single?)))
        .find(|(u, _, s)| eligibility.allows(*u, s.t))
        .or_else(|| answers[first].and_then(|a| Some((first, a, a.single?))));
    match single {
        Some((_, a, s)) => {
            // The text may have been unescaped in place, so only the timestamp
            // part of the raw bytes is reused; the text is written escaped.
            let raw = a.bytes(s.raw);
            let comma = raw.iter().position(|&b| b == b',').unwrap_or(raw.len());
            out.extend_from_slice(&raw[..comma]);
            out.push(b',');
            json::write_str(out, a.text(s.text));
            out.push(b']');
        }
        None => out.extend_from_slice(b"[]"),
    }
}

#[cfg(test)]
mod tests;
