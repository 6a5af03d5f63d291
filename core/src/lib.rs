//! Sans-IO core of the VOEvent Transport Protocol (VTP): framing, messages, and every VTP role
//! (author, broker, subscriber) as one deterministic state machine.
//!
//! This crate performs no IO. It never opens a socket, spawns a thread, reads a clock or a file,
//! or draws OS randomness. It consumes bytes and instants and produces [`Action`]s (bytes to
//! write, connections to open or close, records to persist, events to hand to handlers) and
//! [`Event`]s (news for logs and applications). That makes it:
//!
//! - **testable at the speed of light**: drive it with virtual time, assert on actions;
//! - **embeddable**: any event loop (tokio, smol, mio, a plain blocking loop, a simulator) can
//!   drive it, see `examples/blocking.rs`;
//! - **small**: no runtime in its dependency tree, suitable for minimal embedded Linux.
//!
//! # The driving contract
//!
//! One owner holds the [`Node`] (it is never shared between threads). For every input:
//!
//! 1. call the `handle_*` method (or a command: [`Node::submit`], [`Node::shutdown`]) with `now`;
//! 2. drain [`Node::poll_action`] until `None`, performing each action **in order** (a nak and
//!    the close after it must reach the socket in that order): write the frame of every action
//!    that has one ([`Action::frame`]), close on [`Action::Close`] *after* the bytes queued
//!    before it have been written, dial on [`Action::Connect`], hand [`Action::Persist`] /
//!    [`Action::Forget`] / [`Action::Expire`] to the store and [`Action::Deliver`] to handlers;
//! 3. drain [`Node::poll_event`] (logging, metrics, the application);
//! 4. read [`Node::poll_timeout`] and call [`Node::handle_timeout`] when it passes;
//! 5. when the store has made more [`Action::Persist`] records durable, call
//!    [`Node::handle_persisted`] with their count (see "Durability" below).
//!
//! When a connection ends for any reason the node did not ask for (EOF, IO error, failed
//! connect, outbox overflow), report it with [`Node::handle_closed`]. The per-connection send
//! queue with partial-write handling is [`outbox::Outbox`], shared by every runtime.
//!
//! [`driver::Driver`] does all of this once, for every runtime: it wraps a node with an outbox
//! per connection and hands the other actions to the runtime's [`driver::Effects`]; a runtime
//! then only moves bytes and sleeps (see its driving contract).
//!
//! # Time
//!
//! `now: Instant` is the last argument of every input; it must never go backwards (checked by
//! a debug assertion). Wall-clock time (for `TimeStamp`s and seen-index records) is derived from
//! one anchor given to [`Node::new`]: `unix_now` at `now`. A simulator moves both clocks by
//! advancing `now` alone. `poll_timeout` returns the last `now` while output is pending ("wake
//! me now"), the earliest deadline otherwise, and `None` when nothing is scheduled; every
//! deadline is re-armed or removed when it fires, so a runtime that honours it never spins.
//!
//! # Durability
//!
//! A node remembers the events it has processed in its seen-index; the runtime persists each
//! new entry ([`Action::Persist`]) to a durable store, which reloads it after a restart
//! ([`Node::restore_seen`]). With [`config::Durability::BeforeReply`] (the default) the node
//! sends nothing that promises an event was recorded before the record is durable:
//!
//! - the Persist actions are numbered 1, 2, 3... in the order they are emitted; the runtime
//!   (or [`driver::Driver`], asking its effects) reports how many are durable with
//!   [`Node::handle_persisted`] (a cumulative count: a store commits in order);
//! - for a **new event** the node emits `Persist` at once and holds the receipt (the ack to the
//!   author and the close after it, or the ack to the upstream), every forward to subscribers
//!   and the delivery to handlers until that Persist is durable; held output is released in
//!   emission order, and the forwards go to the subscribers connected at that moment (whose
//!   filters are evaluated then);
//! - the receipt of a **duplicate** is held until every Persist emitted before it is durable,
//!   so it cannot promise an original whose record is still on its way;
//! - naks of invalid submissions, iamalives and test events are never held.
//!
//! **The guarantee.** An ack is written to an author (or an upstream), and an event is written
//! to a subscriber or handed to handlers, only after the store has committed the event's
//! seen-index record (with the vtp store: written to its log file and `fdatasync`'d). So after
//! a crash at any instant (`kill -9`, power loss), every event the node acked or forwarded is
//! in the restored seen-index: it is not forwarded again when it is resubmitted or relayed to
//! the restarted node, and the author of every acked event need not resubmit. An event whose record was being committed when the node died was
//! neither acked nor forwarded: its author gets no ack and resubmits; if the commit did reach
//! the disk, the resubmission is acked as a duplicate and the event is never forwarded
//! (at-most-once, the window being the time between a commit and the write of its output).
//!
//! **Handlers.** By default the delivery to handlers is held with the receipt, so handlers see
//! only events whose record is durable; work still queued for them in memory is lost in a
//! crash. With [`config::DeliveryTiming::BeforeRecord`] the node queues the delivery just before
//! the event's `Persist` instead, for a host that writes it ahead to a durable handler spool in
//! the same (or an earlier) commit as the record: an acked event's handler work then survives
//! a crash, and the host runs the handlers once the commit is durable.
//!
//! **Cost.** A receipt waits for one commit. Commits are grouped: the store takes every
//! record queued while the previous commit ran into the next one, so under load many events
//! share one disk flush and throughput does not drop to one event per flush. The runtime learns
//! of a commit through a waker ([`driver::Effects::set_durable_waker`]), not by polling.
//! [`config::Durability::Async`] replies at once and persists behind: a crash can then lose
//! the last records, and those events can be forwarded a second time.
//!
//! # Limits
//!
//! Every peer-controlled quantity is bounded, each bound in [`config::Limits`]:
//! frame payloads (1 MiB, checked on the prefix before any allocation, with a "little-endian
//! prefix?" hint), XML depth, attributes and text sizes ([`message::ParseLimits`]), connections,
//! seen-index entries, filters per subscriber and filter length. Send queues are bounded by
//! [`outbox::OutboxLimits`]; a subscriber whose queue overflows is dropped by
//! [`driver::Driver`] and reported to the node as [`CloseReason::OutboxFull`]. Timings (20 s
//! author deadline, 60 s iamalive, 120 s subscriber silence, 30-day retention...) are in
//! [`config::Timing`].
//!
//! # Errors and panics
//!
//! - **Peer faults are inputs, not errors**: a bad frame from a peer never makes a `handle_*`
//!   method fail. The node answers with a nak and a reason, closes, or ignores and logs (an
//!   [`Event::ProtocolViolation`]), as the role prescribes, and keeps serving everyone else.
//!   Each fault is a typed [`Violation`] whose `Display` is the nak reason or log text.
//! - **Caller mistakes** that types cannot prevent return typed errors ([`ConfigError`],
//!   [`SubmitError`]).
//! - **Bugs** are caught by debug assertions. No input from the network can make the core
//!   panic; the property tests and fuzz targets check exactly that.
//!
//! # Protocol decisions
//!
//! Where Comet and VTP 2.0 differ, [`config::Policy`] has a switch, VTP 2.0 being the default:
//! duplicates are acked and not relayed ([`config::DuplicateReply`]), a subscriber's nak drops
//! only that event ([`config::SubscriberNak`]). Events are identified by the SHA-256 of their
//! `VOEvent` element bytes (VTP 2.0 §8), so a 1.1 and a 2.0 copy of one GCN notice are two
//! events while byte-identical copies from two upstreams are forwarded once.
//! Every other decision of docs/protocol.md §7.1 is documented where it is implemented.
//!
//! # Layering
//!
//! ```text
//! cli  ->  runtime-tokio | runtime-smol | runtime-mio  ->  host  ->  core
//! conformance  ->  core  (no host: the simulator gives the Driver in-memory effects)
//! testkit: helpers for tests only
//! ```
//!
//! This crate is the bottom layer: it depends on no other vtp crate, and every protocol and
//! policy decision lives here; the layers above perform IO and decide nothing.

#![warn(missing_docs)]

pub mod backoff;
pub mod config;
pub mod driver;
pub mod endpoint;
pub mod filter;
pub mod frame;
pub mod identity;
pub mod ivoid;
pub mod message;
pub mod node;
pub mod outbox;
pub mod output;
pub mod schema;
pub mod seen;
pub mod signature;
pub mod summary;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod whitelist;

mod timer;
mod violation;

#[cfg(test)]
mod testutil;

pub use config::Config;
pub use node::{ConfigError, ExternalError, Node, SubmitError};
pub use output::{
    Action, CloseClass, CloseReason, ConnId, ConnRole, Delivery, Event, ListenerRole, Peer,
    Position, RefusalCause, RefusalCounts, Remote, Source,
};
pub use seen::{ElementHash, EventKey, SeenLevel, SeenRecord};
pub use violation::Violation;
