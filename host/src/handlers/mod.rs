//! Event handlers: what a node does with every accepted event, off the event loop.
//!
//! # Theory of operation
//!
//! The core hands each accepted event to the runtime as an [`Action::Deliver`](vtp_core::Action::Deliver); the runtime
//! passes the [`Delivery`] to [`Handlers::dispatch`], which never blocks: it puts the delivery on
//! a bounded queue and returns. A fixed pool of worker threads takes deliveries from the queue
//! and runs every [`Handler`] on each, in the order given. A failing handler is logged at WARN
//! and the others still run; a panicking one is caught and logged at ERROR. When the queue is
//! full (handlers too slow or stuck) the delivery is dropped *for the handlers only* and logged
//! at WARN: forwarding to subscribers happens in the core and never waits for handlers. As in
//! Comet, handlers run after the receipt is sent, and their outcome never changes it.
//!
//! Three handlers mirror Comet's (PROTOCOL §4.5): [`PrintEvent`] (`--print-event`),
//! [`SaveEvent`] (`--save-event`) and [`Command`] (`--cmd`). A library user implements
//! [`Handler`] for their own callback.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{self, Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, error, info, warn};

use crate::store::ErrorChain;
use vtp_core::Delivery;

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
}

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
    #[error("`{}` returned non-zero ({})", program.display(), ExitText(*status))]
    NonZero {
        /// The program.
        program: PathBuf,
        /// How it ended.
        status: ExitStatus,
    },
    /// The command ran longer than its timeout and was killed.
    #[error(
        "`{}` did not finish within {timeout:?} and was killed: make it faster or raise the timeout",
        program.display()
    )]
    Timeout {
        /// The program.
        program: PathBuf,
        /// The limit it exceeded.
        timeout: Duration,
    },
    /// A helper thread could not be started (the system is out of threads or memory).
    #[error("cannot start a handler thread: the system is out of threads or memory")]
    Thread(#[source] io::Error),
    /// A library user's handler failed.
    #[error("handler failed")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Logs every event at INFO: its ivorn and its payload as text (`--print-event`).
///
/// Unlike Comet, which logs a re-serialised element, this logs the received bytes (invalid
/// UTF-8 replaced by U+FFFD).
#[derive(Debug, Clone, Copy, Default)]
pub struct PrintEvent;

impl Handler for PrintEvent {
    fn name(&self) -> &str {
        "print-event"
    }

    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        info!(ivorn = %delivery.ivorn, "{}", String::from_utf8_lossy(&delivery.payload));
        Ok(())
    }
}

/// Writes every event to a file in a directory (`--save-event`, `--save-event-directory`).
///
/// The file is named after the ivorn by Comet's rule ([`SaveEvent::file_name`]) and holds the
/// raw payload bytes as received (Comet re-encodes them as text; we do not). An existing file is
/// never overwritten: `_` is appended to the name until it is new.
///
/// Implementation note: each file is created with `O_CREAT | O_EXCL` ([`OpenOptions::create_new`]),
/// which is atomic, so concurrent saves of one ivorn (by several workers or processes) each get
/// their own file. Comet needs a lock file in the process's working directory for that; we
/// create no lock file.
#[derive(Debug, Clone)]
pub struct SaveEvent {
    dir: PathBuf,
}

impl SaveEvent {
    /// A handler saving into `dir`, created (with its parents) if missing.
    ///
    /// # Errors
    ///
    /// [`HandlerError::CreateDir`] if `dir` cannot be created or is not a directory.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, HandlerError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| HandlerError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The directory events are saved in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves `payload` under the name derived from `ivorn` and returns the file's path.
    ///
    /// # Errors
    ///
    /// [`HandlerError::Save`] if the file cannot be created or written (a partly written file
    /// is removed), or if every candidate name up to 255 bytes is taken.
    pub fn save(&self, ivorn: &str, payload: &[u8]) -> Result<PathBuf, HandlerError> {
        let mut name = Self::file_name(ivorn);
        loop {
            let path = self.dir.join(&name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    return match file.write_all(payload) {
                        Ok(()) => Ok(path),
                        Err(source) => {
                            drop(file);
                            // Best effort: a truncated event file is worse than none.
                            let _ = fs::remove_file(&path);
                            Err(HandlerError::Save { path, source })
                        }
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && name.len() < NAME_MAX => {
                    name.push('_');
                }
                Err(source) => return Err(HandlerError::Save { path, source }),
            }
        }
    }

    /// The file name Comet derives from an ivorn (PROTOCOL §4.5).
    ///
    /// Drop one leading `.`; turn `/` and `\` into `_`; keep only ASCII letters, digits, `_`
    /// and `.`. `ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729` gives
    /// `ivo__nasa.gsfc.gcn_SWIFTBAT_GRB_Pos_532871729`, `..x` gives `.x`. Two additions keep
    /// the name usable and inside the directory: a name that would be empty, `.` or `..` is
    /// `event`, and names are cut to 200 bytes (room for `_` suffixes within the 255-byte limit
    /// of file names). The result never contains a path separator.
    pub fn file_name(ivorn: &str) -> String {
        let rest = ivorn.strip_prefix('.').unwrap_or(ivorn);
        let mut name = String::with_capacity(rest.len().min(STEM_MAX));
        for c in rest.chars() {
            if name.len() == STEM_MAX {
                break;
            }
            match c {
                '/' | '\\' => name.push('_'),
                c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => name.push(c),
                _ => {}
            }
        }
        if name.is_empty() || name == "." || name == ".." {
            return "event".to_owned();
        }
        name
    }
}

impl Handler for SaveEvent {
    fn name(&self) -> &str {
        "save-event"
    }

    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let path = self.save(&delivery.ivorn, &delivery.payload)?;
        debug!(ivorn = %delivery.ivorn, path = %path.display(), "event saved");
        Ok(())
    }
}

/// Runs a program for every event, the event's bytes on its stdin (`--cmd`).
///
/// The program is run directly (no shell) with the given arguments and this process's
/// environment and working directory. The raw payload is written to its stdin, which is then
/// closed. Its stdout and stderr are captured (at most 64 KiB of each is kept) and logged at
/// DEBUG. A non-zero exit is reported as [`HandlerError::NonZero`], which the pool logs at WARN
/// as `` `PROGRAM` returned non-zero (CODE) ``. A program still running after the timeout
/// (default 30 s; Comet has none) is killed and reported as [`HandlerError::Timeout`].
///
/// Implementation note: stdin is written and stdout and stderr are read on three short-lived
/// threads while the worker waits, so a program that never reads its stdin, or fills its
/// output pipes, cannot deadlock the worker: it just runs into the timeout. At most as many
/// programs run at once as the pool has workers. If the program leaves a descendant holding its
/// pipes open, output collection is abandoned one second after the program itself ends.
#[derive(Debug, Clone)]
pub struct Command {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    name: String,
}

impl Command {
    /// The default run-time limit of one execution.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A handler running `program` with `args` and the default timeout.
    ///
    /// A `program` without a path separator is looked up in `PATH`; the path found is used
    /// from then on.
    ///
    /// # Errors
    ///
    /// [`HandlerError::NotExecutable`] naming `program` if it is not found, not a file, or
    /// not executable.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> Result<Self, HandlerError> {
        let program = resolve_program(program.into())?;
        let name = format!("cmd {}", program.display());
        Ok(Self {
            program,
            args,
            timeout: Self::DEFAULT_TIMEOUT,
            name,
        })
    }

    /// Sets the time after which a running program is killed.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The program run (after the `PATH` lookup).
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs the program once with `payload` on its stdin and waits for it (or the timeout).
    ///
    /// # Errors
    ///
    /// [`HandlerError::Spawn`], [`HandlerError::Wait`], [`HandlerError::Thread`] if it cannot be
    /// run, [`HandlerError::NonZero`] if it fails, [`HandlerError::Timeout`] if it was killed.
    pub fn run(&self, payload: Bytes) -> Result<(), HandlerError> {
        let mut child = process::Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HandlerError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let (out_tx, out_rx) = mpsc::channel();
        if let Err(e) = self.start_io(&mut child, payload, &out_tx) {
            kill(&mut child);
            return Err(e);
        }
        drop(out_tx);
        let status = self.wait(&mut child);
        self.log_output(&out_rx);
        match status? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(HandlerError::NonZero {
                program: self.program.clone(),
                status,
            }),
            None => Err(HandlerError::Timeout {
                program: self.program.clone(),
                timeout: self.timeout,
            }),
        }
    }

    /// Starts the stdin writer and the two output readers.
    fn start_io(
        &self,
        child: &mut Child,
        payload: Bytes,
        out_tx: &Sender<Captured>,
    ) -> Result<(), HandlerError> {
        if let Some(mut stdin) = child.stdin.take() {
            let program = self.program.clone();
            spawn_io("vtp-cmd-stdin", move || {
                // A program may exit or close stdin without reading it all: not an error.
                if let Err(e) = stdin.write_all(&payload)
                    && e.kind() != io::ErrorKind::BrokenPipe
                {
                    debug!(program = %program.display(), error = %e, "writing the event to stdin");
                }
            })?;
        }
        if let Some(stdout) = child.stdout.take() {
            let tx = out_tx.clone();
            spawn_io("vtp-cmd-stdout", move || {
                let _ = tx.send(Captured::read("stdout", stdout));
            })?;
        }
        if let Some(stderr) = child.stderr.take() {
            let tx = out_tx.clone();
            spawn_io("vtp-cmd-stderr", move || {
                let _ = tx.send(Captured::read("stderr", stderr));
            })?;
        }
        Ok(())
    }

    /// Waits for the child; `None` if it timed out and was killed.
    fn wait(&self, child: &mut Child) -> Result<Option<ExitStatus>, HandlerError> {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) => {}
                Err(source) => {
                    kill(child);
                    return Err(HandlerError::Wait {
                        program: self.program.clone(),
                        source,
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                kill(child);
                return Ok(None);
            }
            thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(WAIT_PAUSE_MAX);
        }
    }

    /// Logs what the readers captured, waiting at most [`OUTPUT_GRACE`] for them.
    fn log_output(&self, out_rx: &Receiver<Captured>) {
        let deadline = Instant::now() + OUTPUT_GRACE;
        loop {
            match out_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(out) => out.log(&self.program),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    debug!(
                        program = %self.program.display(),
                        "output not collected: a descendant process still holds the pipe"
                    );
                    return;
                }
            }
        }
    }
}

impl Handler for Command {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        self.run(delivery.payload.clone())
    }
}

/// Runs handlers on every delivery, on a bounded pool of worker threads.
///
/// Dropping it without [`shutdown`](Self::shutdown) lets the workers finish the queue in the
/// background.
pub struct Handlers {
    tx: SyncSender<Delivery>,
    workers: Vec<JoinHandle<()>>,
    /// Disconnected once every worker has returned (each holds a sender it never uses).
    done_rx: Receiver<()>,
    abandon: Arc<AtomicBool>,
    dropped: AtomicU64,
    queue_max: usize,
    names: Vec<String>,
}

impl Handlers {
    /// Starts `workers` threads (at least one) serving a queue of at most `queue_max`
    /// deliveries (at least one), each delivery going to every handler in order.
    ///
    /// A worker thread the system refuses to start is logged at ERROR and the pool runs with
    /// fewer; with none at all, every [`dispatch`](Self::dispatch) returns `false` (and warns).
    pub fn new(handlers: Vec<Arc<dyn Handler>>, workers: usize, queue_max: usize) -> Self {
        let queue_max = queue_max.max(1);
        let (tx, rx) = mpsc::sync_channel::<Delivery>(queue_max);
        let rx = Arc::new(Mutex::new(rx));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let abandon = Arc::new(AtomicBool::new(false));
        let names = handlers.iter().map(|h| h.name().to_owned()).collect();
        let handlers: Arc<[Arc<dyn Handler>]> = handlers.into();
        let mut threads = Vec::with_capacity(workers.max(1));
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let handlers = Arc::clone(&handlers);
            let abandon = Arc::clone(&abandon);
            let done = done_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("vtp-handler-{i}"))
                .spawn(move || {
                    serve(&rx, &handlers, &abandon);
                    drop(done);
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => error!(error = %e, "cannot start a handler worker thread"),
            }
        }
        Self {
            tx,
            workers: threads,
            done_rx,
            abandon,
            dropped: AtomicU64::new(0),
            queue_max,
            names,
        }
    }

    /// Queues a delivery for the handlers without blocking; returns whether it was queued.
    ///
    /// If the queue is full the delivery is dropped for the handlers (subscribers are not
    /// affected), a WARN is logged and [`dropped`](Self::dropped) counts it.
    pub fn dispatch(&self, delivery: Delivery) -> bool {
        let (delivery, why) = match self.tx.try_send(delivery) {
            Ok(()) => return true,
            Err(TrySendError::Full(d)) => (d, "handler queue full (handlers too slow or stuck)"),
            Err(TrySendError::Disconnected(d)) => (d, "handler workers have stopped"),
        };
        self.dropped.fetch_add(1, Ordering::Relaxed);
        warn!(
            ivorn = %delivery.ivorn,
            queue_max = self.queue_max,
            "{why}: event not handed to the handlers; subscribers still receive it"
        );
        false
    }

    /// How many deliveries [`dispatch`](Self::dispatch) has dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stops taking deliveries, lets the workers finish the queue for at most `grace`, and
    /// returns whether they all finished.
    ///
    /// After `grace`, queued deliveries not yet started are dropped, handlers still running are
    /// left to finish on their own (their threads are detached; a [`Command`] still ends at its
    /// timeout) and a WARN is logged.
    pub fn shutdown(self, grace: Duration) -> bool {
        let Self {
            tx,
            workers,
            done_rx,
            abandon,
            ..
        } = self;
        // Workers drain the queue, then see the channel closed and return.
        drop(tx);
        let deadline = Instant::now() + grace;
        loop {
            match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Disconnected) => break,
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => {
                    abandon.store(true, Ordering::Release);
                    let running = workers.iter().filter(|w| !w.is_finished()).count();
                    warn!(
                        running,
                        ?grace,
                        "handlers did not finish in time: queued events dropped, \
                         running handlers left to finish on their own"
                    );
                    return false;
                }
            }
        }
        for worker in workers {
            // Every worker has returned; a panic in a handler is caught inside it.
            let _ = worker.join();
        }
        true
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("handlers", &self.names)
            .field("workers", &self.workers.len())
            .field("queue_max", &self.queue_max)
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// A worker: takes deliveries until the queue is closed and empty, or `abandon` is set.
fn serve(rx: &Mutex<Receiver<Delivery>>, handlers: &[Arc<dyn Handler>], abandon: &AtomicBool) {
    loop {
        // The lock is only held while waiting; a poisoned lock still guards a usable receiver.
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(delivery) = next else {
            return;
        };
        if abandon.load(Ordering::Acquire) {
            return;
        }
        for handler in handlers {
            match panic::catch_unwind(AssertUnwindSafe(|| handler.handle(&delivery))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(
                    handler = handler.name(),
                    ivorn = %delivery.ivorn,
                    "{}",
                    ErrorChain(&e)
                ),
                Err(_) => error!(
                    handler = handler.name(),
                    ivorn = %delivery.ivorn,
                    "handler panicked (a bug in the handler); the next handlers still run"
                ),
            }
        }
    }
}

/// Output captured from one of a command's streams.
struct Captured {
    stream: &'static str,
    kept: Vec<u8>,
    total: u64,
}

impl Captured {
    /// Reads `pipe` to its end, keeping the first [`OUTPUT_MAX`] bytes.
    fn read(stream: &'static str, mut pipe: impl Read) -> Self {
        let mut kept = Vec::new();
        let mut total = 0u64;
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    let room = OUTPUT_MAX - kept.len();
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        Self {
            stream,
            kept,
            total,
        }
    }

    fn log(&self, program: &Path) {
        if self.total == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&self.kept);
        if self.total > self.kept.len() as u64 {
            debug!(
                program = %program.display(),
                "{}: {text}... ({} bytes in all, first {} kept)",
                self.stream,
                self.total,
                self.kept.len()
            );
        } else {
            debug!(program = %program.display(), "{}: {text}", self.stream);
        }
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

/// Finds `program` (in `PATH` if it has no separator) and checks that it is executable.
fn resolve_program(program: PathBuf) -> Result<PathBuf, HandlerError> {
    let not = |reason| HandlerError::NotExecutable {
        program: program.clone(),
        reason,
    };
    if program.components().count() == 1 && !program.is_absolute() {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&program))
                .find(|candidate| executable(candidate).is_ok())
        });
        return found.ok_or_else(|| not("was not found in PATH"));
    }
    executable(&program).map_err(not)?;
    Ok(program)
}

/// Whether `path` is a file this process may execute; the reason if not.
fn executable(path: &Path) -> Result<(), &'static str> {
    let meta = fs::metadata(path).map_err(|_| "does not exist or cannot be read")?;
    if !meta.is_file() {
        return Err("is not a file");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("is not executable");
        }
    }
    Ok(())
}

/// Starts a detached helper thread.
fn spawn_io(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), HandlerError> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map(drop)
        .map_err(HandlerError::Thread)
}

/// Kills and reaps a child, ignoring errors (it may have exited already).
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Longest file name [`SaveEvent`] tries (the usual `NAME_MAX`).
const NAME_MAX: usize = 255;

/// Longest name [`SaveEvent::file_name`] derives, leaving room for `_` suffixes.
const STEM_MAX: usize = 200;

/// Bytes of each output stream of a [`Command`] kept for the log.
const OUTPUT_MAX: usize = 64 * 1024;

/// How long output collection may outlast a [`Command`]'s process.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Longest pause between two checks of a running [`Command`].
const WAIT_PAUSE_MAX: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Barrier;

    use super::*;
    use crate::testutil::{TempDir, capture_logs, delivery};

    const GCN: &str = "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729";

    fn sh(script: &str) -> Command {
        Command::new("/bin/sh", vec!["-c".into(), script.into()]).unwrap()
    }

    fn files(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    // ------------------------------------------------------------------ print

    #[test]
    fn print_event_logs_ivorn_and_payload_as_text() {
        let d = delivery(
            GCN,
            b"<voe:VOEvent ivorn=\"x\">caf\xc3\xa9 \xff</voe:VOEvent>",
        );
        let (result, logs) = capture_logs(|| PrintEvent.handle(&d));
        result.unwrap();
        assert!(logs.contains(" INFO "), "{logs}");
        assert!(logs.contains(GCN), "{logs}");
        assert!(
            logs.contains("<voe:VOEvent ivorn=\"x\">café \u{FFFD}</voe:VOEvent>"),
            "{logs}"
        );
    }

    // ------------------------------------------------------------------- save

    #[test]
    fn file_names_follow_comet() {
        let cases = [
            (GCN, "ivo__nasa.gsfc.gcn_SWIFTBAT_GRB_Pos_532871729"),
            ("..x", ".x"),
            (".x", "x"),
            ("ivo://../../etc/passwd", "ivo__.._.._etc_passwd"),
            ("/abs", "_abs"),
            ("\\..\\win", "_.._win"),
            ("..", "event"),
            (".", "event"),
            ("...", "event"),
            ("", "event"),
            ("ivo://:#-~", "ivo__"),
            ("#:-", "event"),
            ("ivo://é/ü", "ivo___"),
        ];
        for (ivorn, want) in cases {
            assert_eq!(SaveEvent::file_name(ivorn), want, "{ivorn:?}");
        }
    }

    #[test]
    fn file_names_are_bounded_and_never_contain_separators() {
        let long = format!("ivo://a/{}", "x".repeat(10_000));
        let name = SaveEvent::file_name(&long);
        assert_eq!(name.len(), STEM_MAX);
        for ivorn in ["a/b\\c", "ivo://x/../../..", "/../..", "\\\\server\\share"] {
            let name = SaveEvent::file_name(ivorn);
            assert!(!name.contains('/') && !name.contains('\\'), "{name}");
            assert!(name != "." && name != ".." && !name.is_empty(), "{name}");
        }
    }

    #[test]
    fn save_writes_raw_bytes_and_never_clobbers() {
        let tmp = TempDir::new("save");
        let save = SaveEvent::new(tmp.path().join("events/new")).unwrap();
        let first = save.save(GCN, b"one \xff\x00").unwrap();
        let second = save.save(GCN, b"two").unwrap();
        let third = save.save(GCN, b"three").unwrap();
        let name = "ivo__nasa.gsfc.gcn_SWIFTBAT_GRB_Pos_532871729";
        assert_eq!(first, save.dir().join(name));
        assert_eq!(second, save.dir().join(format!("{name}_")));
        assert_eq!(third, save.dir().join(format!("{name}__")));
        assert_eq!(fs::read(&first).unwrap(), b"one \xff\x00");
        assert_eq!(fs::read(&second).unwrap(), b"two");
        assert_eq!(fs::read(&third).unwrap(), b"three");

        // A file that was there before is left alone.
        fs::write(save.dir().join(".x"), b"precious").unwrap();
        let path = save.save("..x", b"event").unwrap();
        assert_eq!(path, save.dir().join(".x_"));
        assert_eq!(fs::read(save.dir().join(".x")).unwrap(), b"precious");
    }

    #[test]
    fn hostile_ivorns_stay_inside_the_directory() {
        let tmp = TempDir::new("save-hostile");
        let dir = tmp.path().join("events");
        let save = SaveEvent::new(&dir).unwrap();
        let hostile = [
            "ivo://../../etc/passwd",
            "..",
            ".",
            "/abs",
            "../../x",
            "\\..\\..\\y",
            "",
        ];
        for ivorn in hostile {
            let path = save.save(ivorn, ivorn.as_bytes()).unwrap();
            assert_eq!(path.parent(), Some(dir.as_path()), "{ivorn:?} -> {path:?}");
            assert_eq!(fs::read(&path).unwrap(), ivorn.as_bytes());
        }
        assert_eq!(files(&dir).len(), hostile.len());
        // Nothing was written next to the directory.
        assert_eq!(files(tmp.path()), BTreeSet::from(["events".to_owned()]));
    }

    #[test]
    fn concurrent_saves_of_one_ivorn_get_their_own_files() {
        let tmp = TempDir::new("save-race");
        let save = Arc::new(SaveEvent::new(tmp.path()).unwrap());
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4u8)
            .map(|i| {
                let (save, barrier) = (Arc::clone(&save), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    save.handle(&delivery(GCN, &[b'0' + i; 100])).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let names = files(tmp.path());
        assert_eq!(names.len(), 4, "{names:?}");
        let contents: BTreeSet<Vec<u8>> = names
            .iter()
            .map(|n| fs::read(tmp.path().join(n)).unwrap())
            .collect();
        assert_eq!(contents, (0..4u8).map(|i| vec![b'0' + i; 100]).collect());
    }

    #[test]
    fn save_event_needs_a_usable_directory() {
        let tmp = TempDir::new("save-dir");
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = SaveEvent::new(&file).unwrap_err();
        assert!(matches!(err, HandlerError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("file"), "{err}");
    }

    // ---------------------------------------------------------------- command

    #[test]
    fn command_gets_the_event_on_stdin() {
        let tmp = TempDir::new("cmd-cat");
        let out = tmp.path().join("out.xml");
        let cmd = sh(&format!("cat > '{}'", out.display()));
        let payload = b"<VOEvent>\xff raw</VOEvent>\n";
        cmd.handle(&delivery(GCN, payload)).unwrap();
        assert_eq!(fs::read(&out).unwrap(), payload);
    }

    #[test]
    fn command_output_is_logged_at_debug_and_bounded() {
        let cmd = sh("echo hello; echo oops >&2; head -c 200000 /dev/zero | tr '\\0' a >&2");
        let (result, logs) = capture_logs(|| cmd.run(Bytes::from_static(b"x")));
        result.unwrap();
        assert!(
            logs.contains("DEBUG") && logs.contains("stdout: hello"),
            "{logs}"
        );
        assert!(logs.contains("stderr: oops"), "{logs}");
        assert!(
            logs.contains("(200005 bytes in all, first 65536 kept)"),
            "{logs}"
        );
        assert!(
            logs.len() < 100_000,
            "log not bounded: {} bytes",
            logs.len()
        );
    }

    #[test]
    fn command_non_zero_exit_is_an_error() {
        let err = sh("exit 3").run(Bytes::from_static(b"x")).unwrap_err();
        assert!(matches!(err, HandlerError::NonZero { .. }), "{err:?}");
        assert_eq!(err.to_string(), "`/bin/sh` returned non-zero (3)");
        let err = sh("kill -9 $$").run(Bytes::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`/bin/sh` returned non-zero (killed by signal 9)"
        );
    }

    #[test]
    fn command_that_runs_too_long_is_killed() {
        let cmd = Command::new("sleep", vec!["5".into()])
            .unwrap()
            .with_timeout(Duration::from_millis(300));
        let start = Instant::now();
        let err = cmd.run(Bytes::from_static(b"x")).unwrap_err();
        assert!(matches!(err, HandlerError::Timeout { .. }), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn command_that_never_reads_stdin_cannot_deadlock() {
        let big = Bytes::from(vec![b'a'; 2 << 20]);
        // Never reads and never exits: the timeout ends it.
        let cmd = Command::new("sleep", vec!["5".into()])
            .unwrap()
            .with_timeout(Duration::from_millis(300));
        let start = Instant::now();
        let err = cmd.run(big.clone()).unwrap_err();
        assert!(matches!(err, HandlerError::Timeout { .. }), "{err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        // Exits at once without reading: success, the broken pipe is not an error.
        Command::new("true", Vec::new()).unwrap().run(big).unwrap();
    }

    #[test]
    fn command_must_be_executable() {
        let tmp = TempDir::new("cmd-exec");
        let plain = tmp.path().join("plain.sh");
        fs::write(&plain, b"#!/bin/sh\n").unwrap();
        let cases = [
            (tmp.path().join("missing"), "does not exist"),
            (plain.clone(), "is not executable"),
            (tmp.path().to_owned(), "is not a file"),
            (
                PathBuf::from("vtp-no-such-program-xyz"),
                "was not found in PATH",
            ),
        ];
        for (program, reason) in cases {
            let err = Command::new(&program, Vec::new()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&program.display().to_string()), "{text}");
            assert!(text.contains(reason), "{text}");
        }
        // Found in PATH: the resolved path is kept.
        let cmd = Command::new("sh", Vec::new()).unwrap();
        assert!(cmd.program().is_absolute(), "{:?}", cmd.program());
    }

    // --------------------------------------------------------------- dispatch

    /// Signals each start, then waits for one release per delivery.
    struct Blocking {
        started: Mutex<Sender<Arc<str>>>,
        release: Mutex<Receiver<()>>,
    }

    impl Handler for Blocking {
        fn name(&self) -> &str {
            "blocking"
        }

        fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
            let _ = self.started.lock().unwrap().send(Arc::clone(&d.ivorn));
            let _ = self.release.lock().unwrap().recv();
            Ok(())
        }
    }

    fn blocking() -> (Arc<Blocking>, Receiver<Arc<str>>, Sender<()>) {
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let handler = Arc::new(Blocking {
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        });
        (handler, started_rx, release_tx)
    }

    #[test]
    fn dispatch_never_blocks_when_the_queue_is_full() {
        let (handler, started, release) = blocking();
        let pool = Handlers::new(vec![handler], 1, 2);
        assert!(pool.dispatch(delivery("ivo://a/b#1", b"")));
        // The only worker is now stuck in the handler.
        assert_eq!(
            &*started.recv_timeout(Duration::from_secs(30)).unwrap(),
            "ivo://a/b#1"
        );
        assert!(pool.dispatch(delivery("ivo://a/b#2", b"")));
        assert!(pool.dispatch(delivery("ivo://a/b#3", b"")));
        let start = Instant::now();
        let (queued, logs) = capture_logs(|| pool.dispatch(delivery("ivo://a/b#4", b"")));
        assert!(!queued);
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(
            logs.contains("WARN") && logs.contains("handler queue full"),
            "{logs}"
        );
        assert!(logs.contains("ivo://a/b#4"), "{logs}");
        assert_eq!(pool.dropped(), 1);
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        assert!(pool.shutdown(Duration::from_secs(30)));
        let rest: Vec<_> = started.try_iter().map(|s| s.to_string()).collect();
        assert_eq!(rest, ["ivo://a/b#2", "ivo://a/b#3"]);
    }

    struct Failing;

    impl Handler for Failing {
        fn name(&self) -> &str {
            "failing"
        }

        fn handle(&self, _: &Delivery) -> Result<(), HandlerError> {
            Err(HandlerError::Other("boom".into()))
        }
    }

    struct Panicking;

    impl Handler for Panicking {
        fn name(&self) -> &str {
            "panicking"
        }

        fn handle(&self, _: &Delivery) -> Result<(), HandlerError> {
            panic!("handler bug");
        }
    }

    #[derive(Default)]
    struct Counting(AtomicU64);

    impl Handler for Counting {
        fn name(&self) -> &str {
            "counting"
        }

        fn handle(&self, _: &Delivery) -> Result<(), HandlerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn failing_and_panicking_handlers_do_not_stop_the_others() {
        let counting = Arc::new(Counting::default());
        let pool = Handlers::new(
            vec![Arc::new(Failing), Arc::new(Panicking), counting.clone()],
            2,
            100,
        );
        for i in 0..20 {
            assert!(pool.dispatch(delivery(&format!("ivo://a/b#{i}"), b"")));
        }
        assert!(pool.shutdown(Duration::from_secs(30)));
        assert_eq!(counting.0.load(Ordering::SeqCst), 20);
    }

    #[test]
    fn shutdown_gives_up_after_the_grace_period() {
        let (handler, started, release) = blocking();
        let counting = Arc::new(Counting::default());
        let pool = Handlers::new(vec![handler, counting.clone()], 1, 10);
        for i in 0..3 {
            assert!(pool.dispatch(delivery(&format!("ivo://a/b#{i}"), b"")));
        }
        started.recv_timeout(Duration::from_secs(30)).unwrap();
        let start = Instant::now();
        assert!(!pool.shutdown(Duration::from_millis(50)));
        assert!(start.elapsed() < Duration::from_secs(5));
        // Let the stuck handler finish: the worker then drops the queued deliveries and exits,
        // dropping the handlers (so `started` disconnects) without starting another one.
        release.send(()).unwrap();
        drop(release);
        assert_eq!(
            started.recv_timeout(Duration::from_secs(30)),
            Err(RecvTimeoutError::Disconnected)
        );
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
    }
}
