//! Arbitrary upstream bodies into the parser and the merger: no panic, no
//! unbounded allocation, and whatever a merge writes is JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prom_ha_proxy::merge::answer::Answer;
use prom_ha_proxy::merge::coverage::StepMask;
use prom_ha_proxy::merge::reorder::{Grouping, Reorder};
use prom_ha_proxy::merge::{AllEligible, Eligibility, MergeOptions, Upstream, merge};

fn check<E: Eligibility>(ups: &[Upstream<'_>], reorder: &Reorder, eligibility: &E) {
    let labels = vec!["replica".to_string()];
    let opts = MergeOptions { replica_labels: &labels, reorder: reorder.clone() };
    let mut out = Vec::new();
    if merge(ups, &["upstream x: warning".into()], &opts, eligibility, &mut out).is_ok() {
        let mut copy = out.clone();
        if let Err(e) = simd_json::to_owned_value(&mut copy) {
            panic!("merge wrote invalid JSON ({e}): {}", String::from_utf8_lossy(&out));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let (a, b) = rest.split_at(cut as usize * rest.len() / 256);
    let answers: Vec<Option<Answer>> = [a, b].iter().map(|body| Answer::parse(body.to_vec()).ok()).collect();
    let refs: Vec<Option<&Answer>> = answers.iter().map(Option::as_ref).collect();
    let ups: Vec<Upstream<'_>> = refs.iter().map(|a| Upstream { name: "u", answer: *a }).collect();
    let mask = StepMask::from_coverage(&refs, &[true, true], "c");
    let reorders = [
        Reorder::None,
        Reorder::Sort { descending: true },
        Reorder::TopK { k: 1, bottom: false, grouping: Grouping::By(vec!["a".into()]) },
        Reorder::LimitK { k: 2, grouping: Grouping::Without(vec!["a".into()]) },
    ];
    for reorder in &reorders {
        check(&ups, reorder, &AllEligible);
        check(&ups, reorder, &mask);
    }
});
