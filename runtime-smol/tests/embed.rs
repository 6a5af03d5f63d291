//! The socket tests every async runtime shares ([`vtp_host::aio::testing`]), on smol.

use std::io;

use vtp_core::Node;
use vtp_host::aio::testing::{Collect, Stop};
use vtp_smol::Bound;

fn run(node: Node, bound: Bound, fx: Collect, stop: Stop) -> io::Result<Collect> {
    vtp_smol::block_on_run(node, bound, fx, stop, Default::default())
}

vtp_host::async_runtime_tests!(run);
