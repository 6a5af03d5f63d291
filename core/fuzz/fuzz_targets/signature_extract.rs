//! The signature convention's extractor: the input is one frame payload.
//!
//! The body lives in `core/tests/fuzz_bodies/`, shared with the stable corpus replay.
#![no_main]

#[allow(dead_code, unused_imports, unreachable_pub)]
#[path = "../../tests/fuzz_bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::signature_extract(data));
