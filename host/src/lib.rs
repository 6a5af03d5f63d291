//! The IO side of vtp, shared by every runtime: listening sockets, the durable seen-index
//! store, the event handlers, the shutdown signal and the async owner loop.
//!
//! # Layering
//!
//! `cli -> runtime-* -> host -> core`: the `vtp` binary picks a runtime (`vtp-tokio`,
//! `vtp-smol`, `vtp-mio`), the runtime drives the node with this crate's pieces, and
//! [`vtp_core`] holds every protocol decision. **The host performs, it does not decide**: it
//! carries out what the core's actions ask for (persist, forget, expire, deliver) and reports
//! back what happened (a commit is durable, a queue is full), but which events are new, what
//! is forwarded, to whom and when is settled in the core (see the README's Design section). The
//! side effects that are IO but not transport are done here once, for every runtime and for a
//! library user's own loop. The store and the handlers use plain threads and
//! `std::sync::mpsc`, never an async runtime, and never block the caller's event loop.
//!
//! # Modules
//!
//! - [`store`]: the seen-index on disk ([`SeenStore`], an append-only log file; `store/log.rs`
//!   is its record format) and the thread that owns it ([`StoreWorker`], `store/worker.rs`),
//!   which turns the core's `Persist`, `Forget` and `Expire` actions into group commits and
//!   reports which of them are durable; [`store::open_for`] is the start-up sequence; the
//!   handler spool beside it ([`store::spool`], `store/spool/`) keeps the handlers' work;
//! - [`handlers`]: what is done with every accepted event ([`Handler`]: [`PrintEvent`],
//!   [`SaveEvent`], [`Command`], one file each) on a bounded pool of worker threads
//!   ([`Handlers`], `handlers/pool.rs`);
//! - [`effects`]: [`HostEffects`](effects::HostEffects), the core's
//!   [`Effects`](vtp_core::driver::Effects) over the store and the handlers, plus logging and
//!   hooks for embedding programs;
//! - [`net`]: the listening sockets, bound once for every runtime (TLS listeners get their
//!   configuration here too), and the rate limit on the accept loops' failure warnings;
//! - [`fdlimit`]: the file-descriptor budget: raise the soft `RLIMIT_NOFILE` at start and
//!   derive the connection cap that fits under it;
//! - [`transport`]: plain or TLS, the byte transform between each socket and the core's
//!   driver that every runtime routes its reads, writes and ends through;
//! - `tls` (cargo feature `tls`, on by default): certificates and keys loaded with errors that
//!   name the file, rustls configurations, the identity of a client certificate;
//! - [`text`]: a peer's text made safe to print ([`text::printable`]);
//! - [`external`]: external sources of events (a Kafka consumer): the bounded inbox that
//!   brings their records to the running loop on every runtime, and the node's commits back;
//! - [`notify`]: readiness for the service manager (systemd's `sd_notify`: `READY=1`,
//!   `STATUS=`, `STOPPING=1` to `$NOTIFY_SOCKET`);
//! - [`reload`]: configuration reload at run time: the mailbox that brings a prepared reload
//!   to the running loop on every runtime, the cells ([`Swap`](reload::Swap)) a reload
//!   replaces (TLS configurations), and [`reload::apply`];
//! - [`ops`]: operating a node: metrics counted from the node's events (read from any thread
//!   without making the loop wait), health, status, the periodic stats line, and (cargo
//!   feature `http`) the HTTP endpoint serving them (`/metrics`, `/healthz`, `/status`);
//! - [`shutdown`]: a runtime-neutral shutdown signal (a [`Trigger`](shutdown::Trigger), or
//!   SIGINT / SIGTERM), and SIGHUP's reload;
//! - `aio` (cargo feature `async`): the owner loop the async runtimes (`vtp-tokio`,
//!   `vtp-smol`) share; each of them only implements its small `AsyncRuntime` trait. Without
//!   the feature (the default) no async crate is built.
//! - `testing` (cargo feature `testing`): the socket tests every runtime (tokio, smol, mio)
//!   runs and their test doubles; not part of the stable API, no async crate needed.
//!
//! # Driving
//!
//! At start-up: [`store::open_for`] (open the store, restore the node's seen-index, start the
//! worker) and [`Handlers::new`], both handed to [`HostEffects`](effects::HostEffects);
//! [`net::bind`] and [`shutdown::on_signals`]. In the
//! runtime's [`Effects`](vtp_core::driver::Effects): `store(op)` is [`StoreWorker::send`] and
//! `deliver(delivery)` is [`Handlers::dispatch`]. Neither blocks; both report overload (a full
//! queue) to the caller instead of waiting. `durable_persists` answers from
//! [`StoreWorker::durable_seq`], and the runtime's waker is passed to
//! [`StoreWorker::set_waker`], so receipts held until their records are durable go out as soon
//! as a commit lands ([`effects::HostEffects`] does all of this). At shutdown:
//! [`Handlers::shutdown`] and [`StoreWorker::flush_and_stop`]
//! ([`HostEffects::finish`](effects::HostEffects::finish) calls both).
//!
//! With a handler spool ([`store::open_with_spool`] instead of `open_for`, and the node's
//! [`DeliveryTiming::BeforeRecord`](vtp_core::config::DeliveryTiming::BeforeRecord)),
//! `deliver(delivery)` goes to the store worker, which writes it in the commit of the event's
//! record and queues it for the handlers from there ([`store::spool`]): handlers are then
//! at-least-once across restarts and crashes.

#![warn(missing_docs)]

#[cfg(feature = "async")]
pub mod aio;
#[cfg(feature = "archive")]
pub mod archive;
#[cfg(feature = "catchup")]
pub mod catchup;
pub mod effects;
pub mod external;
pub mod fdlimit;
pub mod handlers;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod net;
pub mod notify;
pub mod ops;
mod ratelog;
pub mod reload;
pub mod shutdown;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
pub mod verify;

#[cfg(test)]
mod testutil;

pub use handlers::{Command, Handler, HandlerError, Handlers, PrintEvent, SaveEvent};
pub use store::{SeenStore, SendError, StoreError, StoreOp, StoreWorker};
