//! The durable seen-index: which events this node has processed, kept across restarts.
//!
//! # Theory of operation
//!
//! The core decides what is new ([`vtp_core::seen`]); this module only remembers. A
//! [`SeenStore`] is one file, `<dir>/vtp-seen.log`: a log of the core's store operations
//! (persist an [`EventKey`] with the UNIX second it was first seen, forget a key, expire
//! everything seen at or before a second), each a 48-byte record with a CRC-32. At start-up
//! [`open_for`] opens it, [`load`](SeenStore::load)s the records the log adds up to into the
//! node ([`Node::restore_seen`]) and starts a [`StoreWorker`], a thread that owns the store and
//! commits in groups; while running the runtime hands each store operation ([`StoreOp`], from
//! the core's `Persist`, `Forget` and `Expire` actions, see
//! [`Effects::store`](vtp_core::driver::Effects::store)) to that worker.
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
//! [`StoreWorker::durable_seq`], wakes the [`Waker`](std::task::Waker) given to
//! [`StoreWorker::set_waker`] (the runtime's loop) and anyone blocked in
//! [`StoreWorker::wait_durable`], and calls the optional callback given to
//! [`StoreWorker::spawn`]. Every operation with a sequence number at or below `durable_seq()`
//! survives a crash (process abort or power loss), and after a process abort in the same boot
//! of the machine no operation above it counts (a commit counts at a restart only once its
//! fdatasync returned).
//!
//! The node holds an event's receipt and forwards until its record is durable (the core's
//! `Durability::BeforeReply`); [`HostEffects`](crate::effects::HostEffects) maps the node's
//! persists to these sequence numbers.
//!
//! A failed commit is logged (`tracing::error`) and the batch is kept and retried, together
//! with whatever arrived meanwhile, no sooner than one second later. From a failed commit until
//! the next one succeeds [`StoreWorker::is_healthy`] is false (the waker is woken on each
//! change): the node then naks authors' new events instead of holding their receipts. While the disk keeps
//! failing the worker stops taking operations once its batch holds [`STORE_QUEUE_MAX`], so
//! memory stays bounded and [`StoreWorker::send`] reports [`SendError::Full`] to the caller.
//!
//! # Crashes, damage and size
//!
//! The last record of each commit carries a batch-end flag, and once the commit's fdatasync
//! returns (before it is published durable) a synced flag. Loading keeps every record that
//! checks out in every batch but the last, skipping (with a warning naming how many and at
//! which offsets) those that do not: that is damage, since those batches were durable. The
//! last batch, if any of its records does not check out or its end record is missing, is the
//! commit a crash cut short (none of it was reported durable): it is dropped and zeroed before
//! new records go there, with a warning. So is a last batch written in the current boot of the
//! machine without the synced flag: the process was killed during its fdatasync, and the page
//! cache, which outlives the process, kept it whole (`store/log.rs` documents the boot records
//! and what is left). A file that is not a seen-index file is refused, not overwritten.
//!
//! The log's length is also kept in `<dir>/vtp-seen.len` ([`LEN_FILE_NAME`]), rewritten after
//! each growth and compaction and never ahead of the log: a log shorter than that (truncated,
//! emptied, replaced) is refused at start with [`StoreError::Truncated`], which names both
//! lengths; deleting the length file is the operator's way to start with what is left.
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
//! [`StoreError::Locked`].
//!
//! # The directory
//!
//! The directory is created with mode 0700 if missing, and refused ([`StoreError::UnsafeDir`])
//! unless it belongs to the user running vtp and nobody else can write to it: otherwise another
//! local user could plant a symbolic link for the store to write through, or hold the lock.
//! Every file in it is opened relative to a handle on the directory (`openat`) with
//! `O_NOFOLLOW`, so a symbolic link there is refused, not followed; a compaction's new file is
//! created with `O_EXCL` after any stale one (or a link) is removed. [`default_dir`] is the
//! directory `vtp broker` uses when given none: a per-user one, never a shared temp directory.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{debug, error, info, warn};

pub use vtp_core::driver::StoreOp;
use vtp_core::{EventKey, Node, SeenRecord};

/// Capacity of the [`StoreWorker`] queue, and the largest batch one commit applies.
pub const STORE_QUEUE_MAX: usize = 65_536;

/// Name of the seen-index file inside the store directory.
pub const STORE_FILE_NAME: &str = "vtp-seen.log";

/// The log is rewritten with only its live records once it holds twice as many records as were
/// live at its last rewrite plus this many (3 MiB of records).
pub const COMPACT_MIN_RECORDS: u64 = 65_536;

/// A compaction's new file, renamed over [`STORE_FILE_NAME`] once complete.
const COMPACT_FILE_NAME: &str = "vtp-seen.log.compact";

/// The file beside the log that holds its last known length (see [`StoreError::Truncated`]).
pub const LEN_FILE_NAME: &str = "vtp-seen.len";

/// The file of vtp versions that kept the seen-index in redb.
const LEGACY_FILE_NAME: &str = "vtp-seen.redb";

/// How far ahead of the last record the file is filled with zeros.
const GROW_BYTES: u64 = 1024 * 1024;

mod dir;
mod log;
mod probe;
pub mod spool;
mod worker;
pub(crate) use dir::create_checked;
use dir::{How, exists_in, open_in, remove_in, rename_in};
pub use dir::{default_dir, default_dir_from_env};
use log::RECORD_LEN;
pub use probe::{COMMIT_BUCKETS, CommitSnapshot, StoreProbe};
pub use worker::{OnDurable, StoreWorker};

/// Starts a node's durable seen-index: opens (or creates) the store in `dir`, restores its
/// records into `node` ([`Node::restore_seen`]) and starts the [`StoreWorker`] that persists the
/// node's store operations from then on.
///
/// This is the whole start-up sequence of the store, for the `vtp` binary and for embedders
/// alike. Call it once, after building the node (with the same `now`) and before a runtime
/// serves it, then hand [`Opened::worker`] to
/// [`HostEffects::with_store`](crate::effects::HostEffects::with_store), which persists, reports
/// durability and wakes the runtime's loop after each commit. Records older than the node's
/// `seen_retention` are not restored. How many entries were restored is logged at INFO and
/// returned in [`Opened::restored`]. No handler spool is opened: see [`open_with_spool`].
///
/// The steps it takes, [`SeenStore::open`], [`SeenStore::load`] and [`StoreWorker::spawn`],
/// stay public for a program that wants an [`OnDurable`] callback or a store without a node.
///
/// # Errors
///
/// Every error names the directory or file and says what to do; `node` is left as it was.
/// [`StoreError::CreateDir`] if `dir` cannot be created (it names a file, or a parent is not
/// writable), [`StoreError::UnsafeDir`] if another user owns it or could write to it,
/// [`StoreError::Locked`] if another process holds the seen-index file,
/// [`StoreError::Open`] if it cannot be opened or repaired (the OS error says why) or is not a
/// seen-index file, [`StoreError::Truncated`] if it is shorter than it was
/// when last written, [`StoreError::Read`] if its records cannot be read, and
/// [`StoreError::Spawn`] if the worker thread cannot be started.
pub fn open_for(node: &mut Node, dir: &Path, now: Instant) -> Result<Opened, StoreError> {
    open_with_spool(node, dir, now, 0)
}

/// [`open_for`] with a handler spool ([`spool`]) whose records take at most `spool_bytes`
/// (0: no spool; a warning is logged if spool files are there, since their events will not be
/// handled). Give the worker to [`HostEffects`](crate::effects::HostEffects) together with the
/// handlers, and configure the node with
/// [`DeliveryTiming::BeforeRecord`](vtp_core::config::DeliveryTiming::BeforeRecord), so that a
/// delivery is spooled in the commit of its event's record.
///
/// # Errors
///
/// As [`open_for`]; [`StoreError::Open`] also for a spool segment that cannot be read.
pub fn open_with_spool(
    node: &mut Node,
    dir: &Path,
    now: Instant,
    spool_bytes: u64,
) -> Result<Opened, StoreError> {
    if self::dir::is_temporary(dir) {
        warn!(
            "the event database {} is in a temporary directory, which the system may empty \
             (at reboot, or by age): duplicates and spooled handler work would then be \
             forgotten; give --eventdb a lasting directory (systemd: StateDirectory=vtp)",
            dir.display()
        );
    }
    let mut store = SeenStore::open(dir)?;
    let records = store.load()?;
    if spool_bytes > 0 {
        store.open_spool(spool_bytes)?;
    } else if spool::any_segment(&store.dir) {
        warn!(
            "handler spool files (vtp-spool.*) are in {} but the spool is off (no handler, or \
             --handler-spool-bytes 0): the events in them are not handled; turn the spool on \
             to handle them, or delete the files",
            dir.display()
        );
    }
    // Started before the node is touched, so that on error the node is as it was.
    let worker = StoreWorker::spawn(store, None)?;
    let restored = node.restore_seen(records, now);
    info!(
        "seen-index: {restored} entries restored from {}",
        dir.display()
    );
    Ok(Opened { worker, restored })
}

/// What [`open_for`] started.
#[derive(Debug)]
#[non_exhaustive]
pub struct Opened {
    /// The worker owning the store: give it to
    /// [`HostEffects::with_store`](crate::effects::HostEffects::with_store) (or call
    /// [`StoreWorker::send`] with each store operation), and at shutdown stop it with
    /// [`StoreWorker::flush_and_stop`].
    pub worker: StoreWorker,
    /// Seen-index entries restored into the node.
    pub restored: usize,
}

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
    /// The store directory belongs to another user or others can write to it.
    #[error(
        "refusing to use the seen-index directory `{}`: {why}, so another user could plant \
         files or symbolic links in it; use a directory only you can write to (`chmod go-w` \
         it, or give another with --eventdb DIR)",
        dir.display()
    )]
    UnsafeDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// No directory was given and the environment names none ([`default_dir`]).
    #[error(
        "cannot choose a directory for the seen-index: none of STATE_DIRECTORY, XDG_STATE_HOME \
         or HOME is set to an absolute path; give one with --eventdb DIR"
    )]
    NoDefaultDir,
    /// The seen-index file is locked by another process.
    #[error(
        "cannot open the seen-index store `{}`: another vtp process is using it (give each \
         broker its own --eventdb DIR)",
        path.display()
    )]
    Locked {
        /// The seen-index file.
        path: PathBuf,
    },
    /// The seen-index file could not be opened, created or repaired (the OS error says why:
    /// no space, read-only file system, permission), or is not a seen-index file.
    #[error(
        "cannot open the seen-index store `{}`: {error}; fix the cause (free space, \
         permissions, a read-only mount), or move the file aside if it is not a vtp seen-index \
         file",
        path.display()
    )]
    Open {
        /// The seen-index file.
        path: PathBuf,
        /// The cause, shown in the message.
        error: io::Error,
    },
    /// The log is shorter than it was when last written: it was truncated, emptied or replaced.
    #[error(
        "refusing to start: the seen-index log `{}` is {len} bytes but was {known} bytes when \
         last written (recorded in `{}`), so it was truncated or replaced and events it held \
         could be forwarded again; restore it from a backup, or delete `{}` to start with what \
         is left",
        path.display(),
        len_path.display(),
        len_path.display()
    )]
    Truncated {
        /// The seen-index file.
        path: PathBuf,
        /// Its length now.
        len: u64,
        /// Its length when last written.
        known: u64,
        /// The file that recorded `known` ([`LEN_FILE_NAME`]).
        len_path: PathBuf,
    },
    /// Reading the records failed.
    #[error(
        "cannot read the seen-index store `{}`: the disk may be failing (see the system log); \
         move the file aside to start with an empty index",
        path.display()
    )]
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
    /// The directory holding it: every file of the store is opened relative to this.
    dir: File,
    path: PathBuf,
    /// Offset of the next record.
    tail: u64,
    /// Length of the file: written bytes, zeros past `tail`.
    len: u64,
    /// The length [`LEN_FILE_NAME`] holds (0 when it is missing): never more than `len`.
    known_len: u64,
    /// Records in the file.
    records: u64,
    /// Live records when the file was last written whole (at creation, open or compaction).
    live_at_compaction: u64,
    /// Dead records tolerated beyond twice `live_at_compaction` ([`COMPACT_MIN_RECORDS`]).
    compact_min: u64,
    /// Encoding buffer, reused.
    buf: Vec<u8>,
    /// The handler spool, once [`open_spool`](Self::open_spool)ed; the worker takes it.
    spool: Option<spool::Spool>,
    /// The machine's boot id (`None` where it cannot be read): see `store/log.rs`.
    boot: Option<log::BootId>,
    /// Test seam: called before each write to the log with its range; an error fails it.
    #[cfg(test)]
    fail_write: Option<FailWrite>,
}

/// A failure injected into writes to the log (tests).
#[cfg(test)]
type FailWrite = Box<dyn FnMut(u64, u64) -> io::Result<()> + Send>;

impl SeenStore {
    /// Opens or creates `<dir>/vtp-seen.log`, creating `dir` if needed, and locks it.
    ///
    /// A file left by a crash is repaired: a last batch whose commit was cut short (torn, or
    /// its fdatasync never returned) is zeroed, with a warning when that was more than zeros;
    /// damaged records before it are skipped with a warning (see the module docs). A file with
    /// more dead records than live ones, or of format version 1 or 2, is rewritten. A boot
    /// record is written when the file's last one names another boot of the machine.
    ///
    /// # Errors
    ///
    /// [`StoreError::CreateDir`] if the directory cannot be created, [`StoreError::UnsafeDir`]
    /// if another user owns it or could write to it, [`StoreError::Locked`] if
    /// another process holds the file, [`StoreError::Open`] if it cannot be opened or repaired
    /// or is not a seen-index file, and
    /// [`StoreError::Truncated`] if it is shorter than it was when last written.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, COMPACT_MIN_RECORDS)
    }

    /// [`open`](Self::open) with another compaction threshold (tests make it small).
    fn open_with(dir: &Path, compact_min: u64) -> Result<Self, StoreError> {
        Self::open_in_boot(dir, compact_min, log::BootId::current())
    }

    /// [`open_with`](Self::open_with) in the machine's boot `boot` (tests make up a reboot).
    fn open_in_boot(
        dir: &Path,
        compact_min: u64,
        boot: Option<log::BootId>,
    ) -> Result<Self, StoreError> {
        let dir_handle = dir::open_store_dir(dir)?;
        let path = dir.join(STORE_FILE_NAME);
        let open_err = |error: io::Error| StoreError::Open {
            path: path.clone(),
            error,
        };
        let file = open_in(&dir_handle, STORE_FILE_NAME, How::ReadWrite).map_err(open_err)?;
        lock(&file).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => StoreError::Locked { path: path.clone() },
            _ => open_err(e),
        })?;
        // Only the lock holder tidies up: a compaction cut short leaves its new file behind.
        let _ = remove_in(&dir_handle, COMPACT_FILE_NAME);
        if exists_in(&dir_handle, LEGACY_FILE_NAME) {
            let legacy = dir.join(LEGACY_FILE_NAME);
            warn!(
                "{} was written by an earlier vtp (redb) and is not read: the seen-index starts \
                 from {}; delete the old file",
                legacy.display(),
                path.display()
            );
        }
        let len = file.metadata().map_err(open_err)?.len();
        let len_path = dir.join(LEN_FILE_NAME);
        let known_len = read_len(&dir_handle, &len_path).map_err(open_err)?;
        if let Some(known) = known_len
            && len < known
        {
            return Err(StoreError::Truncated {
                path,
                len,
                known,
                len_path,
            });
        }
        let mut store = Self {
            file,
            dir: dir_handle,
            path: path.clone(),
            tail: log::HEADER_LEN,
            len,
            known_len: known_len.unwrap_or(0),
            records: 0,
            live_at_compaction: 0,
            compact_min,
            buf: Vec::new(),
            spool: None,
            boot,
            #[cfg(test)]
            fail_write: None,
        };
        store.recover().map_err(open_err)?;
        Ok(store)
    }

    /// The seen-index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the handler spool in the store's directory (see [`spool`]), its records bounded
    /// to `cap` bytes; the [`StoreWorker`] this store is given to runs it. Logs at INFO how
    /// many events from before the restart are not handled yet, and at WARN any damage.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] naming the file at fault: a segment that cannot be read or
    /// repaired (the OS error says why), or a file named like a segment that is not one.
    pub fn open_spool(&mut self, cap: u64) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let spool = spool::Spool::open(&self.dir, dir, cap)
            .map_err(|(path, error)| StoreError::Open { path, error })?;
        self.spool = Some(spool);
        Ok(())
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
        log::mark_batch_end(&mut self.buf);
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
            // Zeros written ahead, so commits overwrite allocated blocks in place. On a disk
            // with less than that free, the batch alone extends the file: a commit succeeds as
            // soon as its own bytes fit.
            let new_len = end + GROW_BYTES;
            match self.fault(self.len, new_len) {
                Ok(()) => match write_zeros(&self.file, self.len, new_len) {
                    Ok(()) => self.len = new_len,
                    Err(e) => {
                        debug!(error = %e, "seen-index: cannot preallocate; writing the batch alone")
                    }
                },
                Err(e) => {
                    debug!(error = %e, "seen-index: cannot preallocate; writing the batch alone")
                }
            }
        }
        self.fault(self.tail, end)?;
        self.file.write_all_at(&self.buf, self.tail)?;
        self.file.sync_data()?;
        // The batch counts at a restart in this boot only with this flag: a process killed
        // during the fdatasync leaves the batch in the page cache, never reported durable.
        // No fdatasync of its own: the page cache keeps it through a process kill, and the next
        // commit's fdatasync takes it to the disk (see `log`).
        log::mark_synced(&mut self.buf);
        let end_record = end - RECORD_LEN as u64;
        self.fault(end_record, end)?;
        self.file
            .write_all_at(&self.buf[self.buf.len() - RECORD_LEN..], end_record)?;
        self.len = self.len.max(end);
        if self.len > self.known_len {
            // After the fdatasync: the length file never runs ahead of the log.
            if let Err(e) = self.save_len(self.len) {
                warn!(
                    error = %e,
                    "seen-index: cannot record the log's length; a truncation may go unnoticed"
                );
            }
        }
        Ok(())
    }

    /// The test seam for a write of `from..to` of the log: the injected failure, if any.
    #[cfg(test)]
    fn fault(&mut self, from: u64, to: u64) -> io::Result<()> {
        self.fail_write.as_mut().map_or(Ok(()), |f| f(from, to))
    }

    #[cfg(not(test))]
    #[expect(clippy::unused_self, reason = "the test build injects faults here")]
    fn fault(&mut self, _from: u64, _to: u64) -> io::Result<()> {
        Ok(())
    }

    /// Records `len` in [`LEN_FILE_NAME`] and makes it durable.
    fn save_len(&mut self, len: u64) -> io::Result<()> {
        let (f, new) = match open_in(&self.dir, LEN_FILE_NAME, How::CreateNew) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                (open_in(&self.dir, LEN_FILE_NAME, How::Write)?, false)
            }
            Err(e) => return Err(e),
        };
        f.write_all_at(&log::len_record(len), 0)?;
        f.sync_data()?;
        if new {
            self.dir.sync_all()?;
        }
        self.known_len = len;
        Ok(())
    }

    /// Reads the file: checks the header, finds the tail, zeroes what follows it, compacts.
    fn recover(&mut self) -> io::Result<()> {
        let len = self.len;
        let mut head = [0u8; log::HEADER_LEN as usize];
        let got = usize::try_from(len).map_or(head.len(), |l| l.min(head.len()));
        self.file.read_exact_at(&mut head[..got], 0)?;
        let format = match log::check_header(&head[..got]) {
            log::Header::Known(format) => format,
            log::Header::Blank if self.known_len == 0 => {
                return self.rewrite(&log::Replay::default());
            }
            log::Header::Blank => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "its header is zeros, yet it was written before (its length is recorded \
                         in {LEN_FILE_NAME}): it is damaged; restore it from a backup, or move \
                         both files aside to start with an empty index"
                    ),
                ));
            }
            log::Header::Foreign(why) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a vtp seen-index file: {why}"),
                ));
            }
        };
        let mut replay = log::Replay::default();
        let scan = log::scan(&self.file, len, format, self.boot.as_ref(), |op| {
            replay.apply(op);
        })?;
        if !scan.damaged.is_empty() {
            warn!(
                path = %self.path.display(),
                records = scan.damaged.len(),
                offsets = %Offsets(&scan.damaged),
                "seen-index: records that do not check out (damage) are skipped; the valid \
                 records after them are kept. Check the disk (see the system log)"
            );
        }
        if scan.unsynced > 0 {
            warn!(
                path = %self.path.display(),
                offset = scan.tail,
                dropped_records = scan.unsynced,
                "seen-index: the last commit had been written but its fdatasync had not \
                 returned when vtp stopped (killed during it); none of it was reported \
                 durable (its events were not acked, forwarded or delivered), so it is \
                 discarded: those events count as new when they come again"
            );
        }
        if scan.junk_after_tail > 0 || scan.dropped > scan.unsynced {
            warn!(
                path = %self.path.display(),
                offset = scan.tail,
                dropped_records = scan.dropped,
                bytes = scan.junk_after_tail,
                "seen-index: the last batch written does not check out (a commit cut short by \
                 a crash, or damage) and is discarded"
            );
        }
        let zero = scan.junk_after_tail > 0 || scan.dropped > 0;
        if zero {
            write_zeros(&self.file, scan.tail, len)?;
        }
        if let (log::Format::V3, Some(at)) = (format, scan.unflagged_end) {
            // A last batch kept without the flag (written before a reboot): settled as
            // synced, so that a restart in this boot keeps it too.
            let mut rec = [0u8; RECORD_LEN];
            self.file.read_exact_at(&mut rec, at)?;
            log::mark_synced(&mut rec);
            self.file.write_all_at(&rec, at)?;
        }
        if zero || scan.unflagged_end.is_some() {
            self.file.sync_data()?;
        }
        self.tail = scan.tail;
        self.records = scan.records;
        self.live_at_compaction = replay.0.len() as u64;
        if format != log::Format::V3
            || self.records >= 2 * self.live_at_compaction + self.compact_min
        {
            return self.rewrite(&replay);
        }
        if self.known_len != len {
            // A log of a version that kept no length file.
            self.save_len(len)?;
        }
        if let Some(boot) = self.boot
            && scan.boot != Some(boot)
        {
            // The batches written from now on are of this boot.
            self.buf.clear();
            log::encode_boot(&boot, &mut self.buf);
            log::mark_batch_end(&mut self.buf);
            match self.write_batch() {
                Ok(()) => self.tail += RECORD_LEN as u64,
                // The commits of this run count as of the boot named last, an earlier one: a
                // last batch of theirs not flagged synced counts at the next start, as in
                // format version 2.
                Err(e) => warn!(
                    error = %e,
                    path = %self.path.display(),
                    "seen-index: cannot record the machine's boot; a commit cut short by a \
                     kill may count at the next start"
                ),
            }
        }
        Ok(())
    }

    /// The operations up to the tail (every batch there counts: `recover` found the tail).
    fn replay(&self) -> io::Result<log::Replay> {
        let mut replay = log::Replay::default();
        log::scan(&self.file, self.tail, log::Format::V3, None, |op| {
            replay.apply(op);
        })?;
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
    ///
    /// The new file is created exclusively, after removing whatever has its name (a stale
    /// file, or a symbolic link, which is removed itself: its target is left alone).
    fn rewrite(&mut self, replay: &log::Replay) -> io::Result<()> {
        remove_in(&self.dir, COMPACT_FILE_NAME)?;
        let tmp = open_in(&self.dir, COMPACT_FILE_NAME, How::CreateNew)?;
        lock(&tmp)?;
        let mut buf =
            Vec::with_capacity(log::HEADER_LEN as usize + (replay.0.len() + 1) * RECORD_LEN);
        buf.extend_from_slice(&log::header());
        if let Some(boot) = &self.boot {
            // The batches written after the rewrite are of this boot.
            log::encode_boot(boot, &mut buf);
            log::mark_batch_end(&mut buf);
            log::mark_synced(&mut buf);
        }
        for (&key, &unix_secs) in &replay.0 {
            let op = StoreOp::Persist(SeenRecord {
                key: EventKey(key),
                unix_secs,
            });
            log::encode(&op, &mut buf);
            // Each record its own batch, synced: the file is durable before it replaces the
            // log, so damage to any record later costs that record only.
            log::mark_batch_end(&mut buf);
            log::mark_synced(&mut buf);
        }
        let tail = buf.len() as u64;
        let len = tail + GROW_BYTES;
        tmp.write_all_at(&buf, 0)?;
        write_zeros(&tmp, tail, len)?;
        tmp.sync_all()?;
        // The length file must not run ahead of whichever log a crash leaves in place.
        if self.known_len > len {
            self.save_len(len)?;
        }
        rename_in(&self.dir, COMPACT_FILE_NAME, STORE_FILE_NAME)?;
        self.dir.sync_all()?;
        self.file = tmp;
        self.tail = tail;
        self.len = len;
        self.records = replay.0.len() as u64;
        self.live_at_compaction = self.records;
        if let Err(e) = self.save_len(len) {
            warn!(
                error = %e,
                "seen-index: cannot record the log's length; a truncation may go unnoticed"
            );
        }
        Ok(())
    }
}

/// The length [`LEN_FILE_NAME`] in `dir` (at `path`) holds: `None` if there is no such file (a
/// new store, or one written by an earlier version) or, with a warning, if it does not check
/// out.
fn read_len(dir: &File, path: &Path) -> io::Result<Option<u64>> {
    let read = |mut f: File| {
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map(|_| bytes)
    };
    match open_in(dir, LEN_FILE_NAME, How::Read).and_then(read) {
        Ok(bytes) => {
            let len = log::decode_len(&bytes);
            if len.is_none() {
                warn!(
                    path = %path.display(),
                    "seen-index: the length file does not check out and is ignored: a \
                     truncation of the log cannot be detected at this start"
                );
            }
            Ok(len)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Record offsets for a log line: runs of consecutive records as `first-last`, at most 16.
struct Offsets<'a>(&'a [u64]);

impl fmt::Display for Offsets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut runs = 0;
        let mut i = 0;
        while i < self.0.len() {
            let first = self.0[i];
            let mut last = first;
            while i + 1 < self.0.len() && self.0[i + 1] == last + RECORD_LEN as u64 {
                i += 1;
                last = self.0[i];
            }
            i += 1;
            if runs == 16 {
                return write!(f, " and more");
            }
            if runs > 0 {
                write!(f, ", ")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
            runs += 1;
        }
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

/// Displays an error and its chain of causes, `: `-separated, for one-line logs.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

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

#[cfg(test)]
mod tests;
