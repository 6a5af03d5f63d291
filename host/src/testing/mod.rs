//! Test doubles for the crates that run a node on real sockets (cargo feature `testing`; not
//! part of the stable API).
//!
//! - [`Collect`] (made by [`collect`], read through [`Reports`]): effects that report every
//!   delivery and event to the test and count persisted records;
//! - [`Stop`]: a one-shot shutdown signal built from std, which any runtime can wait on;
//! - [`RawSubscriber`] and [`submit`]: a raw VTP subscriber and author over blocking std
//!   sockets, which check what the node sends them with [`vtp_core::message::parse`].
//!
//! Every wait is bounded ([`WAIT`]); a helper panics, saying what it waited for, when the node
//! misbehaves, so a broken runtime fails a test and never hangs it.

mod effects;
mod peers;

use std::time::Duration;

pub use effects::{Collect, Reports, Stop, StopWhen, collect};
pub use peers::{RawSubscriber, submit};

/// The bound on every wait for the node.
pub const WAIT: Duration = Duration::from_secs(15);
