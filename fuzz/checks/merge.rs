//! The merge fuzz target's check, shared by `fuzz_targets/merge.rs` and the
//! test suite's replay of `fuzz/corpus/merge/` (`integration/fuzz_corpus.rs`):
//! arbitrary upstream bodies into the parsers and the mergers (queries, and
//! every other merged endpoint): no panic, no unbounded allocation, and
//! whatever a merge writes is JSON; the batched parse agrees with one pass,
//! and so does a parse with scratch lent by earlier inputs' parses.

use prom_ha_proxy::answer::{Answer, PADDING, Parser, Samples, Scratch, SpareTables};
use prom_ha_proxy::merge::coverage::{Coverage, StepMask};
use prom_ha_proxy::merge::meta::{self, MetaAnswer, MetaKind, MetaOptions};
use prom_ha_proxy::merge::reorder::{Grouping, Reorder};
use prom_ha_proxy::merge::{AllEligible, Eligibility, MergeOptions, Upstream, merge};
use std::sync::{Arc, Mutex, OnceLock};

/// Scratch that outlives each input: every parse with it follows others,
/// some of which failed half-way.
struct Lender(Mutex<Vec<Scratch>>);

impl SpareTables for Lender {
    fn spare_table(&self) -> Option<Samples> {
        None
    }
    fn spare_scratch(&self) -> Option<Scratch> {
        self.0.lock().unwrap().pop()
    }
    fn keep_scratch(&self, scratch: Scratch) {
        let mut kept = self.0.lock().unwrap();
        if kept.len() < 2 {
            kept.push(scratch);
        }
    }
}

static LENDER: OnceLock<Arc<Lender>> = OnceLock::new();

fn check<E: Eligibility>(ups: &[Upstream<'_>], reorder: &Reorder, eligibility: &E) {
    let labels = vec!["replica".to_string()];
    let opts = MergeOptions {
        replica_labels: &labels,
        reorder: reorder.clone(),
    };
    let mut out = Vec::new();
    if merge(
        ups,
        &["upstream x: warning".into()],
        &opts,
        eligibility,
        &mut out,
    )
    .is_ok()
    {
        let mut copy = out.clone();
        if let Err(e) = simd_json::to_owned_value(&mut copy) {
            panic!(
                "merge wrote invalid JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}

const KINDS: [MetaKind; 9] = [
    MetaKind::Series,
    MetaKind::LabelNames,
    MetaKind::LabelValues,
    MetaKind::Metadata,
    MetaKind::TargetMetadata,
    MetaKind::Exemplars,
    MetaKind::Rules,
    MetaKind::Alerts,
    MetaKind::Targets,
];

/// The two bodies as answers of every other endpoint: merged output must be JSON.
fn check_meta(a: &[u8], b: &[u8]) {
    let mut bufs = [a.to_vec(), b.to_vec()];
    let tapes: Vec<_> = bufs.iter_mut().map(|buf| meta::parse(buf).ok()).collect();
    let labels = vec!["replica".to_string()];
    for kind in KINDS {
        let answers: Vec<Option<MetaAnswer<'_, '_>>> = tapes
            .iter()
            .map(|t| t.as_ref().and_then(|t| MetaAnswer::read(kind, t).ok()))
            .collect();
        if answers.iter().all(Option::is_none) {
            continue;
        }
        let opts = MetaOptions {
            replica_labels: &labels,
            limit: Some(2),
            limit_per_metric: Some(1),
        };
        let mut out = Vec::new();
        meta::merge_meta(
            kind,
            &answers,
            &["upstream x: warning".into()],
            &opts,
            &mut out,
        );
        let mut copy = out.clone();
        if let Err(e) = simd_json::to_owned_value(&mut copy) {
            panic!(
                "{kind:?} merge wrote invalid JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}

/// One fuzz input: a cut byte, then two upstream bodies.
pub fn check_input(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (a, b) = rest.split_at(cut as usize * rest.len() / 256);
    check_meta(a, b);
    let answers: Vec<Option<Answer>> = [a, b]
        .iter()
        .map(|body| Answer::parse(body.to_vec()).ok())
        .collect();
    // The batched parse (large bodies) must read what one pass reads, and
    // accept nothing one pass rejects.
    for (body, whole) in [a, b].iter().zip(&answers) {
        let mut buf = body.to_vec();
        buf.resize(body.len() + PADDING, 0);
        if let Ok(batched) = Answer::parse_in_batches(buf, body.len(), 1) {
            let whole = whole
                .as_ref()
                .expect("the batched parse accepted what one pass rejects");
            assert_eq!(batched.digest(), whole.digest());
        }
        // Fed as it arrives, in chunks.
        let mut parser = Parser::new(1);
        let mut buf = Vec::new();
        let fed = body.chunks(13).try_for_each(|chunk| {
            buf.extend_from_slice(chunk);
            let len = buf.len();
            parser.feed(&mut buf, len)
        });
        if let Ok(fed) = fed.and_then(|()| parser.finish(buf, body.len())) {
            let whole = whole
                .as_ref()
                .expect("the fed parse accepted what one pass rejects");
            assert_eq!(fed.digest(), whole.digest());
        }
        // Parsed whole with scratch earlier parses used: the same verdict and reading.
        let lender = LENDER
            .get_or_init(|| Arc::new(Lender(Mutex::new(Vec::new()))))
            .clone();
        let mut buf = body.to_vec();
        buf.resize(body.len() + PADDING, 0);
        let lent = Parser::new(1 << 30)
            .with_spare_tables(lender)
            .finish(buf, body.len());
        match (lent, whole) {
            (Ok(lent), Some(whole)) => assert_eq!(lent.digest(), whole.digest()),
            (Err(_), None) => {}
            (lent, _) => panic!(
                "with lent scratch: {:?}, fresh: {}",
                lent.err(),
                whole.is_some()
            ),
        }
    }
    let refs: Vec<Option<&Answer>> = answers.iter().map(Option::as_ref).collect();
    let ups: Vec<Upstream<'_>> = refs
        .iter()
        .map(|a| Upstream {
            name: "u",
            answer: *a,
        })
        .collect();
    // The answers read as coverage answers too (counts labelled "c").
    let coverage: Vec<Option<Coverage>> = refs
        .iter()
        .map(|a| a.and_then(|a| Coverage::read(a, "c")))
        .collect();
    let coverage: Vec<Option<&Coverage>> = coverage.iter().map(Option::as_ref).collect();
    let mask = StepMask::from_coverage(&coverage, &[true, true], None);
    let reorders = [
        Reorder::None,
        Reorder::Sort { descending: true },
        Reorder::TopK {
            k: 1,
            bottom: false,
            grouping: Grouping::By(vec!["a".into()]),
        },
        Reorder::LimitK {
            k: 2,
            grouping: Grouping::Without(vec!["a".into()]),
        },
    ];
    for reorder in &reorders {
        check(&ups, reorder, &AllEligible);
        check(&ups, reorder, &mask);
    }
}
