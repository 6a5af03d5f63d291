//! External sources on every runtime: a thread that reads a source of events outside VTP (the
//! Kafka consumer) hands its records to the event loop through a bounded inbox, and the node's
//! commits ([`Action::Commit`](vtp_core::Action::Commit)) come back to that thread.
//!
//! - [`channel`] makes the inbox for a list of named sources: the loop's end ([`Inbox`], given
//!   to the runtime with [`Bound::with_externals`](crate::net::Bound::with_externals)), one
//!   [`Feeder`] per source for the reading threads, and the [`Commits`] handle the effects
//!   report commits through ([`HostEffects::with_externals`](crate::effects::HostEffects::with_externals)).
//! - The loop opens each source on the node ([`Node::open_external`]) the first time it looks
//!   at the inbox, then hands records in, at most [`BATCH`] per turn so sockets are not starved.
//! - A feeder blocks while the inbox holds [`QUEUE_BYTES`] or [`QUEUE_RECORDS`], and while its
//!   source has `pending_max` records not yet committed (the node's own bound, so the node never
//!   has to refuse one); should the node refuse anyway, the record stays first in line until a
//!   commit of that source arrives. Nothing handed to a feeder is dropped.
//!
//! [`Node::open_external`]: vtp_core::Node::open_external

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_core::driver::{Driver, Effects};
use vtp_core::{ConnId, ExternalError, Position, Violation};

/// The thread of a source's reader (the Kafka consumer, a catch-up): started with a stop flag
/// it watches; asked to stop, and joined, by [`Worker::stop`] or when dropped.
#[derive(Debug)]
pub struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Runs `body` on a thread named `name`, with the stop flag it must watch.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(
        name: &str,
        body: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || body(flag))?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Asks the thread to stop and waits for it (it finishes what it must first, such as a
    /// last commit).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Most records handed to the node per loop turn.
pub const BATCH: usize = 256;
/// Most bytes of records waiting in the inbox (16 MiB): a feeder waits beyond it.
pub const QUEUE_BYTES: usize = 16 << 20;
/// Most records waiting in the inbox.
pub const QUEUE_RECORDS: usize = 4096;

enum Item {
    Record { at: Position, payload: Bytes },
    Skip { at: Position, reason: Violation },
}

struct Slot {
    name: Arc<str>,
    conn: Option<ConnId>,
    /// Latest commit per lane not yet taken by the feeder.
    commits: BTreeMap<u32, u64>,
    /// Per lane, the offsets handed in and not yet committed, ascending (offsets may have
    /// gaps: compacted topics, transaction markers), and their number over all lanes: what
    /// the node tracks for this source.
    handed: BTreeMap<u32, VecDeque<u64>>,
    outstanding: u64,
    /// The node refused a record (`Busy`): none is handed in until the next commit.
    blocked: bool,
    /// What each lane is, for log lines (a Kafka topic and partition), as the feeder named it.
    lane_names: BTreeMap<u32, Arc<str>>,
}

struct State {
    queue: VecDeque<(usize, Item)>,
    bytes: usize,
    sources: Vec<Slot>,
    waker: Option<Waker>,
    /// The loop has stopped: feeders get [`Closed`].
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when space frees up or commits arrive.
    changed: Condvar,
    pending_max: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The loop's end of the inbox.
pub struct Inbox(Arc<Shared>);

/// A reading thread's end, for one source.
pub struct Feeder {
    shared: Arc<Shared>,
    index: usize,
}

/// Where the effects report the node's commits ([`Effects::commit`]).
#[derive(Clone)]
pub struct Commits(Arc<Shared>);

/// The loop has stopped: nothing more can be handed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event loop has stopped")
    }
}

impl std::error::Error for Closed {}

/// An inbox for the sources `names` (one [`Feeder`] each, in that order); `pending_max` is the
/// node's [`Limits::external_pending_max`](vtp_core::config::Limits::external_pending_max).
pub fn channel(names: &[String], pending_max: usize) -> (Inbox, Vec<Feeder>, Commits) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            bytes: 0,
            sources: names
                .iter()
                .map(|n| Slot {
                    name: Arc::from(n.as_str()),
                    conn: None,
                    commits: BTreeMap::new(),
                    handed: BTreeMap::new(),
                    outstanding: 0,
                    blocked: false,
                    lane_names: BTreeMap::new(),
                })
                .collect(),
            waker: None,
            closed: false,
        }),
        changed: Condvar::new(),
        pending_max: u64::try_from(pending_max).unwrap_or(u64::MAX).max(1),
    });
    let feeders = (0..names.len())
        .map(|index| Feeder {
            shared: Arc::clone(&shared),
            index,
        })
        .collect();
    (Inbox(Arc::clone(&shared)), feeders, Commits(shared))
}

impl Feeder {
    /// Hands the record at `at` in, waiting up to `timeout` for room. Returns false when it
    /// timed out (the record was not taken: hand it in again), [`Closed`] once the loop has
    /// stopped. Offsets of a lane must grow.
    pub fn send(&self, at: Position, payload: Bytes, timeout: Duration) -> Result<bool, Closed> {
        let len = payload.len();
        self.put(at, Item::Record { at, payload }, len, timeout)
    }

    /// Hands in a record that was not read (too large, say): the node skips it with `reason`
    /// and commits past it in order.
    pub fn skip(&self, at: Position, reason: Violation, timeout: Duration) -> Result<bool, Closed> {
        self.put(at, Item::Skip { at, reason }, 0, timeout)
    }

    fn put(&self, at: Position, item: Item, len: usize, timeout: Duration) -> Result<bool, Closed> {
        let deadline = Instant::now() + timeout;
        let shared = &*self.shared;
        let mut s = shared.lock();
        loop {
            if s.closed {
                return Err(Closed);
            }
            let slot = &s.sources[self.index];
            let full = s.queue.len() >= QUEUE_RECORDS
                || (s.bytes > 0 && s.bytes + len > QUEUE_BYTES)
                || slot.outstanding >= shared.pending_max;
            if !full {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            s = shared
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let slot = &mut s.sources[self.index];
        let handed = slot.handed.entry(at.lane).or_default();
        // A re-read (an offset not above the last) is not tracked again, as in the node.
        if handed.back().is_none_or(|last| at.offset > *last) {
            handed.push_back(at.offset);
            slot.outstanding += 1;
        }
        s.bytes += len;
        s.queue.push_back((self.index, item));
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(true)
    }

    /// Names `lane` for log lines (`gcn.classic.voevent.TEST partition 0`): a skipped
    /// record is logged with its lane's name and offset ([`Commits::describe`]).
    pub fn name_lane(&self, lane: u32, name: &str) {
        self.shared.lock().sources[self.index]
            .lane_names
            .insert(lane, Arc::from(name));
    }

    /// The commits the node made since the last call: per lane, the first offset not done
    /// (what to commit to the source). Empty if none.
    pub fn take_commits(&self) -> BTreeMap<u32, u64> {
        std::mem::take(&mut self.shared.lock().sources[self.index].commits)
    }

    /// Waits up to `timeout` for a commit (or for the loop to stop); true if one is there.
    pub fn wait_commits(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.lock();
        loop {
            if !s.sources[self.index].commits.is_empty() {
                return true;
            }
            let now = Instant::now();
            if s.closed || now >= deadline {
                return false;
            }
            s = self
                .shared
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Records handed in and not yet committed, over every lane.
    pub fn outstanding(&self) -> u64 {
        self.shared.lock().sources[self.index].outstanding
    }

    /// The source's name.
    pub fn name(&self) -> Arc<str> {
        Arc::clone(&self.shared.lock().sources[self.index].name)
    }
}

impl Commits {
    /// Where `at` is in the source `conn`: `LANE-NAME offset N` as its feeder named the lane
    /// (`gcn.classic.voevent.TEST partition 0 offset 17`), else `SOURCE lane L offset N`;
    /// `None` if `conn` is not a source of this inbox.
    pub fn describe(&self, conn: ConnId, at: Position) -> Option<String> {
        let s = self.0.lock();
        let slot = s.sources.iter().find(|x| x.conn == Some(conn))?;
        Some(match slot.lane_names.get(&at.lane) {
            Some(lane) => format!("{lane} offset {}", at.offset),
            None => format!("{} lane {} offset {}", slot.name, at.lane, at.offset),
        })
    }

    /// The node committed `next_offset` on `lane` of the source `conn`.
    pub fn commit(&self, conn: ConnId, lane: u32, next_offset: u64) {
        let mut s = self.0.lock();
        let Some(slot) = s.sources.iter_mut().find(|x| x.conn == Some(conn)) else {
            return;
        };
        slot.commits.insert(lane, next_offset);
        if let Some(handed) = slot.handed.get_mut(&lane) {
            while handed.front().is_some_and(|o| *o < next_offset) {
                handed.pop_front();
                slot.outstanding -= 1;
            }
        }
        let unblocked = std::mem::take(&mut slot.blocked);
        let waker = if unblocked { s.waker.take() } else { None };
        drop(s);
        self.0.changed.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Inbox {
    /// Ready when records wait (and the first one's source is not blocked), or sources are
    /// still to be opened; registers `cx`'s waker otherwise.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.lock();
        if s.sources.iter().any(|x| x.conn.is_none()) {
            return Poll::Ready(());
        }
        match s.queue.front() {
            Some((i, _)) if !s.sources[*i].blocked => Poll::Ready(()),
            _ => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// True when [`poll_ready`](Self::poll_ready) would be ready (registers no waker).
    pub fn has_ready(&self) -> bool {
        let s = self.0.lock();
        s.sources.iter().any(|x| x.conn.is_none())
            || s.queue.front().is_some_and(|(i, _)| !s.sources[*i].blocked)
    }

    /// Completes when [`poll_ready`](Self::poll_ready) would be ready.
    pub async fn ready(&self) {
        poll_fn(|cx| self.poll_ready(cx)).await;
    }

    /// On the loop: opens the sources not yet open and hands up to [`BATCH`] records to the
    /// node, their output dispatched to `fx`.
    pub fn apply(&self, driver: &mut Driver, now: Instant, fx: &mut impl Effects) {
        let to_open: Vec<(usize, Arc<str>)> = {
            let s = self.0.lock();
            s.sources
                .iter()
                .enumerate()
                .filter(|(_, x)| x.conn.is_none())
                .map(|(i, x)| (i, Arc::clone(&x.name)))
                .collect()
        };
        for (i, name) in to_open {
            let conn = driver.with_node(fx, |node| node.open_external(&name, now));
            self.0.lock().sources[i].conn = Some(conn);
        }
        for _ in 0..BATCH {
            let (conn, item) = {
                let mut s = self.0.lock();
                let conn = match s.queue.front() {
                    Some((i, _)) if !s.sources[*i].blocked => s.sources[*i].conn,
                    _ => break,
                };
                // Every source was opened above; one that was not keeps its records queued.
                let Some(conn) = conn else {
                    break;
                };
                let Some((i, item)) = s.queue.pop_front() else {
                    break;
                };
                if let Item::Record { payload, .. } = &item {
                    s.bytes -= payload.len();
                }
                (conn, (i, item))
            };
            self.0.changed.notify_all();
            let (i, item) = item;
            let answer = match &item {
                Item::Record { at, payload } => {
                    driver.with_node(fx, |node| node.handle_external(conn, *at, payload, now))
                }
                Item::Skip { at, reason } => driver.with_node(fx, |node| {
                    node.skip_external(conn, *at, reason.clone(), now)
                }),
            };
            match answer {
                Ok(()) => {}
                Err(ExternalError::Busy) => {
                    // Kept first in line until this source's next commit.
                    let mut s = self.0.lock();
                    if let Item::Record { payload, .. } = &item {
                        s.bytes += payload.len();
                    }
                    s.sources[i].blocked = true;
                    s.queue.push_front((i, item));
                    tracing::warn!(
                        "{}: the node holds too many records waiting for the store; reading \
                         resumes at its next commit",
                        s.sources[i].name
                    );
                    break;
                }
                Err(ExternalError::UnknownSource) => {
                    tracing::error!("external source #{i} is not open; its record is dropped");
                }
            }
        }
    }

    /// Marks the loop stopped: feeders waiting or sending get [`Closed`].
    pub fn close(&self) {
        self.0.lock().closed = true;
        self.0.changed.notify_all();
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Inbox")
    }
}

impl fmt::Debug for Feeder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feeder")
            .field("index", &self.index)
            .finish()
    }
}

impl fmt::Debug for Commits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Commits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vtp_core::driver::StoreOp;
    use vtp_core::outbox::OutboxLimits;
    use vtp_core::{Config, Delivery, Event};

    /// Effects that report commits to the inbox and count persists (durable at once).
    struct Fx(Commits, u64);

    impl Effects for Fx {
        fn store(&mut self, op: StoreOp) {
            if matches!(op, StoreOp::Persist(_)) {
                self.1 += 1;
            }
        }
        fn deliver(&mut self, _: Delivery) {}
        fn commit(&mut self, conn: ConnId, lane: u32, next_offset: u64) {
            self.0.commit(conn, lane, next_offset);
        }
        fn event(&mut self, _: Event) {}
    }

    fn driver() -> Driver {
        let mut c = Config::new(Some("ivo://vtp.test/broker".into()));
        c.timing.test_event_interval = None;
        let node = vtp_core::Node::new(
            c,
            Box::new(vtp_core::filter::NoFilterEngine),
            1,
            Instant::now(),
            Duration::from_secs(1_700_000_000),
        )
        .expect("a valid config");
        Driver::new(node, OutboxLimits::default())
    }

    fn event(n: u64) -> Bytes {
        Bytes::from(format!(
            "<?xml version='1.0'?><voe:VOEvent xmlns:voe='http://www.ivoa.net/xml/VOEvent/v2.0' \
             ivorn='ivo://vtp.test/k#{n}' role='observation' version='2.0'>\
             <Who><AuthorIVORN>ivo://vtp.test/a</AuthorIVORN></Who></voe:VOEvent>"
        ))
    }

    #[test]
    fn offsets_with_gaps_count_as_records_and_commits_free_room() {
        let (inbox, mut feeders, commits) = channel(&["t".to_owned()], 2);
        let feeder = feeders.pop().expect("one feeder");
        let mut d = driver();
        let mut fx = Fx(commits, 0);
        let at = |offset| Position { lane: 0, offset };
        let quick = Duration::from_millis(1);
        assert_eq!(feeder.send(at(0), event(0), quick), Ok(true));
        // A gap of a million offsets (a compacted topic) is one record more, not a million.
        assert_eq!(feeder.send(at(1_000_000), event(1), quick), Ok(true));
        assert_eq!(feeder.outstanding(), 2);
        assert_eq!(
            feeder.send(at(1_000_001), event(2), quick),
            Ok(false),
            "two outstanding: no room"
        );
        inbox.apply(&mut d, Instant::now(), &mut fx);
        // The store is durable at once for these effects: the driver reports it.
        d.handle_wakeup(Instant::now(), &mut fx);
        assert_eq!(feeder.take_commits(), BTreeMap::from([(0, 1_000_001)]));
        assert_eq!(feeder.outstanding(), 0);
        assert_eq!(feeder.send(at(1_000_001), event(2), quick), Ok(true));
        // A re-read (after a rewind) is queued but not counted again.
        assert_eq!(feeder.send(at(5), event(0), quick), Ok(true));
        assert_eq!(feeder.outstanding(), 1);
        assert_eq!(fx.1, 2);
        drop(inbox);
        assert_eq!(feeder.send(at(1_000_002), event(3), quick), Err(Closed));
    }
}
