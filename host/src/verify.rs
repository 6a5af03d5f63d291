//! Signature verification off the event loop: a few threads that run the node's
//! [`VerifyJob`]s ([`Action::Verify`](vtp_core::Action::Verify)) and hand the verdicts back
//! through [`HostEffects`](crate::effects::HostEffects), waking the runtime with the
//! durability waker.
//!
//! The node parks an author's signed submission while its signature is verified here
//! ([`Node::set_verify_offload`](vtp_core::Node::set_verify_offload)), so the event loop goes
//! on reading, parsing and forwarding other events meanwhile: on a machine with a core to
//! spare, requiring signatures then costs the loop little more than not verifying. The queue
//! is bounded: a job that does not fit is refused, and the driver verifies it in place. A
//! verifier that panics gives the verdict `malformed` instead of losing the job.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::thread::{self, JoinHandle};

use vtp_core::signature::{Verdict, VerifyJob};

/// Jobs waiting for a thread, at most.
pub const QUEUE_MAX: usize = 256;

/// Threads for the pool on this machine: one less than its cores, 1 to 4.
#[must_use]
pub fn default_threads() -> usize {
    thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .clamp(1, 4)
}

/// The verification threads (stopped and joined on drop).
pub struct VerifyPool {
    jobs: Option<SyncSender<VerifyJob>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    done: Mutex<Vec<(u64, Verdict)>>,
    waker: Mutex<Option<Waker>>,
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl VerifyPool {
    /// Starts `threads` threads (at least 1) named `vtp-verify-N`, with a queue of
    /// [`QUEUE_MAX`] jobs.
    ///
    /// # Errors
    ///
    /// The OS refused a thread.
    pub fn spawn(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<VerifyJob>(QUEUE_MAX);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared::default());
        let mut pool = Self {
            jobs: Some(tx),
            shared,
            threads: Vec::new(),
        };
        for i in 0..threads.max(1) {
            let (rx, shared) = (Arc::clone(&rx), Arc::clone(&pool.shared));
            let handle = thread::Builder::new()
                .name(format!("vtp-verify-{i}"))
                .spawn(move || work(&rx, &shared))?;
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    /// Queues `job`; gives it back when the queue is full (the caller verifies in place).
    ///
    /// # Errors
    ///
    /// The job, when the queue is full or the threads are gone.
    pub fn submit(&self, job: VerifyJob) -> Result<(), VerifyJob> {
        let Some(tx) = &self.jobs else {
            return Err(job);
        };
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }

    /// Wake `waker` when a verdict arrives and none was waiting to be taken ([`Self::take`]
    /// takes them all): once per batch, not per verdict. Woken at once if verdicts wait.
    pub fn set_waker(&self, waker: Waker) {
        let waiting = !lock(&self.shared.done).is_empty();
        *lock(&self.shared.waker) = Some(waker.clone());
        if waiting {
            waker.wake();
        }
    }

    /// Moves the verdicts reached so far into `out`.
    pub fn take(&self, out: &mut Vec<(u64, Verdict)>) {
        out.append(&mut lock(&self.shared.done));
    }
}

impl Drop for VerifyPool {
    fn drop(&mut self) {
        // The threads end once the queue's sender is gone and the queue is empty.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn work(rx: &Mutex<Receiver<VerifyJob>>, shared: &Shared) {
    loop {
        // The lock is held only while waiting for one job.
        let Ok(job) = lock(rx).recv() else {
            return;
        };
        let verdict = catch_unwind(AssertUnwindSafe(|| job.run()))
            .unwrap_or_else(|_| Verdict::Malformed("the verifier failed on this signature".into()));
        let first = {
            let mut done = lock(&shared.done);
            done.push((job.id(), verdict));
            done.len() == 1
        };
        // Verdicts waiting already had their wake-up, and the owner takes them all at once:
        // only the first since the last take wakes it (one wake-up, one syscall, per batch).
        if first && let Some(w) = lock(&shared.waker).clone() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::{Duration, Instant};

    use vtp_core::signature::Verifier;

    use super::*;

    /// Says `valid` for "good", panics for "panic", blocks while `gate` is held.
    #[derive(Debug)]
    struct Test {
        gate: Arc<Mutex<()>>,
    }

    impl Verifier for Test {
        fn verify(&self, signed: &[u8], _armour: &str) -> Verdict {
            drop(lock(&self.gate));
            match signed {
                b"good" => Verdict::Valid {
                    fingerprint: "AB".into(),
                    user_id: String::new(),
                },
                b"panic" => panic!("a verifier bug"),
                _ => Verdict::Invalid("bad".into()),
            }
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn job(id: u64, signed: &'static [u8], verifier: &Arc<dyn Verifier>) -> VerifyJob {
        VerifyJob::new(
            id,
            Arc::clone(verifier),
            bytes::Bytes::from_static(signed),
            "armour".into(),
        )
    }

    fn wait_for(pool: &VerifyPool, n: usize) -> Vec<(u64, Verdict)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(Instant::now() < deadline, "verdicts so far: {got:?}");
            pool.take(&mut got);
            thread::park_timeout(Duration::from_millis(1));
        }
        got.sort_by_key(|(id, _)| *id);
        got
    }

    /// A [`Test`] verifier and the gate it waits on.
    fn gated() -> (Arc<Mutex<()>>, Arc<dyn Verifier>) {
        let gate = Arc::new(Mutex::new(()));
        let verifier = Arc::new(Test {
            gate: Arc::clone(&gate),
        });
        (gate, verifier)
    }

    #[test]
    fn verdicts_come_back_by_job_number_and_wake_the_loop() {
        let (_gate, verifier) = gated();
        let pool = VerifyPool::spawn(2).unwrap();
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        pool.set_waker(Waker::from(Arc::clone(&wakes)));
        pool.submit(job(1, b"good", &verifier)).unwrap();
        pool.submit(job(2, b"bad", &verifier)).unwrap();
        // A verifier that panics: the verdict says so, and the thread goes on.
        pool.submit(job(3, b"panic", &verifier)).unwrap();
        pool.submit(job(4, b"good", &verifier)).unwrap();
        let got = wait_for(&pool, 4);
        assert_eq!(got.len(), 4);
        assert!(matches!(got[0], (1, Verdict::Valid { .. })));
        assert!(matches!(got[1], (2, Verdict::Invalid(_))));
        assert!(matches!(&got[2], (3, Verdict::Malformed(why)) if why.contains("failed")));
        assert!(matches!(got[3], (4, Verdict::Valid { .. })));
        assert!(wakes.0.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn verdicts_waiting_to_be_taken_wake_the_loop_once() {
        let (gate, verifier) = gated();
        let pool = VerifyPool::spawn(1).unwrap();
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        pool.set_waker(Waker::from(Arc::clone(&wakes)));
        let held = lock(&gate);
        for id in 0..3 {
            pool.submit(job(id, b"good", &verifier)).unwrap();
        }
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(30);
        while lock(&pool.shared.done).len() < 3 {
            assert!(Instant::now() < deadline, "verdicts never came");
            thread::yield_now();
        }
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "one wake-up for three verdicts"
        );
        let mut got = Vec::new();
        pool.take(&mut got);
        assert_eq!(got.len(), 3);
        // Taken: the next verdict wakes the loop again.
        pool.submit(job(3, b"good", &verifier)).unwrap();
        assert_eq!(wait_for(&pool, 1).len(), 1);
        // (The wake-up follows the verdict: the take may come between the two.)
        while wakes.0.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "no second wake-up");
            thread::yield_now();
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        // A waker set while verdicts wait is woken at once.
        pool.submit(job(4, b"good", &verifier)).unwrap();
        while lock(&pool.shared.done).is_empty() {
            assert!(Instant::now() < deadline, "verdict never came");
            thread::yield_now();
        }
        let late = Arc::new(Count(AtomicUsize::new(0)));
        pool.set_waker(Waker::from(Arc::clone(&late)));
        assert_eq!(late.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_full_queue_gives_the_job_back() {
        let (gate, verifier) = gated();
        let pool = VerifyPool::spawn(1).unwrap();
        let held = lock(&gate);
        // One job in the thread (blocked on the gate), QUEUE_MAX in the queue, then refusals.
        let mut taken = 0;
        let mut refused = None;
        for id in 0..(QUEUE_MAX as u64 + 10) {
            match pool.submit(job(id, b"good", &verifier)) {
                Ok(()) => taken += 1,
                Err(j) => {
                    refused = Some(j.id());
                    break;
                }
            }
        }
        assert!(
            (QUEUE_MAX..=QUEUE_MAX + 1).contains(&taken),
            "taken {taken}"
        );
        assert_eq!(refused, Some(taken as u64));
        drop(held);
        assert_eq!(wait_for(&pool, taken).len(), taken);
    }
}
