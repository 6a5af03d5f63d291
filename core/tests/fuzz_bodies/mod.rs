//! Bodies of the fuzz targets, in one place.
//!
//! Both the cargo-fuzz targets in `core/fuzz/fuzz_targets/` (nightly, libFuzzer) and the stable
//! test `core/tests/fuzz_replay.rs` include this module, so a corpus file or a saved crash means
//! exactly the same thing in both. Each body takes the fuzzer's bytes, drives one part of the
//! core with them and panics when an invariant breaks:
//!
//! - [`frame_decoder`]: the first bytes choose the frame limit and where the stream is cut; the
//!   decoder must agree with a straightforward reference decoder whatever the chunking.
//! - [`message_parse`]: the bytes are one frame payload; the parser must never panic, must
//!   return well-formed results, must treat tighter limits as a subset of looser ones, and every
//!   Transport message it accepts must survive a rebuild and re-parse unchanged.
//! - [`signature_extract`]: the bytes are one frame payload; the signature extractor must never
//!   panic, and a signature it finds must come off and go back on unchanged.
//! - [`node_input`]: the bytes are a configuration byte and a small program of runtime operations
//!   on a broker [`Node`](vtp_core::Node); a model of what the runtime saw checks the node after
//!   every step (see [`node`]).
//!
//! The byte formats are pinned by the committed corpus (`core/fuzz/corpus/<target>/`): change a
//! format and the seeds must be regenerated (`fuzz_replay`'s ignored `write_seed_corpus` test).
#![allow(dead_code)]

pub(crate) mod frame;
pub(crate) mod message;
pub(crate) mod node;
pub(crate) mod signature;

pub(crate) use frame::frame_decoder;
pub(crate) use message::message_parse;
pub(crate) use node::node_input;
pub(crate) use signature::signature_extract;

/// A cursor over the fuzzer's bytes. Reading past the end yields zeros (for operands) or
/// `None` (for the next operation), so every byte string is a valid program.
#[derive(Debug)]
pub(crate) struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte, if any.
    pub(crate) fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }

    /// The next byte, or 0 at the end.
    pub(crate) fn byte(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    /// The next two bytes as a big-endian `u16` (missing bytes are 0).
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
