//! The answers of the API's other read endpoints merged: series, label names
//! and values, metadata, exemplars, rules, alerts and targets.
//!
//! These answers are small next to query answers, so they are not indexed into
//! spans: each body is parsed into a simd-json tape (strings borrowed from the
//! body, unescaped in place) and the merge works on borrowed tape values. Like
//! the query merge it is pure (bytes in, bytes out, no actix, no HTTP),
//! deterministic, and takes the answers in priority order; where two upstreams
//! hold the same entry, the higher-priority one's copy is the one written.

use super::json::{write_labels, write_seq, write_str};
use super::series::LabelKey;
use crate::answer::{AnswerError, PADDING};
use simd_json::ValueType;
use simd_json::base::{TypedValue, ValueAsScalar, ValueIntoString};
use simd_json::tape::{Tape, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

/// The warning Prometheus adds when `limit` cut a list short (Grafana looks for it).
pub const TRUNCATED: &str = "results truncated due to limit";

/// Which endpoint's answers these are: each has its own merge rule (README, "Endpoints").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKind {
    /// `/api/v1/series`: union of label sets.
    Series,
    /// `/api/v1/labels`: sorted union of names.
    LabelNames,
    /// `/api/v1/label/<name>/values`: sorted union of values.
    LabelValues,
    /// `/api/v1/metadata`: union of entries per metric.
    Metadata,
    /// `/api/v1/targets/metadata`: union of entries.
    TargetMetadata,
    /// `/api/v1/query_exemplars`: union by series, exemplars by (labels, timestamp).
    Exemplars,
    /// `/api/v1/rules`: groups by (file, name), rules by name and labels.
    Rules,
    /// `/api/v1/alerts`: alerts by labels.
    Alerts,
    /// `/api/v1/targets`: active targets by (scrape pool, scrape URL).
    Targets,
}

/// What the merge needs besides the answers.
#[derive(Debug, Default)]
pub struct MetaOptions<'a> {
    /// Labels removed from series label sets before they are matched (and from label names).
    pub replica_labels: &'a [String],
    /// The client's `limit`: list entries (metrics, for metadata) at most.
    pub limit: Option<usize>,
    /// The client's `limit_per_metric` (metadata only).
    pub limit_per_metric: Option<usize>,
}

/// Parses one upstream body into a tape borrowing it (strings unescaped in
/// place). The body is padded for simd-json first, within its capacity when
/// the reader left room (it does), so simd-json does not copy it.
pub fn parse(body: &mut Vec<u8>) -> Result<Tape<'_>, AnswerError> {
    let len = body.len();
    body.resize(len + PADDING, 0);
    let mut buffers = simd_json::Buffers::new(len);
    let mut tape = Tape::null();
    simd_json::fill_tape_padded(body, len, &mut buffers, &mut tape)
        .map_err(|e| AnswerError::Json(e.to_string()))?;
    Ok(tape)
}

/// One upstream's successful answer, checked to have the endpoint's shape.
#[derive(Clone, Copy)]
pub struct MetaAnswer<'t, 'i> {
    data: Value<'t, 'i>,
    warnings: Option<Value<'t, 'i>>,
    infos: Option<Value<'t, 'i>>,
}

impl<'t, 'i> MetaAnswer<'t, 'i> {
    /// Reads the envelope: `"status":"success"` and a `data` of the endpoint's shape.
    pub fn read(kind: MetaKind, tape: &'t Tape<'i>) -> Result<Self, AnswerError> {
        let root = tape.as_value();
        if !root.is_object() {
            return Err(AnswerError::Shape("not a JSON object"));
        }
        match root.get("status").and_then(|s| s.into_string()) {
            Some("success") => {}
            Some("error") => {
                let text = |k: &str| {
                    root.get(k)
                        .and_then(|v| v.into_string())
                        .unwrap_or_default()
                        .to_string()
                };
                return Err(AnswerError::Status {
                    error_type: text("errorType"),
                    error: text("error"),
                });
            }
            _ => return Err(AnswerError::Shape("no \"status\":\"success\"")),
        }
        let data = root.get("data").ok_or(AnswerError::Shape("no data"))?;
        // Some versions send null for an empty list.
        let shaped = match kind {
            MetaKind::Series
            | MetaKind::LabelNames
            | MetaKind::LabelValues
            | MetaKind::TargetMetadata
            | MetaKind::Exemplars => data.is_array() || (data.value_type() == ValueType::Null),
            MetaKind::Metadata => data.is_object() || (data.value_type() == ValueType::Null),
            MetaKind::Rules => data.get("groups").is_some_and(|g| g.is_array()),
            MetaKind::Alerts => data.get("alerts").is_some_and(|g| g.is_array()),
            MetaKind::Targets => data.is_object(),
        };
        if !shaped {
            return Err(AnswerError::Shape(
                "data has the wrong shape for this endpoint",
            ));
        }
        Ok(MetaAnswer {
            data,
            warnings: root.get("warnings"),
            infos: root.get("infos"),
        })
    }
}

/// Merges the answers (in priority order; None for an upstream that failed)
/// into one Prometheus answer in `out`. `warnings` are appended after the
/// upstreams' own.
pub fn merge_meta(
    kind: MetaKind,
    answers: &[Option<MetaAnswer<'_, '_>>],
    warnings: &[String],
    opts: &MetaOptions<'_>,
    out: &mut Vec<u8>,
) {
    let datas: Vec<Value<'_, '_>> = answers.iter().flatten().map(|a| a.data).collect();
    let mut notes: Vec<&str> = Vec::new();
    out.extend_from_slice(b"{\"status\":\"success\",\"data\":");
    match kind {
        _ if datas.is_empty() => out.extend_from_slice(b"null"),
        MetaKind::Series => merge_series(&datas, opts, &mut notes, out),
        MetaKind::LabelNames | MetaKind::LabelValues => {
            let skip: &[String] = if kind == MetaKind::LabelNames {
                opts.replica_labels
            } else {
                &[]
            };
            merge_strings(&datas, skip, opts.limit, &mut notes, out)
        }
        MetaKind::Metadata => merge_metadata(&datas, opts, out),
        MetaKind::TargetMetadata => {
            let items = union_by(&elements(&datas), |v| Some(Canon(v)));
            write_list(out, &items)
        }
        MetaKind::Exemplars => merge_exemplars(&datas, opts.replica_labels, out),
        MetaKind::Rules => merge_rules(&datas, out),
        MetaKind::Alerts => {
            let alerts = list_of(&datas, "alerts");
            let merged = union_by(&alerts, |a| Some(Canon(a.get("labels")?)));
            write_object_with(
                out,
                datas[0],
                &[("alerts", &|out| write_list(out, &merged))],
            );
        }
        MetaKind::Targets => merge_targets(&datas, out),
    }
    let upstream_warnings = strings(answers, |a| a.warnings);
    let all = upstream_warnings
        .iter()
        .copied()
        .chain(notes)
        .chain(warnings.iter().map(String::as_str));
    super::write_string_set(out, "warnings", all);
    super::write_string_set(out, "infos", strings(answers, |a| a.infos).into_iter());
    out.push(b'}');
}

/// The strings of one array field (`warnings`, `infos`) of every answer, in order.
fn strings<'t, 'i>(
    answers: &[Option<MetaAnswer<'t, 'i>>],
    field: fn(&MetaAnswer<'t, 'i>) -> Option<Value<'t, 'i>>,
) -> Vec<&'i str> {
    answers
        .iter()
        .flatten()
        .filter_map(field)
        .filter_map(|v| v.as_array())
        .flat_map(|a| a.iter())
        .filter_map(|v| v.into_string())
        .collect()
}

/// Applies `limit` to a sorted, deduplicated list, noting a cut as Prometheus does.
fn apply_limit<T>(items: &mut Vec<T>, limit: Option<usize>, notes: &mut Vec<&str>) {
    if let Some(limit) = limit.filter(|&l| l > 0 && items.len() > l) {
        items.truncate(limit);
        notes.push(TRUNCATED);
    }
}

fn merge_strings(
    datas: &[Value<'_, '_>],
    skip: &[String],
    limit: Option<usize>,
    notes: &mut Vec<&str>,
    out: &mut Vec<u8>,
) {
    let lists: Vec<Vec<&str>> = datas
        .iter()
        .filter_map(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.into_string())
                .filter(|s| !skip.iter().any(|r| r == s))
                .collect()
        })
        .collect();
    let mut all = union_of_sorted(&lists).unwrap_or_else(|| {
        let mut all: Vec<&str> = lists.concat();
        all.sort_unstable();
        all.dedup();
        all
    });
    apply_limit(&mut all, limit, notes);
    out.reserve(all.iter().map(|s| s.len() + 3).sum::<usize>() + 2);
    write_seq(out, b'[', b']', all, write_str);
}

/// The sorted union of lists that are each sorted (as Prometheus sends label
/// names and values), in one pass over them: each step takes the least head.
/// None as soon as the union comes out of order, which happens exactly when a
/// list was not sorted; the caller then sorts.
fn union_of_sorted<'i>(lists: &[Vec<&'i str>]) -> Option<Vec<&'i str>> {
    // Which lists hold the least head: one bit per list, so at most 64 lists.
    if lists.len() > 64 {
        return None;
    }
    let mut heads = vec![0usize; lists.len()];
    let mut all: Vec<&str> = Vec::with_capacity(lists.iter().map(Vec::len).max().unwrap_or(0));
    loop {
        let mut least: Option<&str> = None;
        let mut holders = 0u64;
        for (i, (list, &at)) in lists.iter().zip(&heads).enumerate() {
            let Some(&s) = list.get(at) else { continue };
            match least.map(|l| s.cmp(l)) {
                Some(Ordering::Greater) => {}
                Some(Ordering::Equal) => holders |= 1 << i,
                _ => (least, holders) = (Some(s), 1 << i),
            }
        }
        let Some(least) = least else { return Some(all) };
        for (i, at) in heads.iter_mut().enumerate() {
            *at += ((holders >> i) & 1) as usize;
        }
        match all.last().map(|last| least.cmp(last)) {
            Some(Ordering::Less) => return None,
            // A list holding one value twice, in order.
            Some(Ordering::Equal) => {}
            _ => all.push(least),
        }
    }
}

/// A label set object's pairs, replica labels removed, sorted by name.
fn label_key<'i>(labels: Value<'_, 'i>, replica_labels: &[String]) -> LabelKey<'i> {
    let mut key: LabelKey<'i> = labels
        .as_object()
        .map(|o| o.iter())
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_bytes(), v.into_string()?.as_bytes())))
        .filter(|(k, _)| !replica_labels.iter().any(|r| r.as_bytes() == *k))
        .collect();
    key.sort_unstable_by(|a, b| a.0.cmp(b.0));
    key
}

fn merge_series(
    datas: &[Value<'_, '_>],
    opts: &MetaOptions<'_>,
    notes: &mut Vec<&str>,
    out: &mut Vec<u8>,
) {
    let mut sets: Vec<LabelKey<'_>> = elements(datas)
        .into_iter()
        .map(|s| label_key(s, opts.replica_labels))
        .collect();
    // Label by label, name then value: the order Prometheus sorts series in.
    sets.sort_unstable();
    sets.dedup();
    apply_limit(&mut sets, opts.limit, notes);
    write_seq(out, b'[', b']', &sets, |out, key| write_labels(out, key));
}

fn merge_metadata(datas: &[Value<'_, '_>], opts: &MetaOptions<'_>, out: &mut Vec<u8>) {
    // Sorted by metric name, as Go writes a map.
    let mut metrics: BTreeMap<&str, Vec<Value<'_, '_>>> = BTreeMap::new();
    for data in datas {
        for (metric, entries) in data.as_object().map(|o| o.iter()).into_iter().flatten() {
            let list = metrics.entry(metric).or_default();
            for entry in entries.as_array().map(|a| a.iter()).into_iter().flatten() {
                if !list.contains(&entry) {
                    list.push(entry);
                }
            }
        }
    }
    let limit = opts.limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
    let per_metric = opts
        .limit_per_metric
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    write_seq(
        out,
        b'{',
        b'}',
        metrics.iter().take(limit),
        |out, (metric, entries)| {
            write_str(out, metric);
            out.push(b':');
            write_list(out, &entries[..entries.len().min(per_metric)]);
        },
    );
}

fn merge_exemplars(datas: &[Value<'_, '_>], replica_labels: &[String], out: &mut Vec<u8>) {
    let mut by_series: HashMap<LabelKey<'_>, Vec<Value<'_, '_>>, ahash::RandomState> =
        HashMap::default();
    for series in elements(datas) {
        let Some(labels) = series.get("seriesLabels") else {
            continue;
        };
        let list = by_series
            .entry(label_key(labels, replica_labels))
            .or_default();
        list.extend(
            series
                .get("exemplars")
                .and_then(|e| e.as_array())
                .into_iter()
                .flat_map(|a| a.iter()),
        );
    }
    let mut series: Vec<_> = by_series.into_iter().collect();
    series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let ts = |e: &Value<'_, '_>| {
        e.get("timestamp")
            .and_then(|t| t.as_f64().or(t.as_i64().map(|i| i as f64)))
            .unwrap_or(f64::NAN)
    };
    write_seq(out, b'[', b']', series, |out, (key, mut exemplars)| {
        // Stable: among equal timestamps, the higher-priority upstream's copy comes first.
        exemplars.sort_by(|a, b| ts(a).total_cmp(&ts(b)));
        let mut kept: Vec<Value<'_, '_>> = Vec::with_capacity(exemplars.len());
        for e in exemplars {
            let duplicate = kept
                .iter()
                .rev()
                .take_while(|k| ts(k) == ts(&e))
                .any(|k| k.get("labels") == e.get("labels"));
            if !duplicate {
                kept.push(e);
            }
        }
        out.extend_from_slice(b"{\"seriesLabels\":");
        write_labels(out, &key);
        out.extend_from_slice(b",\"exemplars\":");
        write_list(out, &kept);
        out.push(b'}');
    });
}

fn merge_rules(datas: &[Value<'_, '_>], out: &mut Vec<u8>) {
    // Groups by (file, name), first seen first; each keeps the fields of the
    // highest-priority upstream that has it, with the union of rules.
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut groups: HashMap<(&str, &str), Vec<Value<'_, '_>>, ahash::RandomState> =
        HashMap::default();
    for group in list_of(datas, "groups") {
        let text = |k: &str| {
            group
                .get(k)
                .and_then(|v| v.into_string())
                .unwrap_or_default()
        };
        let id = (text("file"), text("name"));
        let copies = groups.entry(id).or_default();
        if copies.is_empty() {
            order.push(id);
        }
        copies.push(group);
    }
    let write_groups = |out: &mut Vec<u8>| {
        write_seq(out, b'[', b']', &order, |out, id| {
            let copies = &groups[id];
            let rules = list_of(copies, "rules");
            let merged = union_by(&rules, |r| {
                Some((r.get("name")?.into_string()?, r.get("labels").map(Canon)))
            });
            write_object_with(
                out,
                copies[0],
                &[("rules", &|out| write_list(out, &merged))],
            );
        });
    };
    write_object_with(out, datas[0], &[("groups", &write_groups)]);
}

fn merge_targets(datas: &[Value<'_, '_>], out: &mut Vec<u8>) {
    let active = list_of(datas, "activeTargets");
    let active = union_by(&active, |t| {
        Some((
            t.get("scrapePool")?.into_string()?,
            t.get("scrapeUrl")?.into_string()?,
        ))
    });
    let dropped = list_of(datas, "droppedTargets");
    let dropped = union_by(&dropped, |t| Some(Canon(t.get("discoveredLabels")?)));
    write_object_with(
        out,
        datas[0],
        &[
            ("activeTargets", &|out| write_list(out, &active)),
            ("droppedTargets", &|out| write_list(out, &dropped)),
        ],
    );
}

/// Every element of the array under `key` in each of `objects`, in order.
fn list_of<'t, 'i>(objects: &[Value<'t, 'i>], key: &str) -> Vec<Value<'t, 'i>> {
    objects
        .iter()
        .filter_map(|o| o.get(key)?.as_array())
        .flat_map(|a| a.iter())
        .collect()
}

/// `items` with only the first copy of each identity kept (items without one are all kept).
fn union_by<'t, 'i, K: Hash + Eq>(
    items: &[Value<'t, 'i>],
    identity: impl Fn(Value<'t, 'i>) -> Option<K>,
) -> Vec<Value<'t, 'i>> {
    let mut seen: HashSet<K, ahash::RandomState> = HashSet::default();
    items
        .iter()
        .copied()
        .filter(|&v| identity(v).is_none_or(|k| seen.insert(k)))
        .collect()
}

/// The elements of every array in `arrays`, in order.
fn elements<'t, 'i>(arrays: &[Value<'t, 'i>]) -> Vec<Value<'t, 'i>> {
    arrays
        .iter()
        .filter_map(|a| a.as_array())
        .flat_map(|a| a.iter())
        .collect()
}

/// A tape value compared and hashed by its content, for use as a set key.
#[derive(Clone, Copy, PartialEq)]
struct Canon<'t, 'i>(Value<'t, 'i>);

impl Eq for Canon<'_, '_> {}

impl Hash for Canon<'_, '_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_value(self.0, h);
    }
}

fn hash_value<H: Hasher>(v: Value<'_, '_>, h: &mut H) {
    if let Some(s) = v.into_string() {
        s.hash(h);
    } else if let Some(a) = v.as_array() {
        b'['.hash(h);
        a.iter().for_each(|x| hash_value(x, h));
    } else if let Some(o) = v.as_object() {
        b'{'.hash(h);
        for (k, x) in o.iter() {
            k.hash(h);
            hash_value(x, h);
        }
    } else {
        v.as_i64().hash(h);
        v.as_u64().hash(h);
        v.as_f64().map(f64::to_bits).hash(h);
        v.as_bool().hash(h);
    }
}

/// Writes `[a,b,…]`.
fn write_list(out: &mut Vec<u8>, items: &[Value<'_, '_>]) {
    write_seq(out, b'[', b']', items, |out, v| write_value(out, *v));
}

type FieldWriter<'a> = &'a dyn Fn(&mut Vec<u8>);

/// Writes `object` with its fields in order, those named in `replace` written
/// by their writer instead (and added at the end if the object lacks them).
fn write_object_with(
    out: &mut Vec<u8>,
    object: Value<'_, '_>,
    replace: &[(&str, FieldWriter<'_>)],
) {
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    let fields: Vec<(&str, Value<'_, '_>)> = object
        .as_object()
        .map(|o| o.iter().collect())
        .unwrap_or_default();
    for (k, v) in &fields {
        sep(out);
        write_str(out, k);
        out.push(b':');
        match replace.iter().find(|(name, _)| name == k) {
            Some((_, write)) => write(out),
            None => write_value(out, *v),
        }
    }
    for (name, write) in replace {
        if !fields.iter().any(|(k, _)| k == name) {
            sep(out);
            write_str(out, name);
            out.push(b':');
            write(out);
        }
    }
    out.push(b'}');
}

/// Writes a tape value as Go's encoding/json would: object fields in their
/// order, strings escaped by Go's rules, floats in Go's shortest form.
pub fn write_value(out: &mut Vec<u8>, v: Value<'_, '_>) {
    use std::io::Write as _;
    match v.value_type() {
        ValueType::String => write_str(out, v.into_string().unwrap_or_default()),
        ValueType::Array => write_list(
            out,
            &v.as_array()
                .map(|a| a.iter().collect::<Vec<_>>())
                .unwrap_or_default(),
        ),
        ValueType::Object => write_object_with(out, v, &[]),
        ValueType::Bool => out.extend_from_slice(if v.as_bool() == Some(true) {
            b"true"
        } else {
            b"false"
        }),
        ValueType::I64 => {
            let _ = write!(out, "{}", v.as_i64().unwrap_or_default());
        }
        ValueType::U64 => {
            let _ = write!(out, "{}", v.as_u64().unwrap_or_default());
        }
        ValueType::F64 => write_go_float(out, v.as_f64().unwrap_or_default()),
        _ => out.extend_from_slice(b"null"),
    }
}

/// Go's `strconv.FormatFloat(f, 'f' or 'e', -1, 64)` as encoding/json picks it:
/// plain digits from 1e-6 up to 1e21, else `1e-07` written `1e-7` and `1e+21`.
fn write_go_float(out: &mut Vec<u8>, f: f64) {
    use std::io::Write as _;
    if !f.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let text = format!("{f:e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        out.extend_from_slice(mantissa.as_bytes());
        out.push(b'e');
        if !exp.starts_with('-') {
            out.push(b'+');
        }
        out.extend_from_slice(exp.as_bytes());
    } else {
        let _ = write!(out, "{f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Merges `bodies` (priority order) as `kind`; a body that does not parse is left out.
    fn merged(kind: MetaKind, bodies: &[&str], opts: &MetaOptions<'_>) -> String {
        let mut bufs: Vec<Vec<u8>> = bodies.iter().map(|b| b.as_bytes().to_vec()).collect();
        let tapes: Vec<_> = bufs.iter_mut().map(|b| parse(b).ok()).collect();
        let answers: Vec<_> = tapes
            .iter()
            .map(|t| t.as_ref().and_then(|t| MetaAnswer::read(kind, t).ok()))
            .collect();
        let mut out = Vec::new();
        merge_meta(kind, &answers, &[], opts, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn ok(data: &str) -> String {
        format!(r#"{{"status":"success","data":{data}}}"#)
    }

    #[test]
    fn label_names_are_a_sorted_union_without_replica_labels_and_limited_like_prometheus() {
        let replica = ["replica".to_string()];
        let opts = MetaOptions {
            replica_labels: &replica,
            ..Default::default()
        };
        let a = ok(r#"["__name__","job","replica"]"#);
        let b = ok(r#"["code","job","replica"]"#);
        assert_eq!(
            merged(MetaKind::LabelNames, &[&a, &b], &opts),
            ok(r#"["__name__","code","job"]"#)
        );
        let limited = MetaOptions {
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(
            merged(MetaKind::LabelValues, &[&a, &b], &limited),
            r#"{"status":"success","data":["__name__","code"],"warnings":["results truncated due to limit"]}"#
        );
        let exact = MetaOptions {
            limit: Some(4),
            ..Default::default()
        };
        assert!(!merged(MetaKind::LabelValues, &[&a, &b], &exact).contains("warnings"));
    }

    #[test]
    fn label_values_from_lists_in_any_order_come_out_sorted_and_once() {
        let opts = MetaOptions::default();
        let values = |bodies: &[&str]| {
            let bodies: Vec<String> = bodies.iter().map(|b| ok(b)).collect();
            let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
            merged(MetaKind::LabelValues, &refs, &opts)
        };
        let want = ok(r#"["a","b","c","d","e"]"#);
        // Sorted lists (the one-pass union), three of them, overlapping.
        assert_eq!(
            values(&[r#"["a","c"]"#, r#"["b","c","e"]"#, r#"["d"]"#]),
            want
        );
        // A list with a value twice, in order.
        assert_eq!(values(&[r#"["a","b","b","e"]"#, r#"["c","d"]"#]), want);
        // A list out of order, found at its first or at its last element.
        assert_eq!(values(&[r#"["e","a","b"]"#, r#"["c","d"]"#]), want);
        assert_eq!(values(&[r#"["a","b","d"]"#, r#"["c","e","a"]"#]), want);
        // Empty lists and lists of one.
        assert_eq!(
            values(&[r#"[]"#, r#"["e","d","c","b","a"]"#, r#"[]"#]),
            want
        );
    }

    #[test]
    fn series_match_after_replica_labels_are_removed_and_sort_like_prometheus() {
        let replica = ["replica".to_string()];
        let opts = MetaOptions {
            replica_labels: &replica,
            ..Default::default()
        };
        let a = ok(
            r#"[{"__name__":"up","job":"b","replica":"a"},{"__name__":"up","job":"a","replica":"a"}]"#,
        );
        let b = ok(
            r#"[{"replica":"b","job":"a","__name__":"up"},{"__name__":"up","instance":"x","job":"a","replica":"b"}]"#,
        );
        assert_eq!(
            merged(MetaKind::Series, &[&a, &b], &opts),
            ok(
                r#"[{"__name__":"up","instance":"x","job":"a"},{"__name__":"up","job":"a"},{"__name__":"up","job":"b"}]"#
            )
        );
    }

    #[test]
    fn metadata_is_a_union_per_metric_without_duplicates() {
        let a = ok(r#"{"up":[{"type":"gauge","help":"Up.","unit":""}]}"#);
        let b = ok(
            r#"{"up":[{"type":"gauge","help":"Up.","unit":""},{"type":"gauge","help":"Old help.","unit":""}],"http_requests_total":[{"type":"counter","help":"Requests.","unit":""}]}"#,
        );
        assert_eq!(
            merged(MetaKind::Metadata, &[&a, &b], &MetaOptions::default()),
            ok(
                r#"{"http_requests_total":[{"type":"counter","help":"Requests.","unit":""}],"up":[{"type":"gauge","help":"Up.","unit":""},{"type":"gauge","help":"Old help.","unit":""}]}"#
            )
        );
        let limited = MetaOptions {
            limit: Some(1),
            limit_per_metric: Some(1),
            ..Default::default()
        };
        assert_eq!(
            merged(MetaKind::Metadata, &[&b, &a], &limited),
            ok(r#"{"http_requests_total":[{"type":"counter","help":"Requests.","unit":""}]}"#)
        );
    }

    #[test]
    fn exemplars_are_deduplicated_by_labels_and_timestamp_and_ascend() {
        let a = ok(
            r#"[{"seriesLabels":{"__name__":"rpc"},"exemplars":[{"labels":{"trace_id":"2"},"value":"6","timestamp":1600096945.479},{"labels":{"trace_id":"1"},"value":"5","timestamp":1600096900}]}]"#,
        );
        let b = ok(
            r#"[{"seriesLabels":{"__name__":"rpc"},"exemplars":[{"labels":{"trace_id":"1"},"value":"5","timestamp":1600096900},{"labels":{"trace_id":"3"},"value":"7","timestamp":1600096999.5}]}]"#,
        );
        assert_eq!(
            merged(MetaKind::Exemplars, &[&a, &b], &MetaOptions::default()),
            ok(
                r#"[{"seriesLabels":{"__name__":"rpc"},"exemplars":[{"labels":{"trace_id":"1"},"value":"5","timestamp":1600096900},{"labels":{"trace_id":"2"},"value":"6","timestamp":1600096945.479},{"labels":{"trace_id":"3"},"value":"7","timestamp":1600096999.5}]}]"#
            )
        );
    }

    #[test]
    fn rules_merge_groups_by_file_and_name_and_the_higher_priority_state_wins() {
        let a = ok(
            r#"{"groups":[{"name":"g","file":"r.yml","rules":[{"name":"Hot","labels":{"sev":"page"},"state":"firing","type":"alerting"}],"interval":15}]}"#,
        );
        let b = ok(
            r#"{"groups":[{"name":"g","file":"r.yml","rules":[{"name":"Hot","labels":{"sev":"page"},"state":"inactive","type":"alerting"},{"name":"job:up:sum","query":"sum(up)","type":"recording"}],"interval":15},{"name":"h","file":"r.yml","rules":[],"interval":30}]}"#,
        );
        assert_eq!(
            merged(MetaKind::Rules, &[&a, &b], &MetaOptions::default()),
            ok(
                r#"{"groups":[{"name":"g","file":"r.yml","rules":[{"name":"Hot","labels":{"sev":"page"},"state":"firing","type":"alerting"},{"name":"job:up:sum","query":"sum(up)","type":"recording"}],"interval":15},{"name":"h","file":"r.yml","rules":[],"interval":30}]}"#
            )
        );
    }

    #[test]
    fn alerts_and_targets_are_deduplicated_with_the_higher_priority_copy_kept() {
        let a = ok(r#"{"alerts":[{"labels":{"alertname":"Hot"},"state":"firing"}]}"#);
        let b = ok(
            r#"{"alerts":[{"labels":{"alertname":"Hot"},"state":"pending"},{"labels":{"alertname":"Cold"},"state":"firing"}]}"#,
        );
        assert_eq!(
            merged(MetaKind::Alerts, &[&a, &b], &MetaOptions::default()),
            ok(
                r#"{"alerts":[{"labels":{"alertname":"Hot"},"state":"firing"},{"labels":{"alertname":"Cold"},"state":"firing"}]}"#
            )
        );
        let a = ok(
            r#"{"activeTargets":[{"scrapePool":"node","scrapeUrl":"http://x/metrics","health":"up"}],"droppedTargets":[],"droppedTargetCounts":{"node":0}}"#,
        );
        let b = ok(
            r#"{"activeTargets":[{"scrapePool":"node","scrapeUrl":"http://x/metrics","health":"down"},{"scrapePool":"node","scrapeUrl":"http://y/metrics","health":"up"}],"droppedTargets":[{"discoveredLabels":{"a":"1"}}],"droppedTargetCounts":{"node":1}}"#,
        );
        assert_eq!(
            merged(MetaKind::Targets, &[&a, &b], &MetaOptions::default()),
            ok(
                r#"{"activeTargets":[{"scrapePool":"node","scrapeUrl":"http://x/metrics","health":"up"},{"scrapePool":"node","scrapeUrl":"http://y/metrics","health":"up"}],"droppedTargets":[{"discoveredLabels":{"a":"1"}}],"droppedTargetCounts":{"node":0}}"#
            )
        );
    }

    #[test]
    fn one_upstream_is_written_back_as_prometheus_wrote_it() {
        let body = r#"{"status":"success","data":{"activeTargets":[{"discoveredLabels":{"__address__":"127.0.0.1:9100"},"labels":{"instance":"a\u0026b","job":"node"},"scrapePool":"node","scrapeUrl":"http://127.0.0.1:9100/metrics","globalUrl":"http://h:9100/metrics","lastError":"","lastScrape":"2026-11-25T01:02:03.123456789Z","lastScrapeDuration":0.003212345,"health":"up","scrapeInterval":"15s","scrapeTimeout":"10s","tiny":1e-7,"huge":1e+21,"neg":-2,"ok":true,"none":null}],"droppedTargets":[]}}"#;
        assert_eq!(
            merged(MetaKind::Targets, &[body], &MetaOptions::default()),
            body
        );
    }

    #[test]
    fn bodies_that_are_not_answers_are_told_apart() {
        let mut garbage = b"<html>oops".to_vec();
        assert!(matches!(parse(&mut garbage), Err(AnswerError::Json(_))));
        let mut error =
            br#"{"status":"error","errorType":"bad_data","error":"bad match[]"}"#.to_vec();
        let tape = parse(&mut error).unwrap();
        assert!(matches!(
            MetaAnswer::read(MetaKind::Series, &tape),
            Err(AnswerError::Status { error_type, .. }) if error_type == "bad_data"
        ));
        let mut wrong = br#"{"status":"success","data":{"x":1}}"#.to_vec();
        let tape = parse(&mut wrong).unwrap();
        assert!(matches!(
            MetaAnswer::read(MetaKind::LabelNames, &tape),
            Err(AnswerError::Shape(_))
        ));
        // A failed upstream leaves the other's answer whole, warnings unioned.
        let a = r#"{"status":"success","data":["x"],"warnings":["w1"]}"#;
        assert_eq!(
            merged(
                MetaKind::LabelNames,
                &["garbage", a],
                &MetaOptions::default()
            ),
            a
        );
    }
}
