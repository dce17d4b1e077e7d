//! Merge rules, checked on hand-written answers.

use super::*;

fn answer(body: &str) -> Answer {
    Answer::parse(body.as_bytes().to_vec()).expect("test answer parses")
}

fn matrix(series: &[(&str, &[(i64, &str)])]) -> String {
    let result: Vec<String> = series
        .iter()
        .map(|(metric, values)| {
            let values: Vec<String> = values
                .iter()
                .map(|(t, v)| format!("[{t},\"{v}\"]"))
                .collect();
            format!("{{\"metric\":{metric},\"values\":[{}]}}", values.join(","))
        })
        .collect();
    format!(
        "{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":[{}]}}}}",
        result.join(",")
    )
}

fn vector(series: &[(&str, i64, &str)]) -> String {
    let result: Vec<String> = series
        .iter()
        .map(|(metric, t, v)| format!("{{\"metric\":{metric},\"value\":[{t},\"{v}\"]}}"))
        .collect();
    format!(
        "{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[{}]}}}}",
        result.join(",")
    )
}

fn run_with<E: Eligibility>(
    answers: &[Option<&Answer>],
    opts: &MergeOptions<'_>,
    e: &E,
    warnings: &[String],
) -> (String, MergeReport) {
    let names = ["a", "b", "c", "d", "e"];
    let ups: Vec<Upstream<'_>> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| Upstream {
            name: names[i],
            answer: *a,
        })
        .collect();
    let mut out = Vec::new();
    let report = merge(&ups, warnings, opts, e, &mut out).expect("merge");
    // Handed on in pieces, after every series, the same bytes come out.
    let (mut pieces, mut rest) = (Vec::<Vec<u8>>::new(), Vec::new());
    let mut spill = |out: &mut Vec<u8>| {
        pieces.push(std::mem::take(out));
        true
    };
    let in_pieces = merge_in_pieces(&ups, warnings, opts, e, &mut rest, &mut spill);
    assert_eq!(in_pieces.as_ref(), Ok(&report));
    pieces.push(rest);
    assert_eq!(pieces.concat(), out, "pieces differ from the whole answer");
    let text = String::from_utf8(out).expect("utf8");
    // Whatever the merge writes must be JSON.
    simd_json::to_owned_value(&mut text.clone().into_bytes()).expect("merged output is JSON");
    (text, report)
}

fn run(answers: &[Option<&Answer>], opts: &MergeOptions<'_>) -> String {
    run_with(answers, opts, &AllEligible, &[]).0
}

#[test]
fn one_upstream_comes_out_byte_identical() {
    let body = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"x\u003cy"},"values":[[1.5,"1"],[3,"NaN"]]},{"metric":{"job":"z"},"values":[[1,"+Inf"]]}]}}"#;
    let a = answer(body);
    assert_eq!(run(&[Some(&a)], &MergeOptions::default()), body);
}

#[test]
fn matrix_fills_gaps_by_priority() {
    let a = answer(&matrix(&[(
        r#"{"i":"1"}"#,
        &[(1, "a1"), (2, "a2"), (5, "a5")],
    )]));
    let b = answer(&matrix(&[(
        r#"{"i":"1"}"#,
        &[(1, "b1"), (3, "b3"), (4, "b4"), (5, "b5"), (6, "b6")],
    )]));
    let (out, report) = run_with(
        &[Some(&a), Some(&b)],
        &MergeOptions::default(),
        &AllEligible,
        &[],
    );
    assert_eq!(
        out,
        matrix(&[(
            r#"{"i":"1"}"#,
            &[
                (1, "a1"),
                (2, "a2"),
                (3, "b3"),
                (4, "b4"),
                (5, "a5"),
                (6, "b6")
            ]
        )])
    );
    assert_eq!(report.filled_samples, 3);
    assert_eq!(report.samples, 6);
}

#[test]
fn runs_are_copied_whole_even_from_a_pretty_printed_answer() {
    // Runs of one upstream's samples are copied as one stretch of its body,
    // white space between samples included: still JSON, still the same samples.
    let a = answer(
        "{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":[{\"metric\":{\"i\":\"1\"},\"values\":[\n  [1,\"a1\"] ,\n  [2,\"a2\"],\t[5,\"a5\"] ,[6,\"a6\"]\n]}]}}",
    );
    let b = answer(&matrix(&[(
        r#"{"i":"1"}"#,
        &[(1, "b1"), (3, "b3"), (4, "b4"), (7, "b7")],
    )]));
    let (out, report) = run_with(
        &[Some(&a), Some(&b)],
        &MergeOptions::default(),
        &AllEligible,
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let values: Vec<(i64, String)> = v["data"]["result"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_str().unwrap().to_string()))
        .collect();
    let want: Vec<(i64, String)> = [
        (1, "a1"),
        (2, "a2"),
        (3, "b3"),
        (4, "b4"),
        (5, "a5"),
        (6, "a6"),
        (7, "b7"),
    ]
    .iter()
    .map(|(t, v)| (*t, v.to_string()))
    .collect();
    assert_eq!(values, want);
    assert_eq!((report.samples, report.filled_samples), (7, 3));
}

#[test]
fn series_only_one_upstream_has_are_kept_and_sorted() {
    let a = answer(&matrix(&[
        (r#"{"i":"2"}"#, &[(1, "1")]),
        (r#"{"i":"1","j":"x"}"#, &[(1, "1")]),
    ]));
    let b = answer(&matrix(&[
        (r#"{"i":"1"}"#, &[(1, "2")]),
        (r#"{"h":"9"}"#, &[(1, "3")]),
    ]));
    let out = run(&[Some(&a), Some(&b)], &MergeOptions::default());
    // Prometheus order: label by label, a prefix before a longer set.
    assert_eq!(
        out,
        matrix(&[
            (r#"{"h":"9"}"#, &[(1, "3")]),
            (r#"{"i":"1"}"#, &[(1, "2")]),
            (r#"{"i":"1","j":"x"}"#, &[(1, "1")]),
            (r#"{"i":"2"}"#, &[(1, "1")]),
        ])
    );
}

#[test]
fn answers_spanning_months_merge_as_answers_spanning_hours() {
    // a's times span 60 days (its table turns wide), b's a few hours (it
    // stays narrow); shifted to a few hours apart, the same merge.
    let day = 86_400;
    let t0 = 1_700_000_000;
    let merged = |span: i64| {
        let a = answer(&matrix(&[(
            r#"{"i":"1"}"#,
            &[(t0, "a0"), (t0 + span, "a1"), (t0 + 2 * span, "a2")],
        )]));
        let b = answer(&matrix(&[(
            r#"{"i":"1"}"#,
            &[
                (t0 + span / 2, "b0"),
                (t0 + span, "b1"),
                (t0 + 3 * span, "b3"),
            ],
        )]));
        let want = matrix(&[(
            r#"{"i":"1"}"#,
            &[
                (t0, "a0"),
                (t0 + span / 2, "b0"),
                (t0 + span, "a1"),
                (t0 + 2 * span, "a2"),
                (t0 + 3 * span, "b3"),
            ],
        )]);
        (run(&[Some(&a), Some(&b)], &MergeOptions::default()), want)
    };
    for span in [3600, 20 * day, 60 * day] {
        let (got, want) = merged(span);
        assert_eq!(got, want, "span {span} s");
    }
}

#[test]
fn replica_labels_are_removed_before_matching() {
    let a = answer(&matrix(&[(r#"{"i":"1","replica":"a"}"#, &[(1, "a1")])]));
    let b = answer(&matrix(&[(
        r#"{"i":"1","replica":"b"}"#,
        &[(1, "b1"), (2, "b2")],
    )]));
    let labels = vec!["replica".to_string()];
    let opts = MergeOptions {
        replica_labels: &labels,
        ..Default::default()
    };
    assert_eq!(
        run(&[Some(&a), Some(&b)], &opts),
        matrix(&[(r#"{"i":"1"}"#, &[(1, "a1"), (2, "b2")])])
    );
}

#[test]
fn merge_is_deterministic() {
    let a = answer(&matrix(&[
        (r#"{"i":"3"}"#, &[(1, "1")]),
        (r#"{"i":"1"}"#, &[(2, "1")]),
        (r#"{"i":"2"}"#, &[(1, "1")]),
    ]));
    let b = answer(&matrix(&[
        (r#"{"i":"2"}"#, &[(2, "2")]),
        (r#"{"i":"4"}"#, &[(1, "1")]),
    ]));
    let first = run(&[Some(&a), Some(&b)], &MergeOptions::default());
    for _ in 0..20 {
        assert_eq!(run(&[Some(&a), Some(&b)], &MergeOptions::default()), first);
    }
}

#[test]
fn vector_takes_one_sample_per_label_set() {
    let a = answer(&vector(&[(r#"{"i":"1"}"#, 10, "a")]));
    let b = answer(&vector(&[
        (r#"{"i":"2"}"#, 10, "b"),
        (r#"{"i":"1"}"#, 10, "b"),
    ]));
    assert_eq!(
        run(&[Some(&a), Some(&b)], &MergeOptions::default()),
        vector(&[(r#"{"i":"1"}"#, 10, "a"), (r#"{"i":"2"}"#, 10, "b")])
    );
}

#[test]
fn failed_upstreams_are_skipped_and_warned_about() {
    let b = answer(&vector(&[(r#"{"i":"1"}"#, 10, "b")]));
    let (out, _) = run_with(
        &[None, Some(&b)],
        &MergeOptions::default(),
        &AllEligible,
        &["upstream a: timeout after 1s".into()],
    );
    assert!(
        out.ends_with(r#","warnings":["upstream a: timeout after 1s"]}"#),
        "{out}"
    );
    assert!(out.contains(r#""value":[10,"b"]"#));
}

#[test]
fn warnings_and_infos_are_unioned_once() {
    let a = answer(
        r#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["w1","w2"],"infos":["i1"]}"#,
    );
    let b = answer(
        r#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["w2","w3"],"infos":["i1"]}"#,
    );
    assert_eq!(
        run(&[Some(&a), Some(&b)], &MergeOptions::default()),
        r#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["w1","w2","w3"],"infos":["i1"]}"#
    );
}

#[test]
fn topk_is_reapplied_after_the_merge() {
    // Each replica's own top 2 differ; their union has 3 series. The set comes
    // from the highest-priority replica that has the group, never a mix.
    let a = answer(&vector(&[
        (r#"{"i":"1"}"#, 1, "10"),
        (r#"{"i":"2"}"#, 1, "5"),
    ]));
    let b = answer(&vector(&[
        (r#"{"i":"3"}"#, 1, "7"),
        (r#"{"i":"1"}"#, 1, "10"),
    ]));
    let opts = MergeOptions {
        reorder: Reorder::TopK {
            k: 2,
            bottom: false,
            grouping: reorder::Grouping::Everything,
        },
        ..Default::default()
    };
    assert_eq!(
        run(&[Some(&a), Some(&b)], &opts),
        vector(&[(r#"{"i":"1"}"#, 1, "10"), (r#"{"i":"2"}"#, 1, "5")])
    );
    // Where a has nothing, b's set answers.
    assert_eq!(
        run(&[None, Some(&b)], &opts),
        vector(&[(r#"{"i":"1"}"#, 1, "10"), (r#"{"i":"3"}"#, 1, "7")])
    );
}

#[test]
fn topk_never_exceeds_k_per_group() {
    let a = answer(&vector(&[
        (r#"{"g":"x","i":"1"}"#, 1, "1"),
        (r#"{"g":"x","i":"2"}"#, 1, "2"),
        (r#"{"g":"y","i":"3"}"#, 1, "3"),
    ]));
    let b = answer(&vector(&[
        (r#"{"g":"x","i":"4"}"#, 1, "9"),
        (r#"{"g":"y","i":"5"}"#, 1, "1"),
        (r#"{"g":"z","i":"6"}"#, 1, "1"),
    ]));
    let opts = MergeOptions {
        reorder: Reorder::TopK {
            k: 1,
            bottom: false,
            grouping: reorder::Grouping::By(vec!["g".into()]),
        },
        ..Default::default()
    };
    // Group x and y from a (its best), group z only b has.
    assert_eq!(
        run(&[Some(&a), Some(&b)], &opts),
        vector(&[
            (r#"{"g":"x","i":"2"}"#, 1, "2"),
            (r#"{"g":"y","i":"3"}"#, 1, "3"),
            (r#"{"g":"z","i":"6"}"#, 1, "1")
        ])
    );
}

#[test]
fn topk_on_a_matrix_holds_at_every_step() {
    let a = answer(&matrix(&[
        (r#"{"i":"1"}"#, &[(1, "1"), (2, "9")]),
        (r#"{"i":"2"}"#, &[(1, "5")]),
    ]));
    let b = answer(&matrix(&[
        (r#"{"i":"3"}"#, &[(1, "3"), (2, "1"), (3, "4")]),
        (r#"{"i":"2"}"#, &[(2, "2")]),
    ]));
    let opts = MergeOptions {
        reorder: Reorder::TopK {
            k: 1,
            bottom: false,
            grouping: reorder::Grouping::Everything,
        },
        ..Default::default()
    };
    assert_eq!(
        run(&[Some(&a), Some(&b)], &opts),
        matrix(&[
            (r#"{"i":"1"}"#, &[(2, "9")]),
            (r#"{"i":"2"}"#, &[(1, "5")]),
            (r#"{"i":"3"}"#, &[(3, "4")])
        ])
    );
}

#[test]
fn sort_desc_orders_the_vector() {
    let a = answer(&vector(&[
        (r#"{"i":"1"}"#, 1, "1"),
        (r#"{"i":"2"}"#, 1, "NaN"),
        (r#"{"i":"3"}"#, 1, "3"),
    ]));
    let opts = MergeOptions {
        reorder: Reorder::Sort { descending: true },
        ..Default::default()
    };
    assert_eq!(
        run(&[Some(&a)], &opts),
        vector(&[
            (r#"{"i":"3"}"#, 1, "3"),
            (r#"{"i":"1"}"#, 1, "1"),
            (r#"{"i":"2"}"#, 1, "NaN")
        ])
    );
}

#[test]
fn histograms_merge_by_the_same_rule() {
    let h = |c: &str| format!(r#"{{"count":"{c}","sum":"1","buckets":[[0,"0","1","{c}"]]}}"#);
    let a = answer(&format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"histograms":[[1,{}],[3,{}]]}}]}}}}"#,
        h("1"),
        h("3")
    ));
    let b = answer(&format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"histograms":[[1,{}],[2,{}]]}}]}}}}"#,
        h("9"),
        h("2")
    ));
    assert_eq!(
        run(&[Some(&a), Some(&b)], &MergeOptions::default()),
        format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"histograms":[[1,{}],[2,{}],[3,{}]]}}]}}}}"#,
            h("1"),
            h("2"),
            h("3")
        )
    );
}

struct OnlyB;
impl Eligibility for OnlyB {
    fn allows(&self, upstream: usize, t: i64) -> bool {
        upstream == 1 || t >= 3000
    }
}

#[test]
fn eligibility_decides_who_may_contribute() {
    let a = answer(&matrix(&[
        (r#"{"i":"1"}"#, &[(1, "a1"), (2, "a2"), (3, "a3")]),
        (r#"{"i":"a-only"}"#, &[(1, "x")]),
    ]));
    let b = answer(&matrix(&[(
        r#"{"i":"1"}"#,
        &[(1, "b1"), (2, "b2"), (3, "b3")],
    )]));
    let (out, _) = run_with(&[Some(&a), Some(&b)], &MergeOptions::default(), &OnlyB, &[]);
    // Before t=3s only b may contribute: a's values and a's own series stay out.
    assert_eq!(
        out,
        matrix(&[(r#"{"i":"1"}"#, &[(1, "b1"), (2, "b2"), (3, "a3")])])
    );
}

#[test]
fn an_upstreams_answer_in_parts_over_its_steps_merges_as_the_whole_would() {
    let a = answer(&matrix(&[
        (r#"{"i":"1"}"#, &[(1, "a1"), (2, "a2"), (5, "a5")]),
        (r#"{"i":"2"}"#, &[(1, "x1")]),
    ]));
    let whole = answer(&matrix(&[
        (
            r#"{"i":"1"}"#,
            &[(1, "b1"), (2, "b2"), (3, "b3"), (4, "b4"), (5, "b5")],
        ),
        (r#"{"i":"3"}"#, &[(4, "y4")]),
    ]));
    let early = answer(&matrix(&[(
        r#"{"i":"1"}"#,
        &[(1, "b1"), (2, "b2"), (3, "b3")],
    )]));
    let late = answer(&matrix(&[
        (r#"{"i":"1"}"#, &[(4, "b4"), (5, "b5")]),
        (r#"{"i":"3"}"#, &[(4, "y4")]),
    ]));
    let opts = MergeOptions::default();
    // a may not contribute at 2 s: b's answer serves there, whole or in parts.
    struct NotAAt2;
    impl Eligibility for NotAAt2 {
        fn allows(&self, upstream: usize, t: i64) -> bool {
            upstream != 0 || t != 2000
        }
    }
    let (want, _) = run_with(&[Some(&a), Some(&whole)], &opts, &NotAAt2, &[]);
    let owner = [0, 1, 1];
    let parts = ByOwner {
        eligibility: &NotAAt2,
        owner: &owner,
    };
    let (got, _) = run_with(&[Some(&a), Some(&early), Some(&late)], &opts, &parts, &[]);
    assert_eq!(got, want);
    assert!(want.contains(r#"[2,"b2"]"#), "{want}");
}

#[test]
fn scalars_come_from_the_highest_priority_answer() {
    let a = answer(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#);
    let b = answer(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#);
    assert_eq!(
        run(&[Some(&a), Some(&b)], &MergeOptions::default()),
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#
    );
    let s = answer(r#"{"status":"success","data":{"resultType":"string","result":[1,"a\"b<"]}}"#);
    assert_eq!(
        run(&[None, Some(&s)], &MergeOptions::default()),
        r#"{"status":"success","data":{"resultType":"string","result":[1,"a\"b\u003c"]}}"#
    );
}

#[test]
fn a_mismatched_result_type_is_left_out_with_a_warning() {
    let a = answer(&vector(&[(r#"{"i":"1"}"#, 1, "1")]));
    let b = answer(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#);
    let out = run(&[Some(&a), Some(&b)], &MergeOptions::default());
    assert!(
        out.contains("upstream b: answered a scalar where the others answered a vector; left out"),
        "{out}"
    );
}

#[test]
fn stats_come_from_the_first_answer_that_has_them() {
    let a = answer(
        r#"{"status":"success","data":{"resultType":"vector","result":[],"stats":{"timings":{"evalTotalTime":0.1}}}}"#,
    );
    assert_eq!(
        run(&[Some(&a)], &MergeOptions::default()),
        r#"{"status":"success","data":{"resultType":"vector","result":[],"stats":{"timings":{"evalTotalTime":0.1}}}}"#
    );
}

#[test]
fn nothing_to_merge_is_an_error() {
    let mut out = Vec::new();
    let ups = [Upstream {
        name: "a",
        answer: None,
    }];
    assert_eq!(
        merge(&ups, &[], &MergeOptions::default(), &AllEligible, &mut out),
        Err(MergeError::NoAnswers)
    );
}

#[test]
fn a_spill_that_declines_stops_the_merge_after_that_series() {
    let a = answer(&matrix(&[
        (r#"{"i":"1"}"#, &[(1, "a")]),
        (r#"{"i":"2"}"#, &[(1, "b")]),
        (r#"{"i":"3"}"#, &[(1, "c")]),
    ]));
    let ups = [Upstream {
        name: "a",
        answer: Some(&a),
    }];
    let mut calls = 0;
    let mut spill = |_: &mut Vec<u8>| {
        calls += 1;
        false
    };
    let mut out = Vec::new();
    let report = merge_in_pieces(
        &ups,
        &[],
        &MergeOptions::default(),
        &AllEligible,
        &mut out,
        &mut spill,
    )
    .expect("merge");
    assert_eq!(calls, 1);
    assert_eq!(report.series, 1);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""i":"1""#) && !text.contains(r#""i":"2""#));
}

#[test]
fn a_vector_keeps_the_first_answers_order_then_the_others() {
    let a = answer(&vector(&[
        (r#"{"i":"3"}"#, 10, "a"),
        (r#"{"i":"1"}"#, 10, "a"),
    ]));
    let b = answer(&vector(&[
        (r#"{"i":"2"}"#, 10, "b"),
        (r#"{"i":"1"}"#, 10, "b"),
        (r#"{"i":"0"}"#, 10, "b"),
    ]));
    assert_eq!(
        run(&[Some(&a), Some(&b)], &MergeOptions::default()),
        vector(&[
            (r#"{"i":"3"}"#, 10, "a"),
            (r#"{"i":"1"}"#, 10, "a"),
            (r#"{"i":"2"}"#, 10, "b"),
            (r#"{"i":"0"}"#, 10, "b"),
        ])
    );
    // Sorted answers (a selector's) merge into one sorted list.
    let a = answer(&vector(&[
        (r#"{"i":"1"}"#, 10, "a"),
        (r#"{"i":"3"}"#, 10, "a"),
    ]));
    let b = answer(&vector(&[
        (r#"{"i":"2"}"#, 10, "b"),
        (r#"{"i":"3"}"#, 10, "b"),
    ]));
    assert_eq!(
        run(&[Some(&a), Some(&b)], &MergeOptions::default()),
        vector(&[
            (r#"{"i":"1"}"#, 10, "a"),
            (r#"{"i":"2"}"#, 10, "b"),
            (r#"{"i":"3"}"#, 10, "a"),
        ])
    );
}

/// Steps where some upstreams are left out (bit u set: u allowed); open to
/// all elsewhere. With `closed` it tells the merger which steps those are.
struct Closed {
    at: std::collections::BTreeMap<i64, u64>,
    closed: Option<Vec<i64>>,
}

impl Eligibility for Closed {
    fn allows(&self, upstream: usize, t: i64) -> bool {
        self.at.get(&t).is_none_or(|m| m & (1 << upstream) != 0)
    }

    fn closed(&self) -> Option<&[i64]> {
        self.closed.as_deref()
    }
}

#[test]
fn runs_taken_at_once_pick_what_asking_at_every_sample_picks() {
    type Series = Vec<(i64, String)>;
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..400 {
        // Half the rounds in order, as Prometheus answers; the others now
        // and then out of order or repeated, where the two must still agree.
        let in_order = round % 2 == 0;
        let upstreams = rng.usize(1..=3);
        let copies: Vec<Vec<Series>> = (0..upstreams)
            .map(|u| {
                (0..4)
                    .map(|_| {
                        let mut t = 0;
                        (0..rng.usize(0..30))
                            .map(|_| {
                                t = match rng.u8(..20) {
                                    0 if !in_order => t - rng.i64(0..3),
                                    _ => t + rng.i64(1..3),
                                };
                                (t, format!("{u}.{t}"))
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let body = |series: &[Series]| {
            let metrics: Vec<String> = (0..series.len())
                .map(|s| format!(r#"{{"i":"{s}"}}"#))
                .collect();
            let refs: Vec<(&str, Vec<(i64, &str)>)> = series
                .iter()
                .zip(&metrics)
                .filter(|(v, _)| !v.is_empty())
                .map(|(v, m)| {
                    (
                        m.as_str(),
                        v.iter().map(|(t, v)| (*t, v.as_str())).collect(),
                    )
                })
                .collect();
            let refs: Vec<(&str, &[(i64, &str)])> =
                refs.iter().map(|(m, v)| (*m, v.as_slice())).collect();
            matrix(&refs)
        };
        let bodies: Vec<String> = copies.iter().map(|c| body(c)).collect();
        let answers: Vec<Answer> = bodies.iter().map(|b| answer(b)).collect();
        let answers: Vec<Option<&Answer>> = answers.iter().map(Some).collect();
        let at: std::collections::BTreeMap<i64, u64> = (0..rng.usize(0..8))
            .map(|_| (rng.i64(0..40) * 1000, rng.u64(0..8)))
            .collect();
        let every = (1 << upstreams) - 1;
        let closed = at
            .iter()
            .filter(|(_, m)| **m & every != every)
            .map(|(t, _)| *t)
            .collect();
        let asked = Closed {
            at: at.clone(),
            closed: None,
        };
        let runs = Closed {
            at,
            closed: Some(closed),
        };
        let opts = MergeOptions::default();
        let (want, want_report) = run_with(&answers, &opts, &asked, &[]);
        let (got, got_report) = run_with(&answers, &opts, &runs, &[]);
        assert_eq!(got, want, "round {round}: {bodies:?}");
        assert_eq!(got_report, want_report, "round {round}");
        if in_order {
            // At each time, the first upstream that has a sample there and is allowed.
            let merged: Vec<Series> = (0..4)
                .map(|s| {
                    let times: std::collections::BTreeSet<i64> = copies
                        .iter()
                        .flat_map(|c| c[s].iter().map(|p| p.0))
                        .collect();
                    times
                        .into_iter()
                        .filter_map(|t| {
                            copies.iter().enumerate().find_map(|(u, c)| {
                                let sample = c[s].iter().find(|p| p.0 == t)?;
                                asked.allows(u, t * 1000).then(|| sample.clone())
                            })
                        })
                        .collect()
                })
                .collect();
            assert_eq!(got, body(&merged), "round {round}: {bodies:?}");
        }
    }
}

#[test]
fn the_next_closed_step_is_found_from_wherever_the_last_was() {
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..200 {
        let mut closed: Vec<i64> = (0..rng.usize(0..40)).map(|_| rng.i64(0..100)).collect();
        closed.sort_unstable();
        closed.dedup();
        let mut from = 0;
        for _ in 0..50 {
            // Mostly a little later, now and then far ahead or back.
            let t = rng.i64(-5..110);
            let at = next_closed(&closed, from, t);
            assert_eq!(
                at,
                closed.partition_point(|&s| s < t),
                "{closed:?} {from} {t}"
            );
            from = at;
        }
    }
}
