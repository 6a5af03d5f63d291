//! The store worker: a thread that owns the [`SeenStore`] (and its handler spool, if any) and
//! commits queued operations in groups (see the [module docs](super), "Group commit and
//! durability", and the [spool's](super::spool)).

use std::fmt;
use std::fs::File;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::Waker;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use vtp_core::Delivery;

use super::probe::{CommitStats, StoreProbe};
use super::spool::{Spool, Staged};
use super::{ErrorChain, STORE_QUEUE_MAX, SeenStore, SendError, StoreError, StoreOp};
use crate::handlers::{Feed, Handlers, Refused};

/// Called on the worker thread after each commit with the new [`StoreWorker::durable_seq`].
pub type OnDurable = Box<dyn Fn(u64) + Send + 'static>;

/// A thread that owns a [`SeenStore`] and commits queued operations in groups.
///
/// Owned by one event loop (`send` takes `&mut self`, so sequence numbers follow queue order).
/// Dropping it without [`flush_and_stop`](Self::flush_and_stop) lets the thread commit what is
/// queued in the background; only `flush_and_stop` waits for that.
///
/// If the store has a handler spool ([`SeenStore::open_spool`]), the worker also writes the
/// deliveries given to it, each in the same commit as the operations sent before it, queues
/// them for the handlers once that commit is durable (or keeps them parked on disk while the
/// handlers' queue is full), writes the done marks the handlers report, and reads parked
/// deliveries back as the handlers' queue drains.
/// [`HostEffects`](crate::effects::HostEffects) links the worker and the handlers.
pub struct StoreWorker {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
    durable: Arc<Durable>,
    next_seq: u64,
    path: PathBuf,
    spool: bool,
}

/// What the worker is asked to do.
enum Job {
    /// A seen-index operation and its sequence number.
    Op(u64, StoreOp),
    /// A delivery to spool and its sequence number.
    Spool(u64, Delivery),
    /// The handlers are done with spooled delivery `Some(id)`, or with some other one.
    Done(Option<u64>),
    /// The handlers' queue, to hand spooled deliveries to.
    Attach(Feed),
    /// Commit what is queued and return (what is sent after this is not read).
    Stop,
}

/// The worker's progress, shared with the event loop (and read by [`StoreProbe`]s).
#[derive(Default)]
pub(super) struct Durable {
    /// The last sequence number committed.
    seq: AtomicU64,
    /// Set when a commit fails, cleared by the next one that succeeds.
    pub(super) failing: AtomicBool,
    /// Set when the worker thread ends, however it ends.
    pub(super) stopped: AtomicBool,
    /// How long the commits that wrote something took.
    pub(super) commits: CommitStats,
    /// The loop's waker; also the lock `changed` waits with.
    waker: Mutex<Option<Waker>>,
    /// Notified after every commit.
    changed: Condvar,
}

impl Durable {
    pub(super) fn load(&self) -> u64 {
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

    /// Sets the health flag; on a change, wakes the loop so it learns of it.
    fn set_failing(&self, failing: bool) {
        if self.failing.swap(failing, Ordering::AcqRel) == failing {
            return;
        }
        let waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = &*waker {
            w.wake_by_ref();
        }
    }
}

impl StoreWorker {
    /// Starts the worker thread (named `vtp-store`), which owns `store` (and its handler
    /// spool, if [`SeenStore::open_spool`] opened one) from now on.
    ///
    /// `on_durable`, if given, is called on the worker thread after every successful commit with
    /// the new durable sequence number; runtimes use it to wake their loop. It must be quick and
    /// must not call back into this worker. A panic in it is caught and logged.
    ///
    /// # Errors
    ///
    /// [`StoreError::Spawn`] if the thread cannot be created.
    pub fn spawn(mut store: SeenStore, on_durable: Option<OnDurable>) -> Result<Self, StoreError> {
        // A growable channel: memory follows the backlog. The bound is enforced in `send`
        // (sent but not yet durable), not by preallocating a queue of STORE_QUEUE_MAX slots.
        let (tx, rx) = mpsc::channel();
        let durable = Arc::new(Durable::default());
        let path = store.path.clone();
        let spool = store.spool.take().map(Spooler::new);
        let has_spool = spool.is_some();
        let committer = Committer {
            store,
            spool,
            batch: Vec::new(),
            last_seq: 0,
            published: 0,
            durable: Arc::clone(&durable),
            on_durable,
        };
        let stopped = StoppedOnDrop(Arc::clone(&durable));
        let thread = thread::Builder::new()
            .name("vtp-store".into())
            .spawn(move || {
                // Marks the worker stopped when this closure ends, by return or by panic.
                let _stopped = stopped;
                committer.run(&rx)
            })
            .map_err(StoreError::Spawn)?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            durable,
            next_seq: 0,
            path,
            spool: has_spool,
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
        self.send_job(|seq| Job::Op(seq, op)).map_err(|(e, _)| e)
    }

    /// Queues a delivery for the handler spool, as [`send`](Self::send) does an operation: it
    /// is written in the same commit as the operations sent before it, and durable once
    /// [`durable_seq`](Self::durable_seq) reaches the number returned.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and [`SendError::Stopped`] without a spool; the delivery is
    /// handed back.
    #[allow(
        clippy::result_large_err,
        reason = "the delivery comes back by value on the rare refusal, as it went in"
    )]
    pub(crate) fn send_spool(&mut self, delivery: Delivery) -> Result<u64, (SendError, Delivery)> {
        if !self.spool {
            return Err((SendError::Stopped, delivery));
        }
        self.send_job(|seq| Job::Spool(seq, delivery))
            .map_err(|(e, job)| match job {
                Job::Spool(_, d) => (e, d),
                _ => unreachable!("the job built here"),
            })
    }

    #[allow(
        clippy::result_large_err,
        reason = "the job comes back by value on the rare refusal, as it went in"
    )]
    fn send_job(&mut self, job: impl FnOnce(u64) -> Job) -> Result<u64, (SendError, Job)> {
        let seq = self.next_seq + 1;
        let job = job(seq);
        let Some(tx) = &self.tx else {
            return Err((SendError::Stopped, job));
        };
        let pending = self.next_seq - self.durable.load();
        if pending >= STORE_QUEUE_MAX as u64 {
            return Err((SendError::Full, job));
        }
        match tx.send(job) {
            Ok(()) => {
                self.next_seq = seq;
                Ok(seq)
            }
            Err(mpsc::SendError(job)) => Err((SendError::Stopped, job)),
        }
    }

    /// True if the store has a handler spool.
    pub fn has_spool(&self) -> bool {
        self.spool
    }

    /// Links the spool and the handlers: the handlers tell the worker after each delivery
    /// (so that it marks spooled ones done and refills their queue), and the worker queues
    /// spooled deliveries for them. False if the worker has stopped.
    pub(crate) fn attach_handlers(&self, handlers: &Handlers) -> bool {
        let Some(tx) = self.tx.clone() else {
            return false;
        };
        // Told before the worker can queue anything, so that no delivery goes unreported.
        let done = Mutex::new(tx.clone());
        handlers.set_spool_done(Box::new(move |id| {
            let _ = done
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(Job::Done(id));
        }));
        tx.send(Job::Attach(handlers.feed())).is_ok()
    }

    /// Commits everything queued, stops the thread and waits for it (shutdown, SIGTERM).
    ///
    /// # Errors
    ///
    /// The error of the last commit if the final batch could not be written after three
    /// attempts one second apart, or [`StoreError::WorkerPanicked`].
    pub fn flush_and_stop(mut self) -> Result<(), StoreError> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Job::Stop);
        }
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(StoreError::WorkerPanicked)),
            None => Ok(()),
        }
    }

    /// The highest sequence number such that it and every earlier operation are committed.
    pub fn durable_seq(&self) -> u64 {
        self.durable.load()
    }

    /// A read-only handle on this worker's health and commit times, for another thread (a
    /// metrics or health endpoint); valid after the worker is gone.
    pub fn probe(&self) -> StoreProbe {
        StoreProbe(Arc::clone(&self.durable))
    }

    /// False from a failed commit (a full or failing disk) until the next one succeeds; the
    /// waker from [`set_waker`](Self::set_waker) is woken on each change.
    pub fn is_healthy(&self) -> bool {
        !self.durable.failing.load(Ordering::Acquire)
    }

    /// Wakes `waker` after every commit and every change of [`is_healthy`](Self::is_healthy)
    /// from now on (replacing any earlier one). Runtimes give
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

impl Drop for StoreWorker {
    fn drop(&mut self) {
        // The handlers hold senders too: without this the thread would wait for them.
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Job::Stop);
        }
    }
}

impl fmt::Debug for StoreWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreWorker")
            .field("path", &self.path)
            .field("queued_seq", &self.next_seq)
            .field("durable_seq", &self.durable_seq())
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

/// Sets [`Durable::stopped`] when dropped: at the end of the worker thread, however it ends.
struct StoppedOnDrop(Arc<Durable>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
    }
}

/// The worker thread's state.
struct Committer {
    store: SeenStore,
    spool: Option<Spooler>,
    /// Operations not yet committed (non-empty only between a failed commit and its retry).
    batch: Vec<StoreOp>,
    /// Sequence number of the last operation or delivery taken.
    last_seq: u64,
    /// The last sequence number published as durable.
    published: u64,
    durable: Arc<Durable>,
    on_durable: Option<OnDurable>,
}

impl Committer {
    /// Commits until told to stop (or the final batch keeps failing).
    fn run(mut self, rx: &Receiver<Job>) -> Result<(), StoreError> {
        let mut open = true;
        let mut retry_at: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            // Wait for work, for a failed batch's retry time, or not at all while parked
            // deliveries are being read back.
            match retry_at {
                None if self.spool.as_ref().is_some_and(Spooler::refilling) => {
                    match rx.try_recv() {
                        Ok(job) => open &= self.take(job),
                        Err(TryRecvError::Empty) => {}
                        Err(TryRecvError::Disconnected) => open = false,
                    }
                }
                None => match self.spool.as_ref().and_then(Spooler::dones_due_in) {
                    // Done marks wait for the next commit, or at most DONE_DELAY.
                    Some(due) => match rx.recv_timeout(due) {
                        Ok(job) => open &= self.take(job),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => open = false,
                    },
                    None => match rx.recv() {
                        Ok(job) => open &= self.take(job),
                        Err(_) => open = false,
                    },
                },
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    if open && self.taken() < STORE_QUEUE_MAX {
                        match rx.recv_timeout(wait) {
                            Ok(job) => {
                                open &= self.take(job);
                                if open && Instant::now() < at {
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
            while open && self.taken() < STORE_QUEUE_MAX {
                match rx.try_recv() {
                    Ok(job) => open &= self.take(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            let work = self.taken() > 0;
            let started = Instant::now();
            let committed = self.commit(!open);
            if work {
                let ok = committed.is_ok();
                self.durable.commits.record(started.elapsed(), ok);
            }
            match committed {
                Ok(()) => {
                    retry_at = None;
                    failures = 0;
                    if let Some(spool) = &mut self.spool {
                        spool.hand();
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.durable.set_failing(true);
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
                if let Some(spool) = &self.spool {
                    spool.report_at_stop();
                }
                return Ok(());
            }
        }
    }

    /// Takes one job; false for [`Job::Stop`].
    fn take(&mut self, job: Job) -> bool {
        match job {
            Job::Op(seq, op) => {
                self.batch.push(op);
                self.last_seq = seq;
            }
            Job::Spool(seq, delivery) => {
                if let Some(spool) = &mut self.spool {
                    spool.entries.push(delivery);
                }
                self.last_seq = seq;
            }
            Job::Done(id) => {
                if let (Some(spool), Some(id)) = (&mut self.spool, id) {
                    spool.note_done(id);
                }
            }
            Job::Attach(feed) => {
                if let Some(spool) = &mut self.spool {
                    spool.feed = Some(feed);
                }
            }
            Job::Stop => return false,
        }
        true
    }

    /// Operations and deliveries taken but not committed.
    fn taken(&self) -> usize {
        self.batch.len() + self.spool.as_ref().map_or(0, |s| s.entries.len())
    }

    /// Writes the spool's part of the batch and the seen-index's, `fdatasync`s both (at the
    /// same time, the spool's on the spool's sync thread) and publishes the batch durable. The
    /// spool's part is never retried: a delivery it could not take is queued in memory
    /// instead.
    fn commit(&mut self, last: bool) -> Result<(), StoreError> {
        let staged = self.spool.as_mut().and_then(|s| s.begin(last));
        let seen = match staged {
            None => self.store.apply(&self.batch),
            Some((staged, sync)) => {
                let seen = self.store.apply(&self.batch);
                let synced = sync.map_or(Ok(()), SyncWait::wait);
                if let Some(spool) = &mut self.spool {
                    spool.end(staged, synced);
                }
                seen
            }
        };
        seen?;
        if !self.batch.is_empty() || self.last_seq > self.published {
            debug!(
                ops = self.batch.len(),
                seq = self.last_seq,
                "seen-index committed"
            );
        }
        self.batch.clear();
        self.durable.set_failing(false);
        if self.last_seq > self.published {
            self.publish();
        }
        Ok(())
    }

    fn publish(&mut self) {
        self.published = self.last_seq;
        self.durable.publish(self.last_seq);
        if let Some(wake) = &self.on_durable {
            let seq = self.last_seq;
            if panic::catch_unwind(AssertUnwindSafe(|| wake(seq))).is_err() {
                error!("the seen-index on_durable callback panicked");
            }
        }
    }
}

/// The worker's side of the handler spool: the spool, the handlers' queue, and what waits for
/// the next commit.
struct Spooler {
    spool: Spool,
    feed: Option<Feed>,
    /// The thread that `fdatasync`s the spool while the worker commits the seen-index (none
    /// if it could not be started: the worker syncs both itself).
    syncer: Option<Syncer>,
    /// Deliveries to write with the next commit.
    entries: Vec<Delivery>,
    /// Ids the handlers are done with, to mark with the next write.
    dones: Vec<u64>,
    /// When the oldest of `dones` came.
    dones_since: Option<Instant>,
    /// Spooled, to queue once the seen-index part of their commit is durable too.
    ready: Vec<(u64, Delivery)>,
    /// Not spooled (the spool is full or failing), to queue in memory after the commit.
    unspooled: Vec<Delivery>,
    /// Reading parked deliveries back until the handlers' queue is full again.
    refill: bool,
}

impl Spooler {
    fn new(spool: Spool) -> Self {
        let syncer = Syncer::spawn()
            .inspect_err(|e| {
                warn!("cannot start the handler spool's sync thread ({e}); syncing in turn");
            })
            .ok();
        Self {
            spool,
            feed: None,
            syncer,
            entries: Vec::new(),
            dones: Vec::new(),
            dones_since: None,
            ready: Vec::new(),
            unspooled: Vec::new(),
            refill: false,
        }
    }

    fn refilling(&self) -> bool {
        self.refill && self.feed.is_some()
    }

    fn note_done(&mut self, id: u64) {
        self.dones.push(id);
        self.dones_since.get_or_insert_with(Instant::now);
    }

    /// How long until the done marks waiting must be written (`None`: none waits).
    fn dones_due_in(&self) -> Option<Duration> {
        self.dones_since
            .map(|since| DONE_DELAY.saturating_sub(since.elapsed()))
    }

    /// Begins the spool's part of a commit: the entries taken, and the done marks if entries
    /// go too, or many wait, or the oldest has waited [`DONE_DELAY`], or this is the `last`
    /// commit. Returns the write and, if it needs an `fdatasync`, that sync under way.
    fn begin(&mut self, last: bool) -> Option<(Staged, Option<SyncWait<'_>>)> {
        let dones_due = last
            || self.dones.len() >= DONE_BATCH
            || self.dones_due_in().is_some_and(|d| d.is_zero());
        let dones_go = dones_due && !self.dones.is_empty();
        if self.entries.is_empty() && !dones_go && !last {
            return None;
        }
        let entries = std::mem::take(&mut self.entries);
        let mut staged = self.spool.begin(entries, &self.dones, last);
        self.dones.clear();
        self.dones_since = None;
        let sync = staged.sync.take().map(|file| match &self.syncer {
            Some(syncer) => syncer.start(file),
            None => SyncWait::Done(file.sync_data()),
        });
        Some((staged, sync))
    }

    fn end(&mut self, staged: Staged, synced: std::io::Result<()>) {
        let written = self.spool.end(staged, synced);
        self.ready.extend(written.spooled);
        self.unspooled.extend(written.unspooled);
    }

    /// After a commit: queues the new deliveries (each at once if it is the first parked one
    /// and fits; otherwise it stays parked), then reads parked ones back if the queue has
    /// drained.
    fn hand(&mut self) {
        let Some(feed) = self.feed.clone() else {
            // No handlers (yet): the spooled deliveries stay parked on disk.
            self.ready.clear();
            if !self.unspooled.is_empty() {
                warn!(
                    events = self.unspooled.len(),
                    "handler spool: events neither spooled nor handed to handlers (none attached)"
                );
                self.unspooled.clear();
            }
            return;
        };
        for (id, delivery) in std::mem::take(&mut self.ready) {
            if self.spool.next_parked().map(|(next, _)| next) == Some(id)
                && feed.offer(delivery, id).is_ok()
            {
                self.spool.set_handed(id);
            }
        }
        for delivery in std::mem::take(&mut self.unspooled) {
            feed.dispatch(delivery);
        }
        self.read_back(&feed);
    }

    /// Queues parked deliveries, read back from the spool, once the queue has drained below
    /// half its bounds and until it is full again; at most [`REFILL_BYTES`] per call, so that
    /// commits are not held up.
    fn read_back(&mut self, feed: &Feed) {
        if !self.refill {
            if self.spool.parked() == 0 || !feed.wants_refill() {
                return;
            }
            self.refill = true;
        }
        let mut budget = REFILL_BYTES;
        while let Some((id, loc)) = self.spool.next_parked() {
            if budget == 0 {
                return;
            }
            let size = loc.record_len();
            if !feed.has_room(usize::try_from(size).unwrap_or(usize::MAX)) {
                break;
            }
            budget = budget.saturating_sub(size);
            match self.spool.read(loc) {
                Ok(Some(delivery)) => match feed.offer(delivery, id) {
                    Ok(()) => self.spool.set_handed(id),
                    Err(Refused::Full | Refused::Closed) => break,
                },
                Ok(None) => {
                    warn!(
                        id,
                        "handler spool: an event no longer checks out when read back (damage \
                         since it was written): its handler work is lost. Check the disk"
                    );
                    self.spool.set_handed(id);
                    self.note_done(id);
                }
                Err(e) => {
                    error!(
                        id,
                        "handler spool: cannot read an event back: {e}; its handler work is \
                         lost. Check the disk"
                    );
                    self.spool.set_handed(id);
                    self.note_done(id);
                }
            }
        }
        self.refill = false;
    }

    /// At stop: how many events stay in the spool for the next start.
    fn report_at_stop(&self) {
        let pending = self.spool.pending();
        if pending > 0 {
            info!(
                events = pending,
                "handler spool: {pending} events not handled yet stay in the spool; they are \
                 handed to the handlers after the next start"
            );
        }
    }
}

/// Delay before retrying a failed commit.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Attempts at the final commit when stopping, counting the one that failed before.
const STOP_ATTEMPTS: u32 = 3;

/// Most bytes of parked deliveries read back between two looks at the queue of jobs.
const REFILL_BYTES: u64 = 4 << 20;

/// Done marks are written with the next entries, or once this many wait, or once the oldest
/// has waited [`DONE_DELAY`] (a crash before loses them: those events are handled again).
const DONE_BATCH: usize = 1024;
const DONE_DELAY: Duration = Duration::from_secs(1);

/// A thread that `fdatasync`s spool segments for the worker, so that the spool's sync and the
/// seen-index's run at the same time.
struct Syncer {
    tx: Sender<Arc<File>>,
    rx: Receiver<std::io::Result<()>>,
}

/// An `fdatasync` under way (or done).
enum SyncWait<'a> {
    Started(&'a Syncer),
    Done(std::io::Result<()>),
}

impl Syncer {
    fn spawn() -> std::io::Result<Self> {
        let (tx, files) = mpsc::channel::<Arc<File>>();
        let (results, rx) = mpsc::channel();
        thread::Builder::new()
            .name("vtp-spool-sync".into())
            .spawn(move || {
                // Ends when the worker drops its sender.
                for file in files {
                    if results.send(file.sync_data()).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self { tx, rx })
    }

    fn start(&self, file: Arc<File>) -> SyncWait<'_> {
        match self.tx.send(file) {
            Ok(()) => SyncWait::Started(self),
            Err(mpsc::SendError(file)) => SyncWait::Done(file.sync_data()),
        }
    }
}

impl SyncWait<'_> {
    fn wait(self) -> std::io::Result<()> {
        match self {
            Self::Started(syncer) => syncer
                .rx
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("the spool's sync thread died"))),
            Self::Done(result) => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::store::tests::{persist_all, record, sorted};
    use crate::testutil::TempDir;

    #[test]
    fn the_probe_counts_commits_and_sees_the_worker_stop() {
        let tmp = TempDir::new("store-probe");
        let store = SeenStore::open(tmp.path()).unwrap();
        let mut worker = StoreWorker::spawn(store, None).unwrap();
        let probe = worker.probe();
        assert!(probe.is_healthy() && !probe.is_stopped());
        assert_eq!(probe.commits().count(), 0);
        let mut last = 0;
        for op in persist_all(0..3) {
            last = worker.send(op).unwrap();
        }
        assert!(worker.wait_durable(last, Duration::from_secs(30)));
        // The worker times a commit after publishing it durable: the count may lag a moment.
        let deadline = Instant::now() + Duration::from_secs(30);
        while probe.commits().count() == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let commits = probe.commits();
        assert!((1..=3).contains(&commits.count()), "{commits:?}");
        assert_eq!(commits.failed, 0);
        assert_eq!(probe.durable_seq(), last);
        worker.flush_and_stop().unwrap();
        assert!(probe.is_stopped(), "the probe outlives the worker");
    }

    #[test]
    fn committer_takes_everything_queued_as_one_batch() {
        let tmp = TempDir::new("store-group");
        let store = SeenStore::open(tmp.path()).unwrap();
        let (tx, rx) = mpsc::channel();
        for (seq, op) in (1..=1000).zip(persist_all(0..1000)) {
            tx.send(Job::Op(seq, op)).unwrap();
        }
        tx.send(Job::Stop).unwrap();
        let commits = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&commits);
        let durable = Arc::new(Durable::default());
        let committer = Committer {
            store,
            spool: None,
            batch: Vec::new(),
            last_seq: 0,
            published: 0,
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
    fn the_worker_reports_unhealthy_after_a_failed_commit_and_healthy_after_the_next_success() {
        let tmp = TempDir::new("store-health");
        let mut store = SeenStore::open(tmp.path()).unwrap();
        let full = Arc::new(AtomicBool::new(true));
        let disk = Arc::clone(&full);
        store.fail_write = Some(Box::new(move |_, _| {
            if disk.load(Ordering::SeqCst) {
                Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
            } else {
                Ok(())
            }
        }));
        let mut worker = StoreWorker::spawn(store, None).unwrap();
        let (tx, rx) = mpsc::channel();
        worker.set_waker(Waker::from(Arc::new(CountingWake(Mutex::new(tx)))));
        assert!(worker.is_healthy());
        let seq = worker.send(StoreOp::Persist(record(1))).unwrap();
        rx.recv_timeout(Duration::from_secs(30))
            .expect("woken by the failed commit");
        assert!(!worker.is_healthy());
        assert!(!worker.wait_durable(seq, Duration::from_millis(10)));
        // Space is freed: the retry (a second later) commits, and the store is healthy again.
        full.store(false, Ordering::SeqCst);
        assert!(worker.wait_durable(seq, Duration::from_secs(30)));
        assert!(worker.is_healthy());
        worker.flush_and_stop().unwrap();
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
                "store::worker::tests::records_reported_durable_survive_an_abort",
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
