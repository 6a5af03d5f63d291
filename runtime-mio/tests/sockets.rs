//! The socket tests every runtime shares ([`vtp_host::testing::sockets`]), on mio: `run`
//! blocks the caller's thread, as an embedding program calls it.

use std::io;

use vtp_core::Node;
use vtp_host::testing::{Collect, Runtime, Stop};
use vtp_mio::{Bound, Options};

/// `vtp_mio::run`, as it is.
struct Mio;

impl Runtime for Mio {
    const READS_PER_WAKE: Option<usize> = Some(vtp_mio::READS_PER_WAKE);

    fn run(
        node: Node,
        bound: Bound,
        fx: Collect,
        stop: Stop,
        options: Options,
    ) -> io::Result<Collect> {
        vtp_mio::run(node, bound, fx, stop, options)
    }
}

vtp_host::socket_tests!(Mio);
vtp_host::tls_socket_tests!(Mio);
