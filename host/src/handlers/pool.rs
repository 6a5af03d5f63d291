//! [`Handlers`]: the bounded pool of worker threads that runs the handlers on every delivery.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};
use vtp_core::Delivery;

use crate::ratelog::RateLog;

use super::{Handler, HandlerError, Queued};
use crate::store::ErrorChain;

/// Default for [`Handlers::with_queue_bytes`]: most event bytes the pool holds (64 MiB).
pub const QUEUE_BYTES_DEFAULT: usize = 64 << 20;

/// Runs handlers on every delivery, on a bounded pool of worker threads.
///
/// The queue is bounded twice: by count (`queue_max` deliveries) and by bytes (the ivorn and
/// payload of every delivery queued or being handled, at most
/// [`with_queue_bytes`](Self::with_queue_bytes), default [`QUEUE_BYTES_DEFAULT`]). A delivery's
/// payload may be shared with the forwards to subscribers; it counts anyway, since the queue
/// keeps it alive. At either bound the delivery is dropped for the handlers, counted
/// ([`dropped`](Self::dropped)) and logged at WARN with its ivorn (at most
/// [`DROP_LOGS_PER_SEC`] lines a second with ivorns, then a count).
///
/// With the store's handler spool (linked by
/// [`HostEffects`](crate::effects::HostEffects)), the store worker queues deliveries it has
/// spooled instead: one that does not fit stays in the spool and is queued once the queue has
/// drained below half of both bounds, and after each one is handled the worker is told, so
/// that it marks it done. Spooled deliveries still queued, or whose command was stopped, when
/// [`shutdown`](Self::shutdown) gives up stay in the spool for the next start.
///
/// Dropping it without [`shutdown`](Self::shutdown) lets the workers finish the queue in the
/// background.
pub struct Handlers {
    /// The queue's receiving end, shared by the workers; drained at shutdown to count and log
    /// what is dropped.
    rx: Arc<Mutex<Receiver<Item>>>,
    workers: Vec<JoinHandle<()>>,
    /// Disconnected once every worker has returned (each holds a sender it never uses).
    done_rx: Receiver<()>,
    shared: Arc<Shared>,
}

/// The handlers every worker runs, in order.
type List = Arc<[Arc<dyn Handler>]>;
/// A list replaced by a reload, alive while a worker still runs it.
type Retired = Weak<[Arc<dyn Handler>]>;

/// A handle on the handlers a [`Handlers`] pool runs, for a configuration reload:
/// [`replace`](Self::replace) them and [`set_queue_bytes`](Self::set_queue_bytes) without
/// touching the queue (queued and spooled deliveries go to the new handlers).
#[derive(Clone)]
pub struct HandlerSet(Arc<Shared>);

/// A delivery on the queue, with its id in the handler spool if it is spooled.
struct Item {
    delivery: Delivery,
    spool: Option<u64>,
}

/// Told after each delivery is handled: `Some(id)` for a spooled delivery whose handlers have
/// all run (none was stopped by a shutdown), `None` for any other (the queue drained a bit).
pub(crate) type SpoolDone = Box<dyn Fn(Option<u64>) + Send + Sync>;

/// State shared by the pool, its workers and the store worker's [`Feed`].
struct Shared {
    /// The queue's sending end; taken at shutdown, which closes the queue.
    tx: Mutex<Option<SyncSender<Item>>>,
    queue_max: usize,
    bytes_max: AtomicUsize,
    /// Set when shutdown gives up: workers drop what is left instead of handling it.
    abandon: AtomicBool,
    /// Event bytes of the deliveries queued or being handled.
    queued_bytes: AtomicUsize,
    /// Deliveries queued or being handled.
    queued: AtomicUsize,
    /// Deliveries not queued: either bound reached, or no worker left.
    dropped: AtomicU64,
    dropped_log: Mutex<DropLog>,
    /// Queued deliveries dropped because shutdown gave up.
    abandoned: AtomicU64,
    abandoned_log: Mutex<DropLog>,
    /// Spooled deliveries left unhandled at shutdown: they stay in the spool.
    kept: AtomicU64,
    spool_done: OnceLock<SpoolDone>,
    /// The handlers each delivery goes to: a worker takes the current list for each one.
    handlers: RwLock<List>,
    /// Lists replaced while a worker may still run them, to [`stop`](Handler::stop) at
    /// shutdown too.
    retired: Mutex<Vec<Retired>>,
}

/// Why [`Feed::offer`] did not queue a delivery (it stays in the spool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A bound is reached: try again once the queue drains.
    Full,
    /// The pool is shutting down.
    Closed,
}

/// What [`Handlers::probe`] gives: the queue's counters, readable from any thread.
#[derive(Clone)]
pub struct HandlersProbe(Arc<Shared>);

impl HandlersProbe {
    /// Deliveries not queued for the handlers so far (a bound reached, or no worker left).
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Deliveries queued or being handled now.
    pub fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Relaxed)
    }

    /// Event bytes of the deliveries queued or being handled now.
    pub fn queued_bytes(&self) -> usize {
        self.0.queued_bytes.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for HandlersProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlersProbe")
            .field("dropped", &self.dropped())
            .field("queued", &self.queued())
            .finish()
    }
}

/// The store worker's handle on the queue: it queues spooled deliveries and watches the queue
/// drain.
#[derive(Clone)]
pub(crate) struct Feed(Arc<Shared>);

impl Handlers {
    /// Starts `workers` threads (at least one) serving a queue of at most `queue_max`
    /// deliveries (at least one) and [`QUEUE_BYTES_DEFAULT`] bytes, each delivery going to
    /// every handler in order.
    ///
    /// A worker thread the system refuses to start is logged at ERROR and the pool runs with
    /// fewer; with none at all, every [`dispatch`](Self::dispatch) returns `false` (and warns).
    pub fn new(handlers: Vec<Arc<dyn Handler>>, workers: usize, queue_max: usize) -> Self {
        let queue_max = queue_max.max(1);
        let (tx, rx) = mpsc::sync_channel::<Item>(queue_max);
        let rx = Arc::new(Mutex::new(rx));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let shared = Arc::new(Shared {
            tx: Mutex::new(Some(tx)),
            queue_max,
            bytes_max: AtomicUsize::new(QUEUE_BYTES_DEFAULT),
            abandon: AtomicBool::new(false),
            queued_bytes: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            dropped_log: Mutex::new(DropLog::default()),
            abandoned: AtomicU64::new(0),
            abandoned_log: Mutex::new(DropLog::default()),
            kept: AtomicU64::new(0),
            spool_done: OnceLock::new(),
            handlers: RwLock::new(handlers.into()),
            retired: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::with_capacity(workers.max(1));
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(&shared);
            let done = done_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("vtp-handler-{i}"))
                .spawn(move || {
                    serve(&rx, &shared);
                    drop(done);
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => error!(error = %e, "cannot start a handler worker thread"),
            }
        }
        Self {
            rx,
            workers: threads,
            done_rx,
            shared,
        }
    }

    /// A handle that replaces the handlers this pool runs (a configuration reload).
    pub fn handler_set(&self) -> HandlerSet {
        HandlerSet(Arc::clone(&self.shared))
    }

    /// Bounds the event bytes (ivorn plus payload) of the deliveries queued or being handled
    /// to `bytes_max` (at least one byte). One delivery is always taken when none is held, so
    /// an event larger than the bound is still handled when the handlers are idle.
    #[must_use]
    pub fn with_queue_bytes(self, bytes_max: usize) -> Self {
        self.shared
            .bytes_max
            .store(bytes_max.max(1), Ordering::Relaxed);
        self
    }

    /// Queues a delivery for the handlers without blocking; returns whether it was queued.
    ///
    /// If the queue is full (by count or by bytes) the delivery is dropped for the handlers
    /// (subscribers are not affected), a WARN with its ivorn is logged (rate-limited) and
    /// [`dropped`](Self::dropped) counts it.
    pub fn dispatch(&self, delivery: Delivery) -> bool {
        self.shared.dispatch(delivery)
    }

    /// How many deliveries [`dispatch`](Self::dispatch) has dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Event bytes (ivorn plus payload) of the deliveries queued or being handled now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Acquire)
    }

    /// A read-only handle on the queue's counters, for another thread (a metrics endpoint).
    pub fn probe(&self) -> HandlersProbe {
        HandlersProbe(Arc::clone(&self.shared))
    }

    /// The store worker's handle on the queue, for the handler spool.
    pub(crate) fn feed(&self) -> Feed {
        Feed(Arc::clone(&self.shared))
    }

    /// Calls `done` after each delivery is handled (see [`SpoolDone`]); only the first call
    /// takes effect.
    pub(crate) fn set_spool_done(&self, done: SpoolDone) {
        let _ = self.shared.spool_done.set(done);
    }

    /// Stops taking deliveries, lets the workers finish the queue for at most `grace`, and
    /// returns whether they all finished.
    ///
    /// After `grace`, queued deliveries not yet started are dropped, each counted and logged
    /// at WARN with its ivorn (rate-limited as in [`dispatch`](Self::dispatch)) — except
    /// spooled ones, which stay in the handler spool and are handled after the next start
    /// (their count is logged at INFO) — every handler is told to [`stop`](Handler::stop) (a
    /// [`Command`](super::Command) kills its running programs with their process groups; a
    /// spooled event whose command is stopped so stays in the spool too), handlers still
    /// running are left to finish on their own (their threads are detached) and a WARN is
    /// logged. Either way a summary line gives the deliveries not queued and those dropped at
    /// shutdown.
    pub fn shutdown(self, grace: Duration) -> bool {
        let Self {
            rx,
            workers,
            done_rx,
            shared,
        } = self;
        // Workers drain the queue, then see the channel closed and return.
        drop(
            shared
                .tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let deadline = Instant::now() + grace;
        let finished = loop {
            match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Disconnected) => break true,
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => break false,
            }
        };
        if finished {
            for worker in workers {
                // Every worker has returned; a panic in a handler is caught inside it.
                let _ = worker.join();
            }
        } else {
            shared.abandon.store(true, Ordering::Release);
            // Every worker is busy in a handler (an idle one would be taking deliveries), so
            // the lock is free or held for a moment; what is left is dropped here.
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            while let Ok(item) = rx.try_recv() {
                shared.abandon_one(&item);
            }
            drop(rx);
            for handler in shared.every_handler() {
                handler.stop();
            }
            let running = workers.iter().filter(|w| !w.is_finished()).count();
            if shared.spool_done.get().is_some() {
                warn!(
                    running,
                    ?grace,
                    "handlers did not finish in time: queued events stay in the handler spool \
                     (handled after the next start), running handlers were told to stop"
                );
            } else {
                warn!(
                    running,
                    ?grace,
                    "handlers did not finish in time: queued events dropped, \
                     running handlers left to finish on their own"
                );
            }
        }
        shared
            .dropped_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush("handler queue full");
        shared
            .abandoned_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush("dropped at shutdown");
        let not_queued = shared.dropped.load(Ordering::Relaxed);
        let abandoned = shared.abandoned.load(Ordering::Relaxed);
        let kept = shared.kept.load(Ordering::Relaxed);
        if not_queued > 0 || abandoned > 0 {
            warn!(
                not_queued,
                dropped_at_shutdown = abandoned,
                "handlers stopped: {not_queued} events not handed to the handlers (queue full), \
                 {abandoned} queued events dropped at shutdown"
            );
        } else {
            info!("handlers stopped: every accepted event was handed to the handlers");
        }
        if kept > 0 {
            info!(
                kept,
                "{kept} queued events were not handled before the grace period ran out: they \
                 stay in the handler spool and are handled after the next start"
            );
        }
        finished
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("handlers", &self.handler_set().names())
            .field("workers", &self.workers.len())
            .field("queue_max", &self.shared.queue_max)
            .field("bytes_max", &self.shared.bytes_max.load(Ordering::Relaxed))
            .field("queued_bytes", &self.queued_bytes())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl HandlerSet {
    /// Every delivery taken from now on goes to `handlers`, in order (queued ones included);
    /// a delivery a worker is handling finishes with the handlers it started with. At
    /// shutdown, handlers replaced but still running are told to stop as well.
    pub fn replace(&self, handlers: Vec<Arc<dyn Handler>>) {
        let old = std::mem::replace(
            &mut *self
                .0
                .handlers
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            handlers.into(),
        );
        let mut retired = self
            .0
            .retired
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        retired.retain(|w| w.strong_count() > 0);
        retired.push(Arc::downgrade(&old));
    }

    /// Bounds the event bytes held for the handlers to `bytes_max` (at least one) from now on,
    /// as [`Handlers::with_queue_bytes`]; deliveries already queued stay.
    pub fn set_queue_bytes(&self, bytes_max: usize) {
        self.0.bytes_max.store(bytes_max.max(1), Ordering::Relaxed);
    }

    /// The names of the handlers run now, in order.
    pub fn names(&self) -> Vec<String> {
        self.0
            .current()
            .iter()
            .map(|h| h.name().to_owned())
            .collect()
    }
}

impl fmt::Debug for HandlerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HandlerSet").field(&self.names()).finish()
    }
}

impl Feed {
    /// Queues a spooled delivery (`id` in the spool) without blocking. A refusal is not a
    /// drop: the delivery stays in the spool.
    pub(crate) fn offer(&self, delivery: Delivery, id: u64) -> Result<(), Refused> {
        let item = Item {
            delivery,
            spool: Some(id),
        };
        self.0.try_queue(item).map_err(|refused| match refused.1 {
            Why::Bytes | Why::Count => Refused::Full,
            Why::Closed => Refused::Closed,
        })
    }

    /// [`Handlers::dispatch`]: queues a delivery that is not spooled, or drops it (counted and
    /// logged).
    pub(crate) fn dispatch(&self, delivery: Delivery) -> bool {
        self.0.dispatch(delivery)
    }

    /// True when the queue has drained to half of both its bounds (or less), and is open:
    /// time to queue parked deliveries again.
    pub(crate) fn wants_refill(&self) -> bool {
        let s = &self.0;
        let bytes = s.queued_bytes.load(Ordering::Acquire);
        let queued = s.queued.load(Ordering::Acquire);
        bytes <= s.bytes_max.load(Ordering::Relaxed) / 2
            && queued <= s.queue_max / 2
            && !self.is_closed()
    }

    /// True when a delivery of `bytes` event bytes would be queued now.
    pub(crate) fn has_room(&self, bytes: usize) -> bool {
        let s = &self.0;
        let held = s.queued_bytes.load(Ordering::Acquire);
        (held == 0 || held.saturating_add(bytes) <= s.bytes_max.load(Ordering::Relaxed))
            && s.queued.load(Ordering::Acquire) < s.queue_max
    }

    /// True once the pool shuts down.
    pub(crate) fn is_closed(&self) -> bool {
        self.0
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }
}

/// Why [`Shared::try_queue`] did not queue.
#[derive(Debug, Clone, Copy)]
enum Why {
    Bytes,
    Count,
    Closed,
}

impl Shared {
    /// The handlers to run a delivery with.
    fn current(&self) -> List {
        Arc::clone(&self.handlers.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The current handlers and those replaced that may still run.
    fn every_handler(&self) -> Vec<Arc<dyn Handler>> {
        let mut all: Vec<Arc<dyn Handler>> = self.current().to_vec();
        let retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        for list in retired.iter().filter_map(Weak::upgrade) {
            all.extend(list.iter().cloned());
        }
        all
    }

    /// Queues `item`, or hands it back with the reason (boxed: a refusal is the rare path).
    fn try_queue(&self, item: Item) -> Result<(), Box<(Item, Why)>> {
        let size = event_bytes(&item.delivery);
        let bytes_max = self.bytes_max.load(Ordering::Relaxed);
        let held = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q == 0 || q.saturating_add(size) <= bytes_max).then(|| q + size)
            });
        if held.is_err() {
            return Err(Box::new((item, Why::Bytes)));
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = match tx.as_ref() {
            Some(tx) => tx.try_send(item),
            None => Err(TrySendError::Disconnected(item)),
        };
        drop(tx);
        sent.map_err(|e| {
            self.release(size);
            Box::new(match e {
                TrySendError::Full(item) => (item, Why::Count),
                TrySendError::Disconnected(item) => (item, Why::Closed),
            })
        })
    }

    fn dispatch(&self, delivery: Delivery) -> bool {
        let item = Item {
            delivery,
            spool: None,
        };
        let (item, why) = match self.try_queue(item) {
            Ok(()) => return true,
            Err(refused) => *refused,
        };
        let why = match why {
            Why::Bytes => "handler queue full by bytes (handlers too slow or stuck)",
            Why::Count => "handler queue full (handlers too slow or stuck)",
            Why::Closed => "handler workers have stopped",
        };
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let mut log = self
            .dropped_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.note(&item.delivery.ivorn, Instant::now(), |ivorn| {
            warn!(
                ivorn = %ivorn,
                queue_max = self.queue_max,
                queue_bytes_max = self.bytes_max.load(Ordering::Relaxed),
                dropped,
                "{why}: event not handed to the handlers; subscribers still receive it"
            );
        });
        false
    }

    /// Releases what a delivery held: its bytes and its place.
    fn release(&self, size: usize) {
        self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Gives up a queued delivery because shutdown gave up: its bytes released; a spooled one
    /// stays in the spool (counted), any other is dropped (counted and logged).
    fn abandon_one(&self, item: &Item) {
        self.release(event_bytes(&item.delivery));
        if item.spool.is_some() {
            self.kept.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        let mut log = self
            .abandoned_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.note(&item.delivery.ivorn, Instant::now(), |ivorn| {
            warn!(
                ivorn = %ivorn,
                dropped,
                "handler grace period over: queued event dropped, not handed to the handlers"
            );
        });
    }
}

/// Most WARN lines a second that name the ivorn of a dropped delivery; beyond it, a count.
pub const DROP_LOGS_PER_SEC: u32 = 10;

/// Rate limit for the WARN lines about dropped deliveries: the first [`DROP_LOGS_PER_SEC`] of
/// each one-second window name their ivorn; the rest are counted and reported as one line when
/// the next window opens (or at [`flush`](Self::flush)).
#[derive(Debug)]
struct DropLog(RateLog);

impl Default for DropLog {
    fn default() -> Self {
        Self(RateLog::new(DROP_LOGS_PER_SEC))
    }
}

impl DropLog {
    /// Notes one drop at `now`: calls `log` with the ivorn if this window still has room.
    fn note(&mut self, ivorn: &str, now: Instant, log: impl FnOnce(&str)) {
        self.0
            .note(now, || log(ivorn), |n| Self::report("dropped", n));
    }

    /// Reports the drops counted but not logged so far, if any.
    fn flush(&mut self, what: &str) {
        let n = self.0.take_suppressed();
        if n > 0 {
            Self::report(what, n);
        }
    }

    fn report(what: &str, suppressed: u64) {
        warn!(
            suppressed,
            "{what}: {suppressed} more events not handed to the handlers (ivorns not logged: \
             more than {DROP_LOGS_PER_SEC} a second)"
        );
    }
}

/// The bytes a delivery keeps alive while queued: its ivorn and its payload.
fn event_bytes(delivery: &Delivery) -> usize {
    delivery.ivorn.len() + delivery.payload.len()
}

/// Most deliveries a worker takes at once, when every handler [batches](Handler::batches).
pub const BATCH_MAX: usize = 64;

/// A worker: takes deliveries until the queue is closed and empty, or shutdown gives up. One
/// at a time, or as many as wait (up to [`BATCH_MAX`]) when every handler handles batches:
/// then a handler that waits for a disk (the archive) pays one `fsync` for the lot, not one
/// each, while the other workers are busy too.
fn serve(rx: &Mutex<Receiver<Item>>, shared: &Shared) {
    let mut items: Vec<Item> = Vec::new();
    loop {
        if shared.abandon.load(Ordering::Acquire) {
            return;
        }
        let mut queued: Vec<Option<Queued>> = Vec::new();
        let handlers = {
            // The lock is held while taking, and while the handlers that keep the queue's
            // order queue what was taken; a poisoned lock still guards a usable receiver.
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(first) = rx.recv() else {
                return;
            };
            // The handlers as they are once there is work (they may have been replaced
            // while this worker waited).
            let handlers = shared.current();
            let batch_max = if handlers.iter().all(|h| h.batches()) {
                BATCH_MAX
            } else {
                1
            };
            items.push(first);
            while items.len() < batch_max {
                match rx.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
            if !shared.abandon.load(Ordering::Acquire) {
                let deliveries: Vec<&Delivery> = items.iter().map(|i| &i.delivery).collect();
                queued.extend(handlers.iter().map(|handler| {
                    // A panic here is the handler's bug: it runs as usual below, unordered.
                    panic::catch_unwind(AssertUnwindSafe(|| handler.queue_batch(&deliveries)))
                        .ok()
                        .flatten()
                }));
            }
            handlers
        };
        if shared.abandon.load(Ordering::Acquire) && queued.is_empty() {
            for item in &items {
                shared.abandon_one(item);
            }
            return;
        }
        let deliveries: Vec<&Delivery> = items.iter().map(|i| &i.delivery).collect();
        let mut stopped = vec![false; items.len()];
        for (handler, queued) in handlers.iter().zip(queued) {
            let results =
                panic::catch_unwind(AssertUnwindSafe(|| match (queued, deliveries.as_slice()) {
                    (Some(rest), _) => rest(),
                    (None, [one]) => vec![handler.handle(one)],
                    (None, many) => handler.handle_batch(many),
                }));
            let Ok(mut results) = results else {
                error!(
                    handler = handler.name(),
                    events = deliveries.len(),
                    first_ivorn = %deliveries[0].ivorn,
                    "handler panicked (a bug in the handler); the next handlers still run"
                );
                continue;
            };
            if results.len() != deliveries.len() {
                error!(
                    handler = handler.name(),
                    events = deliveries.len(),
                    results = results.len(),
                    "handler gave a result per event for some events only (a bug in the \
                     handler); the others count as not handled"
                );
            }
            results.resize_with(deliveries.len(), || {
                Err(HandlerError::Other("no result from the handler".into()))
            });
            for ((result, delivery), stopped) in
                results.into_iter().zip(&deliveries).zip(&mut stopped)
            {
                match result {
                    Ok(()) => {}
                    // Logged once by the handler itself; not done, like a stopped run.
                    Err(HandlerError::OutputClosed) => *stopped = true,
                    Err(e) => {
                        *stopped |= matches!(e, HandlerError::Stopped { .. });
                        warn!(
                            handler = handler.name(),
                            ivorn = %delivery.ivorn,
                            "{}",
                            ErrorChain(&e)
                        );
                    }
                }
            }
        }
        drop(deliveries);
        for (item, stopped) in items.drain(..).zip(stopped) {
            shared.release(event_bytes(&item.delivery));
            // A run cut short by the shutdown is not done: the event is handled again after
            // the next start.
            if let Some(done) = shared.spool_done.get() {
                done(item.spool.filter(|_| !stopped));
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

    #[test]
    fn the_queue_holds_at_most_its_byte_bound() {
        let (handler, started, release) = blocking();
        let counting = Arc::new(Counting::default());
        // Every delivery holds 1,024 payload bytes plus a 12-byte ivorn.
        let one = 1024 + "ivo://a/b#00".len();
        let pool =
            Handlers::new(vec![handler, counting.clone()], 1, 100).with_queue_bytes(4 * one + 100);
        let payload = [b'x'; 1024];
        assert!(pool.dispatch(delivery("ivo://a/b#00", &payload)));
        // The only worker is now stuck in the handler; its delivery still counts.
        assert_eq!(
            &*started.recv_timeout(Duration::from_secs(30)).unwrap(),
            "ivo://a/b#00"
        );
        let (queued, logs) = capture_logs(|| {
            (1..10)
                .map(|i| pool.dispatch(delivery(&format!("ivo://a/b#{i:02}"), &payload)))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            queued,
            [true, true, true, false, false, false, false, false, false]
        );
        assert_eq!(pool.queued_bytes(), 4 * one);
        assert_eq!(pool.dropped(), 6);
        for i in 4..10 {
            let ivorn = format!("ivo://a/b#{i:02}");
            assert!(
                logs.lines().any(|l| l.contains("WARN")
                    && l.contains("handler queue full by bytes")
                    && l.contains(&ivorn)),
                "{ivorn} not logged: {logs}"
            );
        }
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        let (finished, logs) = capture_logs(|| pool.shutdown(Duration::from_secs(30)));
        assert!(finished);
        assert!(
            logs.contains("6 events not handed to the handlers (queue full), 0 queued events"),
            "{logs}"
        );
        assert_eq!(counting.0.load(Ordering::SeqCst), 4);
        let rest: Vec<_> = started.try_iter().map(|s| s.to_string()).collect();
        assert_eq!(rest, ["ivo://a/b#01", "ivo://a/b#02", "ivo://a/b#03"]);
    }

    #[test]
    fn bytes_are_released_once_handled_and_one_large_event_always_fits() {
        let counting = Arc::new(Counting::default());
        let pool = Handlers::new(vec![counting.clone()], 1, 100).with_queue_bytes(10);
        for i in 0..5 {
            // Larger than the bound, taken because nothing else is held: wait until handled.
            assert!(pool.dispatch(delivery(&format!("ivo://a/b#{i}"), &[b'x'; 100])));
            let deadline = Instant::now() + Duration::from_secs(30);
            while pool.queued_bytes() > 0 {
                assert!(Instant::now() < deadline, "bytes never released");
                thread::yield_now();
            }
        }
        assert!(pool.shutdown(Duration::from_secs(30)));
        assert_eq!(counting.0.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn replaced_handlers_take_every_delivery_from_then_on() {
        let old = Arc::new(Counting::default());
        let new = Arc::new(Counting::default());
        let pool = Handlers::new(vec![old.clone()], 1, 100);
        let set = pool.handler_set();
        let drain = |pool: &Handlers| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while pool.queued_bytes() > 0 {
                assert!(Instant::now() < deadline, "never handled");
                thread::yield_now();
            }
        };
        assert!(pool.dispatch(delivery("ivo://a/b#1", b"x")));
        drain(&pool);
        set.replace(vec![new.clone(), new.clone()]);
        assert_eq!(set.names(), ["counting", "counting"]);
        assert!(pool.dispatch(delivery("ivo://a/b#2", b"x")));
        drain(&pool);
        assert!(pool.shutdown(Duration::from_secs(30)));
        assert_eq!(old.0.load(Ordering::SeqCst), 1);
        assert_eq!(new.0.load(Ordering::SeqCst), 2, "run twice: listed twice");
    }

    #[test]
    fn drop_logs_name_the_first_ivorns_of_each_second_then_count_the_rest() {
        let t0 = Instant::now();
        let mut log = DropLog::default();
        let mut named = Vec::new();
        let (_, logs) = capture_logs(|| {
            for i in 0..25 {
                log.note(&format!("ivo://a/b#{i}"), t0, |ivorn| {
                    named.push(ivorn.to_owned())
                });
            }
            // The next second opens a new window: the count of the unnamed comes first.
            log.note("ivo://a/b#late", t0 + Duration::from_secs(1), |ivorn| {
                named.push(ivorn.to_owned());
            });
            log.flush("dropped");
        });
        assert_eq!(named.len(), DROP_LOGS_PER_SEC as usize + 1);
        assert_eq!(named[0], "ivo://a/b#0");
        assert_eq!(named.last().unwrap(), "ivo://a/b#late");
        let count = 25 - DROP_LOGS_PER_SEC;
        assert!(
            logs.contains(&format!("{count} more events not handed to the handlers")),
            "{logs}"
        );
        assert_eq!(logs.matches("more events").count(), 1, "{logs}");
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

    /// Handles batches: records each batch's size; its first call waits for `gate` (so that
    /// deliveries queue behind it); fails the events whose ivorn contains `bad`.
    struct Batcher {
        sizes: Mutex<Vec<usize>>,
        started: Mutex<Sender<()>>,
        gate: Mutex<Receiver<()>>,
    }

    impl Handler for Batcher {
        fn name(&self) -> &str {
            "batcher"
        }

        fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
            self.handle_batch(&[d]).pop().unwrap()
        }

        fn batches(&self) -> bool {
            true
        }

        fn handle_batch(&self, ds: &[&Delivery]) -> Vec<Result<(), HandlerError>> {
            let first = {
                let mut sizes = self.sizes.lock().unwrap();
                sizes.push(ds.len());
                sizes.len() == 1
            };
            if first {
                let _ = self.started.lock().unwrap().send(());
                let _ = self.gate.lock().unwrap().recv();
            }
            ds.iter()
                .map(|d| {
                    if d.ivorn.contains("bad") {
                        Err(HandlerError::Other("refused".into()))
                    } else {
                        Ok(())
                    }
                })
                .collect()
        }
    }

    fn batcher() -> (Arc<Batcher>, Receiver<()>, Sender<()>) {
        let (started_tx, started_rx) = mpsc::channel();
        let (gate_tx, gate_rx) = mpsc::channel();
        let b = Arc::new(Batcher {
            sizes: Mutex::new(Vec::new()),
            started: Mutex::new(started_tx),
            gate: Mutex::new(gate_rx),
        });
        (b, started_rx, gate_tx)
    }

    #[test]
    fn a_worker_takes_what_waits_as_one_batch_when_every_handler_batches() {
        let (b, started, gate) = batcher();
        let pool = Handlers::new(vec![b.clone()], 1, 100);
        assert!(pool.dispatch(delivery("ivo://a/b#0", b"")));
        started.recv_timeout(Duration::from_secs(30)).unwrap();
        for i in 1..=70 {
            let ivorn = if i == 5 {
                "ivo://a/b#bad".to_owned()
            } else {
                format!("ivo://a/b#{i}")
            };
            assert!(pool.dispatch(delivery(&ivorn, b"")));
        }
        gate.send(()).unwrap();
        assert!(pool.shutdown(Duration::from_secs(30)));
        // One, then BATCH_MAX of the 70 that waited, then the rest (a failed event in a
        // batch is that event's failure alone).
        assert_eq!(*b.sizes.lock().unwrap(), [1, BATCH_MAX, 70 - BATCH_MAX]);
    }

    /// Records the order of what it queues; finishing takes a while, longer for some
    /// batches, so that workers overtake each other.
    struct InOrder {
        queued: Arc<Mutex<Vec<Arc<str>>>>,
    }

    impl Handler for InOrder {
        fn name(&self) -> &str {
            "in-order"
        }

        fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
            self.handle_batch(&[d]).pop().unwrap()
        }

        fn batches(&self) -> bool {
            true
        }

        fn queue_batch(&self, ds: &[&Delivery]) -> Option<Queued> {
            let mut queued = self.queued.lock().unwrap();
            queued.extend(ds.iter().map(|d| Arc::clone(&d.ivorn)));
            let slow = queued.len().is_multiple_of(3);
            let n = ds.len();
            Some(Box::new(move || {
                thread::sleep(Duration::from_micros(if slow { 2_000 } else { 50 }));
                (0..n).map(|_| Ok(())).collect()
            }))
        }
    }

    #[test]
    fn a_handler_that_queues_sees_the_pools_order_whatever_the_workers() {
        let handler = Arc::new(InOrder {
            queued: Arc::default(),
        });
        let pool = Handlers::new(vec![handler.clone()], 4, 10_000);
        let ivorns: Vec<String> = (0..600).map(|i| format!("ivo://a/b#{i}")).collect();
        for (i, ivorn) in ivorns.iter().enumerate() {
            assert!(pool.dispatch(delivery(ivorn, b"")));
            if i.is_multiple_of(7) {
                thread::sleep(Duration::from_micros(300));
            }
        }
        assert!(pool.shutdown(Duration::from_secs(60)));
        let queued = handler.queued.lock().unwrap();
        let queued: Vec<&str> = queued.iter().map(|i| &**i).collect();
        assert_eq!(queued, ivorns);
    }

    #[test]
    fn with_a_handler_that_does_not_batch_every_delivery_goes_alone() {
        let (b, started, gate) = batcher();
        let counting = Arc::new(Counting::default());
        let pool = Handlers::new(vec![b.clone(), counting.clone()], 1, 100);
        assert!(pool.dispatch(delivery("ivo://a/b#0", b"")));
        started.recv_timeout(Duration::from_secs(30)).unwrap();
        for i in 1..=5 {
            assert!(pool.dispatch(delivery(&format!("ivo://a/b#{i}"), b"")));
        }
        gate.send(()).unwrap();
        assert!(pool.shutdown(Duration::from_secs(30)));
        assert_eq!(*b.sizes.lock().unwrap(), [1; 6]);
        assert_eq!(counting.0.load(Ordering::SeqCst), 6);
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
        let (finished, logs) = capture_logs(|| pool.shutdown(Duration::from_millis(50)));
        assert!(!finished);
        assert!(start.elapsed() < Duration::from_secs(5));
        // The two queued deliveries are counted and named; the running one is not dropped.
        for ivorn in ["ivo://a/b#1", "ivo://a/b#2"] {
            assert!(
                logs.lines()
                    .any(|l| l.contains("WARN") && l.contains("dropped") && l.contains(ivorn)),
                "{ivorn} not logged as dropped: {logs}"
            );
        }
        assert!(!logs.contains("ivo://a/b#0"), "{logs}");
        assert!(
            logs.contains("2 queued events dropped at shutdown"),
            "{logs}"
        );
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
