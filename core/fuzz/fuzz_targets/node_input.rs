//! A broker node: the input is a configuration byte and a program of runtime operations.
//!
//! The body lives in `core/tests/fuzz_bodies/`, shared with the stable corpus replay.
#![no_main]

#[allow(dead_code, unused_imports, unreachable_pub)]
#[path = "../../tests/fuzz_bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::node_input(data));
