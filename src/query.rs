//! What the proxy needs to know about a PromQL expression, read from its parse tree.
//!
//! The proxy never evaluates PromQL; upstreams do. It parses the expression
//! (with `promql-parser`) only to learn what the merge must re-apply (an
//! outermost `topk`/`bottomk`/`limitk` or `sort`/`sort_desc`) and which stretch
//! of history the expression reads at each step (for the coverage query). An expression
//! this parser rejects is still sent upstream unchanged, because Prometheus is
//! the judge of its own language; the merge then re-applies nothing.

use crate::merge::coverage::LEAST_COUNTS;
use crate::merge::reorder::{Grouping, Reorder};
use promql_parser::parser::{self, Expr, Offset, token};
use std::time::Duration;

/// The merge-relevant facts about one query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryShape {
    pub reorder: Reorder,
    pub reads: Reads,
}

/// Which stored samples the expression reads when evaluated at a step `t`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Reads {
    /// The expression could not be parsed here: nothing is known.
    #[default]
    Unknown,
    /// No selector at all (`1+1`, `time()`): no stored data is read.
    Nothing,
    /// These stretches of history: per selector, at most one relative to
    /// `t` and one per distinct `@` time.
    Stretches(Vec<Stretch>),
}

/// Samples of `selector` in `[T + from_ms, T + to_ms]`, where T is the
/// step's time, or the time of the `@` modifier when `at` is set (as PromQL
/// text, `@ 1700000000.000` or `@ start()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stretch {
    /// The selector as PromQL, without its offset and `@`: `x{job="a"}`.
    pub selector: String,
    pub at: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Stretch {
    /// How many milliseconds it spans; at least 1, as PromQL has no empty range.
    pub fn width_ms(&self) -> i64 {
        (self.to_ms - self.from_ms).max(1)
    }
}

/// Reads the shape of `query`, with `lookback` the look-back delta a plain
/// selector reaches back, and every stretch at least `narrowest` wide (see
/// [`narrowest_counted`]); an unparsable query has the default shape.
pub fn analyse(query: &str, lookback: Duration, narrowest: Duration) -> QueryShape {
    let parsed = parser::parse(query).or_else(|e| match with_current_names(query) {
        Some(renamed) => parser::parse(&renamed),
        None => Err(e),
    });
    match parsed {
        Ok(expr) => {
            let mut acc = Acc::new(narrowest.as_millis() as i64);
            acc.add(&expr, lookback.as_millis() as i64);
            let stretches: Vec<Stretch> = acc
                .relative
                .into_iter()
                .map(|(selector, (from_ms, to_ms))| Stretch {
                    selector,
                    at: None,
                    from_ms,
                    to_ms,
                })
                .chain(
                    acc.pinned
                        .into_iter()
                        .map(|((at, selector), (from_ms, to_ms))| Stretch {
                            selector,
                            at: Some(at),
                            from_ms,
                            to_ms,
                        }),
                )
                .collect();
            QueryShape {
                reorder: reorder_of(&expr),
                reads: if stretches.is_empty() {
                    Reads::Nothing
                } else {
                    Reads::Stretches(stretches)
                },
            }
        }
        Err(_) => QueryShape::default(),
    }
}

/// Functions Prometheus 2.x calls by a name the parser knows only by its 3.x name.
const RENAMED: [(&str, &str); 1] = [("holt_winters", "double_exponential_smoothing")];

/// `query` with the old names of renamed functions replaced where they are
/// called (a name followed by `(`, not part of a longer name); None if none is.
/// Used only to read the query's shape: upstreams get the query as sent.
fn with_current_names(query: &str) -> Option<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = query.to_string();
    let mut changed = false;
    for (old, new) in RENAMED {
        let mut from = 0;
        while let Some(i) = out[from..].find(old).map(|i| i + from) {
            let end = i + old.len();
            let before_ok = !out[..i].chars().next_back().is_some_and(is_name);
            let called = out[end..].trim_start().starts_with('(');
            if before_ok && called {
                out.replace_range(i..end, new);
                changed = true;
                from = i + new.len();
            } else {
                from = end;
            }
        }
    }
    changed.then_some(out)
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

fn union(a: Option<(i64, i64)>, b: (i64, i64)) -> (i64, i64) {
    match a {
        Some(x) => (x.0.min(b.0), x.1.max(b.1)),
        None => b,
    }
}

/// What a selector that names no one metric is counted as: `count_over_time`
/// drops metric names, and fails on two series that differ only in theirs.
pub const NAMELESS_STAND_IN: &str = "up";

/// The selector of `vs` as PromQL, without its offset and `@`; or, if it may
/// match more than one metric name, [`NAMELESS_STAND_IN`].
fn selector_text(vs: &parser::VectorSelector) -> String {
    let named =
        vs.name.is_some()
            || vs.matchers.matchers.iter().any(|m| {
                m.name == "__name__" && matches!(m.op, promql_parser::label::MatchOp::Equal)
            });
    if !named || !vs.matchers.or_matchers.is_empty() {
        return NAMELESS_STAND_IN.to_string();
    }
    parser::VectorSelector {
        offset: None,
        at: None,
        ..vs.clone()
    }
    .to_string()
}

/// Widens the stretch read under `key` to cover `window`.
fn widen<K: Ord>(map: &mut std::collections::BTreeMap<K, (i64, i64)>, key: K, window: (i64, i64)) {
    let slot = map.get(&key).copied();
    map.insert(key, union(slot, window));
}

/// How narrow a stretch the coverage counts at the least, for replicas
/// scraping every `scrape_interval`: two of it. A narrower window holds a
/// sample of one replica and none of another only because they scrape at
/// other moments, which its counts would read as a hole in the one without;
/// two intervals hold every replica's samples, one or two of each, which
/// the counts' tolerance of a sample per series takes as alike.
pub fn narrowest_counted(scrape_interval: Duration) -> Duration {
    2 * scrape_interval
}

/// The stretches an expression reads, per selector: one relative to the
/// step, one per `@` time.
struct Acc {
    relative: std::collections::BTreeMap<String, (i64, i64)>,
    /// By (`@` time, selector).
    pinned: std::collections::BTreeMap<(String, String), (i64, i64)>,
    /// Every window read is widened back to this many milliseconds.
    narrowest_ms: i64,
}

impl Acc {
    fn new(narrowest_ms: i64) -> Acc {
        Acc {
            relative: Default::default(),
            pinned: Default::default(),
            narrowest_ms,
        }
    }

    fn read(&mut self, selector: String, at: &Option<parser::AtModifier>, window: (i64, i64)) {
        let window = (window.0.min(window.1 - self.narrowest_ms), window.1);
        match at {
            None => widen(&mut self.relative, selector, window),
            Some(at) => widen(&mut self.pinned, (at.to_string(), selector), window),
        }
    }

    fn add(&mut self, expr: &Expr, lookback_ms: i64) {
        match expr {
            Expr::VectorSelector(vs) => {
                let o = offset_ms(&vs.offset);
                self.read(selector_text(vs), &vs.at, (-o - lookback_ms, -o));
            }
            Expr::MatrixSelector(ms) => {
                let o = offset_ms(&ms.vs.offset);
                let window = (-o - ms.range.as_millis() as i64, -o);
                self.read(selector_text(&ms.vs), &ms.vs.at, window);
            }
            Expr::Subquery(sq) => {
                // The inner expression is evaluated at steps across (T-o-range, T-o]:
                // its relative reads move with them; its pinned reads stay put.
                let mut inner = Acc::new(self.narrowest_ms);
                inner.add(&sq.expr, lookback_ms);
                let o = offset_ms(&sq.offset);
                for (selector, (from, to)) in inner.relative {
                    let window = (from - o - sq.range.as_millis() as i64, to - o);
                    self.read(selector, &sq.at, window);
                }
                for (key, window) in inner.pinned {
                    widen(&mut self.pinned, key, window);
                }
            }
            Expr::Aggregate(agg) => {
                self.add(&agg.expr, lookback_ms);
                if let Some(p) = &agg.param {
                    self.add(p, lookback_ms);
                }
            }
            Expr::Binary(b) => {
                self.add(&b.lhs, lookback_ms);
                self.add(&b.rhs, lookback_ms);
            }
            Expr::Unary(u) => self.add(&u.expr, lookback_ms),
            Expr::Paren(p) => self.add(&p.expr, lookback_ms),
            Expr::Call(call) => {
                for arg in &call.args.args {
                    self.add(arg, lookback_ms);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
}

/// An instant query has one step, too few to learn an upstream's usual
/// deficit from; so its coverage is asked as a range query of this many steps
/// before the instant (and the instant itself), this far apart. 7 s is no
/// divisor of common scrape intervals, so the windows meet the scrapes at
/// several phases.
pub const INSTANT_HISTORY_STEPS: i64 = 8;
pub const INSTANT_HISTORY_STEP_MS: i64 = 7_000;

/// The stretches an instant query reads, as its coverage range must see them:
/// at an instant, `@ start()` and `@ end()` are the instant itself, so those
/// stretches move with the range's steps like unpinned ones.
pub fn at_instant(stretches: &[Stretch]) -> Vec<Stretch> {
    stretches
        .iter()
        .map(|s| match s.at.as_deref() {
            Some("@ start()" | "@ end()") => Stretch {
                at: None,
                ..s.clone()
            },
            _ => s.clone(),
        })
        .collect()
}

/// The stretches a range query from `start_ms` to `end_ms` reads, with
/// `@ start()` and `@ end()` written as those times: the coverage is asked
/// over other ranges (the coarse round's reaches past `end`, the steps
/// asked apart start later), where they would pin other times.
pub fn pinned_to_range(stretches: &[Stretch], start_ms: i64, end_ms: i64) -> Vec<Stretch> {
    stretches
        .iter()
        .map(|s| {
            let at = match s.at.as_deref() {
                Some("@ start()") => Some(format!("@ {}", crate::time::seconds(start_ms))),
                Some("@ end()") => Some(format!("@ {}", crate::time::seconds(end_ms))),
                _ => s.at.clone(),
            };
            Stretch { at, ..s.clone() }
        })
        .collect()
}

/// The stretches counted when the coverage counts one configured `selector`
/// (say `up`) instead of the query's own: per `@` time, the union of what the
/// query reads there.
pub fn with_selector(selector: &str, stretches: &[Stretch]) -> Vec<Stretch> {
    let mut out: Vec<Stretch> = Vec::new();
    for s in stretches {
        match out.iter_mut().find(|o| o.at == s.at) {
            Some(o) => {
                (o.from_ms, o.to_ms) = union(Some((o.from_ms, o.to_ms)), (s.from_ms, s.to_ms));
            }
            None => out.push(Stretch {
                selector: selector.to_string(),
                ..s.clone()
            }),
        }
    }
    out
}

/// The coverage query for the stretches a query reads: per step, how many
/// samples of each stretch's selector an upstream holds in exactly that
/// stretch, and how many series they belong to, summed over the stretches
/// (the tolerance: replicas scrape at different moments, so two complete
/// ones may differ by one sample per series and stretch). Two aggregations
/// of one argument cost its evaluation twice; one aggregation of both, as
/// `sum(c + 2^32)` or `count_values`, costs more (measured with Prometheus
/// 2.42, 2,400 series × 720 steps: per-series label work at every step,
/// 1.5 and 2.2 s against 0.9 s).
pub fn coverage_query(stretches: &[Stretch]) -> String {
    let terms = count_terms(stretches);
    format!(
        "label_replace({}, \"{COVERAGE_LABEL}\", \"samples\", \"\", \"\") or label_replace({}, \"{COVERAGE_LABEL}\", \"series\", \"\", \"\")",
        total("sum", &terms),
        total("count", &terms)
    )
}

/// The coverage query of an instant at `t_ms`, asked over its history: as
/// [`coverage_query`], and per stretch the fewest samples any one of its
/// series holds at the instant (`least0`, `least1`, …; the stretches from
/// the [`LEAST_COUNTS`]th on share the last, a series in two of them with
/// one label set counted in the first). A hole in a few targets takes two
/// samples or more from such a series, however few of the total, where a
/// replica scraping later lacks one at most; counted per stretch, as one
/// count over all of them is the shortest window's. Every stretch pinned at
/// the instant, so Prometheus evaluates it once, not at every step of the
/// history (which needs only the totals, to learn from); a range of many
/// steps has that history within itself and asks no such count.
pub fn instant_coverage_query(stretches: &[Stretch], t_ms: i64) -> String {
    let at = format!("@ {}", crate::time::seconds(t_ms));
    let pinned: Vec<Stretch> = stretches
        .iter()
        .map(|s| Stretch {
            at: s.at.clone().or_else(|| Some(at.clone())),
            ..s.clone()
        })
        .collect();
    with_least_counts(coverage_query(stretches), &count_terms(&pinned))
}

/// The coverage query of a range of fewer steps than it takes to learn an
/// upstream's usual deficit from (`coverage::LEARN_FROM_STEPS`): as
/// [`coverage_query`], and per stretch the fewest samples any one of its
/// series holds, at every step (`least0`, … as an instant's; see
/// [`instant_coverage_query`]). Without them, a few targets' series two
/// scrapes short (a hole's last missing scrapes in the first step's window)
/// pass for an offset there; with many steps the range learns that from
/// its own steps, and the third aggregation at every step would cost (see
/// docs/benchmarks.md).
pub fn short_range_coverage_query(stretches: &[Stretch]) -> String {
    with_least_counts(coverage_query(stretches), &count_terms(stretches))
}

/// `coverage` with each stretch's least-sampled series' count beside it
/// (`terms`, one per stretch; from the [`LEAST_COUNTS`]th on they share one).
fn with_least_counts(coverage: String, terms: &[String]) -> String {
    let mut q = coverage;
    let shared = terms.len().min(LEAST_COUNTS - 1);
    let groups = terms[..shared]
        .iter()
        .map(std::slice::from_ref)
        .chain((shared < terms.len()).then(|| &terms[shared..]));
    for (k, group) in groups.enumerate() {
        q.push_str(&format!(
            " or label_replace(min({}), \"{COVERAGE_LABEL}\", \"least{k}\", \"\", \"\")",
            group.join(" or ")
        ));
    }
    q
}

/// Per stretch, `count_over_time` of its selector over exactly that stretch.
fn count_terms(stretches: &[Stretch]) -> Vec<String> {
    stretches
        .iter()
        .map(|s| {
            let selector = &s.selector;
            let width = s.width_ms();
            let at = s.at.as_deref().map(|a| format!(" {a}")).unwrap_or_default();
            let offset = match -s.to_ms {
                0 => String::new(),
                o => format!(" offset {o}ms"),
            };
            format!("count_over_time({selector}[{width}ms]{at}{offset})")
        })
        .collect()
}

/// The coarse round's query: the samples alone. Each aggregation reads
/// every sample of its selector over the whole range again (measured with
/// Prometheus 2.42, 2,400 series over 55 min: 86 ms for the sum in 13
/// windows, 170 ms with the count of series beside it, 380 ms both at 221
/// steps), and upstreams holding the very same samples in every window
/// hold the same series too, barring coincidence. Labelled as the other
/// coverage query is, so that an upstream's query log (and a test's fake
/// upstream) tells the proxy's coverage rounds from the user's queries.
pub fn coverage_samples_query(stretches: &[Stretch]) -> String {
    format!(
        "label_replace({}, \"{COVERAGE_LABEL}\", \"samples\", \"\", \"\")",
        total("sum", &count_terms(stretches))
    )
}

fn total(agg: &str, terms: &[String]) -> String {
    match terms {
        [one] => format!("{agg}({one})"),
        many => many
            .iter()
            .map(|t| format!("({agg}({t}) or vector(0))"))
            .collect::<Vec<_>>()
            .join(" + "),
    }
}

/// The label that tells the coverage query's two series apart.
pub const COVERAGE_LABEL: &str = "__prom_ha_proxy_coverage__";

/// The step of a range's coarse coverage: the narrowest stretch that moves
/// with the steps, so that its windows, one stretch apart, leave no sample
/// the query reads uncounted (pinned stretches read one window whatever the
/// step). None if no stretch moves.
pub fn coarse_step_ms(stretches: &[Stretch]) -> Option<i64> {
    moving_widths_ms(stretches).min()
}

/// How far past a step's time its reads reach at most (0 unless an offset
/// is negative), for a window's count to be taken as settled; None if a
/// stretch is pinned by `@`, whose window lies anywhere (`@ end()` may be
/// now), so no count of it is ever taken as settled.
pub fn reads_past_ms(stretches: &[Stretch]) -> Option<i64> {
    if stretches.iter().any(|s| s.at.is_some()) {
        return None;
    }
    Some(stretches.iter().map(|s| s.to_ms).max().unwrap_or(0).max(0))
}

/// The widest stretch that moves with the steps: a window counted at `c`
/// holds samples that steps less than this far from `c` read.
pub fn widest_moving_ms(stretches: &[Stretch]) -> Option<i64> {
    moving_widths_ms(stretches).max()
}

fn moving_widths_ms(stretches: &[Stretch]) -> impl Iterator<Item = i64> + '_ {
    stretches
        .iter()
        .filter(|s| s.at.is_none())
        .map(Stretch::width_ms)
}

/// How wide a stretch the coverage counts is, on average: the counts are
/// summed over stretches, samples and series alike, so samples per series is
/// an average over the stretches, and this is the width it spans.
pub fn mean_width_ms(stretches: &[Stretch]) -> Option<i64> {
    let n = stretches.len() as i64;
    (n > 0).then(|| stretches.iter().map(Stretch::width_ms).sum::<i64>() / n)
}

fn unparen(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(p) = expr {
        expr = &p.expr;
    }
    expr
}

fn reorder_of(expr: &Expr) -> Reorder {
    match unparen(expr) {
        Expr::Aggregate(agg) => {
            let op = agg.op.id();
            let bottom = op == token::T_BOTTOMK;
            if op != token::T_TOPK && !bottom && op != token::T_LIMITK {
                return Reorder::None;
            }
            // k must be a literal to be re-applied; `topk(scalar(x), y)` is passed through as is.
            let Some(Expr::NumberLiteral(k)) = agg.param.as_deref().map(unparen) else {
                return Reorder::None;
            };
            if k.val.is_nan() || k.val < 1.0 {
                return Reorder::None;
            }
            let k = k.val.min(u32::MAX as f64) as usize;
            let grouping = match &agg.modifier {
                None => Grouping::Everything,
                Some(parser::LabelModifier::Include(l)) => Grouping::By(l.labels.clone()),
                Some(parser::LabelModifier::Exclude(l)) => Grouping::Without(l.labels.clone()),
            };
            if op == token::T_LIMITK {
                Reorder::LimitK { k, grouping }
            } else {
                Reorder::TopK {
                    k,
                    bottom,
                    grouping,
                }
            }
        }
        Expr::Call(call) => match call.func.name {
            "sort" => Reorder::Sort { descending: false },
            "sort_desc" => Reorder::Sort { descending: true },
            _ => Reorder::None,
        },
        _ => Reorder::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyse(q: &str) -> QueryShape {
        super::analyse(q, Duration::from_secs(300), Duration::ZERO)
    }

    fn window(q: &str) -> Reads {
        analyse(q).reads
    }

    #[test]
    fn windows_narrower_than_two_scrapes_are_counted_over_two() {
        let narrowest = narrowest_counted(Duration::from_secs(15));
        let spans = |q: &str| match super::analyse(q, Duration::from_secs(300), narrowest).reads {
            Reads::Stretches(s) => s.iter().map(|s| (s.from_ms, s.to_ms)).collect::<Vec<_>>(),
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(spans("count_over_time(x[1s])"), [(-30_000, 0)]);
        assert_eq!(spans("changes(x[20s] offset 1m)"), [(-90_000, -60_000)]);
        // Wide enough already: as read.
        assert_eq!(spans("rate(x[5m])"), [(-300_000, 0)]);
        assert_eq!(spans("x"), [(-300_000, 0)]);
        // A subquery's inner windows are widened, then moved across its range.
        assert_eq!(spans("max_over_time(rate(x[3s])[6s:1s])"), [(-36_000, 0)]);
    }

    fn rel(from_s: i64, to_s: i64) -> Stretch {
        of("x", from_s, to_s)
    }

    fn of(selector: &str, from_s: i64, to_s: i64) -> Stretch {
        Stretch {
            selector: selector.into(),
            at: None,
            from_ms: from_s * 1000,
            to_ms: to_s * 1000,
        }
    }

    #[test]
    fn read_windows_follow_ranges_offsets_and_subqueries() {
        let w = |from_s, to_s| Reads::Stretches(vec![rel(from_s, to_s)]);
        assert_eq!(window("x"), w(-300, 0));
        assert_eq!(window("rate(x[15m])"), w(-900, 0));
        // Each selector its own stretch; one selector's reads in one.
        assert_eq!(
            window("sum(rate(x[1m])) / sum(y offset 1h)"),
            Reads::Stretches(vec![rel(-60, 0), of("y", -3600 - 300, -3600)])
        );
        assert_eq!(window("rate(x[1m]) / x offset 1h"), w(-3600 - 300, 0));
        assert_eq!(window("x offset -10m"), w(-300 + 600, 600));
        assert_eq!(
            window("max_over_time(rate(x[5m])[1h:1m])"),
            w(-3600 - 300, 0)
        );
        assert_eq!(
            window("max_over_time(rate(x[5m])[1h:1m] offset 30m)"),
            w(-1800 - 3600 - 300, -1800)
        );
        assert_eq!(window("1 + 1"), Reads::Nothing);
        assert_eq!(window("not promql ("), Reads::Unknown);
    }

    /// Every function of Prometheus 2.x and 3.x: each must be understood, or
    /// the merge falls back to plain priority for queries that use it.
    #[test]
    fn every_prometheus_function_is_understood() {
        let w = |from_s, to_s| Reads::Stretches(vec![rel(from_s, to_s)]);
        let range_fns = [
            "absent_over_time",
            "avg_over_time",
            "changes",
            "count_over_time",
            "delta",
            "deriv",
            "idelta",
            "increase",
            "irate",
            "last_over_time",
            "max_over_time",
            "min_over_time",
            "present_over_time",
            "rate",
            "resets",
            "stddev_over_time",
            "stdvar_over_time",
            "sum_over_time",
        ];
        for f in range_fns {
            assert_eq!(window(&format!("{f}(x[10m])")), w(-600, 0), "{f}");
        }
        for f in [
            "abs",
            "absent",
            "acos",
            "acosh",
            "asin",
            "asinh",
            "atan",
            "atanh",
            "ceil",
            "cos",
            "cosh",
            "day_of_month",
            "day_of_week",
            "day_of_year",
            "days_in_month",
            "deg",
            "exp",
            "floor",
            "histogram_count",
            "histogram_sum",
            "hour",
            "ln",
            "log10",
            "log2",
            "minute",
            "month",
            "rad",
            "round",
            "sgn",
            "sin",
            "sinh",
            "sort",
            "sort_desc",
            "sqrt",
            "tan",
            "tanh",
            "timestamp",
            "year",
        ] {
            assert_eq!(window(&format!("{f}(x)")), w(-300, 0), "{f}");
        }
        for q in [
            "quantile_over_time(0.9, x[10m])",
            "predict_linear(x[10m], 60)",
            "holt_winters(x[10m], 0.5, 0.5)",
            "double_exponential_smoothing(x[10m], 0.5, 0.5)",
        ] {
            assert_eq!(window(q), w(-600, 0), "{q}");
        }
        for q in [
            "clamp(x, 0, 1)",
            "clamp_max(x, 1)",
            "clamp_min(x, 0)",
            "histogram_quantile(0.9, x)",
            "histogram_fraction(0, 1, x)",
            "label_replace(x, \"a\", \"$1\", \"b\", \"(.*)\")",
            "label_join(x, \"a\", \",\", \"b\", \"c\")",
            "scalar(x) * vector(1)",
        ] {
            assert_eq!(window(q), w(-300, 0), "{q}");
        }
        for q in ["pi()", "time()", "vector(1)"] {
            assert_eq!(window(q), Reads::Nothing, "{q}");
        }
        // Only a call is renamed, never a metric that contains the name.
        assert_eq!(
            with_current_names("holt_winters (my_holt_winters_total[5m], 0.5, 0.5)"),
            Some("double_exponential_smoothing (my_holt_winters_total[5m], 0.5, 0.5)".into())
        );
        assert_eq!(with_current_names("my_holt_winters_total"), None);
    }

    #[test]
    fn at_modifiers_pin_their_own_stretches() {
        let pinned = |at: &str, from_s: i64, to_s: i64| Stretch {
            selector: "x".into(),
            at: Some(at.into()),
            from_ms: from_s * 1000,
            to_ms: to_s * 1000,
        };
        assert_eq!(
            window("x @ 1700000000"),
            Reads::Stretches(vec![pinned("@ 1700000000.000", -300, 0)])
        );
        assert_eq!(
            window("rate(x[5m]) / rate(x[10m] @ end() offset 1m)"),
            Reads::Stretches(vec![rel(-300, 0), pinned("@ end()", -660, -60)])
        );
        // A subquery pinned with @ pins what its inner expression reads.
        assert_eq!(
            window("max_over_time(rate(x[5m])[1h:1m] @ start())"),
            Reads::Stretches(vec![pinned("@ start()", -3900, 0)])
        );
    }

    #[test]
    fn coverage_queries_parse() {
        let cases = [
            vec![rel(-300, 0)],
            vec![rel(-900, -600)],
            vec![rel(0, 600)],
            vec![
                rel(-300, 0),
                Stretch {
                    selector: "y".into(),
                    at: Some("@ end()".into()),
                    from_ms: -60_000,
                    to_ms: 0,
                },
            ],
        ];
        for stretches in cases {
            let q = coverage_query(&stretches);
            assert!(parser::parse(&q).is_ok(), "{q}");
            let q = coverage_query(&with_selector("up{job=\"node\"}", &stretches));
            assert!(parser::parse(&q).is_ok(), "{q}");
            let q = coverage_samples_query(&stretches);
            assert!(parser::parse(&q).is_ok(), "{q}");
        }
        assert!(coverage_query(&[rel(-300, -60)]).contains("x[240000ms] offset 60000ms"));
        assert_eq!(
            coverage_samples_query(&[rel(-300, 0)]),
            format!(
                "label_replace(sum(count_over_time(x[300000ms])), \"{COVERAGE_LABEL}\", \"samples\", \"\", \"\")"
            )
        );
        // A configured selector: one stretch per `@` time, the union of the reads there.
        assert_eq!(
            with_selector("up", &[rel(-300, 0), of("y", -600, -60)]),
            vec![of("up", -600, 0)]
        );
        let pinned = |at: &str| Stretch {
            selector: "x".into(),
            at: Some(at.into()),
            from_ms: -60_000,
            to_ms: 0,
        };
        assert_eq!(
            at_instant(&[
                pinned("@ end()"),
                pinned("@ start()"),
                pinned("@ 1700000000.000")
            ]),
            vec![rel(-60, 0), rel(-60, 0), pinned("@ 1700000000.000")]
        );
        // Over a range, they are its start and end, whatever range the coverage is asked over.
        let resolved = pinned_to_range(
            &[
                pinned("@ end()"),
                pinned("@ start()"),
                pinned("@ 1.500"),
                rel(-60, 0),
            ],
            1_700_000_000_000,
            1_700_003_600_250,
        );
        assert_eq!(
            resolved,
            vec![
                pinned("@ 1700003600.250"),
                pinned("@ 1700000000.000"),
                pinned("@ 1.500"),
                rel(-60, 0)
            ]
        );
        let q = coverage_query(&resolved);
        assert!(parser::parse(&q).is_ok(), "{q}");
        // An instant's: its least-sampled series counted once, at the instant.
        let stretches = [rel(-300, -60), pinned("@ 1700000000.000")];
        let q = instant_coverage_query(&stretches, 1_700_000_123_500);
        assert!(parser::parse(&q).is_ok(), "{q}");
        assert!(q.starts_with(&coverage_query(&stretches)));
        assert!(
            q.ends_with(&format!(
                " or label_replace(min(count_over_time(x[240000ms] @ 1700000123.500 offset 60000ms)), \"{COVERAGE_LABEL}\", \"least0\", \"\", \"\") or label_replace(min(count_over_time(x[60000ms] @ 1700000000.000)), \"{COVERAGE_LABEL}\", \"least1\", \"\", \"\")"
            )),
            "{q}"
        );
        // A short range's: the same counts, unpinned, at every step.
        let q = short_range_coverage_query(&stretches);
        assert!(parser::parse(&q).is_ok(), "{q}");
        assert!(q.starts_with(&coverage_query(&stretches)), "{q}");
        assert!(q.ends_with(&format!(
            " or label_replace(min(count_over_time(x[240000ms] offset 60000ms)), \"{COVERAGE_LABEL}\", \"least0\", \"\", \"\") or label_replace(min(count_over_time(x[60000ms] @ 1700000000.000)), \"{COVERAGE_LABEL}\", \"least1\", \"\", \"\")"
        )), "{q}");
        // Past the counts there are, the last stretches share one.
        let many: Vec<Stretch> = (1..=LEAST_COUNTS as i64 + 2)
            .map(|i| rel(-60 * i, 0))
            .collect();
        let q = instant_coverage_query(&many, 1_700_000_123_500);
        assert!(parser::parse(&q).is_ok(), "{q}");
        let last = format!("least{}", LEAST_COUNTS - 1);
        assert!(q.contains(&last) && !q.contains(&format!("least{LEAST_COUNTS}")));
        let shared = q.rsplit_once("min(").unwrap().1;
        assert_eq!(shared.matches("count_over_time").count(), 3, "{q}");
    }

    #[test]
    fn selectors_are_counted_as_written_without_offset_or_at() {
        let selectors = |q: &str| match window(q) {
            Reads::Stretches(s) => s.into_iter().map(|s| s.selector).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            selectors(r#"rate(x{job="a",code=~"5.."}[5m] offset 1m) + {__name__="y"} @ 100"#),
            vec![r#"x{code=~"5..",job="a"}"#, r#"{__name__="y"}"#]
        );
        // Counting these would fail where two metrics share the other labels.
        assert_eq!(selectors(r#"{__name__=~"x|y"}"#), vec![NAMELESS_STAND_IN]);
        assert_eq!(selectors(r#"{job="a"}"#), vec![NAMELESS_STAND_IN]);
        for q in [
            r#"x{a!="b\"c",d!~"e|f"}"#,
            r#"{__name__=~"x|y", job="a"}"#,
            r#"count_over_time(x{le="+Inf"}[1m:15s])"#,
        ] {
            for s in selectors(q) {
                assert!(parser::parse(&s).is_ok(), "{q}: {s}");
            }
        }
    }

    #[test]
    fn the_coarse_step_is_the_narrowest_moving_stretch() {
        let pinned = Stretch {
            at: Some("@ end()".into()),
            ..rel(-60, 0)
        };
        assert_eq!(
            coarse_step_ms(&[rel(-300, 0), rel(-900, -600)]),
            Some(300_000)
        );
        assert_eq!(
            coarse_step_ms(&[rel(-900, 0), pinned.clone()]),
            Some(900_000)
        );
        assert_eq!(
            widest_moving_ms(&[rel(-300, 0), rel(-1200, -600), pinned.clone()]),
            Some(600_000)
        );
        assert_eq!(coarse_step_ms(std::slice::from_ref(&pinned)), None);
        assert_eq!(widest_moving_ms(&[pinned]), None);
    }

    #[test]
    fn outermost_topk_is_found() {
        assert_eq!(
            analyse("(topk(3, rate(x[5m])) by (job))").reorder,
            Reorder::TopK {
                k: 3,
                bottom: false,
                grouping: Grouping::By(vec!["job".into()])
            }
        );
        assert_eq!(
            analyse("bottomk without (instance) (2, x)").reorder,
            Reorder::TopK {
                k: 2,
                bottom: true,
                grouping: Grouping::Without(vec!["instance".into()])
            }
        );
        assert_eq!(
            analyse("limitk(1, x)").reorder,
            Reorder::LimitK {
                k: 1,
                grouping: Grouping::Everything
            }
        );
    }

    #[test]
    fn reads_past_a_step_only_through_negative_offsets_and_never_settle_pinned() {
        let past = |q: &str| match analyse(q).reads {
            Reads::Stretches(s) => reads_past_ms(&s),
            other => panic!("{other:?}"),
        };
        assert_eq!(past("rate(x[5m])"), Some(0));
        assert_eq!(past("x offset 1h"), Some(0));
        assert_eq!(past("x offset -10m + y"), Some(600_000));
        assert_eq!(past("x @ end()"), None);
        assert_eq!(past("x + y @ 1700000000"), None);
    }

    #[test]
    fn sort_functions_are_found() {
        assert_eq!(
            analyse("sort_desc(sum by (job) (x))").reorder,
            Reorder::Sort { descending: true }
        );
        assert_eq!(
            analyse("sort(x)").reorder,
            Reorder::Sort { descending: false }
        );
    }

    #[test]
    fn inner_or_dynamic_topk_is_left_alone() {
        assert_eq!(analyse("sum(topk(3, x))").reorder, Reorder::None);
        assert_eq!(analyse("topk(scalar(y), x)").reorder, Reorder::None);
        assert_eq!(analyse("topk(3, x) + 1").reorder, Reorder::None);
        assert_eq!(analyse("this is not promql(").reorder, Reorder::None);
    }
}
