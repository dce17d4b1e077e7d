//! The fuzz corpus replayed (`fuzz/corpus/`): every input a fuzz run kept,
//! crashes it found among them, goes through the same checks as under the
//! fuzzer, so a past crash cannot return unnoticed. No server needed.

use std::path::Path;

#[allow(dead_code)]
#[path = "../fuzz/checks/merge.rs"]
mod merge;

#[allow(dead_code)]
#[path = "../fuzz/checks/paths.rs"]
mod paths;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    for input in &inputs {
        let data = std::fs::read(input).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{} fails its fuzz check again", input.display());
        }
    }
    inputs.len()
}

#[test]
fn every_fuzz_corpus_input_passes_its_check() {
    assert!(replay("merge", merge::check_input) >= 10);
    assert!(replay("paths", paths::check_input) >= 4);
}
