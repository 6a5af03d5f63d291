//! Event handlers: what a node does with every accepted event, off the event loop.
//!
//! # Theory of operation
//!
//! The core hands each accepted event to the runtime as an [`Action::Deliver`](vtp_core::Action::Deliver); the runtime
//! passes the [`Delivery`] to [`Handlers::dispatch`], which never blocks: it puts the delivery on
//! a bounded queue and returns. A fixed pool of worker threads takes deliveries from the queue
//! and runs every [`Handler`] on each, in the order given (a worker takes up to [`BATCH_MAX`]
//! waiting deliveries at once when every handler [batches](Handler::batches), as the archive
//! does; otherwise one at a time). A handler whose work must follow the order of acceptance
//! (the archive's sequence numbers) queues it from [`Handler::queue_batch`], which the worker
//! calls before any other worker may take the next deliveries, and finishes it in its turn
//! among the others. A failing handler is logged at WARN
//! and the others still run; a panicking one is caught and logged at ERROR. The queue is bounded
//! by count and by bytes (the ivorn and payload of every delivery queued or being handled). When
//! it is full (handlers too slow or stuck) the delivery is dropped *for the handlers only*,
//! counted ([`Handlers::dropped`]) and logged at WARN with its ivorn (rate-limited): forwarding
//! to subscribers happens in the core and never waits for handlers. At shutdown, queued
//! deliveries still waiting when the grace period runs out are counted and logged the same way,
//! and a summary line gives both counts. As in Comet, handlers run after the receipt is sent,
//! and their outcome never changes it.
//!
//! With the store's handler spool ([`crate::store::spool`]) every delivery is first written to
//! disk, before its receipt goes out, and queued from there: a delivery beyond the queue's
//! bounds waits on disk (not dropped) until the queue drains below half, queued work left at
//! shutdown stays on disk, and after a restart or a crash what was not handled is handled
//! first. Handlers are then **at-least-once**: an event whose handlers ran just before a crash
//! (before its done mark reached the disk) is handled again. [`SaveEvent`] makes no second
//! copy of the same bytes; a `--cmd` program should tolerate seeing an event twice.
//!
//! Three handlers mirror Comet's (docs/protocol.md §4.5): [`PrintEvent`] (`--print-event`),
//! [`SaveEvent`] (`--save-event`) and [`Command`] (`--cmd`). [`Stdout`] (`--stdout`) writes
//! each event to standard output for a consumer on a pipe. A library user implements
//! [`Handler`] for their own callback.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use vtp_core::Delivery;

mod command;
mod pool;
mod print;
mod save;
mod stdout;

pub use command::{Command, STDERR_TAIL_MAX};
pub use pool::{
    BATCH_MAX, DROP_LOGS_PER_SEC, HandlerSet, Handlers, HandlersProbe, QUEUE_BYTES_DEFAULT,
};
pub(crate) use pool::{Feed, Refused};
pub use print::PrintEvent;
pub use save::SaveEvent;
pub use stdout::{Stdout, StdoutFormat};

/// Something done with every accepted event: print it, save it, run a program, call back.
pub trait Handler: Send + Sync + 'static {
    /// A short name for logs, e.g. `save-event`.
    fn name(&self) -> &str;

    /// Handles one event. Runs on a handler worker thread, never on the event loop, so it may
    /// block (briefly: while it runs, its worker serves no other event).
    ///
    /// # Errors
    ///
    /// Any [`HandlerError`]; the pool logs it at WARN and carries on.
    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError>;

    /// Whether [`handle_batch`](Self::handle_batch) does better than one
    /// [`handle`](Self::handle) after another (the archive: one transaction, one `fsync`, for
    /// the lot). When every handler of the pool says so, a worker takes up to
    /// [`BATCH_MAX`] queued deliveries at once. The default: `false`.
    fn batches(&self) -> bool {
        false
    }

    /// Handles several events: one result per delivery, in order. The default calls
    /// [`handle`](Self::handle) on each.
    fn handle_batch(&self, deliveries: &[&Delivery]) -> Vec<Result<(), HandlerError>> {
        deliveries.iter().map(|d| self.handle(d)).collect()
    }

    /// Queues `deliveries` now, for a handler whose work must follow the order events were
    /// accepted (the archive: its sequence numbers are that order), and returns what finishes
    /// the job later: waiting for it and giving one result per delivery, in order.
    ///
    /// The pool calls it from the worker that took `deliveries`, before that worker lets
    /// another take any: so calls come in the pool's queue order, whatever the number of
    /// workers. It must not wait long (a bounded queue's send, no disk); the rest runs
    /// afterwards, in this handler's turn among the others, in place of
    /// [`handle_batch`](Self::handle_batch). The default: `None`, nothing queued (then
    /// `handle_batch` or `handle` runs as usual).
    fn queue_batch(&self, deliveries: &[&Delivery]) -> Option<Queued> {
        let _ = deliveries;
        None
    }

    /// Ends work in progress now: called (from another thread) when [`Handlers::shutdown`]
    /// gives up waiting, just before the process moves on to exit. A handler that starts
    /// processes kills them here; calls to [`handle`](Self::handle) still running should return
    /// soon, and later ones should do nothing. The default does nothing.
    fn stop(&self) {}
}

/// The rest of a job a handler queued in order ([`Handler::queue_batch`]): waits for it and
/// gives one result per delivery.
pub type Queued = Box<dyn FnOnce() -> Vec<Result<(), HandlerError>> + Send>;

/// Why a handler could not be set up or failed on an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The save directory does not exist and could not be created.
    #[error(
        "cannot create the event directory `{}`: check the path and its permissions",
        dir.display()
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The save directory belongs to another user or others can write to it.
    #[error(
        "refusing to save events in `{}`: {why}, so another user could plant files or \
         symbolic links in it; use a directory only you can write to (`chmod go-w` it, or give \
         another with --save-event-directory DIR)",
        dir.display()
    )]
    UnsafeDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Writing an event file failed (no partial file is left behind).
    #[error("cannot save the event to `{}`", path.display())]
    Save {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The command is not an executable file.
    #[error("`{}` {reason}: give the path of an executable program", program.display())]
    NotExecutable {
        /// The program as configured.
        program: PathBuf,
        /// What is wrong: not found, not a file, or not executable.
        reason: &'static str,
    },
    /// The command could not be started.
    #[error("cannot run `{}`", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Waiting for the command failed.
    #[error("cannot wait for `{}`", program.display())]
    Wait {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The command exited unsuccessfully.
    #[error("`{}` returned non-zero ({}){}", program.display(), ExitText(*status), StderrTail(stderr))]
    NonZero {
        /// The program.
        program: PathBuf,
        /// How it ended.
        status: ExitStatus,
        /// The end of what it wrote to its stderr: at most
        /// [`STDERR_TAIL_MAX`] bytes, control characters escaped, `...` in front when cut;
        /// empty if it wrote nothing.
        stderr: String,
    },
    /// The command ran longer than its timeout and was killed.
    #[error(
        "`{}` did not finish within {timeout:?} and was killed: make it faster or raise the timeout{}",
        program.display(),
        StderrTail(stderr)
    )]
    Timeout {
        /// The program.
        program: PathBuf,
        /// The limit it exceeded.
        timeout: Duration,
        /// The end of what it wrote to its stderr before it was killed (as for
        /// [`HandlerError::NonZero`]).
        stderr: String,
    },
    /// The command was killed, or not started, because the handlers are shutting down.
    #[error(
        "`{}` was stopped: the broker is shutting down and its handler grace period ran out",
        program.display()
    )]
    Stopped {
        /// The program.
        program: PathBuf,
    },
    /// The output ([`Stdout`]) cannot be written any more (its reader exited); logged once
    /// by the handler. The event counts as not handled: with the handler spool, it is handled
    /// again at the next start.
    #[error("standard output is closed")]
    OutputClosed,
    /// A helper thread could not be started (the system is out of threads or memory).
    #[error("cannot start a handler thread: the system is out of threads or memory")]
    Thread(#[source] io::Error),
    /// A library user's handler failed.
    #[error("handler failed")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// `; stderr: TEXT` after a failed command's error, or nothing when it wrote nothing.
struct StderrTail<'a>(&'a str);

impl fmt::Display for StderrTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        write!(f, "; stderr: {}", self.0)
    }
}

/// Formats an exit status as Comet does: the exit code, or the signal that ended the process.
struct ExitText(ExitStatus);

impl fmt::Display for ExitText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(code) = self.0.code() {
            return write!(f, "{code}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signal) = self.0.signal() {
                return write!(f, "killed by signal {signal}");
            }
        }
        write!(f, "{}", self.0)
    }
}

/// An ivorn for the tests of every handler.
#[cfg(test)]
const GCN: &str = "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729";
