//! The durable seen-index: which events this node has processed, kept across restarts.
//!
//! # Theory of operation
//!
//! The core decides what is new ([`vtp_core::seen`]); this module only remembers. A
//! [`SeenStore`] is one [redb] file, `<dir>/vtp-seen.redb`, with one table, `seen`, mapping an
//! [`EventKey`] (32 bytes) to the UNIX second it was first seen. At start-up the runtime
//! [`load`](SeenStore::load)s every record into the node (`Node::restore_seen`); while running it
//! hands each store operation ([`StoreOp`], from the core's `Persist`, `Forget` and `Expire`
//! actions, see [`Effects::store`](vtp_core::driver::Effects::store)) to a [`StoreWorker`], a
//! thread that owns the store and commits in groups.
//!
//! # Group commit and durability
//!
//! [`StoreWorker::send`] never blocks the event loop: it puts the operation on a bounded queue
//! ([`STORE_QUEUE_MAX`]) and returns its sequence number. The worker takes everything queued at
//! that moment as one batch and applies it in **one** write transaction with
//! [`Durability::Immediate`] (one fsync), so under load many records share one disk flush. After
//! each commit it publishes the last sequence number of the batch, readable with
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
//! # Expiry
//!
//! [`StoreOp::Expire`] scans the whole table and deletes every record seen at or before the
//! cut-off. The node expires every 6 hours and keeps at most its configured number of entries,
//! so the scan is short and infrequent; a second table ordered by time would make every
//! insert pay for a rare delete.
//!
//! # Implementation note
//!
//! The database is opened with an integrity check (every page checksum is verified), so a file
//! damaged outside redb is reported as an error instead of being trusted, and with a 32 MiB page
//! cache (redb's default is 1 GiB), which is ample for this table. redb locks the file: a second
//! process opening the same directory gets [`StoreError::Open`].

use std::fmt;
use std::fs;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::Waker;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableError,
};
use tracing::{debug, error};

pub use vtp_core::driver::StoreOp;
use vtp_core::{EventKey, SeenRecord};

/// Capacity of the [`StoreWorker`] queue, and the largest batch one commit applies.
pub const STORE_QUEUE_MAX: usize = 65_536;

/// Name of the database file inside the store directory.
pub const STORE_FILE_NAME: &str = "vtp-seen.redb";

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
    /// The database file could not be opened or initialised.
    #[error(
        "cannot open the seen-index store `{}`: is another vtp process using it, or is the file \
         damaged (move it aside to start with an empty index)?",
        path.display()
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: redb::Error,
    },
    /// Reading the records failed.
    #[error("cannot read the seen-index store `{}`", path.display())]
    Read {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: redb::Error,
    },
    /// A write transaction failed; nothing of the batch was applied.
    #[error(
        "cannot commit to the seen-index store `{}`: is the disk full or read-only?",
        path.display()
    )]
    Write {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: redb::Error,
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

/// The durable seen-index: one redb database file.
pub struct SeenStore {
    db: Database,
    path: PathBuf,
}

impl SeenStore {
    /// Opens or creates `<dir>/vtp-seen.redb`, creating `dir` if needed.
    ///
    /// # Errors
    ///
    /// [`StoreError::CreateDir`] if the directory cannot be created, [`StoreError::Open`] if the
    /// file cannot be opened (permissions, damage, or another process holding it).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
        let path = dir.join(STORE_FILE_NAME);
        let open_err = |source: redb::Error| StoreError::Open {
            path: path.clone(),
            source,
        };
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| open_err(e.into()))?;
        // Create the table up front so readers never meet a missing table.
        let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
        txn.open_table(SEEN).map_err(|e| open_err(e.into()))?;
        txn.commit().map_err(|e| open_err(e.into()))?;
        Ok(Self { db, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored record, in key order (for `Node::restore_seen`).
    ///
    /// # Errors
    ///
    /// [`StoreError::Read`] if the file cannot be read.
    pub fn load(&self) -> Result<Vec<SeenRecord>, StoreError> {
        self.read().map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })
    }

    /// Applies a batch, in order, in one durable write transaction: all of it or none of it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Write`] if the transaction fails; nothing of the batch is then applied.
    pub fn apply(&mut self, batch: &[StoreOp]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(batch).map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn read(&self) -> Result<Vec<SeenRecord>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(SEEN) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut records = Vec::with_capacity(usize::try_from(table.len()?).unwrap_or(0));
        for entry in table.iter()? {
            let (key, secs) = entry?;
            records.push(SeenRecord {
                key: EventKey(key.value()),
                unix_secs: secs.value(),
            });
        }
        Ok(records)
    }

    fn write(&mut self, batch: &[StoreOp]) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(SEEN)?;
            for op in batch {
                match *op {
                    StoreOp::Persist(record) => {
                        table.insert(record.key.0, record.unix_secs)?;
                    }
                    StoreOp::Forget(key) => {
                        table.remove(key.0)?;
                    }
                    StoreOp::Expire { before_unix_secs } => {
                        table.retain(|_, secs| secs > before_unix_secs)?;
                    }
                    // A kind of operation added to the core after this crate was written.
                    _ => debug!(?op, "seen-index: unknown store operation ignored"),
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl fmt::Debug for SeenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeenStore")
            .field("path", &self.path)
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

const SEEN: TableDefinition<'static, [u8; 32], u64> = TableDefinition::new("seen");

/// Page cache of the database: ample for a table of 40-byte records.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

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
