//! IO-side effects shared by every vtp runtime: the durable seen-index store and the event
//! handlers.
//!
//! [`vtp_core`] decides; this crate carries out the two kinds of side effect that are IO but not
//! transport (DESIGN §3), once, for every runtime (tokio, smol, mio, or a library user's own
//! loop). It uses plain threads and `std::sync::mpsc`, never an async runtime, and never blocks
//! the caller's event loop:
//!
//! - [`store`]: the seen-index on disk ([`SeenStore`], an append-only log file) and the thread that owns it
//!   ([`StoreWorker`]), which turns the core's `Persist`, `Forget` and `Expire` actions into
//!   group commits and reports which of them are durable;
//! - [`handlers`]: what is done with every accepted event ([`Handler`]: [`PrintEvent`],
//!   [`SaveEvent`], [`Command`]) on a bounded pool of worker threads ([`Handlers`]).
//!
//! # Driving
//!
//! At start-up: [`SeenStore::open`], [`SeenStore::load`] into `Node::restore_seen`, then
//! [`StoreWorker::spawn`] and [`Handlers::new`]. In the runtime's
//! [`Effects`](vtp_core::driver::Effects): `store(op)` is [`StoreWorker::send`] and
//! `deliver(delivery)` is [`Handlers::dispatch`]. Neither blocks; both report overload (a full
//! queue) to the caller instead of waiting. `durable_persists` answers from
//! [`StoreWorker::durable_seq`], and the runtime's waker is passed to
//! [`StoreWorker::set_waker`], so receipts held until their records are durable go out as soon
//! as a commit lands ([`effects::HostEffects`] does all of this). At shutdown: [`StoreWorker::flush_and_stop`] and
//! [`Handlers::shutdown`].
//!
//! # Runtimes
//!
//! [`net`] binds the listening sockets once for every runtime. With the cargo feature `async`,
//! `aio` is the owner loop the async runtimes (`vtp-tokio`, `vtp-smol`) share: each of them only
//! implements its small `AsyncRuntime` trait. Without it (the default) no async crate is built.
//! The cargo feature `testing` adds `testing`: the socket tests every runtime runs and their
//! test doubles (not part of the stable API; no async crate needed).

#![warn(missing_docs)]

#[cfg(feature = "async")]
pub mod aio;
pub mod effects;
pub mod handlers;
pub mod net;
pub mod shutdown;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(test)]
mod testutil;

pub use handlers::{Command, Handler, HandlerError, Handlers, PrintEvent, SaveEvent};
pub use store::{SeenStore, SendError, StoreError, StoreOp, StoreWorker};
