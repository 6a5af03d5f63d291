//! Helpers shared by the tests of the vtp crates (a dev-dependency only, never published).
//!
//! - [`Proc`], [`Log`], [`TempDir`]: child processes whose output lines are collected and
//!   waited on, and temporary directories, all cleaned up on drop;
//! - [`read_frame`], [`write_frame`], [`loopback`]: VTP frames over std sockets
//!   (the raw author and subscriber, which parse what they read, are `vtp_host::testing`'s);
//! - [`voevent`]: a minimal VOEvent 2.0 document;
//! - [`gpg`]: GnuPG in a private home (keys, exports, detached signatures, verification);
//! - [`kafka`]: a tansu Kafka-protocol broker on loopback and the kafka-python helper scripts;
//! - [`browser`]: headless Chromium, for the status page.
//!
//! Waiting is always on something observable (a log line, bytes on a socket) with a bounded
//! deadline ([`WAIT`] unless told otherwise), never a fixed sleep. Every helper panics on
//! failure, with what it was waiting for.
//!
//! # Layering
//!
//! ```text
//! cli  ->  runtime-tokio | runtime-smol | runtime-mio  ->  host  ->  core
//! conformance  ->  core  (no host: the simulator gives the Driver in-memory effects)
//! testkit: helpers for tests only
//! ```
//!
//! This crate depends on no vtp crate, so any crate's tests can use it without a cycle.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a panic with its message"
)]

pub mod browser;
pub mod gpg;
pub mod kafka;
mod process;
pub mod setup;
mod wire;

use std::time::Duration;

pub use process::{Log, Proc, TempDir};
pub use wire::{loopback, read_frame, write_frame};

/// The default bound on every wait.
pub const WAIT: Duration = Duration::from_secs(15);

/// A minimal VOEvent 2.0 document: this IVORN, role `observation`, this author.
pub fn voevent(ivorn: &str, author: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"\n \
         ivorn=\"{ivorn}\" role=\"observation\" version=\"2.0\">\n  \
         <Who><AuthorIVORN>{author}</AuthorIVORN></Who>\n\
         </voe:VOEvent>\n"
    )
    .into_bytes()
}
