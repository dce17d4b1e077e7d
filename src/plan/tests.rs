use super::*;
use crate::settled::SettledCounts;
use crate::settled::{Remembering, StepCounts};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[test]
fn a_coarse_round_is_asked_where_it_saves_more_than_a_hole_costs() {
    let (minute, hour) = (60_000, 3_600_000);
    // A stretch of four steps or more: always (3 h at 15 s, 5-minute look-back).
    assert!(coarse_pays(0, 3 * hour, 15_000, 5 * minute, 5 * minute));
    // A stretch of about a step: only over many steps. 3 h at 30 s
    // (361 steps) with `rate(x[1m])`: one hole's span asks 2 x (2 + 16)
    // + 1 = 37 steps, an eighth of 296.
    assert!(coarse_pays(0, 3 * hour, 30_000, minute, minute));
    assert!(!coarse_pays(0, 3 * hour, minute, 2 * minute, 2 * minute));
    // 7 days at 10 minutes, `$__rate_interval` a little over a step.
    assert!(coarse_pays(0, 7 * 24 * hour, 10 * minute, 615_000, 615_000));
    // Steps wider than the stretch: the same rule.
    assert!(!coarse_pays(
        0,
        3 * hour,
        5 * minute,
        5 * minute,
        5 * minute
    ));
    assert!(coarse_pays(0, 30 * 24 * hour, hour, 5 * minute, 5 * minute));
}

#[test]
fn coarse_windows_cover_every_step_of_a_range_however_it_is_aligned() {
    let minute = 60_000;
    // A stretch of five minutes at 15 s steps: windows on multiples of five
    // minutes, from the one at or before the start.
    let w = coarse_windows(7 * minute + 17_000, 60 * minute, 15_000, 5 * minute);
    assert_eq!(
        (w.start_ms, w.end_ms, w.step_ms),
        (5 * minute, 60 * minute, 5 * minute)
    );
    // A stretch of one minute at 5-minute steps: a window at each step, on
    // the steps of a range that starts 17 s past a multiple of the step;
    // on multiples of the step where the range is aligned on it.
    let start = 10 * minute + 17_000;
    let w = coarse_windows(start, start + 60 * minute, 5 * minute, minute);
    assert_eq!(
        (w.start_ms, w.end_ms, w.step_ms),
        (start, start + 60 * minute, 5 * minute)
    );
    let w = coarse_windows(10 * minute, 70 * minute, 5 * minute, minute);
    assert_eq!((w.start_ms, w.end_ms), (10 * minute, 70 * minute));
}

/// A range's coarse round over windows `first..=last`, `width` apart.
fn coarse_round(first: i64, last: i64, width: i64) -> CoarseRound {
    let request = ApiRequest {
        path: "/api/v1/query_range".into(),
        method: actix_web::http::Method::GET,
        query_string: "query=x".into(),
        form_body: Bytes::new(),
        authorization: None,
    };
    CoarseRound {
        request: Some(Arc::new(request.as_range("count", first, last, width))),
        steps: Steps {
            start_ms: first,
            end_ms: last,
            step_ms: 15_000,
        },
        reach_ms: width,
        coverage: String::new(),
        windows: Some(Steps {
            start_ms: first,
            end_ms: last,
            step_ms: width,
        }),
        samples: "count".into(),
        known: Vec::new(),
        generations: Vec::new(),
        asked_from: first,
        reads_past_ms: Some(0),
    }
}

#[test]
fn the_others_wait_for_the_coarse_counts_in_a_range_holding_two_spans_of_a_hole() {
    let minute = 60_000;
    // At 15-second steps with a 5-minute look-back, one hole's span asks
    // 2 x (20 + 16) + 1 = 73 steps: 146 steps (36.25 minutes) or more.
    assert!(coarse_round(0, 3 * 60 * minute, 5 * minute).holds_two_spans());
    assert!(coarse_round(0, 145 * 15_000, 5 * minute).holds_two_spans());
    assert!(!coarse_round(0, 144 * 15_000, 5 * minute).holds_two_spans());
    assert!(!coarse_round(0, 15 * minute, 5 * minute).holds_two_spans());
    // A 1-minute stretch: 16 steps each side to learn from, 2 x (4 + 16)
    // + 1 = 41 steps, so 82 (20.25 minutes).
    assert!(coarse_round(0, 21 * minute, minute).holds_two_spans());
    assert!(!coarse_round(0, 20 * minute, minute).holds_two_spans());
    assert!(!coarse_round(0, 10 * minute, minute).holds_two_spans());
}

#[test]
fn a_range_asks_its_coarse_counts_from_the_first_window_an_upstream_does_not_remember() {
    let (minute, now) = (60_000, Instant::now());
    let windows = |to: i64| (0..=to).step_by(5 * minute as usize);
    let mut settled = SettledCounts::new(Remembering {
        remember_for: Duration::from_secs(600),
        settle: Duration::from_secs(300),
    });
    // All settled long ago. Upstream 0 knows the windows to 20 minutes,
    // upstream 1 to 10 (none counted at 5).
    let long_after = 1000 * minute;
    let count = |t: i64| (t != 5 * minute).then_some(3.0);
    settled.remember(
        0,
        7,
        "count",
        windows(20 * minute).map(|t| (t, Some(3.0))),
        long_after,
        now,
    );
    settled.remember(
        1,
        7,
        "count",
        windows(10 * minute).map(|t| (t, count(t))),
        long_after,
        now,
    );
    let mut round = coarse_round(0, 30 * minute, 5 * minute);
    round.recall(&mut settled, &[true, true], vec![7, 7]);
    let asked = round.request.clone().unwrap().query_string.clone();
    assert!(
        asked.contains("start=900.000&end=1800.000&step=300.000"),
        "{asked}"
    );
    assert_eq!(round.asked_from, 15 * minute);
    // What each knows before it, and nothing of the answers (none came).
    let totals = round.totals(None, &[true, true]);
    let three = |ts: &[i64]| Some(ts.iter().map(|t| (t * minute, 3.0)).collect::<Vec<_>>());
    assert_eq!(totals, vec![three(&[0, 5, 10]), three(&[0, 10])]);
    // Both knowing every window: nothing is asked. An upstream not asked has no counts.
    settled.remember(
        1,
        7,
        "count",
        windows(30 * minute).map(|t| (t, Some(3.0))),
        long_after,
        now,
    );
    settled.remember(
        0,
        7,
        "count",
        windows(30 * minute).map(|t| (t, Some(3.0))),
        long_after,
        now,
    );
    let mut round = coarse_round(0, 30 * minute, 5 * minute);
    round.recall(&mut settled, &[true, false], vec![7, 7]);
    assert!(round.request.is_none());
    assert_eq!(
        round.totals(None, &[true, false]),
        vec![three(&[0, 5, 10, 15, 20, 25, 30])]
    );
    // A count of a pinned stretch (`@`) is never taken as known.
    let mut round = coarse_round(0, 30 * minute, 5 * minute);
    round.reads_past_ms = None;
    round.recall(&mut settled, &[true, true], vec![7, 7]);
    assert!(round.request.is_some() && round.known.is_empty());
    // Upstream 0's health moved since: everything is asked again.
    let mut round = coarse_round(0, 30 * minute, 5 * minute);
    round.recall(&mut settled, &[true, true], vec![8, 7]);
    assert_eq!(round.asked_from, 0);
    assert!(round.request.is_some());
}

#[test]
fn a_span_of_steps_is_asked_from_the_first_step_an_upstream_does_not_remember() {
    let (minute, now) = (60_000, Instant::now());
    let mut steps: SettledCounts<StepCounts> = SettledCounts::new(Remembering {
        remember_for: Duration::from_secs(600),
        settle: Duration::from_secs(300),
    });
    let mut round = coarse_round(0, 60 * minute, 5 * minute);
    round.generations = vec![3, 3];
    round.coverage = "cov".into();
    let long_after = 1000 * minute;
    let known = |to: i64| (0..=to).step_by(15_000).map(|t| (t, Some((8.0, 4.0))));
    steps.remember(0, 3, "cov", known(10 * minute), long_after, now);
    steps.remember(1, 3, "cov", known(5 * minute), long_after, now);
    let fine = coarse_round(0, 60 * minute, 15_000).request.unwrap();
    // Steps from 2 to 20 minutes: upstream 1 knows them to 5.
    let span = round.fine_span(&fine, 2 * minute, 20 * minute, &mut steps, &[true, true]);
    assert_eq!(span.asked_from, 5 * minute + 15_000);
    let asked = span.request.as_ref().unwrap().query_string.clone();
    assert!(
        asked.contains("start=315.000&end=1200.000&step=15.000"),
        "{asked}"
    );
    assert_eq!(span.known[0].as_ref().unwrap().len(), 13);
    // Both knowing the span: nothing asked.
    let span = round.fine_span(&fine, 2 * minute, 5 * minute, &mut steps, &[true, true]);
    assert!(span.request.is_none());
    // A pinned stretch: all of it asked, nothing remembered.
    round.reads_past_ms = None;
    let span = round.fine_span(&fine, 2 * minute, 5 * minute, &mut steps, &[true, true]);
    assert!(span.request.is_some() && span.remembered.is_none());
}

/// A coarse round as `decide` sees it, nothing remembered: its counts
/// settling or not (`reads_past_ms`: not through `@`).
fn round(first: i64, last: i64, settles: bool) -> CoarseRound {
    let mut r = coarse_round(first, last, 5 * 60_000);
    if !settles {
        r.reads_past_ms = None;
    }
    r
}

#[test]
fn the_main_plan_decides_verbatim_deferral_and_what_the_others_are_asked() {
    let hour = 3_600_000;
    let range = When {
        instant_ms: None,
        range_ms: Some((0, 3 * hour, 15_000)),
    };
    let instant = When {
        instant_ms: Some(3 * hour),
        range_ms: None,
    };
    let long = round(0, 3 * hour, true);
    let short = round(0, 15 * 60_000, true);
    let pinned = round(0, 3 * hour, false);
    let both = [true, true];
    // (coarse round, when, replica labels, all up) -> (verbatim from, deferred, asked now)
    type Case<'a> = (Option<&'a CoarseRound>, When, bool, bool);
    type Decided = (Option<usize>, bool, Option<Asks>);
    let cases: [(Case<'_>, Decided); 8] = [
        // No coarse round: every upstream asked at once, answers merged.
        ((None, range, false, true), (None, false, Some(Asks::Whole))),
        // A long range: the others wait for the counts.
        ((Some(&long), range, false, true), (Some(0), true, None)),
        // Replica labels to take out, or an upstream down: merged, all at once.
        (
            (Some(&long), range, true, true),
            (None, false, Some(Asks::Whole)),
        ),
        (
            (Some(&long), range, false, false),
            (None, false, Some(Asks::Whole)),
        ),
        // A short range is cheap to ask of every replica at once.
        (
            (Some(&short), range, false, true),
            (Some(0), false, Some(Asks::Whole)),
        ),
        // Through `@` (never settles): not deferred.
        (
            (Some(&pinned), range, false, true),
            (Some(0), false, Some(Asks::Whole)),
        ),
        // An instant defers the others too, at now (never settling) as well.
        ((Some(&long), instant, false, true), (Some(0), true, None)),
        ((Some(&pinned), instant, false, true), (Some(0), true, None)),
    ];
    for (i, ((coarse, when, labels, up), (verbatim, deferred, asks))) in
        cases.into_iter().enumerate()
    {
        let plan = MainPlan::decide(coarse, when, labels, up, &both);
        let trims = asks != Some(Asks::Whole) && when.range_ms.is_some();
        assert_eq!(
            (plan.verbatim_from, plan.deferred, plan.asks_now.clone()),
            (verbatim, deferred, asks),
            "case {i}: {plan:?}"
        );
        assert_eq!(plan.foreseen, None, "case {i}: nothing remembered");
        assert_eq!(plan.trims_kept_buffers(when), trims, "case {i}");
    }
}

#[test]
fn remembered_counts_that_agree_foresee_nothing_to_ask_the_others() {
    let (minute, now) = (60_000, Instant::now());
    let mut settled = SettledCounts::new(Remembering {
        remember_for: Duration::from_secs(600),
        settle: Duration::from_secs(300),
    });
    let windows = (0..=60 * minute).step_by(5 * minute as usize);
    for u in 0..2 {
        let read = windows.clone().map(|t| (t, Some(100.0)));
        settled.remember(u, 0, "count", read, 2 * 60 * minute, now);
    }
    let mut r = coarse_round(0, 60 * minute, 5 * minute);
    r.recall(&mut settled, &[true, true], vec![0, 0]);
    assert!(r.request.is_none(), "every window remembered");
    let when = When {
        instant_ms: None,
        range_ms: Some((0, 60 * minute, 15_000)),
    };
    let plan = MainPlan::decide(Some(&r), when, false, true, &[true, true]);
    assert_eq!(plan.foreseen, Some(Differs::Nowhere));
    assert_eq!(plan.asks_now, Some(Asks::Nothing));
    assert!(!plan.deferred && plan.trims_kept_buffers(when));
}
