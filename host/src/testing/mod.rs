//! Test doubles for the crates that run a node on real sockets (cargo feature `testing`; not
//! part of the stable API).
//!
//! - [`Collect`] (made by [`collect`], read through [`Reports`]): effects that report every
//!   delivery and event to the test and count persisted records;
//! - [`Stop`]: a one-shot shutdown signal built from std, which any runtime can wait on;
//! - [`RawSubscriber`] and [`submit`]: a raw VTP subscriber and author over blocking std
//!   sockets, which check what the node sends them with [`vtp_core::message::parse`];
//!   [`connect_from`] connects from a chosen source address (127.0.0.2: another peer);
//! - [`sockets`]: the socket tests every runtime runs (tokio, smol, mio), each generic over a
//!   [`Runtime`] and declared in a runtime's tests by [`socket_tests!`](crate::socket_tests);
//! - [`tls`]: the TLS socket tests every runtime runs, with the certificates they make
//!   ([`tls::Pki`]), declared by [`tls_socket_tests!`](crate::tls_socket_tests).
//!
//! Every wait is bounded ([`WAIT`]); a helper panics, saying what it waited for, when the node
//! misbehaves, so a broken runtime fails a test and never hangs it.

mod effects;
mod peers;
pub mod sockets;
pub mod tls;

use std::time::Duration;

pub use effects::{Collect, Reports, Stop, StopWhen, collect};
pub use peers::{RawSubscriber, connect_from, submit};
pub use sockets::{Running, Runtime};

/// The bound on every wait for the node.
pub const WAIT: Duration = Duration::from_secs(15);
