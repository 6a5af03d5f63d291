//! The socket tests every runtime shares ([`vtp_host::testing::sockets`]), on smol.

use std::io;

use vtp_core::Node;
use vtp_host::testing::{Collect, Runtime, Stop};
use vtp_smol::{Bound, Options};

/// `vtp_smol::run` on the current thread (`block_on_run`).
struct Smol;

impl Runtime for Smol {
    fn run(
        node: Node,
        bound: Bound,
        fx: Collect,
        stop: Stop,
        options: Options,
    ) -> io::Result<Collect> {
        vtp_smol::block_on_run(node, bound, fx, stop, options)
    }
}

vtp_host::socket_tests!(Smol);
vtp_host::tls_socket_tests!(Smol);
