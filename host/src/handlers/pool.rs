//! [`Handlers`]: the bounded pool of worker threads that runs the handlers on every delivery.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{error, warn};
use vtp_core::Delivery;

use super::Handler;
use crate::store::ErrorChain;

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
    /// The workers' handlers, to [`stop`](Handler::stop) at shutdown.
    handlers: Arc<[Arc<dyn Handler>]>,
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
            handlers,
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
    /// After `grace`, queued deliveries not yet started are dropped, every handler is told to
    /// [`stop`](Handler::stop) (a [`Command`](super::Command) kills its running programs with
    /// their process groups), handlers still running are left to finish on their own (their
    /// threads are detached) and a WARN is logged.
    pub fn shutdown(self, grace: Duration) -> bool {
        let Self {
            tx,
            workers,
            done_rx,
            abandon,
            handlers,
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
                    for handler in handlers.iter() {
                        handler.stop();
                    }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc::Sender;

    use super::*;
    use crate::handlers::HandlerError;
    use crate::testutil::{capture_logs, delivery};

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
