//! Arbitrary request paths and methods into the router; the check is
//! `fuzz/checks/paths.rs`, which the test suite also runs on the corpus.

#![no_main]

#[path = "../checks/paths.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: &[u8]| checks::check_input(input));
