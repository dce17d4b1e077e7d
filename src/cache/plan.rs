//! What of a query's answer the cache may hold, and under which key. Pure:
//! the query's analysis, its parameters and the time in; decisions out.

use crate::query::{Reads, Stretch};

/// A query answer the cache may hold part or all of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A range query: its steps up to `settled_to_ms` may come from, and go
    /// into, the cache under `key`.
    Range {
        key: String,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        settled_to_ms: i64,
    },
    /// An instant query at a settled time: cached whole under `key`.
    Instant { key: String },
    /// Never cached, and why (for the debug log).
    Never(&'static str),
}

/// What is known of one query for the cache to plan it.
pub struct Asked<'a> {
    /// The request's parameters, form first, as Prometheus reads them.
    pub params: &'a [(String, String)],
    pub reads: &'a Reads,
    /// The look-back delta the query is answered with.
    pub lookback_ms: i64,
    /// Who answers: each upstream's identity, in priority order.
    pub upstreams: &'a str,
    /// An instant's time, or a range's start, end and step (ms).
    pub instant_ms: Option<i64>,
    pub range_ms: Option<(i64, i64, i64)>,
}

/// Parameters that are not part of the key: the range's own times (its
/// `start` modulo `step` is), and the deadline, which changes no answer.
const NOT_KEYED: [&str; 4] = ["start", "end", "time", "timeout"];

/// The cache's plan for `asked` at `now_ms`, where a stretch is settled
/// `settle_ms` after its end.
pub fn plan(asked: &Asked<'_>, now_ms: i64, settle_ms: i64) -> Plan {
    let first = |name: &str| {
        asked
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if first("stats").is_some_and(|s| !s.is_empty()) {
        return Plan::Never("stats asked");
    }
    let stretches: &[Stretch] = match asked.reads {
        Reads::Unknown => return Plan::Never("the query was not read"),
        // `1+1`, `time()`: nothing stored is read, nothing is saved.
        Reads::Nothing => return Plan::Never("reads no stored data"),
        Reads::Stretches(s) => s,
    };
    let limit_ms = now_ms - settle_ms;
    match (asked.instant_ms, asked.range_ms) {
        (Some(t), None) => {
            if !stretches.iter().all(|s| read_to(s, t, t) <= limit_ms) {
                return Plan::Never("reads past the settled edge");
            }
            Plan::Instant {
                key: key(asked, &format!("instant {t}")),
            }
        }
        (None, Some((start_ms, end_ms, step_ms))) if step_ms > 0 && start_ms <= end_ms => {
            let Some(settled_to_ms) = settled_to(stretches, start_ms, end_ms, step_ms, limit_ms)
            else {
                return Plan::Never("no step settled");
            };
            let phase = start_ms.rem_euclid(step_ms);
            Plan::Range {
                key: key(asked, &format!("range {step_ms} {phase}")),
                start_ms,
                end_ms,
                step_ms,
                settled_to_ms,
            }
        }
        _ => Plan::Never("no time the proxy can read"),
    }
}

/// The key: what was asked besides its times, and of whom.
fn key(asked: &Asked<'_>, times: &str) -> String {
    let mut names: Vec<&str> = asked
        .params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !NOT_KEYED.contains(k))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut key = format!("{times}\nlookback {}\n", asked.lookback_ms);
    for name in names {
        let value = asked.params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        key.push_str(&format!(
            "{name:?}={:?}\n",
            value.map_or("", String::as_str)
        ));
    }
    key.push_str(asked.upstreams);
    key
}

/// Where a stretch read at step `t` ends (ms), for a query whose range
/// ends at `end_ms` (an instant: its time); `@ start()` and `@ end()` in a
/// range pin other times as the range moves, so they end never.
fn read_to(s: &Stretch, t: i64, end_ms: i64) -> i64 {
    match s.at.as_deref() {
        None => t + s.to_ms,
        Some("@ start()" | "@ end()") if t == end_ms => end_ms + s.to_ms,
        Some("@ start()" | "@ end()") => i64::MAX,
        Some(at) => at
            .trim_start_matches('@')
            .trim()
            .parse::<f64>()
            .map_or(i64::MAX, |secs| (secs * 1000.0).round() as i64 + s.to_ms),
    }
}

/// The last step of the range whose every stretch ends by `limit_ms`; None
/// if not even the first's does.
fn settled_to(
    stretches: &[Stretch],
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    limit_ms: i64,
) -> Option<i64> {
    let mut last = i64::MAX;
    for s in stretches {
        match s.at.as_deref() {
            None => last = last.min(limit_ms - s.to_ms),
            Some("@ start()" | "@ end()") => return None,
            Some(_) if read_to(s, start_ms, end_ms) > limit_ms => return None,
            Some(_) => {}
        }
    }
    if last < start_ms {
        return None;
    }
    let steps = (last.min(end_ms) - start_ms) / step_ms;
    Some(start_ms + steps * step_ms)
}

/// The first step after `settled_to_ms` of a range from `start_ms` by `step_ms`.
pub fn fresh_start(start_ms: i64, settled_to_ms: i64, step_ms: i64) -> i64 {
    start_ms + ((settled_to_ms - start_ms) / step_ms + 1) * step_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: i64 = 1_800_000_000_000;
    const SETTLE: i64 = 300_000;

    fn planned(
        q: &str,
        params: &[(&str, &str)],
        instant: Option<i64>,
        range: Option<(i64, i64, i64)>,
    ) -> Plan {
        let shape = crate::query::analyse(q, Duration::from_secs(300), Duration::ZERO);
        let mut all: Vec<(String, String)> = vec![("query".into(), q.into())];
        all.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let asked = Asked {
            params: &all,
            reads: &shape.reads,
            lookback_ms: 300_000,
            upstreams: "a=http://a:9090\nb=http://b:9090",
            instant_ms: instant,
            range_ms: range,
        };
        plan(&asked, NOW, SETTLE)
    }

    fn settled(q: &str, start: i64, end: i64, step: i64) -> Option<i64> {
        match planned(q, &[], None, Some((start, end, step))) {
            Plan::Range { settled_to_ms, .. } => Some(settled_to_ms),
            _ => None,
        }
    }

    #[test]
    fn a_step_is_settled_when_everything_it_reads_ended_settle_ago() {
        let (start, step) = (NOW - 6 * 3_600_000, 15_000);
        // The last step on the grid at or before now - settle.
        let last = start + (6 * 3_600_000 - SETTLE) / step * step;
        assert_eq!(settled("rate(x[5m])", start, NOW, step), Some(last));
        // An hour back: every step to now is.
        assert_eq!(settled("x offset 1h", start, NOW, step), Some(NOW));
        // A negative offset reads ahead of its step: settled 10 minutes earlier.
        let ahead = start + (6 * 3_600_000 - SETTLE - 600_000) / step * step;
        assert_eq!(settled("x offset -10m", start, NOW, step), Some(ahead));
        // Nothing stored read: nothing to save.
        assert_eq!(settled("1+1", start, NOW, step), None);
        // A range wholly in the past ends settled.
        assert_eq!(
            settled("x", start, start + 3_600_000, step),
            Some(start + 3_600_000)
        );
    }

    #[test]
    fn ranges_the_analysis_cannot_settle_are_never_cached() {
        let (start, step) = (NOW - 3_600_000, 15_000);
        // Reaching past now from its first step on.
        assert_eq!(settled("x offset -2h", start, NOW, step), None);
        // Pinned to a moving end, or to a time not yet settled.
        assert_eq!(settled("x @ end()", start, NOW, step), None);
        assert_eq!(settled("x @ start()", start, NOW, step), None);
        assert_eq!(
            settled(&format!("x @ {}", NOW / 1000), start, NOW, step),
            None
        );
        assert!(settled(&format!("x @ {}", NOW / 1000 - 3600), start, NOW, step).is_some());
        assert!(matches!(
            planned("x +", &[], None, Some((start, NOW, step))),
            Plan::Never(_)
        ));
        assert!(matches!(
            planned("x", &[("stats", "all")], None, Some((start, NOW, step))),
            Plan::Never(_)
        ));
        assert!(matches!(
            planned("x", &[], None, Some((NOW, start, step))),
            Plan::Never(_)
        ));
    }

    #[test]
    fn an_instant_is_cached_whole_once_settled() {
        assert!(matches!(
            planned("rate(x[5m])", &[], Some(NOW - SETTLE), None),
            Plan::Instant { .. }
        ));
        assert!(matches!(
            planned("rate(x[5m])", &[], Some(NOW - SETTLE + 1), None),
            Plan::Never(_)
        ));
        // At an instant, @ end() is the instant itself.
        assert!(matches!(
            planned("x @ end()", &[], Some(NOW - SETTLE), None),
            Plan::Instant { .. }
        ));
    }

    #[test]
    fn the_key_holds_what_changes_the_answer_and_nothing_else() {
        let key = |params: &[(&str, &str)], start: i64| match planned(
            "x",
            params,
            None,
            Some((start, NOW, 15_000)),
        ) {
            Plan::Range { key, .. } => key,
            other => panic!("{other:?}"),
        };
        let start = NOW - 3_600_000;
        // A range shifted by whole steps, or asked with another deadline: one key.
        assert_eq!(key(&[], start), key(&[("timeout", "5s")], start + 45_000));
        // Another phase, step, look-back or parameter: another key.
        assert_ne!(key(&[], start), key(&[], start + 1_000));
        assert_ne!(key(&[], start), key(&[("lookback_delta", "1m")], start));
        assert_ne!(key(&[], start), key(&[("dedup", "false")], start));
    }

    #[test]
    fn the_fresh_part_starts_one_step_after_the_settled() {
        assert_eq!(fresh_start(0, 45_000, 15_000), 60_000);
        assert_eq!(fresh_start(5_000, 50_000, 15_000), 65_000);
    }
}
