use super::*;
use std::sync::Arc;

fn parse(s: &str) -> Result<Answer, AnswerError> {
    Answer::parse(s.as_bytes().to_vec())
}

#[test]
fn only_a_success_answers_opening_and_end_pass_as_one_and_only_no_series_as_empty() {
    // (body, looks like a success, holds no result)
    for (body, passes, empty) in [
        (
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            true,
            true,
        ),
        (
            r#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["w"]}"#,
            true,
            true,
        ),
        (
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}"#,
            true,
            false,
        ),
        // A scalar is a result, though an array.
        (
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#,
            true,
            false,
        ),
        // Not Prometheus' encoding of no series: taken for some.
        (
            r#"{"status":"success","data":{"resultType":"vector","result":[ ]}}"#,
            true,
            false,
        ),
        (
            r#"{"status":"success","data":{"resultType":"matrixx","result":[]}}"#,
            false,
            false,
        ),
        (
            r#"{"status":"success","data":{"resultType":"matrix","result":["#,
            false,
            false,
        ),
        (
            r#"{"status":"error","errorType":"bad_data","error":"x"}"#,
            false,
            false,
        ),
        (
            r#" {"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            false,
            false,
        ),
        ("garbage", false, false),
        ("", false, false),
    ] {
        assert_eq!(looks_like_success(body.as_bytes()), passes, "{body}");
        assert_eq!(holds_no_result(body.as_bytes()), empty, "{body}");
    }
}

#[test]
fn matrix_spans_point_at_the_original_bytes() {
    let a = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[1.5,"1"],[3,"NaN"]]}]},"warnings":["w1"]}"#).unwrap();
    assert_eq!(a.kind, ResultKind::Matrix);
    let s = &a.series[0];
    let labels: Vec<_> = a
        .series_labels(s)
        .iter()
        .map(|l| (a.text(l.name), a.text(l.value)))
        .collect();
    assert_eq!(labels, [("__name__", "up"), ("job", "a\"b")]);
    let raw: Vec<_> = a.floats(s).map(|i| a.raw(i)).collect();
    assert_eq!(raw, [&b"[1.5,\"1\"]"[..], &b"[3,\"NaN\"]"[..]]);
    assert_eq!(a.times(a.floats(s)), [1500, 3000]);
    let b = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1435781451.781,"1"],[-1.5,"2"],[0.0015,"3"]]}]}}"#).unwrap();
    assert_eq!(b.times(b.floats(&b.series[0])), [1435781451781, -1500, 2]);
    assert_eq!(a.text(a.warnings[0]), "w1");
}

#[test]
fn histograms_are_kept_as_raw_spans() {
    let a = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"histograms":[[10,{"count":"2","sum":"3","buckets":[[0,"0","1","2"]]}]]}]}}"#).unwrap();
    let s = &a.series[0];
    assert!(a.floats(s).is_empty());
    assert_eq!(
        a.raw(a.histograms(s).start),
        br#"[10,{"count":"2","sum":"3","buckets":[[0,"0","1","2"]]}]"#
    );
}

#[test]
fn whitespace_does_not_confuse_spans() {
    let a = parse("{ \"status\" : \"success\" , \"data\" : { \"result\" : [ { \"metric\" : { } , \"value\" : [ 1 , \"2\" ] } ] , \"resultType\" : \"vector\" } }").unwrap();
    assert_eq!(a.kind, ResultKind::Vector);
    assert_eq!(a.raw(a.floats(&a.series[0]).start), b"[ 1 , \"2\" ]");
}

#[test]
fn scalar_and_string_results() {
    let a = parse(r#"{"status":"success","data":{"resultType":"scalar","result":[1.25,"2"]}}"#)
        .unwrap();
    assert_eq!(a.kind, ResultKind::Scalar);
    assert_eq!(a.bytes(a.single.unwrap().raw), br#"[1.25,"2"]"#);
    assert_eq!(a.single.unwrap().t, 1250);
    let a = parse(r#"{"status":"success","data":{"resultType":"string","result":[1,"a\nb"]}}"#)
        .unwrap();
    assert_eq!(a.kind, ResultKind::String);
    assert_eq!(a.text(a.single.unwrap().text), "a\nb");
}

#[test]
fn errors_are_typed() {
    assert!(matches!(parse("garbage"), Err(AnswerError::Json(_))));
    assert!(matches!(
        parse("{\"status\":\"success\""),
        Err(AnswerError::Json(_))
    ));
    assert!(matches!(parse("[1,2]"), Err(AnswerError::Shape(_))));
    assert!(matches!(
        parse(r#"{"status":"success"}"#),
        Err(AnswerError::Shape(_))
    ));
    assert!(matches!(
        parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,2]]}]}}"#
        ),
        Err(AnswerError::Shape(_))
    ));
    assert_eq!(
        parse(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#).unwrap_err(),
        AnswerError::Status {
            error_type: "bad_data".into(),
            error: "parse error".into()
        }
    );
    assert!(matches!(
        parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"\u0031"]]}]}}"#
        ),
        Err(AnswerError::Shape(_))
    ));
}

fn parse_batched(s: &str, batch_bytes: usize) -> Result<Answer, AnswerError> {
    let mut buf = s.as_bytes().to_vec();
    buf.resize(s.len() + PADDING, 0);
    Answer::parse_in_batches(buf, s.len(), batch_bytes)
}

const BATCHABLE: &[&str] = &[
    r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b},{\"metric\":"},"values":[[1.5,"1"],[3,"NaN"]]},{"metric":{"job":"\u00e9"},"values":[[2,"2"]]},{"metric":{},"histograms":[[10,{"count":"2","sum":"3","buckets":[[0,"0","1","2"]]}]]},{"metric":{"x":"y"},"values":[[4,"4"]],"histograms":[[5,{"count":"1"}]]}],"stats":{"timings":{"evalTotalTime":0.1}}},"warnings":["w1","w\"2"],"infos":["i"]}"#,
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]},{"metric":{"a":"3"},"histogram":[1,{"count":"1"}]}]}}"#,
    r#"{"data":{"result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}],"resultType":"vector"},"status":"success"}"#,
];

/// Parses `body` fed in pieces of `piece` bytes, as it arrives; also
/// says how many batches were parsed and how many of them by the worker.
fn parse_fed(
    body: &str,
    batch_bytes: usize,
    piece: usize,
) -> Result<(Answer, usize, usize), AnswerError> {
    feed_whole(Parser::new(batch_bytes), body, piece)
}

/// [`parse_fed`] with a parser set up by the caller.
fn feed_whole(
    mut parser: Parser,
    body: &str,
    piece: usize,
) -> Result<(Answer, usize, usize), AnswerError> {
    let mut buf = Vec::new();
    for chunk in body.as_bytes().chunks(piece) {
        buf.extend_from_slice(chunk);
        let len = buf.len();
        parser.feed(&mut buf, len)?;
    }
    let on_arrival = parser.worker.as_ref().map_or(0, |w| w.sent);
    let (answer, batches) = parser.finish_counting(buf, body.len())?;
    Ok((answer, batches, on_arrival))
}

#[test]
fn batches_read_exactly_what_one_pass_reads() {
    // Batches cut on arrival go to the worker, whose copies hold the
    // escaped labels of BATCHABLE[0]: the body must read as one pass reads.
    for body in BATCHABLE {
        let whole = parse(body).unwrap().digest();
        for batch_bytes in [1, 40, 100] {
            let batched = parse_batched(body, batch_bytes).unwrap();
            assert_eq!(batched.digest(), whole, "{batch_bytes}: {body}");
            // Fed as it would arrive, in pieces of every size.
            for piece in [1, 7, 64, 200] {
                let (answer, batches, on_arrival) = parse_fed(body, batch_bytes, piece).unwrap();
                assert!(batches > 0, "{body}");
                // The first cut always finds the worker's queue empty.
                assert!(batch_bytes > 1 || on_arrival > 0, "{piece}: {body}");
                assert_eq!(answer.digest(), whole, "{batch_bytes}/{piece}: {body}");
            }
        }
        let (_, batches) = Parser::new(body.len())
            .finish_counting(body.as_bytes().to_vec(), body.len())
            .unwrap();
        assert_eq!(batches, 0, "a body no larger than a batch is parsed whole");
    }
}

#[test]
fn the_rest_parsed_in_two_halves_reads_as_one_pass_reads() {
    // Every series longer than simd-json's padding and a batch of its
    // own, so what is left at the end is parsed in two halves (the second
    // on a thread of its own), escapes on both sides of the split.
    let series: Vec<String> = (0..41)
        .map(|i| {
            let values: Vec<String> = (0..i % 7 + 1)
                .map(|t| format!("[{},\"{}\"]", 1000 + t * 15, i * t))
                .collect();
            format!(
                r#"{{"metric":{{"__name__":"m","i":"{i}","esc":"a\"b\u00e9{i}"}},"values":[{}]}}"#,
                values.join(",")
            )
        })
        .collect();
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}},"warnings":["w"]}}"#,
        series.join(",")
    );
    assert!(series.iter().all(|s| s.len() > PADDING + 1));
    let whole = parse(&body).unwrap().digest();
    assert_eq!(parse_batched(&body, 1).unwrap().digest(), whole);
    // Fed in pieces, some batches go to the worker first; the rest splits.
    for piece in [300, 2000, body.len()] {
        let (answer, batches, _) = parse_fed(&body, 1, piece).unwrap();
        assert_eq!(batches, 40, "{piece}");
        assert_eq!(answer.digest(), whole, "{piece}");
    }
    // A corrupt series in the second half fails the answer.
    let bad = body.replacen(r#""i":"35""#, r#""i":35"#, 1);
    assert!(parse_batched(&bad, 1).is_err());
}

#[test]
fn sample_times_read_back_whole_narrow_or_wide() {
    let day = 86_400_000i64;
    let t0 = 1_700_000_000_000i64;
    let mut rng = fastrand::Rng::with_seed(5);
    for round in 0..300 {
        // Mostly within the narrow window; some rounds reach past it,
        // before or after, or hit the marker's own offset.
        let pick = |rng: &mut fastrand::Rng, first: Option<i64>| match rng.u8(..40) {
            0 if round % 3 == 0 => t0 - 3 * day,
            1 if round % 3 == 1 => t0 + 60 * day,
            // The offset that would read as a list's end.
            2 => first
                .unwrap_or(t0)
                .saturating_add(SKEW)
                .saturating_add(LIST_END as i64),
            3 => i64::MAX,
            4 => i64::MIN + 1,
            _ => t0 + rng.i64(-day..40 * day),
        };
        let mut parts: Vec<(Samples, Vec<i64>)> = Vec::new();
        for _ in 0..3 {
            let (mut table, mut want) = (Samples::default(), Vec::new());
            for i in 0..rng.usize(0..50) {
                let first = want.iter().copied().find(|&t| t != i64::MIN);
                let t = if i % 7 == 6 {
                    i64::MIN
                } else {
                    pick(&mut rng, first)
                };
                table.push(t, i as u32);
                want.push(t);
            }
            parts.push((table, want));
        }
        let (mut whole, mut want) = (Samples::default(), Vec::new());
        for (table, times) in &parts {
            let read: Vec<i64> = (0..table.len() as usize).map(|i| table.t(i)).collect();
            assert_eq!(&read, times, "round {round}");
            whole.append(table);
            want.extend_from_slice(times);
        }
        let mut read = Vec::new();
        whole.times_into(0..want.len(), &mut read);
        assert_eq!(read, want, "round {round}");
        assert_eq!(whole.starts.len(), want.len());
        // Emptied, a table that went wide is narrow again.
        whole.clear();
        whole.push(t0, 0);
        assert!(matches!(whole.times, Times::Narrow { .. }) && whole.t(0) == t0);
    }
}

/// Spare tables that once held another answer's samples.
struct Spares(std::sync::Mutex<Vec<Samples>>);

impl SpareTables for Spares {
    fn spare_table(&self) -> Option<Samples> {
        self.0.lock().unwrap().pop()
    }
}

#[test]
fn a_spare_table_holds_nothing_of_its_last_answer() {
    let (first, second) = (BATCHABLE[1], BATCHABLE[0]);
    let (_, table) = parse(first).unwrap().into_buffers();
    assert_eq!(table.len(), 0);
    assert!(table.capacity_bytes() > 0);
    let spares = Arc::new(Spares(std::sync::Mutex::new(vec![table])));
    let parser = Parser::new(40).with_spare_tables(spares.clone());
    let (answer, _, _) = feed_whole(parser, second, 16).unwrap();
    assert!(spares.0.lock().unwrap().is_empty(), "the spare was taken");
    assert_eq!(answer.digest(), parse(second).unwrap().digest());
}

/// Scratch lent out and taken back, however much.
#[derive(Default)]
struct ScratchPool(std::sync::Mutex<Vec<Scratch>>);

impl SpareTables for ScratchPool {
    fn spare_table(&self) -> Option<Samples> {
        None
    }
    fn spare_scratch(&self) -> Option<Scratch> {
        self.0.lock().unwrap().pop()
    }
    fn keep_scratch(&self, scratch: Scratch) {
        self.0.lock().unwrap().push(scratch);
    }
}

#[test]
fn scratch_lent_from_answer_to_answer_reads_each_as_fresh_scratch_would() {
    let pool = Arc::new(ScratchPool::default());
    let kept = || pool.0.lock().unwrap().len();
    let read = |body: &str, batch_bytes: usize| {
        let parser = Parser::new(batch_bytes).with_spare_tables(pool.clone());
        let (answer, _, _) = feed_whole(parser, body, 16).unwrap();
        assert_eq!(answer.digest(), parse(body).unwrap().digest(), "{body}");
    };
    // Parsed whole: its scratch, new, comes back.
    read(BATCHABLE[0], 1 << 20);
    assert_eq!(kept(), 1);
    // In batches: none is lent.
    read(BATCHABLE[1], 1);
    assert_eq!(kept(), 1);
    // Longer and shorter answers in turn, each with scratch an earlier
    // one grew and wrote: nothing of it shows in what is read.
    for _ in 0..3 {
        for body in BATCHABLE.iter().rev() {
            for batch_bytes in [1, 40, 1 << 20] {
                read(body, batch_bytes);
            }
        }
    }
    assert_eq!(kept(), 1, "the lent set came back, no other was made");
    let longest = BATCHABLE.iter().map(|b| b.len()).max();
    assert_eq!(
        pool.0.lock().unwrap().first().map(Scratch::grown_for),
        longest
    );
    // A body that fails gives its scratch back too.
    let parser = Parser::new(1 << 20).with_spare_tables(pool.clone());
    assert!(feed_whole(parser, &BATCHABLE[0][..50], 16).is_err());
    assert_eq!(kept(), 1);
}

#[test]
fn batches_reject_what_one_pass_rejects() {
    let good = BATCHABLE[0];
    // Every single-byte corruption that one pass rejects is rejected in batches
    // too (the batched path must not accept what simd-json would not).
    let mut rejected = 0;
    for at in 0..good.len() {
        for byte in [b'x', b'"', b',', b'}', b']', b'\\'] {
            let mut bad = good.as_bytes().to_vec();
            bad[at] = byte;
            let Ok(bad) = String::from_utf8(bad) else {
                continue;
            };
            if parse(&bad).is_err() {
                rejected += 1;
                assert!(
                    parse_batched(&bad, 1).is_err(),
                    "accepted in batches: {bad}"
                );
                assert!(
                    parse_fed(&bad, 1, 9).is_err(),
                    "accepted in batches parsed on arrival: {bad}"
                );
            }
        }
    }
    assert!(rejected > 100, "only {rejected} corruptions tried");
    // A shape seen only in a batch still has to match resultType.
    let mixed = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"c":"a"},"value":[1,"80"]},{"metric":{"c":"b"},"other":1}]}}"#;
    assert!(parse(mixed).is_err());
    assert!(parse_batched(mixed, 1).is_err());
    // Series-like objects outside data.result are not taken as series.
    let outside = r#"{"status":"success","data":{"resultType":"vector","result":[]},"extra":[{"metric":{}},{"metric":{}}]}"#;
    assert!(parse_batched(outside, 1).is_err());
    assert!(parse(outside).unwrap().series.is_empty());
}

#[test]
fn prom_floats() {
    assert_eq!(parse_prom_float(b"+Inf"), f64::INFINITY);
    assert_eq!(parse_prom_float(b"-Inf"), f64::NEG_INFINITY);
    assert!(parse_prom_float(b"NaN").is_nan());
    assert_eq!(parse_prom_float(b"1e3"), 1000.0);
}
