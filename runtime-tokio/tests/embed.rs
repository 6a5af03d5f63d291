//! The socket tests every async runtime shares ([`vtp_host::aio::testing`]), on tokio.

use std::io;

use vtp_core::Node;
use vtp_host::aio::testing::{Collect, Stop};
use vtp_tokio::Bound;

fn run(node: Node, bound: Bound, fx: Collect, stop: Stop) -> io::Result<Collect> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(vtp_tokio::run(node, bound, fx, stop, Default::default()))
}

vtp_host::async_runtime_tests!(run);

/// Compile-time check: `run` can be `tokio::spawn`ed on a multi-threaded runtime.
#[allow(dead_code)]
fn run_future_is_send(node: Node, bound: Bound, fx: Collect) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&vtp_tokio::run(
        node,
        bound,
        fx,
        async {},
        Default::default(),
    ));
}
