//! Test doubles for the crates that run a node on real sockets (cargo feature `testing`; not
//! part of the stable API).
//!
//! - [`RawSubscriber`] and [`submit`]: a raw VTP subscriber and author over blocking std
//!   sockets, which check what the node sends them with [`vtp_core::message::parse`].
//!
//! Every wait is bounded ([`WAIT`]); a helper panics, saying what it waited for, when the node
//! misbehaves, so a broken runtime fails a test and never hangs it.

mod peers;

use std::time::Duration;

pub use peers::{RawSubscriber, submit};

/// The bound on every wait for the node.
pub const WAIT: Duration = Duration::from_secs(15);
