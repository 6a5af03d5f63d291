//! The event archive (`--archive`): every accepted event in an embedded SQLite database, and
//! the query API served on the operator HTTP endpoint (`/api/events`, `/api/events/SEQ`,
//! `/api/event?ivorn=`).
//!
//! # Theory of operation
//!
//! **Feeding.** [`ArchiveHandler`] is a [`Handler`]: the handler pool hands it every accepted
//! event off the event loop (with the store's handler spool, at least once across crashes).
//! It builds the row (the core's [`summary`](vtp_core::summary) of the bytes: Who, position,
//! stream) and passes it to the archive's writer thread, then waits until the transaction
//! holding it is committed (group commit: the writer takes whatever has queued, up to
//! [`BATCH_MAX`] rows, in one transaction; under load it gathers rows for up to [`LINGER`]
//! first, and the handler pool hands the archive batches of deliveries, so that a busy
//! archive makes one `fsync` per dozens of events rather than per one or two), so that a
//! handler call that returns `Ok` means "archived" and the spool's done mark follows it. The event key (sha256) is unique: a
//! redelivery after a crash inserts nothing. A slow or failing disk only slows the handler
//! workers; acks and forwards never wait for handlers. Each failed batch is counted
//! ([`ArchiveProbe::write_failures`]) and logged, and each of its events returns an error
//! (logged by the pool).
//!
//! **Where events came from.** A [`Delivery`] names its connection only. [`SourceBook`] is fed
//! on the loop with the node's events (who each connection is: address, certificate identity,
//! upstream endpoint, external source) and with each delivery (its key, just before it is
//! queued): it records the delivery's source by event key, bounded to
//! [`SOURCES_MAX`] entries, and the handler takes it from there. An event read back from the
//! handler spool after a restart has lost its connection: its source kind is `local` with no
//! address.
//!
//! **Sequence numbers.** `seq` is the table's `INTEGER PRIMARY KEY AUTOINCREMENT`: monotonic,
//! never reused, kept across restarts and retention (SQLite's `sqlite_sequence`). It follows
//! the order events were accepted: the handler queues its rows from
//! [`Handler::queue_batch`], which the pool calls in the order its workers take deliveries. The received
//! time is the writer's clock, never earlier than the previous row's, so that a time range is
//! a sequence range.
//!
//! **Retention.** Off the loop, on the writer thread: at start and then every
//! [`RETENTION_EVERY`], rows older than the maximum age, then the oldest rows while the
//! database's used pages exceed the maximum size, are deleted in transactions of at most
//! [`RETENTION_BATCH`] rows.
//!
//! **Reading.** Queries run on a small pool of read-only connections ([`READERS`]), on
//! tokio's blocking threads, at most [`READERS`] at once, each bounded in time
//! ([`QUERY_TIME_MAX`], SQLite's progress handler aborts it). Every query is parameterised
//! and uses an index (see the README, "Archive and query API").

mod api;
mod query;
mod time;

pub use api::{Access, respond};
pub use query::{Cone, EventsQuery, LIMIT_DEFAULT, LIMIT_MAX, QueryError, Recent};

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, params};
use vtp_core::message::EventRole;
use vtp_core::{ConnId, Delivery, Event, EventKey, Remote, Source};

use crate::handlers::{Handler, HandlerError, Queued};

/// Default of `--archive-max-age`: 30 days, like the seen-index.
pub const MAX_AGE_DEFAULT: Duration = Duration::from_secs(30 * 86_400);
/// Default of `--archive-max-bytes`: 10 GiB.
pub const MAX_BYTES_DEFAULT: u64 = 10 << 30;
/// Most rows the writer commits in one transaction.
pub const BATCH_MAX: usize = 512;
/// Rows waiting for the writer at most (a handler call beyond it waits).
pub const QUEUE_MAX: usize = 4096;
/// Under load (the last commit ended less than this ago), how long the writer gathers rows
/// before it commits: fewer, larger transactions, each one `fsync`, at the price of this much
/// more delay before an event is archived (never before it is acked or forwarded). Idle, an
/// event is committed at once.
pub const LINGER: Duration = Duration::from_millis(10);
/// Most rows deleted by retention in one transaction.
pub const RETENTION_BATCH: usize = 1000;
/// How often retention runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Read-only connections (and queries at once).
pub const READERS: usize = 2;
/// Longest a query may run before it is aborted.
pub const QUERY_TIME_MAX: Duration = Duration::from_secs(2);
/// Sources remembered by event key, waiting for the handler.
pub const SOURCES_MAX: usize = 65_536;
/// The database's file name in the archive directory.
pub const FILE_NAME: &str = "archive.sqlite";
/// The lock file next to it.
const LOCK_NAME: &str = "archive.lock";

/// How an archive is opened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ArchiveConfig {
    /// The directory of [`FILE_NAME`] (created, mode 0700, if missing).
    pub dir: PathBuf,
    /// Rows older than this are deleted.
    pub max_age: Duration,
    /// The oldest rows are deleted while the database uses more than this.
    pub max_bytes: u64,
}

impl ArchiveConfig {
    /// An archive in `dir` with the default retention.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_age: MAX_AGE_DEFAULT,
            max_bytes: MAX_BYTES_DEFAULT,
        }
    }
}

/// Why the archive could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The directory could not be created or the lock file opened.
    #[error("archive directory `{}`: {source}: check the path and its permissions", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the archive.
    #[error(
        "the archive `{}` is in use by another vtp (its lock `{LOCK_NAME}` is held): stop it, \
         or give this one another directory with --archive DIR (or --no-archive)",
        dir.display()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// SQLite refused.
    #[error("archive database `{}`: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the archive thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Where an archived event came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceInfo {
    /// `author`, `upstream`, `external` or `local`.
    pub kind: &'static str,
    /// An author's address and port.
    pub address: Option<String>,
    /// An author's certificate identity.
    pub identity: Option<String>,
    /// An upstream's endpoint (`host:port`).
    pub upstream: Option<String>,
    /// An external source's name (`kafka:TOPIC`).
    pub name: Option<String>,
    /// An external source's topic.
    pub topic: Option<String>,
    /// An external record's partition, when known.
    pub partition: Option<i64>,
    /// An external record's offset, when known.
    pub offset: Option<i64>,
}

impl SourceInfo {
    fn local() -> Self {
        Self {
            kind: "local",
            ..Self::default()
        }
    }
}

/// Who each connection is and where each delivery came from, fed on the loop
/// ([`observe`](Self::observe) every node event, [`delivered`](Self::delivered) every
/// delivery) and read by [`ArchiveHandler`]. Bounded: [`SOURCES_MAX`] deliveries.
#[derive(Debug, Clone, Default)]
pub struct SourceBook(Arc<Mutex<Book>>);

#[derive(Debug, Default)]
struct Book {
    conns: HashMap<ConnId, SourceInfo>,
    by_key: HashMap<EventKey, SourceInfo>,
    order: VecDeque<EventKey>,
}

impl SourceBook {
    /// Notes who a connection is (`PeerUp`, `Secured`) and forgets it when it goes
    /// (`PeerDown`).
    pub fn observe(&self, event: &Event) {
        let mut b = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::PeerUp { conn, remote, .. } => {
                let info = match remote {
                    Remote::Accepted(peer) => SourceInfo {
                        kind: "author",
                        address: Some(peer.to_string()),
                        ..SourceInfo::default()
                    },
                    Remote::Dialled(ep) => SourceInfo {
                        kind: "upstream",
                        upstream: Some(ep.to_string()),
                        ..SourceInfo::default()
                    },
                    Remote::External(name) => SourceInfo {
                        kind: "external",
                        name: Some(name.to_string()),
                        topic: name
                            .strip_prefix("kafka")
                            .map(|t| t.trim_start_matches([':', ' ']).to_owned())
                            .filter(|t| !t.is_empty()),
                        ..SourceInfo::default()
                    },
                };
                b.conns.insert(*conn, info);
            }
            Event::Secured { conn, identity, .. } => {
                if let Some(info) = b.conns.get_mut(conn) {
                    info.identity = identity.as_ref().map(ToString::to_string);
                }
            }
            Event::PeerDown { conn, .. } => {
                b.conns.remove(conn);
            }
            _ => {}
        }
    }

    /// Notes where `delivery` came from, for the handler.
    pub fn delivered(&self, delivery: &Delivery) {
        let conn = match delivery.source {
            Source::Author(c) | Source::Upstream(c) | Source::External(c) => c,
            _ => return,
        };
        let mut b = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(info) = b.conns.get(&conn).cloned() else {
            return;
        };
        if b.by_key.insert(delivery.key, info).is_none() {
            b.order.push_back(delivery.key);
        }
        while b.order.len() > SOURCES_MAX {
            if let Some(k) = b.order.pop_front() {
                b.by_key.remove(&k);
            }
        }
    }

    /// Takes the source noted for `delivery` (`local` when none was).
    fn take(&self, delivery: &Delivery) -> SourceInfo {
        let mut b = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match b.by_key.remove(&delivery.key) {
            Some(info) => info,
            None => match delivery.source {
                Source::Author(_) => SourceInfo {
                    kind: "author",
                    ..SourceInfo::default()
                },
                Source::Upstream(_) => SourceInfo {
                    kind: "upstream",
                    ..SourceInfo::default()
                },
                Source::External(_) => SourceInfo {
                    kind: "external",
                    ..SourceInfo::default()
                },
                _ => SourceInfo::local(),
            },
        }
    }
}

/// One row to archive.
#[derive(Debug, Clone)]
pub struct Row {
    /// The event key.
    pub key: EventKey,
    /// The IVORN.
    pub ivorn: String,
    /// The role as written (`observation`, `test`, ...).
    pub role: &'static str,
    /// Where it came from.
    pub source: SourceInfo,
    /// The exact bytes.
    pub payload: bytes::Bytes,
    /// Who/Date/position.
    pub summary: vtp_core::summary::Summary,
    /// The signature status (`valid`, `unsigned`...), where signatures are checked.
    pub signature: Option<&'static str>,
    /// The signer's fingerprint, for `valid` and `invalid-signer`.
    pub signer: Option<String>,
}

impl Row {
    /// A row from its parts (programs embedding the archive, the benchmark).
    pub fn new(
        key: EventKey,
        ivorn: String,
        role: &'static str,
        source: SourceInfo,
        payload: bytes::Bytes,
        summary: vtp_core::summary::Summary,
    ) -> Self {
        Self {
            key,
            ivorn,
            role,
            source,
            payload,
            summary,
            signature: None,
            signer: None,
        }
    }

    /// The row of a delivery from `source`.
    pub fn of(delivery: &Delivery, source: SourceInfo) -> Self {
        Self {
            key: delivery.key,
            ivorn: delivery.ivorn.to_string(),
            role: role_name(delivery.role),
            source,
            payload: delivery.payload.clone(),
            // Only the `Who` and `WhereWhen` the parser located, when it did (the bulk of an
            // event, its `What`, is not read again).
            summary: match &delivery.spans {
                Some(spans) => {
                    vtp_core::summary::summarize_spans(&delivery.payload, spans.as_ref())
                }
                None => vtp_core::summary::summarize(&delivery.payload),
            },
            signature: delivery.signature.as_ref().map(|s| s.status.as_str()),
            signer: delivery
                .signature
                .as_ref()
                .and_then(|s| s.signer.as_ref())
                .map(|s| s.fingerprint.to_string()),
        }
    }
}

fn role_name(role: EventRole) -> &'static str {
    role.as_str()
}

/// The archive's counters, readable from any thread.
#[derive(Debug, Default)]
struct Counters {
    rows: AtomicU64,
    bytes: AtomicU64,
    inserted: AtomicU64,
    write_failures: AtomicU64,
    deleted: AtomicU64,
    batches: AtomicU64,
    batch_micros_total: AtomicU64,
    batch_micros_last: AtomicU64,
}

/// What the metrics read from the archive.
#[derive(Debug, Clone)]
pub struct ArchiveProbe(Arc<Counters>);

impl ArchiveProbe {
    /// Rows in the archive (as of the last commit or retention pass).
    pub fn rows(&self) -> u64 {
        self.0.rows.load(Ordering::Relaxed)
    }
    /// Bytes the database uses (pages in use times the page size).
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }
    /// Events inserted since start.
    pub fn inserted(&self) -> u64 {
        self.0.inserted.load(Ordering::Relaxed)
    }
    /// Events whose write failed (their batch did not commit) since start.
    pub fn write_failures(&self) -> u64 {
        self.0.write_failures.load(Ordering::Relaxed)
    }
    /// Rows deleted by retention since start.
    pub fn deleted(&self) -> u64 {
        self.0.deleted.load(Ordering::Relaxed)
    }
    /// Batches committed (or failed) since start.
    pub fn batches(&self) -> u64 {
        self.0.batches.load(Ordering::Relaxed)
    }
    /// Total seconds spent writing batches.
    pub fn batch_seconds_total(&self) -> f64 {
        self.0.batch_micros_total.load(Ordering::Relaxed) as f64 / 1e6
    }
    /// Seconds the last batch took.
    pub fn batch_seconds_last(&self) -> f64 {
        self.0.batch_micros_last.load(Ordering::Relaxed) as f64 / 1e6
    }
}

type Reply = mpsc::SyncSender<Result<(), String>>;

/// A row on its way to the writer, with where to say it is committed.
struct Job {
    row: Row,
    reply: Option<Reply>,
}

/// The archive: its writer thread, its readers and what feeds it. Dropping it stops the
/// writer after it has written what was queued.
#[derive(Debug)]
pub struct Archive {
    tx: Option<SyncSender<Option<Job>>>,
    writer: Option<JoinHandle<()>>,
    readers: Readers,
    counters: Arc<Counters>,
    sources: SourceBook,
    path: PathBuf,
    _lock: File,
}

/// Read-only connections, shared by the HTTP endpoint.
#[derive(Clone)]
pub struct Readers {
    conns: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").finish_non_exhaustive()
    }
}

impl Readers {
    /// Runs `f` on a reader connection, on a blocking thread, at most [`READERS`] at once;
    /// aborted after [`QUERY_TIME_MAX`].
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, QueryError> + Send + 'static,
    ) -> Result<T, QueryError> {
        let Ok(_permit) = Arc::clone(&self.permits).acquire_owned().await else {
            return Err(QueryError::Internal("archive closed".into()));
        };
        let conns = Arc::clone(&self.conns);
        let joined = tokio::task::spawn_blocking(move || {
            let conn = conns.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(conn) = conn else {
                return Err(QueryError::Internal("no reader connection".into()));
            };
            let deadline = Instant::now() + QUERY_TIME_MAX;
            conn.progress_handler(1000, Some(move || Instant::now() > deadline));
            let out = f(&conn);
            conn.progress_handler(0, None::<fn() -> bool>);
            conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            out
        })
        .await;
        joined.unwrap_or_else(|e| Err(QueryError::Internal(format!("query task failed: {e}"))))
    }

    /// `GET /api/events`'s JSON for `q`, on this thread (no time bound): for programs
    /// embedding the archive, and the benchmark.
    ///
    /// # Errors
    ///
    /// [`QueryError::Internal`] when the database fails.
    pub fn events(&self, q: &EventsQuery) -> Result<serde_json::Value, QueryError> {
        self.run_here(|c| query::events(c, q))
    }

    /// The latest `limit` events, newest first; with `positioned`, only those with a position
    /// among the newest 10,000 (the status page's table and sky map), on this thread.
    ///
    /// # Errors
    ///
    /// [`QueryError::Internal`] when the database fails.
    pub fn recent(&self, limit: usize, positioned: bool) -> Result<Vec<Recent>, QueryError> {
        self.run_here(|c| query::recent(c, limit, positioned))
    }

    /// Runs `f` on a reader connection on this thread (tests, the benchmark).
    pub(crate) fn run_here<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, QueryError>,
    ) -> Result<T, QueryError> {
        let conn = self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(|| QueryError::Internal("no reader connection".into()))?;
        let out = f(&conn);
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        out
    }
}

/// Page size of a new archive database, in bytes.
const PAGE_SIZE: i64 = 8192;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL UNIQUE,
    ivorn TEXT NOT NULL,
    role TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    stream TEXT NOT NULL,
    source_kind TEXT NOT NULL,
    source_address TEXT,
    source_identity TEXT,
    source_upstream TEXT,
    source_name TEXT,
    source_topic TEXT,
    source_partition INTEGER,
    source_offset INTEGER,
    signature TEXT,
    signer TEXT,
    author_ivorn TEXT,
    date TEXT,
    ra REAL,
    dec REAL,
    error REAL,
    coord_system TEXT,
    cx REAL,
    cy REAL,
    cz REAL,
    bytes INTEGER NOT NULL,
    payload BLOB NOT NULL,
    cell INTEGER
);
CREATE INDEX IF NOT EXISTS events_received ON events(received_ms);
CREATE INDEX IF NOT EXISTS events_ivorn ON events(ivorn, seq);
CREATE INDEX IF NOT EXISTS events_stream ON events(stream, seq);
CREATE INDEX IF NOT EXISTS events_role ON events(role, seq);
";

/// The sky index, made after [`Writer::add_sky_cells`] has given an older archive its cells.
const SKY_INDEX: &str = "CREATE INDEX IF NOT EXISTS events_cell ON events(cell, seq);";

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Archive {
    /// Opens (creating it if needed) the archive of `config`, takes its lock and starts its
    /// writer thread.
    ///
    /// # Errors
    ///
    /// The directory cannot be made, another process holds the lock, or SQLite fails.
    pub fn open(config: &ArchiveConfig) -> Result<Self, ArchiveError> {
        let dir = &config.dir;
        let dir_err = |source| ArchiveError::Dir {
            dir: dir.clone(),
            source,
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(dir_err)?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_NAME))
            .map_err(dir_err)?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(ArchiveError::Locked { dir: dir.clone() });
        }
        let path = dir.join(FILE_NAME);
        let err = sqlite(&path);
        let conn = Connection::open(&path).map_err(&err)?;
        // 8 KiB pages for a new database (an existing one keeps its size): a 10 KB event
        // then takes 2 overflow pages instead of 3, and the writer spends about a fifth less
        // CPU per event (41 against 50-69 us in the archive benchmark), with 1.09 times the
        // event's size on disk instead of 1.22.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
        conn.execute_batch(SCHEMA).map_err(&err)?;
        Writer::add_sky_cells(&conn, &path).map_err(&err)?;
        conn.execute_batch(SKY_INDEX).map_err(&err)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(&err)?;
            r.busy_timeout(Duration::from_secs(1)).map_err(&err)?;
            readers.push(r);
        }
        let counters = Arc::new(Counters::default());
        let mut writer = Writer {
            conn,
            counters: Arc::clone(&counters),
            max_age_ms: i64::try_from(config.max_age.as_millis()).unwrap_or(i64::MAX),
            max_bytes: config.max_bytes,
            last_received: 0,
            path: path.clone(),
        };
        writer.last_received = writer
            .conn
            .query_row(
                "SELECT COALESCE(MAX(received_ms), 0) FROM events",
                [],
                |r| r.get(0),
            )
            .map_err(&err)?;
        writer.retain(unix_ms_now());
        writer.refresh_counts();
        let (tx, rx) = mpsc::sync_channel::<Option<Job>>(QUEUE_MAX);
        let thread = thread::Builder::new()
            .name("vtp-archive".into())
            .spawn(move || writer.serve(&rx))
            .map_err(ArchiveError::Thread)?;
        Ok(Self {
            tx: Some(tx),
            writer: Some(thread),
            readers: Readers {
                conns: Arc::new(Mutex::new(readers)),
                permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
            },
            counters,
            sources: SourceBook::default(),
            path: path.clone(),
            _lock: lock,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handler that archives every delivery (give it to the handler pool).
    pub fn handler(&self) -> Arc<ArchiveHandler> {
        Arc::new(ArchiveHandler {
            tx: self.tx.clone(),
            sources: self.sources.clone(),
            counters: Arc::clone(&self.counters),
        })
    }

    /// The book the loop feeds with connections and deliveries.
    pub fn sources(&self) -> SourceBook {
        self.sources.clone()
    }

    /// The read side, for the HTTP endpoint.
    pub fn readers(&self) -> Readers {
        self.readers.clone()
    }

    /// The counters, for the metrics.
    pub fn probe(&self) -> ArchiveProbe {
        ArchiveProbe(Arc::clone(&self.counters))
    }

    /// Archives `rows` now, in one transaction, with their received time `received_ms`
    /// (tests and the benchmark; the node goes through [`ArchiveHandler`]).
    ///
    /// # Errors
    ///
    /// The writer has stopped or the transaction failed.
    pub fn write_now(&self, rows: Vec<Row>) -> Result<(), String> {
        let tx = self.tx.as_ref().ok_or("archive closed")?;
        let mut replies = Vec::new();
        for row in rows {
            let (rtx, rrx) = mpsc::sync_channel(1);
            tx.send(Some(Job {
                row,
                reply: Some(rtx),
            }))
            .map_err(|_| "archive writer stopped")?;
            replies.push(rrx);
        }
        for r in replies {
            r.recv().map_err(|_| "archive writer stopped")??;
        }
        Ok(())
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        // Handlers may still hold senders: tell the writer to stop after what is queued.
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(None);
        }
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    counters: Arc<Counters>,
    max_age_ms: i64,
    max_bytes: u64,
    last_received: i64,
    path: PathBuf,
}

impl Writer {
    /// Gives an archive made before the sky cells (its cone searches went through an R*Tree,
    /// `events_sky`) a `cell` for each event with a position, from its `ra` and `dec`, and
    /// drops the R*Tree, in one transaction: a crash halfway leaves the old archive as it was.
    /// Nothing to do on an archive that has the column.
    fn add_sky_cells(conn: &Connection, path: &Path) -> rusqlite::Result<()> {
        let has_cell: bool = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'cell'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if has_cell {
            return Ok(());
        }
        let started = Instant::now();
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch("ALTER TABLE events ADD COLUMN cell INTEGER")?;
        let n = tx.execute(
            &format!(
                "UPDATE events SET cell = {} WHERE ra IS NOT NULL AND dec IS NOT NULL",
                query::SKY_CELL_SQL
            ),
            [],
        )?;
        tx.execute_batch("DROP TABLE IF EXISTS events_sky")?;
        tx.execute_batch(SKY_INDEX)?;
        tx.commit()?;
        tracing::info!(
            "archive `{}`: the sky index of {n} positioned events moved from the R*Tree to \
             1-degree cells in {:.1} s (done once)",
            path.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn serve(mut self, rx: &Receiver<Option<Job>>) {
        let mut last_retention = Instant::now();
        let mut last_commit: Option<Instant> = None;
        let mut stopping = false;
        while !stopping {
            let first = match rx.recv_timeout(RETENTION_EVERY) {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(RecvTimeoutError::Timeout) => {
                    self.retain(unix_ms_now());
                    last_retention = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            let gather_until = last_commit
                .is_some_and(|t| t.elapsed() < LINGER)
                .then(|| Instant::now() + LINGER);
            while batch.len() < BATCH_MAX {
                let next = match gather_until {
                    Some(until) => rx.recv_timeout(until.saturating_duration_since(Instant::now())),
                    None => rx.try_recv().map_err(|_| RecvTimeoutError::Timeout),
                };
                match next {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let now = unix_ms_now().max(self.last_received);
            let outcome = self.insert(&batch, now);
            last_commit = Some(Instant::now());
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.counters
                .batch_micros_total
                .fetch_add(micros, Ordering::Relaxed);
            self.counters
                .batch_micros_last
                .store(micros, Ordering::Relaxed);
            let reply = match outcome {
                Ok(inserted) => {
                    self.last_received = now;
                    self.counters
                        .inserted
                        .fetch_add(inserted, Ordering::Relaxed);
                    self.after_batch(inserted);
                    Ok(())
                }
                Err(e) => {
                    let n = batch.len() as u64;
                    self.counters.write_failures.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(
                        "archive `{}`: cannot write {n} events: {e} (they are not archived; \
                         check the disk)",
                        self.path.display()
                    );
                    Err(format!("archive write failed: {e}"))
                }
            };
            for job in batch {
                if let Some(r) = job.reply {
                    let _ = r.send(reply.clone());
                }
            }
            if last_retention.elapsed() >= RETENTION_EVERY {
                self.retain(unix_ms_now());
                last_retention = Instant::now();
            }
        }
    }

    /// Inserts the batch in one transaction; the number of rows new.
    fn insert(&mut self, batch: &[Job], received_ms: i64) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        let mut inserted = 0;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO events (key, ivorn, role, received_ms, stream, \
                 source_kind, source_address, source_identity, source_upstream, source_name, \
                 source_topic, source_partition, source_offset, signature, signer, \
                 author_ivorn, date, ra, dec, error, coord_system, cx, cy, cz, bytes, payload, \
                 cell) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
                 ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)",
            )?;
            // Checked first: an ignored INSERT would still use up a sequence number.
            let mut exists = tx.prepare_cached("SELECT 1 FROM events WHERE key = ?1")?;
            for job in batch {
                let r = &job.row;
                if exists.exists([&r.key.0[..]])? {
                    continue;
                }
                let p = r.summary.position.as_ref();
                let v = p.map(|p| query::unit_vector(p.ra, p.dec));
                let n = ins.execute(params![
                    &r.key.0[..],
                    r.ivorn,
                    r.role,
                    received_ms,
                    vtp_core::summary::stream_of(&r.ivorn),
                    r.source.kind,
                    r.source.address,
                    r.source.identity,
                    r.source.upstream,
                    r.source.name,
                    r.source.topic,
                    r.source.partition,
                    r.source.offset,
                    r.signature,
                    r.signer,
                    r.summary.author_ivorn,
                    r.summary.date,
                    p.map(|p| p.ra),
                    p.map(|p| p.dec),
                    p.and_then(|p| p.error),
                    p.and_then(|p| p.system.clone()),
                    v.map(|v| v[0]),
                    v.map(|v| v[1]),
                    v.map(|v| v[2]),
                    r.payload.len() as i64,
                    &r.payload[..],
                    p.map(|p| query::sky_cell(p.ra, p.dec)),
                ])?;
                inserted += n as u64;
            }
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// The size figures after a batch: the row count grows by what was inserted (counting
    /// the table reads all of it: at open and after retention only, not per batch, which at a
    /// million rows would cost more than the batch), the bytes from the page counts.
    fn after_batch(&self, inserted: u64) {
        self.counters.rows.fetch_add(inserted, Ordering::Relaxed);
        self.counters
            .bytes
            .store(self.used_bytes().unwrap_or(0), Ordering::Relaxed);
    }

    /// The size figures counted afresh (at open and after retention).
    fn refresh_counts(&self) {
        let rows: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap_or(0);
        self.counters
            .rows
            .store(u64::try_from(rows).unwrap_or(0), Ordering::Relaxed);
        self.counters
            .bytes
            .store(self.used_bytes().unwrap_or(0), Ordering::Relaxed);
    }

    fn used_bytes(&self) -> rusqlite::Result<u64> {
        let pragma = |sql: &str| -> rusqlite::Result<i64> {
            self.conn.prepare_cached(sql)?.query_row([], |r| r.get(0))
        };
        let pages = pragma("PRAGMA page_count")?;
        let free = pragma("PRAGMA freelist_count")?;
        let size = pragma("PRAGMA page_size")?;
        Ok(u64::try_from((pages - free) * size).unwrap_or(0))
    }

    /// Deletes by age, then by size, oldest first, in bounded transactions; logs failures.
    fn retain(&mut self, now_ms: i64) {
        if let Err(e) = self.retain_inner(now_ms) {
            self.counters.write_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "archive `{}`: retention failed: {e} (will retry)",
                self.path.display()
            );
        }
        self.refresh_counts();
    }

    fn retain_inner(&mut self, now_ms: i64) -> rusqlite::Result<()> {
        let cutoff = now_ms.saturating_sub(self.max_age_ms);
        let mut deleted = 0u64;
        loop {
            let hi: Option<i64> = self.conn.query_row(
                "SELECT MAX(seq) FROM (SELECT seq FROM events WHERE received_ms < ?1 \
                 ORDER BY received_ms LIMIT ?2)",
                params![cutoff, RETENTION_BATCH as i64],
                |r| r.get(0),
            )?;
            let Some(hi) = hi else { break };
            deleted += self.delete_through(hi)?;
        }
        while self.used_bytes()? > self.max_bytes {
            let hi: Option<i64> = self.conn.query_row(
                "SELECT MAX(seq) FROM (SELECT seq FROM events ORDER BY seq LIMIT ?1)",
                params![RETENTION_BATCH as i64 / 10],
                |r| r.get(0),
            )?;
            let Some(hi) = hi else { break };
            deleted += self.delete_through(hi)?;
        }
        if deleted > 0 {
            self.counters.deleted.fetch_add(deleted, Ordering::Relaxed);
            tracing::info!(
                "archive: {deleted} events past retention deleted (older than {} days or over \
                 {} bytes)",
                self.max_age_ms / 86_400_000,
                self.max_bytes
            );
        }
        Ok(())
    }

    /// Deletes every row with `seq <= hi` (a bounded number: the caller picks `hi`).
    fn delete_through(&mut self, hi: i64) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        let n = tx.execute("DELETE FROM events WHERE seq <= ?1", params![hi])?;
        tx.commit()?;
        Ok(n as u64)
    }
}

/// The handler that archives every delivery ([`Archive::handler`]).
pub struct ArchiveHandler {
    tx: Option<SyncSender<Option<Job>>>,
    sources: SourceBook,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ArchiveHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveHandler").finish_non_exhaustive()
    }
}

/// An archive write that failed (its batch did not commit).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WriteFailed(String);

impl Handler for ArchiveHandler {
    fn name(&self) -> &str {
        "archive"
    }

    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        self.handle_batch(&[delivery]).pop().unwrap_or(Ok(()))
    }

    fn batches(&self) -> bool {
        true
    }

    fn handle_batch(&self, deliveries: &[&Delivery]) -> Vec<Result<(), HandlerError>> {
        match self.queue_batch(deliveries) {
            Some(rest) => rest(),
            None => Vec::new(),
        }
    }

    /// Queues every row in the order the pool's workers take them (so the sequence numbers
    /// follow the order events were accepted, however many workers there are), then, later,
    /// waits for each: the writer takes what is queued in one transaction, so a batch costs
    /// one commit (one `fsync`) rather than one per event.
    fn queue_batch(&self, deliveries: &[&Delivery]) -> Option<Queued> {
        fn failed(why: &str) -> Result<(), HandlerError> {
            Err(HandlerError::Other(Box::new(WriteFailed(why.into()))))
        }
        let Some(tx) = &self.tx else {
            let results = deliveries
                .iter()
                .map(|_| failed("archive closed"))
                .collect();
            return Some(Box::new(move || results));
        };
        let waits: Vec<Option<Receiver<Result<(), String>>>> = deliveries
            .iter()
            .map(|delivery| {
                let source = self.sources.take(delivery);
                let row = Row::of(delivery, source);
                let (rtx, rrx) = mpsc::sync_channel(1);
                let job = Job {
                    row,
                    reply: Some(rtx),
                };
                if tx.send(Some(job)).is_err() {
                    self.counters.write_failures.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Some(rrx)
            })
            .collect();
        Some(Box::new(move || {
            waits
                .into_iter()
                .map(|wait| match wait.map(|rrx| rrx.recv()) {
                    Some(Ok(Ok(()))) => Ok(()),
                    Some(Ok(Err(e))) => Err(HandlerError::Other(Box::new(WriteFailed(e)))),
                    None | Some(Err(_)) => failed("the archive writer has stopped"),
                })
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests;
