//! One upstream's parsed answer: the body buffer it arrived in, plus byte
//! spans into that buffer for every label, sample and warning.
//!
//! This is the form that crosses actor mailboxes. A borrowed simd-json tape
//! cannot outlive the `&mut` borrow of its buffer, so the parser walks the tape
//! once, together with simd-json's structural index (the byte offset of every
//! `{ } [ ] , :` and of every scalar), and records plain `u32` offsets. The
//! merger later turns those offsets back into `&str`/`&[u8]` slices of the same
//! buffer: labels and values are never copied into owned strings.
//!
//! simd-json unescapes strings in place, so a label span covers the unescaped
//! text (re-escaped on output). Sample spans cover the raw bytes of
//! `[ts,"value"]`, which are written out unchanged; the parser checks that
//! those bytes held no escape sequence (Prometheus never escapes numbers).
//!
//! - `model.rs`: `Answer`, its spans, series and errors;
//! - `samples.rs`: the sample table;
//! - `scratch.rs`: memory lent from one parse to the next;
//! - `tape.rs`: the tape walker, recording spans;
//! - `parser.rs`: the chunk cutter and the parse as the body arrives;
//! - `worker.rs`: the parse worker thread;
//! - `sniff.rs`: what is known of a body without parsing it.

mod model;
mod parser;
mod samples;
mod scratch;
mod sniff;
mod tape;
mod worker;

pub use model::*;
pub use parser::*;
pub use samples::*;
pub use scratch::*;
pub use sniff::*;
use tape::*;
use worker::*;

/// Extra bytes the parser needs after the body (simd-json reads in blocks).
pub const PADDING: usize = simd_json::INPUT_PADDING;

/// Above this size, a body's series are parsed a batch of about this many
/// bytes at a time (see [`Parser`]): the tape and the structural index then
/// stay this small and in cache, instead of costing three times the body.
pub const BATCH_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests;
