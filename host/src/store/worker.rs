//! The store worker: a thread that owns the [`SeenStore`] and commits queued operations in
//! groups (see the [module docs](super), "Group commit and durability").

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::Waker;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{debug, error};

use super::{ErrorChain, STORE_QUEUE_MAX, SeenStore, SendError, StoreError, StoreOp};

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
    /// Set when a commit fails, cleared by the next one that succeeds.
    failing: AtomicBool,
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
                    self.durable.failing.store(false, Ordering::Release);
                    self.publish();
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

/// Delay before retrying a failed commit.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Attempts at the final commit when stopping, counting the one that failed before.
const STOP_ATTEMPTS: u32 = 3;

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::store::tests::{persist_all, record, sorted};
    use crate::testutil::TempDir;

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
