//! The durable seen-index: which events this node has processed, kept across restarts.
//!
//! # Theory of operation
//!
//! The core decides what is new ([`vtp_core::seen`]); this module only remembers. A
//! [`SeenStore`] is one file, `<dir>/vtp-seen.log`: a log of the core's store operations
//! (persist an [`EventKey`] with the UNIX second it was first seen, forget a key, expire
//! everything seen at or before a second), each a 48-byte record with a CRC-32. At start-up
//! the runtime [`load`](SeenStore::load)s the records the log adds up to into the node
//! (`Node::restore_seen`); while running it hands each store operation ([`StoreOp`], from the
//! core's `Persist`, `Forget` and `Expire` actions, see
//! [`Effects::store`](vtp_core::driver::Effects::store)) to a [`StoreWorker`], a thread that owns
//! the store and commits in groups.
//!
//! # Group commit and durability
//!
//! [`StoreWorker::send`] never blocks the event loop: it puts the operation on a bounded queue
//! ([`STORE_QUEUE_MAX`]) and returns its sequence number. The worker takes everything queued at
//! that moment as one batch and commits it with **one** write and one `fdatasync`, so under load
//! many records share one disk flush. The file is kept ahead with written zeros (1 MiB at a
//! time), so a commit overwrites allocated blocks in place and its fdatasync flushes data, not
//! file-system metadata: on the development machine a commit of 8 records took 0.10-0.13 ms
//! (p50) against 0.34-0.49 ms for the same batch as a redb transaction (the store of earlier
//! versions), at a quarter of the CPU. `cargo bench -p vtp-host --bench store` prints these
//! figures for the disk at hand.
//! After each commit the worker publishes the last sequence number of the batch, readable with
//! [`StoreWorker::durable_seq`], wakes the [`Waker`] given to [`StoreWorker::set_waker`] (the
//! runtime's loop) and anyone blocked in [`StoreWorker::wait_durable`], and calls the optional
//! callback given to [`StoreWorker::spawn`]. Every operation with a sequence number at or below
//! `durable_seq()` survives a crash (process abort or power loss).
//!
//! The node holds an event's receipt and forwards until its record is durable (the core's
//! `Durability::BeforeReply`); [`HostEffects`](crate::effects::HostEffects) maps the node's
//! persists to these sequence numbers.
//!
//! A failed commit is logged (`tracing::error`) and the batch is kept and retried, together
//! with whatever arrived meanwhile, no sooner than one second later. While the disk keeps
//! failing the worker stops taking operations once its batch holds [`STORE_QUEUE_MAX`], so
//! memory stays bounded and [`StoreWorker::send`] reports [`SendError::Full`] to the caller.
//!
//! # Crashes, damage and size
//!
//! Reading stops at the first record that does not check out: after a crash that is the batch
//! whose fdatasync had not returned (none of it was reported durable), and it is zeroed before
//! new records go there. Non-zero bytes after that point are reported with a warning. A file
//! that is not a seen-index file is refused, not overwritten.
//!
//! The log grows by one record per operation. When it holds at least twice as many records as
//! were live at its last rewrite, plus [`COMPACT_MIN_RECORDS`], the worker rewrites it with only
//! the live records (a new file, fsync'd, renamed over the old one, directory fsync'd: a crash
//! leaves one or the other), so the file stays within a small multiple of the live index, which
//! the core bounds (500,000 entries by default: 24 MB of records). Opening the store does the
//! same when the file is mostly dead records. A compaction holds the commits queued behind it
//! for its duration (about 25 ms for 75,000 records on the development machine, `cargo bench -p
//! vtp-host --bench store`); it comes once per as many operations as there are live records
//! plus [`COMPACT_MIN_RECORDS`].
//!
//! The file is locked (`flock`) while open: a second process opening the same directory gets
//! [`StoreError::Open`].

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::Waker;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

pub use vtp_core::driver::StoreOp;
use vtp_core::{EventKey, SeenRecord};

/// Capacity of the [`StoreWorker`] queue, and the largest batch one commit applies.
pub const STORE_QUEUE_MAX: usize = 65_536;

/// Name of the seen-index file inside the store directory.
pub const STORE_FILE_NAME: &str = "vtp-seen.log";

/// The log is rewritten with only its live records once it holds twice as many records as were
/// live at its last rewrite plus this many (3 MiB of records).
pub const COMPACT_MIN_RECORDS: u64 = 65_536;

/// A compaction's new file, renamed over [`STORE_FILE_NAME`] once complete.
const COMPACT_FILE_NAME: &str = "vtp-seen.log.compact";

/// The file of vtp versions that kept the seen-index in redb.
const LEGACY_FILE_NAME: &str = "vtp-seen.redb";

/// How far ahead of the last record the file is filled with zeros.
const GROW_BYTES: u64 = 1024 * 1024;

mod log;
use log::RECORD_LEN;

/// Why the seen-index store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store directory does not exist and could not be created.
    #[error(
        "cannot create the seen-index directory `{}`: check the path and its permissions",
        dir.display()
    )]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The seen-index file could not be opened, is locked by another process, or is not a
    /// seen-index file.
    #[error(
        "cannot open the seen-index store `{}`: is another vtp process using it, or is it not a \
         vtp seen-index file (move it aside to start with an empty index)?",
        path.display()
    )]
    Open {
        /// The seen-index file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading the records failed.
    #[error("cannot read the seen-index store `{}`", path.display())]
    Read {
        /// The seen-index file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing or syncing a batch failed; none of it counts as written.
    #[error(
        "cannot commit to the seen-index store `{}`: is the disk full or read-only?",
        path.display()
    )]
    Write {
        /// The seen-index file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The worker thread could not be started.
    #[error("cannot start the seen-index store thread: the system is out of threads or memory")]
    Spawn(#[source] io::Error),
    /// The worker thread panicked (a bug): operations queued since its last commit may be lost.
    #[error(
        "the seen-index store thread panicked: records queued since its last commit may be lost"
    )]
    WorkerPanicked,
}

/// Why [`StoreWorker::send`] did not queue an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The queue holds [`STORE_QUEUE_MAX`] operations: the disk is not keeping up or is failing.
    /// Count and log it; the event is still processed, but a restart may not remember it.
    #[error(
        "the seen-index store queue is full ({STORE_QUEUE_MAX} operations): the disk is too slow \
         or failing (see earlier errors); this record is not persisted"
    )]
    Full,
    /// The worker has stopped (it panicked): nothing more can be persisted.
    #[error("the seen-index store thread has stopped: this record is not persisted")]
    Stopped,
}

/// The durable seen-index: one append-only file of operation records (see the module docs).
pub struct SeenStore {
    /// The open file, exclusively locked.
    file: File,
    path: PathBuf,
    /// Offset of the next record.
    tail: u64,
    /// Length of the file: written bytes, zeros past `tail`.
    len: u64,
    /// Records in the file.
    records: u64,
    /// Live records when the file was last written whole (at creation, open or compaction).
    live_at_compaction: u64,
    /// Dead records tolerated beyond twice `live_at_compaction` ([`COMPACT_MIN_RECORDS`]).
    compact_min: u64,
    /// Encoding buffer, reused.
    buf: Vec<u8>,
}

impl SeenStore {
    /// Opens or creates `<dir>/vtp-seen.log`, creating `dir` if needed, and locks it.
    ///
    /// A file left by a crash is repaired: reading stops at the first record that does not
    /// check out (a batch whose commit was cut short) and everything after it is zeroed, with
    /// a warning when that was more than zeros. A file with more dead records than live ones is
    /// compacted.
    ///
    /// # Errors
    ///
    /// [`StoreError::CreateDir`] if the directory cannot be created, [`StoreError::Open`] if the
    /// file cannot be opened, is locked by another process, or is not a seen-index file.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, COMPACT_MIN_RECORDS)
    }

    /// [`open`](Self::open) with another compaction threshold (tests make it small).
    fn open_with(dir: &Path, compact_min: u64) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
        let path = dir.join(STORE_FILE_NAME);
        let open_err = |source: io::Error| StoreError::Open {
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(open_err)?;
        lock(&file).map_err(open_err)?;
        // Only the lock holder tidies up: a compaction cut short leaves its new file behind.
        let _ = fs::remove_file(dir.join(COMPACT_FILE_NAME));
        let legacy = dir.join(LEGACY_FILE_NAME);
        if legacy.exists() {
            warn!(
                "{} was written by an earlier vtp (redb) and is not read: the seen-index starts \
                 from {}; delete the old file",
                legacy.display(),
                path.display()
            );
        }
        let mut store = Self {
            file,
            path: path.clone(),
            tail: log::HEADER_LEN,
            len: 0,
            records: 0,
            live_at_compaction: 0,
            compact_min,
            buf: Vec::new(),
        };
        store.recover().map_err(open_err)?;
        Ok(store)
    }

    /// The seen-index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored record, in key order (for `Node::restore_seen`).
    ///
    /// # Errors
    ///
    /// [`StoreError::Read`] if the file cannot be read.
    pub fn load(&self) -> Result<Vec<SeenRecord>, StoreError> {
        self.replay()
            .map(log::Replay::into_records)
            .map_err(|source| StoreError::Read {
                path: self.path.clone(),
                source,
            })
    }

    /// Applies a batch, in order, with one write and one fdatasync. If it fails, none of the
    /// batch counts as written (a retry writes it again at the same place).
    ///
    /// # Errors
    ///
    /// [`StoreError::Write`] if writing or syncing fails.
    pub fn apply(&mut self, batch: &[StoreOp]) -> Result<(), StoreError> {
        self.buf.clear();
        let mut n = 0;
        for op in batch {
            if log::encode(op, &mut self.buf) {
                n += 1;
            } else {
                // A kind of operation added to the core after this crate was written.
                debug!(?op, "seen-index: unknown store operation ignored");
            }
        }
        if n == 0 {
            return Ok(());
        }
        self.write_batch().map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.tail += self.buf.len() as u64;
        self.records += n;
        if self.records >= 2 * self.live_at_compaction + self.compact_min
            && let Err(e) = self.compact()
        {
            // The file as it is stays valid; try again once it has grown as much again.
            error!(
                error = %e,
                path = %self.path.display(),
                "seen-index compaction failed; the file keeps its dead records for now"
            );
            self.live_at_compaction = self.records / 2;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> io::Result<()> {
        let end = self.tail + self.buf.len() as u64;
        if end > self.len {
            // Zeros written ahead, so commits overwrite allocated blocks in place.
            let new_len = end + GROW_BYTES;
            write_zeros(&self.file, self.len, new_len)?;
            self.len = new_len;
        }
        self.file.write_all_at(&self.buf, self.tail)?;
        self.file.sync_data()
    }

    /// Reads the file: checks the header, finds the tail, zeroes what follows it, compacts.
    fn recover(&mut self) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        let mut head = [0u8; log::HEADER_LEN as usize];
        let got = usize::try_from(len).map_or(head.len(), |l| l.min(head.len()));
        self.file.read_exact_at(&mut head[..got], 0)?;
        match log::check_header(&head[..got]) {
            log::Header::Ours => {}
            log::Header::Blank => return self.rewrite(&log::Replay::default()),
            log::Header::Foreign(why) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a vtp seen-index file: {why}"),
                ));
            }
        }
        let mut replay = log::Replay::default();
        let scan = log::scan(&self.file, len, |op| replay.apply(op))?;
        if scan.junk_after_tail > 0 {
            warn!(
                path = %self.path.display(),
                offset = scan.tail,
                bytes = scan.junk_after_tail,
                "seen-index: records after this offset do not check out (a commit cut short \
                 by a crash, or damage) and are discarded"
            );
            write_zeros(&self.file, scan.tail, len)?;
            self.file.sync_data()?;
        }
        self.tail = scan.tail;
        self.len = len;
        self.records = scan.records;
        self.live_at_compaction = replay.0.len() as u64;
        if self.records >= 2 * self.live_at_compaction + self.compact_min {
            self.rewrite(&replay)?;
        }
        Ok(())
    }

    fn replay(&self) -> io::Result<log::Replay> {
        let mut replay = log::Replay::default();
        log::scan(&self.file, self.tail, |op| replay.apply(op))?;
        Ok(replay)
    }

    /// Rewrites the file with only its live records.
    fn compact(&mut self) -> io::Result<()> {
        let replay = self.replay()?;
        debug!(
            records = self.records,
            live = replay.0.len(),
            "seen-index: compacting"
        );
        self.rewrite(&replay)
    }

    /// Writes `replay`'s records to a new file, makes it durable and puts it in place of the
    /// current one (a crash at any point leaves either the old file or the new one).
    fn rewrite(&mut self, replay: &log::Replay) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp_path = dir.join(COMPACT_FILE_NAME);
        let tmp = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)?;
        lock(&tmp)?;
        let mut buf = Vec::with_capacity(log::HEADER_LEN as usize + replay.0.len() * RECORD_LEN);
        buf.extend_from_slice(&log::header());
        for (&key, &unix_secs) in &replay.0 {
            let op = StoreOp::Persist(SeenRecord {
                key: EventKey(key),
                unix_secs,
            });
            log::encode(&op, &mut buf);
        }
        let tail = buf.len() as u64;
        let len = tail + GROW_BYTES;
        tmp.write_all_at(&buf, 0)?;
        write_zeros(&tmp, tail, len)?;
        tmp.sync_all()?;
        fs::rename(&tmp_path, &self.path)?;
        File::open(dir)?.sync_all()?;
        self.file = tmp;
        self.tail = tail;
        self.len = len;
        self.records = replay.0.len() as u64;
        self.live_at_compaction = self.records;
        Ok(())
    }
}

/// Takes the file's exclusive lock, or says who holds it.
fn lock(file: &File) -> io::Result<()> {
    file.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => io::Error::new(
            io::ErrorKind::WouldBlock,
            "the file is locked by another process",
        ),
        fs::TryLockError::Error(e) => e,
    })
}

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).map_or(ZEROS.len(), |rest| rest.min(ZEROS.len()));
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl fmt::Debug for SeenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeenStore")
            .field("path", &self.path)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

/// Called on the worker thread after each commit with the new [`StoreWorker::durable_seq`].
pub type OnDurable = Box<dyn Fn(u64) + Send + 'static>;

/// A thread that owns a [`SeenStore`] and commits queued operations in groups.
///
/// Owned by one event loop (`send` takes `&mut self`, so sequence numbers follow queue order).
/// Dropping it without [`flush_and_stop`](Self::flush_and_stop) lets the thread commit what is
/// queued in the background; only `flush_and_stop` waits for that.
pub struct StoreWorker {
    tx: Option<Sender<(u64, StoreOp)>>,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
    durable: Arc<Durable>,
    next_seq: u64,
    path: PathBuf,
}

/// The worker's progress, shared with the event loop.
#[derive(Default)]
struct Durable {
    /// The last sequence number committed.
    seq: AtomicU64,
    /// The loop's waker; also the lock `changed` waits with.
    waker: Mutex<Option<Waker>>,
    /// Notified after every commit.
    changed: Condvar,
}

impl Durable {
    fn load(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    fn publish(&self, seq: u64) {
        self.seq.store(seq, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = &*waker {
            w.wake_by_ref();
        }
        self.changed.notify_all();
    }
}

impl StoreWorker {
    /// Starts the worker thread (named `vtp-store`), which owns `store` from now on.
    ///
    /// `on_durable`, if given, is called on the worker thread after every successful commit with
    /// the new durable sequence number; runtimes use it to wake their loop. It must be quick and
    /// must not call back into this worker. A panic in it is caught and logged.
    ///
    /// # Errors
    ///
    /// [`StoreError::Spawn`] if the thread cannot be created.
    pub fn spawn(store: SeenStore, on_durable: Option<OnDurable>) -> Result<Self, StoreError> {
        // A growable channel: memory follows the backlog. The bound is enforced in `send`
        // (sent but not yet durable), not by preallocating a queue of STORE_QUEUE_MAX slots.
        let (tx, rx) = mpsc::channel();
        let durable = Arc::new(Durable::default());
        let path = store.path.clone();
        let committer = Committer {
            store,
            batch: Vec::new(),
            last_seq: 0,
            durable: Arc::clone(&durable),
            on_durable,
        };
        let thread = thread::Builder::new()
            .name("vtp-store".into())
            .spawn(move || committer.run(&rx))
            .map_err(StoreError::Spawn)?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            durable,
            next_seq: 0,
            path,
        })
    }

    /// Queues one operation without blocking and returns its sequence number (1, 2, 3...).
    ///
    /// The operation is durable once [`durable_seq`](Self::durable_seq) reaches that number.
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] when [`STORE_QUEUE_MAX`] operations are already waiting (the caller
    /// should count and log it; blocking the event loop is never an option), and
    /// [`SendError::Stopped`] if the worker thread has died. Either way the operation is dropped
    /// and no sequence number is used.
    pub fn send(&mut self, op: StoreOp) -> Result<u64, SendError> {
        let seq = self.next_seq + 1;
        let Some(tx) = &self.tx else {
            return Err(SendError::Stopped);
        };
        let pending = self.next_seq - self.durable.load();
        if pending >= STORE_QUEUE_MAX as u64 {
            return Err(SendError::Full);
        }
        match tx.send((seq, op)) {
            Ok(()) => {
                self.next_seq = seq;
                Ok(seq)
            }
            Err(_) => Err(SendError::Stopped),
        }
    }

    /// Commits everything queued, stops the thread and waits for it (shutdown, SIGTERM).
    ///
    /// # Errors
    ///
    /// The error of the last commit if the final batch could not be written after three
    /// attempts one second apart, or [`StoreError::WorkerPanicked`].
    pub fn flush_and_stop(mut self) -> Result<(), StoreError> {
        // Closing the channel tells the worker to drain it, commit and return.
        self.tx = None;
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(StoreError::WorkerPanicked)),
            None => Ok(()),
        }
    }

    /// The highest sequence number such that it and every earlier operation are committed.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load()
    }

    /// Wakes `waker` after every commit from now on (replacing any earlier one). Runtimes give
    /// the waker of their loop, which then learns what became durable.
    pub fn set_waker(&self, waker: Waker) {
        let mut slot = self
            .durable
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(waker);
    }

    /// Blocks until operation `seq` is committed or `timeout` has passed; true if it is
    /// committed. For shutdown: the event loop never calls this while serving.
    pub fn wait_durable(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self
            .durable
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.durable.load() >= seq {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.is_stopped() {
                return false;
            }
            guard = self
                .durable
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// True once the worker thread has ended (it panicked, or the final commit failed): nothing
    /// queued after its last commit will become durable.
    pub fn is_stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The sequence number of the last queued operation (0 before the first).
    pub fn queued_seq(&self) -> u64 {
        self.next_seq
    }
}

impl fmt::Debug for StoreWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreWorker")
            .field("path", &self.path)
            .field("queued_seq", &self.next_seq)
            .field("durable_seq", &self.durable_seq())
            .finish_non_exhaustive()
    }
}

/// The worker thread's state.
struct Committer {
    store: SeenStore,
    /// Operations not yet committed (non-empty only between a failed commit and its retry).
    batch: Vec<StoreOp>,
    /// Sequence number of the last operation in `batch`.
    last_seq: u64,
    durable: Arc<Durable>,
    on_durable: Option<OnDurable>,
}

impl Committer {
    /// Commits until the channel is closed and drained (or the final batch keeps failing).
    fn run(mut self, rx: &Receiver<(u64, StoreOp)>) -> Result<(), StoreError> {
        let mut open = true;
        let mut retry_at: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            // Wait for work, or for a failed batch's retry time.
            match retry_at {
                None => match rx.recv() {
                    Ok(item) => self.take(item),
                    // Closed, and the batch is empty (nothing failed): done.
                    Err(_) => return Ok(()),
                },
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    if open && self.batch.len() < STORE_QUEUE_MAX {
                        match rx.recv_timeout(wait) {
                            Ok(item) => {
                                self.take(item);
                                if Instant::now() < at {
                                    continue;
                                }
                            }
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => open = false,
                        }
                    } else {
                        thread::sleep(wait);
                    }
                }
            }
            // Group commit: everything available joins this batch.
            while open && self.batch.len() < STORE_QUEUE_MAX {
                match rx.try_recv() {
                    Ok(item) => self.take(item),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            match self.store.apply(&self.batch) {
                Ok(()) => {
                    debug!(
                        ops = self.batch.len(),
                        seq = self.last_seq,
                        "seen-index committed"
                    );
                    self.batch.clear();
                    retry_at = None;
                    failures = 0;
                    self.publish();
                }
                Err(e) => {
                    failures += 1;
                    error!(
                        error = %ErrorChain(&e),
                        ops = self.batch.len(),
                        "seen-index commit failed; retrying"
                    );
                    if !open && failures >= STOP_ATTEMPTS {
                        return Err(e);
                    }
                    retry_at = Some(Instant::now() + RETRY_DELAY);
                }
            }
            if !open && self.batch.is_empty() {
                return Ok(());
            }
        }
    }

    fn take(&mut self, (seq, op): (u64, StoreOp)) {
        self.batch.push(op);
        self.last_seq = seq;
    }

    fn publish(&self) {
        self.durable.publish(self.last_seq);
        if let Some(wake) = &self.on_durable {
            let seq = self.last_seq;
            if panic::catch_unwind(AssertUnwindSafe(|| wake(seq))).is_err() {
                error!("the seen-index on_durable callback panicked");
            }
        }
    }
}

/// Displays an error and its chain of causes, `: `-separated, for one-line logs.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

/// Delay before retrying a failed commit.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Attempts at the final commit when stopping, counting the one that failed before.
const STOP_ATTEMPTS: u32 = 3;

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::testutil::TempDir;

    fn record(i: u64) -> SeenRecord {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_be_bytes());
        key[31] = 0xEE;
        SeenRecord {
            key: EventKey(key),
            unix_secs: 1_700_000_000 + i,
        }
    }

    fn sorted(mut records: Vec<SeenRecord>) -> Vec<SeenRecord> {
        records.sort_by_key(|r| r.key);
        records
    }

    fn persist_all(range: std::ops::Range<u64>) -> Vec<StoreOp> {
        range.map(|i| StoreOp::Persist(record(i))).collect()
    }

    #[test]
    fn open_persist_load_round_trip() {
        let tmp = TempDir::new("store-rt");
        let dir = tmp.path().join("a/b");
        let mut store = SeenStore::open(&dir).unwrap();
        assert_eq!(store.path(), dir.join(STORE_FILE_NAME));
        assert!(store.load().unwrap().is_empty());
        store.apply(&persist_all(0..3)).unwrap();
        assert_eq!(
            sorted(store.load().unwrap()),
            vec![record(0), record(1), record(2)]
        );
    }

    #[test]
    fn reopen_after_drop_keeps_records() {
        let tmp = TempDir::new("store-reopen");
        let mut store = SeenStore::open(tmp.path()).unwrap();
        store.apply(&persist_all(0..10)).unwrap();
        drop(store);
        let store = SeenStore::open(tmp.path()).unwrap();
        assert_eq!(
            sorted(store.load().unwrap()),
            (0..10).map(record).collect::<Vec<_>>()
        );
    }

    #[test]
    fn expire_removes_records_at_or_before_the_cut_off() {
        let tmp = TempDir::new("store-expire");
        let mut store = SeenStore::open(tmp.path()).unwrap();
        store.apply(&persist_all(0..10)).unwrap();
        let cut = record(4).unix_secs;
        store
            .apply(&[StoreOp::Expire {
                before_unix_secs: cut,
            }])
            .unwrap();
        assert_eq!(
            sorted(store.load().unwrap()),
            (5..10).map(record).collect::<Vec<_>>()
        );
    }

    #[test]
    fn forget_removes_one_record() {
        let tmp = TempDir::new("store-forget");
        let mut store = SeenStore::open(tmp.path()).unwrap();
        store.apply(&persist_all(0..3)).unwrap();
        store.apply(&[StoreOp::Forget(record(1).key)]).unwrap();
        // Forgetting an absent key is harmless.
        store.apply(&[StoreOp::Forget(record(99).key)]).unwrap();
        assert_eq!(sorted(store.load().unwrap()), vec![record(0), record(2)]);
    }

    #[test]
    fn a_batch_is_applied_in_order() {
        let tmp = TempDir::new("store-order");
        let mut store = SeenStore::open(tmp.path()).unwrap();
        store
            .apply(&[
                StoreOp::Persist(record(1)),
                StoreOp::Forget(record(1).key),
                StoreOp::Forget(record(2).key),
                StoreOp::Persist(record(2)),
            ])
            .unwrap();
        assert_eq!(store.load().unwrap(), vec![record(2)]);
    }

    #[test]
    fn open_errors_name_the_path() {
        let tmp = TempDir::new("store-err");
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = SeenStore::open(&file.join("sub")).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");

        // The file is locked while open: a second open fails and names the file.
        let _first = SeenStore::open(tmp.path()).unwrap();
        let err = SeenStore::open(tmp.path()).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains(STORE_FILE_NAME), "{err}");
    }

    #[test]
    fn open_rejects_a_file_that_is_not_a_database() {
        let tmp = TempDir::new("store-garbage");
        std::fs::write(tmp.path().join(STORE_FILE_NAME), vec![0x5a; 8192]).unwrap();
        let err = SeenStore::open(tmp.path()).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    }

    /// The file's bytes, and a way to write some back.
    fn file_bytes(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(STORE_FILE_NAME)).unwrap()
    }

    #[test]
    fn a_batch_cut_short_by_a_crash_is_discarded_and_overwritten() {
        let tmp = TempDir::new("store-torn");
        let mut store = SeenStore::open(tmp.path()).unwrap();
        store.apply(&persist_all(0..5)).unwrap();
        let tail = store.tail;
        drop(store);
        // A crash during the next commit: its second record made it to the disk, its first
        // only in part, and so did a third one.
        let mut torn = Vec::new();
        for op in persist_all(5..8) {
            log::encode(&op, &mut torn);
        }
        torn[3] ^= 0x40;
        let mut bytes = file_bytes(tmp.path());
        let at = usize::try_from(tail).unwrap();
        bytes[at..at + torn.len()].copy_from_slice(&torn);
        std::fs::write(tmp.path().join(STORE_FILE_NAME), &bytes).unwrap();

        let mut store = SeenStore::open(tmp.path()).unwrap();
        assert_eq!(
            store.tail, tail,
            "the tail is the first record that does not check out"
        );
        assert_eq!(
            sorted(store.load().unwrap()),
            (0..5).map(record).collect::<Vec<_>>()
        );
        // The next commit goes where the torn one was; the records after it never come back.
        store.apply(&persist_all(100..101)).unwrap();
        drop(store);
        let store = SeenStore::open(tmp.path()).unwrap();
        let want: Vec<_> = (0..5).chain(100..101).map(record).collect();
        assert_eq!(sorted(store.load().unwrap()), want);
    }

    #[test]
    fn a_file_whose_creation_was_cut_short_opens_empty() {
        let tmp = TempDir::new("store-blank");
        std::fs::write(tmp.path().join(STORE_FILE_NAME), [0u8; 10]).unwrap();
        let mut store = SeenStore::open(tmp.path()).unwrap();
        assert!(store.load().unwrap().is_empty());
        store.apply(&persist_all(0..2)).unwrap();
        drop(store);
        let store = SeenStore::open(tmp.path()).unwrap();
        assert_eq!(store.load().unwrap().len(), 2);
    }

    #[test]
    fn a_file_of_another_kind_is_refused_and_left_alone() {
        let tmp = TempDir::new("store-foreign");
        let path = tmp.path().join(STORE_FILE_NAME);
        let mut other = log::header().to_vec();
        other[8] = 9; // a future format version
        std::fs::write(&path, &other).unwrap();
        let err = SeenStore::open(tmp.path()).unwrap_err();
        let chain = ErrorChain(&err).to_string();
        assert!(chain.contains("another format version"), "{chain}");
        assert_eq!(std::fs::read(&path).unwrap(), other);
    }

    #[test]
    fn dead_records_are_compacted_away_while_running_and_at_open() {
        let tmp = TempDir::new("store-compact");
        let mut store = SeenStore::open(tmp.path()).unwrap();
        let live = 1_000u64;
        let churn = COMPACT_MIN_RECORDS / 2 + 1;
        // `churn` events seen and forgotten (evicted), `live` kept.
        for start in (0..churn).step_by(4096) {
            let end = (start + 4096).min(churn);
            store.apply(&persist_all(start..end)).unwrap();
            let forget: Vec<_> = (start..end)
                .map(|i| StoreOp::Forget(record(i).key))
                .collect();
            store.apply(&forget).unwrap();
        }
        store.apply(&persist_all(churn..churn + live)).unwrap();
        assert!(
            store.records < churn,
            "compacted while running: {} records",
            store.records
        );
        let want: Vec<_> = (churn..churn + live).map(record).collect();
        assert_eq!(sorted(store.load().unwrap()), want);
        let len = file_bytes(tmp.path()).len() as u64;
        assert!(len <= log::HEADER_LEN + 2 * GROW_BYTES, "{len} bytes");
        drop(store);
        assert!(!tmp.path().join(COMPACT_FILE_NAME).exists());

        // At open: a file that is mostly dead records (expired here) is rewritten.
        let mut store = SeenStore::open(tmp.path()).unwrap();
        store.apply(&persist_all(0..COMPACT_MIN_RECORDS)).unwrap();
        let cut = record(COMPACT_MIN_RECORDS).unix_secs;
        store
            .apply(&[StoreOp::Expire {
                before_unix_secs: cut,
            }])
            .unwrap();
        store.apply(&persist_all(1 << 20..(1 << 20) + 10)).unwrap();
        let before = store.records;
        assert!(before > COMPACT_MIN_RECORDS, "{before}");
        drop(store);
        let store = SeenStore::open(tmp.path()).unwrap();
        assert_eq!(store.records, 10, "rewritten at open");
        let want: Vec<_> = (1 << 20..(1 << 20) + 10).map(record).collect();
        assert_eq!(sorted(store.load().unwrap()), want);
    }

    #[test]
    fn a_compaction_left_behind_is_removed_and_the_redb_file_of_old_versions_ignored() {
        let tmp = TempDir::new("store-leftovers");
        std::fs::write(tmp.path().join(COMPACT_FILE_NAME), b"half").unwrap();
        std::fs::write(tmp.path().join(LEGACY_FILE_NAME), b"redb").unwrap();
        let store = SeenStore::open(tmp.path()).unwrap();
        assert!(!tmp.path().join(COMPACT_FILE_NAME).exists());
        assert!(store.load().unwrap().is_empty());
        assert_eq!(
            std::fs::read(tmp.path().join(LEGACY_FILE_NAME)).unwrap(),
            b"redb"
        );
    }

    /// One operation of the property test, on a small key space so that keys recur.
    fn op_strategy() -> impl proptest::strategy::Strategy<Value = StoreOp> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u64..12, 0u64..50).prop_map(|(k, t)| StoreOp::Persist(SeenRecord {
                key: record(k).key,
                unix_secs: t,
            })),
            2 => (0u64..12).prop_map(|k| StoreOp::Forget(record(k).key)),
            1 => (0u64..50).prop_map(|t| StoreOp::Expire { before_unix_secs: t }),
        ]
    }

    /// What the store should hold after `ops`: a reference written apart from `log::Replay`,
    /// so that a mistake there cannot hide in the expected values too.
    fn model(ops: &[StoreOp]) -> Vec<SeenRecord> {
        let mut table = std::collections::BTreeMap::new();
        for op in ops {
            match *op {
                StoreOp::Persist(r) => {
                    table.insert(r.key, r.unix_secs);
                }
                StoreOp::Forget(key) => {
                    table.remove(&key);
                }
                StoreOp::Expire { before_unix_secs } => {
                    table.retain(|_, secs| *secs > before_unix_secs);
                }
                _ => unreachable!("the strategy makes no other operation"),
            }
        }
        table
            .into_iter()
            .map(|(key, unix_secs)| SeenRecord { key, unix_secs })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(96))]

        /// Any sequence of batches, with reopens and compactions (the threshold made small)
        /// between them, loads as the operations add up to; a last batch torn at any byte loads
        /// as the batches before it plus the records of the last one before the tear, and the
        /// torn part never comes back after more commits.
        #[test]
        fn the_log_loads_what_the_operations_add_up_to_even_after_a_torn_batch(
            batches in proptest::collection::vec(
                (proptest::collection::vec(op_strategy(), 1..16), proptest::bool::ANY),
                1..10,
            ),
            compact_min in 1u64..24,
            tear in 0.0f64..1.0,
            zero_the_rest in proptest::bool::ANY,
        ) {
            let tmp = TempDir::new("store-prop");
            let mut store = SeenStore::open_with(tmp.path(), compact_min).unwrap();
            let mut done: Vec<StoreOp> = Vec::new();
            let path = tmp.path().join(STORE_FILE_NAME);
            let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
            let (mut before_last, mut last_start, mut last_end, mut compacted) = (0, 0, 0, true);
            for (batch, reopen) in &batches {
                before_last = done.len();
                last_start = store.tail;
                let file = inode();
                store.apply(batch).unwrap();
                last_end = store.tail;
                done.extend_from_slice(batch);
                proptest::prop_assert_eq!(store.load().unwrap(), model(&done));
                if *reopen {
                    drop(store);
                    store = SeenStore::open_with(tmp.path(), compact_min).unwrap();
                    proptest::prop_assert_eq!(store.load().unwrap(), model(&done));
                }
                // A compaction (in the commit or at the reopen) writes a new file.
                compacted = inode() != file;
            }
            drop(store);
            if compacted {
                // The last batch's records are not where it wrote them: nothing to tear.
                return Ok(());
            }
            // Tear the last batch at one byte: from there on zeros, or that byte damaged.
            let span = last_end - last_start;
            let cut = last_start + ((span as f64 * tear) as u64).min(span - 1);
            let mut bytes = std::fs::read(&path).unwrap();
            let (c, e) = (usize::try_from(cut).unwrap(), usize::try_from(last_end).unwrap());
            if zero_the_rest {
                bytes[c..e].fill(0);
            } else {
                bytes[c] ^= 0x5a;
            }
            std::fs::write(&path, &bytes).unwrap();
            // The records of the last batch still intact before the tear (zeroing can leave a
            // record whole when its own bytes after the cut were zeros already).
            let last = &done[before_last..];
            let intact = bytes[usize::try_from(last_start).unwrap()..e]
                .chunks_exact(RECORD_LEN)
                .zip(last)
                .take_while(|(rec, op)| log::decode((*rec).try_into().unwrap()) == Some(**op))
                .count();
            proptest::prop_assert!(intact <= usize::try_from((cut - last_start) / RECORD_LEN as u64).unwrap() + 1);
            let kept = before_last + intact;
            let mut store = SeenStore::open_with(tmp.path(), compact_min).unwrap();
            proptest::prop_assert_eq!(store.load().unwrap(), model(&done[..kept]));
            // More commits go where the tear was; nothing of the torn part comes back.
            let more = [StoreOp::Persist(record(99))];
            store.apply(&more).unwrap();
            drop(store);
            let store = SeenStore::open_with(tmp.path(), compact_min).unwrap();
            let mut want = done[..kept].to_vec();
            want.extend_from_slice(&more);
            proptest::prop_assert_eq!(store.load().unwrap(), model(&want));
        }
    }

    #[test]
    fn committer_takes_everything_queued_as_one_batch() {
        let tmp = TempDir::new("store-group");
        let store = SeenStore::open(tmp.path()).unwrap();
        let (tx, rx) = mpsc::channel();
        for (seq, op) in (1..=1000).zip(persist_all(0..1000)) {
            tx.send((seq, op)).unwrap();
        }
        drop(tx);
        let commits = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&commits);
        let durable = Arc::new(Durable::default());
        let committer = Committer {
            store,
            batch: Vec::new(),
            last_seq: 0,
            durable: Arc::clone(&durable),
            on_durable: Some(Box::new(move |seq| seen.lock().unwrap().push(seq))),
        };
        committer.run(&rx).unwrap();
        assert_eq!(
            *commits.lock().unwrap(),
            vec![1000],
            "one commit for the whole queue"
        );
        assert_eq!(durable.load(), 1000);
        let store = SeenStore::open(tmp.path()).unwrap();
        assert_eq!(store.load().unwrap().len(), 1000);
    }

    #[test]
    fn worker_persists_everything_sent_before_flush_and_stop() {
        let tmp = TempDir::new("store-worker");
        let store = SeenStore::open(tmp.path()).unwrap();
        let last = Arc::new(AtomicU64::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let (l, c) = (Arc::clone(&last), Arc::clone(&commits));
        let on_durable: OnDurable = Box::new(move |seq| {
            l.store(seq, Ordering::SeqCst);
            c.fetch_add(1, Ordering::SeqCst);
        });
        let mut worker = StoreWorker::spawn(store, Some(on_durable)).unwrap();
        for (i, op) in persist_all(0..1000).into_iter().enumerate() {
            assert_eq!(worker.send(op).unwrap(), i as u64 + 1);
        }
        assert_eq!(worker.queued_seq(), 1000);
        worker.flush_and_stop().unwrap();
        assert_eq!(last.load(Ordering::SeqCst), 1000);
        assert!(commits.load(Ordering::SeqCst) >= 1);
        let store = SeenStore::open(tmp.path()).unwrap();
        assert_eq!(
            sorted(store.load().unwrap()),
            (0..1000).map(record).collect::<Vec<_>>()
        );
    }

    #[test]
    fn durable_seq_and_callback_follow_commits() {
        let tmp = TempDir::new("store-durable");
        let store = SeenStore::open(tmp.path()).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut worker = StoreWorker::spawn(
            store,
            Some(Box::new(move |seq| {
                let _ = tx.send(seq);
            })),
        )
        .unwrap();
        assert_eq!(worker.durable_seq(), 0);
        let seq = worker.send(StoreOp::Persist(record(1))).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), seq);
        assert_eq!(worker.durable_seq(), seq);
        worker.flush_and_stop().unwrap();
    }

    /// Counts its wake-ups and hands them to a channel.
    struct CountingWake(Mutex<mpsc::Sender<()>>);

    impl std::task::Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let _ = self.0.lock().unwrap().send(());
        }
    }

    #[test]
    fn the_waker_hears_of_every_commit_and_wait_durable_returns_once_committed() {
        let tmp = TempDir::new("store-waker");
        let store = SeenStore::open(tmp.path()).unwrap();
        let mut worker = StoreWorker::spawn(store, None).unwrap();
        let (tx, rx) = mpsc::channel();
        worker.set_waker(Waker::from(Arc::new(CountingWake(Mutex::new(tx)))));
        assert!(!worker.is_stopped());
        let seq = worker.send(StoreOp::Persist(record(7))).unwrap();
        assert!(worker.wait_durable(seq, Duration::from_secs(30)));
        assert!(worker.durable_seq() >= seq);
        rx.recv_timeout(Duration::from_secs(30))
            .expect("woken after the commit");
        // Nothing more queued: waiting for a later operation times out.
        assert!(!worker.wait_durable(seq + 1, Duration::from_millis(50)));
        worker.flush_and_stop().unwrap();
    }

    #[test]
    fn send_reports_full_instead_of_blocking() {
        let tmp = TempDir::new("store-full");
        let store = SeenStore::open(tmp.path()).unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        // The first commit's callback holds the worker until released.
        let on_durable: OnDurable = Box::new(move |seq| {
            if seq == 1 {
                started_tx.send(()).unwrap();
                let _ = release_rx.lock().unwrap().recv();
            }
        });
        let mut worker = StoreWorker::spawn(store, Some(on_durable)).unwrap();
        worker.send(StoreOp::Persist(record(0))).unwrap();
        started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        for op in persist_all(1..STORE_QUEUE_MAX as u64 + 1) {
            worker.send(op).unwrap();
        }
        let extra = StoreOp::Persist(record(1 << 40));
        assert!(matches!(worker.send(extra), Err(SendError::Full)));
        assert_eq!(worker.queued_seq(), STORE_QUEUE_MAX as u64 + 1);
        release_tx.send(()).unwrap();
        worker.flush_and_stop().unwrap();
        let store = SeenStore::open(tmp.path()).unwrap();
        assert_eq!(store.load().unwrap().len(), STORE_QUEUE_MAX + 1);
    }

    const CRASH_ENV: &str = "VTP_HOST_CRASH_TEST_DIR";
    const CRASH_DURABLE: u64 = 500;
    const CRASH_IN_FLIGHT: u64 = 200;

    /// Re-runs this test in a child process that aborts right after its records are durable,
    /// then checks that they all survived.
    #[test]
    fn records_reported_durable_survive_an_abort() {
        if let Some(dir) = std::env::var_os(CRASH_ENV) {
            crash_child(Path::new(&dir));
        }
        let tmp = TempDir::new("store-crash");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::tests::records_reported_durable_survive_an_abort",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CRASH_ENV, tmp.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            // SIGABRT: the child really got to the abort.
            assert_eq!(
                out.status.signal(),
                Some(6),
                "child: {:?}\n{stderr}",
                out.status
            );
        }
        assert!(!out.status.success(), "{stderr}");
        let store = SeenStore::open(tmp.path()).unwrap();
        let loaded = sorted(store.load().unwrap());
        assert!(
            loaded.len() as u64 >= CRASH_DURABLE,
            "only {} records",
            loaded.len()
        );
        assert!(loaded.len() as u64 <= CRASH_DURABLE + CRASH_IN_FLIGHT);
        let durable: Vec<_> = (0..CRASH_DURABLE).map(record).collect();
        assert_eq!(loaded[..durable.len()], durable[..]);
    }

    fn crash_child(dir: &Path) -> ! {
        let store = SeenStore::open(dir).expect("child: open");
        let (tx, rx) = mpsc::channel();
        let on_durable: OnDurable = Box::new(move |seq| {
            let _ = tx.send(seq);
        });
        let mut worker = StoreWorker::spawn(store, Some(on_durable)).expect("child: spawn");
        let mut last = 0;
        for op in persist_all(0..CRASH_DURABLE) {
            last = worker.send(op).expect("child: send");
        }
        while worker.durable_seq() < last {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("child: commit");
        }
        // More records on their way to the disk when the process dies.
        for op in persist_all(CRASH_DURABLE..CRASH_DURABLE + CRASH_IN_FLIGHT) {
            worker.send(op).expect("child: send");
        }
        std::process::abort();
    }
}
