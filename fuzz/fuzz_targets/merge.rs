//! Arbitrary upstream bodies into the parsers and the mergers; the check is
//! `fuzz/checks/merge.rs`, which the test suite also runs on the corpus.

#![no_main]

#[path = "../checks/merge.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_input(data));
