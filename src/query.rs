//! What the proxy needs to know about a PromQL expression, read from its parse tree.
//!
//! The proxy never evaluates PromQL; upstreams do. It parses the expression
//! (with `promql-parser`) only to learn what the merge must re-apply (an
//! outermost `topk`/`bottomk`/`limitk` or `sort`/`sort_desc`) and which stretch
//! of history the expression reads at each step (for the coverage query). An expression
//! this parser rejects is still sent upstream unchanged, because Prometheus is
//! the judge of its own language; the merge then re-applies nothing.

use crate::merge::reorder::{Grouping, Reorder};
use promql_parser::parser::{self, Expr, Offset, token};
use std::time::Duration;

/// The merge-relevant facts about one query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryShape {
    pub reorder: Reorder,
    pub reads: Reads,
}

/// Which stretch of stored samples the expression reads when evaluated at `t`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// The expression could not be parsed here: nothing is known.
    #[default]
    Unknown,
    /// No selector at all (`1+1`, `time()`): no stored data is read.
    Nothing,
    /// Samples in `[t + from_ms, t + to_ms]` (from ≤ to; both usually ≤ 0).
    Window { from_ms: i64, to_ms: i64 },
    /// An `@` modifier pins some reads to a fixed time, whatever `t` is.
    Pinned,
}

/// Reads the shape of `query`, with `lookback` the look-back delta a plain
/// selector reaches back; an unparsable query has the default shape.
pub fn analyse(query: &str, lookback: Duration) -> QueryShape {
    match parser::parse(query) {
        Ok(expr) => QueryShape {
            reorder: reorder_of(&expr),
            reads: match reads(&expr, lookback.as_millis() as i64) {
                Ok(Some((from_ms, to_ms))) => Reads::Window { from_ms, to_ms },
                Ok(None) => Reads::Nothing,
                Err(Pinned) => Reads::Pinned,
            },
        },
        Err(_) => QueryShape::default(),
    }
}

struct Pinned;

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

fn union(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some(x), Some(y)) => Some((x.0.min(y.0), x.1.max(y.1))),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The interval, relative to the evaluation time, of every sample `expr` can read.
fn reads(expr: &Expr, lookback_ms: i64) -> Result<Option<(i64, i64)>, Pinned> {
    Ok(match expr {
        Expr::VectorSelector(vs) => {
            if vs.at.is_some() {
                return Err(Pinned);
            }
            let o = offset_ms(&vs.offset);
            Some((-o - lookback_ms, -o))
        }
        Expr::MatrixSelector(ms) => {
            if ms.vs.at.is_some() {
                return Err(Pinned);
            }
            let o = offset_ms(&ms.vs.offset);
            Some((-o - ms.range.as_millis() as i64, -o))
        }
        Expr::Subquery(sq) => {
            if sq.at.is_some() {
                return Err(Pinned);
            }
            let o = offset_ms(&sq.offset);
            // The inner expression is evaluated at steps across (t-o-range, t-o].
            reads(&sq.expr, lookback_ms)?
                .map(|(from, to)| (from - o - sq.range.as_millis() as i64, to - o))
        }
        Expr::Aggregate(agg) => {
            let param = match &agg.param {
                Some(p) => reads(p, lookback_ms)?,
                None => None,
            };
            union(reads(&agg.expr, lookback_ms)?, param)
        }
        Expr::Binary(b) => union(reads(&b.lhs, lookback_ms)?, reads(&b.rhs, lookback_ms)?),
        Expr::Unary(u) => reads(&u.expr, lookback_ms)?,
        Expr::Paren(p) => reads(&p.expr, lookback_ms)?,
        Expr::Call(call) => {
            let mut all = None;
            for arg in &call.args.args {
                all = union(all, reads(arg, lookback_ms)?);
            }
            all
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => None,
    })
}

/// The coverage query for a read window: per step, how many samples of
/// `selector` each upstream holds in exactly the stretch the user's query
/// reads, and how many series they belong to (the tolerance: replicas scrape
/// at different offsets, so two complete ones may differ by one per target).
pub fn coverage_query(selector: &str, from_ms: i64, to_ms: i64) -> String {
    let width = (to_ms - from_ms).max(1);
    let offset = match -to_ms {
        0 => String::new(),
        o => format!(" offset {o}ms"),
    };
    let window = format!("count_over_time({selector}[{width}ms]{offset})");
    format!(
        "label_replace(sum({window}), \"{COVERAGE_LABEL}\", \"samples\", \"\", \"\") or label_replace(count({window}), \"{COVERAGE_LABEL}\", \"series\", \"\", \"\")"
    )
}

/// The label that tells the coverage query's two series apart.
pub const COVERAGE_LABEL: &str = "__prom_ha_proxy_coverage__";

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
        super::analyse(q, Duration::from_secs(300))
    }

    fn window(q: &str) -> Reads {
        analyse(q).reads
    }

    #[test]
    fn read_windows_follow_ranges_offsets_and_subqueries() {
        let w = |from_s: i64, to_s: i64| Reads::Window {
            from_ms: from_s * 1000,
            to_ms: to_s * 1000,
        };
        assert_eq!(window("up"), w(-300, 0));
        assert_eq!(window("rate(x[15m])"), w(-900, 0));
        assert_eq!(
            window("sum(rate(x[1m])) / sum(y offset 1h)"),
            w(-3600 - 300, 0)
        );
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
        assert_eq!(window("x @ 1700000000"), Reads::Pinned);
        assert_eq!(window("not promql ("), Reads::Unknown);
    }

    #[test]
    fn coverage_queries_parse() {
        for (from, to) in [(-300_000, 0), (-900_000, -600_000), (0, 600_000)] {
            let q = coverage_query("up{job=\"node\"}", from, to);
            assert!(parser::parse(&q).is_ok(), "{q}");
        }
        assert!(coverage_query("up", -300_000, -60_000).contains("[240000ms] offset 60000ms"));
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
