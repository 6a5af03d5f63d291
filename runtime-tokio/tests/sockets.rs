//! The socket tests every runtime shares ([`vtp_host::testing::sockets`]), on tokio.

use std::io;

use vtp_core::Node;
use vtp_host::testing::{Collect, Runtime, Stop};
use vtp_tokio::{Bound, Options};

/// `vtp_tokio::run` on a current-thread runtime of its own.
struct Tokio;

impl Runtime for Tokio {
    fn run(
        node: Node,
        bound: Bound,
        fx: Collect,
        stop: Stop,
        options: Options,
    ) -> io::Result<Collect> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(vtp_tokio::run(node, bound, fx, stop, options))
    }
}

vtp_host::socket_tests!(Tokio);
vtp_host::tls_socket_tests!(Tokio);

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
