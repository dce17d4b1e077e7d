//! What the proxy needs to know about a PromQL expression, read from its parse tree.
//!
//! The proxy never evaluates PromQL; upstreams do. It parses the expression
//! (with `promql-parser`) only to learn what the merge must re-apply: an
//! outermost `topk`/`bottomk`/`limitk` or `sort`/`sort_desc`. An expression
//! this parser rejects is still sent upstream unchanged, because Prometheus is
//! the judge of its own language; the merge then re-applies nothing.

use crate::merge::reorder::{Grouping, Reorder};
use promql_parser::parser::{self, Expr, token};

/// The merge-relevant facts about one query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueryShape {
    pub reorder: Reorder,
}

/// Reads the shape of `query`; an unparsable query has the default shape.
pub fn analyse(query: &str) -> QueryShape {
    match parser::parse(query) {
        Ok(expr) => QueryShape {
            reorder: reorder_of(&expr),
        },
        Err(_) => QueryShape::default(),
    }
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
