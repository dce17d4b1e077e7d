//! Joining a cached answer's settled steps with the fresh steps the
//! upstreams answered. Pure: answers in, answer bytes out.
//!
//! The join is the merge itself, over two answers whose steps do not
//! overlap: series matched by label set, sorted as Prometheus sorts them,
//! values and times copied as the bytes they were. So a joined answer is
//! byte-identical to the one answer the proxy merges for the whole range,
//! wherever that answer's steps equal the cached ones.

use crate::answer::Answer;
use crate::merge::{self, Eligibility, MergeOptions, Upstream};

/// The cached answer (0) gives the steps in `[from_ms, to_ms]`; the fresh
/// one (1), if any, those after `to_ms`.
struct Split {
    from_ms: i64,
    to_ms: i64,
}

impl Eligibility for Split {
    fn allows(&self, answer: usize, t_ms: i64) -> bool {
        match answer {
            0 => (self.from_ms..=self.to_ms).contains(&t_ms),
            _ => t_ms > self.to_ms,
        }
    }
}

/// The steps of `cached` in `[from_ms, to_ms]` followed by `fresh`'s, as one
/// answer. Both are answers the proxy gave: success, no warnings.
pub fn join(cached: &Answer, from_ms: i64, to_ms: i64, fresh: Option<&Answer>) -> Vec<u8> {
    let upstreams = [
        Upstream {
            name: "cache",
            answer: Some(cached),
        },
        Upstream {
            name: "fresh",
            answer: fresh,
        },
    ];
    let mut out = Vec::new();
    // Both are answers: the merge cannot fail for want of one.
    let _ = merge::merge(
        &upstreams,
        &[],
        &MergeOptions::default(),
        &Split { from_ms, to_ms },
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(result: &str) -> Answer {
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{result}]}}}}"#
        );
        Answer::parse(body.into_bytes()).unwrap()
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_cached_steps_come_first_then_the_fresh_ones_series_by_series() {
        let cached = answer(
            r#"{"metric":{"a":"1"},"values":[[0,"1"],[15,"2"],[30,"3e0"]]},{"metric":{"a":"3"},"values":[[0,"9"]]}"#,
        );
        let fresh = answer(
            r#"{"metric":{"a":"1"},"values":[[30,"x"],[45,"4"]]},{"metric":{"a":"2"},"values":[[45,"5"]]}"#,
        );
        // The whole range, as one answer would give it: a=3 ends in the
        // cached part, a=2 starts in the fresh one, sorted among them.
        assert_eq!(
            text(join(&cached, 0, 30_000, Some(&fresh))),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[0,"1"],[15,"2"],[30,"3e0"],[45,"4"]]},{"metric":{"a":"2"},"values":[[45,"5"]]},{"metric":{"a":"3"},"values":[[0,"9"]]}]}}"#
        );
    }

    #[test]
    fn a_range_shifted_on_takes_the_cached_steps_from_its_start() {
        let cached = answer(
            r#"{"metric":{"a":"1"},"values":[[0,"1"],[15,"2"]]},{"metric":{"a":"3"},"values":[[0,"9"]]}"#,
        );
        // Fully cached: no fresh part; a=3 has no step left and goes.
        assert_eq!(
            text(join(&cached, 15_000, 15_000, None)),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[15,"2"]]}]}}"#
        );
    }
}
