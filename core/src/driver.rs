//! The driving logic every runtime shares: outboxes, action dispatch order, effects.
//!
//! A runtime (tokio, smol, mio, the simulator, your own loop) moves bytes and timers; a
//! [`Driver`] decides what to do with the node's actions, once for all of them:
//!
//! - frames go into a bounded per-connection [`Outbox`]; one that overflows means the peer is
//!   not reading: the connection is dropped and the node told ([`CloseReason::OutboxFull`]);
//! - [`Action::Close`] is performed only after everything queued before it was written;
//! - [`Action::Connect`] becomes a dial request ([`Driver::poll_dial`]);
//! - store records and deliveries go to the [`Effects`] the runtime was given;
//! - events go to [`Effects::event`] (logging, metrics, the embedding application);
//! - after every input the driver asks [`Effects::durable_persists`] how many of the records it
//!   handed to the store are durable, when the node holds output for them, and tells the node
//!   ([`Node::handle_persisted`]): held receipts, forwards and deliveries go out in the same
//!   call (see the crate docs, "Durability").
//!
//! The order in which a runtime calls it is the driving contract on [`Driver`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::task::Waker;
use std::time::Instant;

use crate::endpoint::DialAddr;
use crate::identity::Identity;
use crate::node::{Node, SubmitError};
use crate::outbox::{Outbox, OutboxLimits};
use crate::output::{Action, CloseReason, ConnId, Delivery, Event, ListenerRole, Peer};
use crate::seen::{EventKey, SeenRecord};
use crate::signature::{Verdict, VerifyJob};

/// A durable-store operation (from [`Action::Persist`], [`Action::Forget`], [`Action::Expire`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOp {
    /// Record an entry.
    Persist(SeenRecord),
    /// Remove an entry.
    Forget(EventKey),
    /// Remove entries seen at or before this UNIX second.
    Expire {
        /// Cut-off, inclusive.
        before_unix_secs: u64,
    },
}

/// The non-transport side effects a [`Driver`] hands out. Implementations must not block: queue
/// the work for another thread (the one exception is [`Effects::flush_persists`], at shutdown).
///
/// A store that commits asynchronously reports its progress through
/// [`Effects::durable_persists`] and wakes the runtime through the waker given to
/// [`Effects::set_durable_waker`]. The defaults suit effects without a durable store: every
/// record counts as durable as soon as it is handed over.
pub trait Effects {
    /// Persist, forget or expire seen-index records.
    fn store(&mut self, op: StoreOp);
    /// How many of the first `handed` [`StoreOp::Persist`] operations given to
    /// [`Effects::store`] are durable now (a count: they become durable in the order they were
    /// handed over). Called by the driver while the node holds output for a record; must be
    /// cheap and must not block. Default: all of them, `handed` (no durable store).
    fn durable_persists(&mut self, handed: u64) -> u64 {
        handed
    }
    /// True while the store can commit records; false while its commits fail (a full or
    /// failing disk). Called by the driver before each input and wake-up; must be cheap and
    /// must not block. A change is passed to the node ([`Node::handle_store_status`]): while
    /// unhealthy, with [`Durability::BeforeReply`](crate::config::Durability::BeforeReply), new
    /// submissions are naked at once instead of waiting for a commit that may never come.
    /// Default: always healthy.
    fn store_healthy(&mut self) -> bool {
        true
    }
    /// Wake `waker` whenever more persists become durable or [`Effects::store_healthy`]
    /// changes, so that the runtime calls [`Driver::handle_durable`]. Runtimes call this once, before their loop. Default: ignored (the
    /// default [`Effects::durable_persists`] never lags behind).
    fn set_durable_waker(&mut self, _waker: Waker) {}
    /// At shutdown, before connections are closed: waits, for a bounded time, until the first
    /// `handed` persists are durable, so the receipts and forwards held for them still go out;
    /// returns how many are durable. The only method allowed to block. Default:
    /// [`Effects::durable_persists`].
    fn flush_persists(&mut self, handed: u64) -> u64 {
        self.durable_persists(handed)
    }
    /// Run the event handlers on an accepted event.
    fn deliver(&mut self, delivery: Delivery);
    /// An event was dropped as a duplicate (for metrics and logs).
    fn duplicate(&mut self, _conn: ConnId, _key: EventKey) {}
    /// An event was queued for the subscriber on `conn` (for metrics: called once per event
    /// per subscriber, so it must cost next to nothing). Default: nothing.
    fn forwarded(&mut self, _conn: ConnId) {}
    /// The runtime's loop turned: called once per [`Driver::handle_wakeup`], for liveness
    /// checks (a health endpoint on another thread can tell a loop that stopped turning). Must
    /// be cheap. Default: nothing.
    fn heartbeat(&mut self) {}
    /// Every record of `lane` of the external source `conn` before `next_offset` is done
    /// ([`Action::Commit`]): the host may commit `next_offset` to that source (a Kafka
    /// consumer group's offset). Default: nothing (a host without external sources).
    fn commit(&mut self, _conn: ConnId, _lane: u32, _next_offset: u64) {}
    /// Verify a signature off the event loop ([`Action::Verify`]): `Ok` if the effects took
    /// the job (they run [`VerifyJob::run`] elsewhere, give the verdict back through
    /// [`Effects::take_verdicts`] and wake the runtime with the durability waker), `Err` with
    /// the job to have the driver run it in place. Must not block. Default: `Err` (in place).
    ///
    /// # Errors
    ///
    /// The job, when the effects do not take it.
    fn verify(&mut self, job: VerifyJob) -> Result<(), VerifyJob> {
        Err(job)
    }
    /// Moves the verdicts reached since the last call into `out`, as (job number, verdict).
    /// Called on every durability wake-up; must be cheap and must not block. Default:
    /// nothing (no job is ever taken).
    fn take_verdicts(&mut self, _out: &mut Vec<(u64, Verdict)>) {}
    /// Application news.
    fn event(&mut self, event: Event);
}

/// What a [`Driver::flush`] left the connection in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Flush {
    /// Everything queued was written; nothing to do until new data is queued.
    Idle,
    /// The writer would block: call `flush` again when the socket is writable.
    Pending,
    /// Close the socket now (everything before the close was written, or writing failed, or
    /// the peer was dropped). The connection is forgotten by the driver.
    Close(CloseReason),
}

#[derive(Debug)]
struct Conn {
    outbox: Outbox,
    close: Option<CloseReason>,
    /// Queued in `Driver::writable`.
    writable: bool,
}

/// A node plus the per-connection send state every runtime needs.
///
/// # Driving contract
///
/// One owner (a task, a thread, the simulator) holds the driver; it is never shared. The same
/// words as [`Node`]'s: `handle_*` are inputs, `poll_*` are outputs.
///
/// 1. **Inputs.** Report what the sockets did with [`handle_accept`](Driver::handle_accept),
///    [`handle_connected`](Driver::handle_connected), [`handle_input`](Driver::handle_input),
///    [`handle_eof`](Driver::handle_eof) and [`handle_closed`](Driver::handle_closed), and give
///    commands with [`submit`](Driver::submit), [`with_node`](Driver::with_node) and
///    [`shutdown`](Driver::shutdown). Each takes `now` (never going backwards) and hands store
///    operations, deliveries and events to the [`Effects`] before it returns: there is nothing
///    to drain for those.
/// 2. **Wake-up.** Once per turn of the loop, after the inputs of that turn (or with none, when
///    the loop woke for its timer or for the durability waker), call
///    [`handle_wakeup`](Driver::handle_wakeup): it releases the output held for records now
///    durable ([`handle_durable`](Driver::handle_durable)) and fires the node's timers if
///    [`poll_timeout`](Driver::poll_timeout) has passed
///    ([`handle_timeout`](Driver::handle_timeout)). A loop whose effects make every record
///    durable at once and whose clock only jumps to the next deadline (the simulator) needs it
///    only when that deadline comes.
/// 3. **Outputs**, after the inputs and the wake-up (several inputs may share one drain):
///    1. for each connection [`poll_writable`](Driver::poll_writable) returns, call
///       [`flush`](Driver::flush) with a non-blocking writer for its socket; on
///       [`Flush::Pending`] call it again once the socket is writable, on [`Flush::Close`]
///       close the socket (the driver has forgotten the connection);
///    2. for each dial [`poll_dial`](Driver::poll_dial) returns, open the connection and report
///       the outcome with `handle_connected` or `handle_closed`.
///
///    Writes go first, then dials, in every runtime and the simulator. A connection being
///    dialled has no socket to write to yet: flush it once connected (a close queued for it
///    meanwhile can be carried out with a writer that always returns `WouldBlock`). Reporting
///    an outcome is an input again, so a loop that reports inline drains again.
/// 4. **Sleep** until [`poll_timeout`](Driver::poll_timeout), a socket event, or the waker given
///    to [`Effects::set_durable_waker`] (call that once, before the loop); then go to 1.
///
/// [`shutdown`](Driver::shutdown) ends the loop: flush what `poll_writable` returns, without
/// waiting, and close the sockets.
#[derive(Debug)]
pub struct Driver {
    node: Node,
    conns: HashMap<ConnId, Conn>,
    writable: VecDeque<ConnId>,
    dials: VecDeque<(ConnId, DialAddr)>,
    outbox_limits: OutboxLimits,
    /// Persist operations handed to [`Effects::store`].
    persists: u64,
    /// Of those, how many the effects reported durable.
    durable: u64,
    /// The last [`Effects::store_healthy`] passed to the node.
    store_healthy: bool,
    /// Verdicts taken from the effects, reused between wake-ups.
    verdicts: Vec<(u64, Verdict)>,
}

impl Driver {
    /// Wraps a node; each connection gets an outbox with `outbox_limits`.
    pub fn new(node: Node, outbox_limits: OutboxLimits) -> Self {
        Self {
            node,
            conns: HashMap::new(),
            writable: VecDeque::new(),
            dials: VecDeque::new(),
            outbox_limits,
            persists: 0,
            durable: 0,
            store_healthy: true,
            verdicts: Vec::new(),
        }
    }

    /// The node, for queries.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Runs any input or command on the node, then dispatches its output. Use this for inputs
    /// without a dedicated method, e.g. `driver.with_node(fx, |n| n.restore_seen(recs, now))`.
    /// Do not poll the node's actions inside `f`: the driver counts the persists it performs.
    pub fn with_node<R>(&mut self, fx: &mut impl Effects, f: impl FnOnce(&mut Node) -> R) -> R {
        let r = f(&mut self.node);
        self.dispatch(fx);
        r
    }

    /// A listener accepted `peer`. `None`: refused, close the socket without writing.
    #[must_use]
    pub fn handle_accept(
        &mut self,
        listener: ListenerRole,
        peer: Peer,
        now: Instant,
        fx: &mut impl Effects,
    ) -> Option<ConnId> {
        let conn = self.node.handle_accept(listener, peer, now);
        if let Some(c) = conn {
            self.conns.insert(c, self.new_conn());
        }
        self.dispatch(fx);
        conn
    }

    /// A TLS listener accepted `peer` (see [`Node::handle_accept_tls`]). `None`: refused,
    /// close the socket without writing. Otherwise run the handshake and report it with
    /// [`Driver::handle_secured`] (or a failure with [`Driver::handle_closed`] and
    /// [`CloseReason::Tls`]); the node queues nothing for the connection before that.
    #[must_use]
    pub fn handle_accept_tls(
        &mut self,
        listener: ListenerRole,
        peer: Peer,
        now: Instant,
        fx: &mut impl Effects,
    ) -> Option<ConnId> {
        let conn = self.node.handle_accept_tls(listener, peer, now);
        if let Some(c) = conn {
            self.conns.insert(c, self.new_conn());
        }
        self.dispatch(fx);
        conn
    }

    /// The TLS handshake of `conn` completed, with the client certificate's identity (see
    /// [`Node::handle_secured`]).
    pub fn handle_secured(
        &mut self,
        conn: ConnId,
        identity: Option<Identity>,
        now: Instant,
        fx: &mut impl Effects,
    ) {
        self.node.handle_secured(conn, identity, now);
        self.dispatch(fx);
    }

    /// A dial requested through [`Driver::poll_dial`] succeeded.
    pub fn handle_connected(&mut self, conn: ConnId, now: Instant, fx: &mut impl Effects) {
        self.node.handle_connected(conn, now);
        self.dispatch(fx);
    }

    /// Bytes read from `conn`.
    pub fn handle_input(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        now: Instant,
        fx: &mut impl Effects,
    ) {
        self.sync_store_health(now, fx);
        self.node.handle_input(conn, bytes, now);
        self.dispatch(fx);
    }

    /// `conn` ended (EOF, read error, failed dial). The driver forgets it.
    pub fn handle_closed(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        now: Instant,
        fx: &mut impl Effects,
    ) {
        self.conns.remove(&conn);
        self.node.handle_closed(conn, reason, now);
        self.dispatch(fx);
    }

    /// The peer finished sending (EOF on read). The node is told the connection ended; output
    /// already queued for it (e.g. the receipt for the event it just sent) is still written,
    /// then the socket is closed; so is a receipt the node still holds until a record is
    /// durable ([`Node::reply_pending`]). Returns `true` when the socket can be closed at once
    /// (nothing left to write); otherwise keep it until [`Driver::flush`] returns
    /// [`Flush::Close`].
    pub fn handle_eof(&mut self, conn: ConnId, now: Instant, fx: &mut impl Effects) -> bool {
        self.node.handle_closed(conn, CloseReason::PeerClosed, now);
        self.dispatch(fx);
        let pending = self.node.reply_pending(conn);
        match self.conns.get_mut(&conn) {
            // The held receipt comes with its own close.
            Some(_) if pending => false,
            Some(c) if !c.outbox.is_empty() => {
                c.close.get_or_insert(CloseReason::PeerClosed);
                self.mark_writable(conn);
                false
            }
            _ => {
                self.conns.remove(&conn);
                true
            }
        }
    }

    /// The deadline from [`Driver::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant, fx: &mut impl Effects) {
        self.node.handle_timeout(now);
        self.dispatch(fx);
    }

    /// Submits one event as an author (see [`Node::submit`]).
    ///
    /// # Errors
    ///
    /// As [`Node::submit`].
    pub fn submit(
        &mut self,
        addr: DialAddr,
        payload: &[u8],
        now: Instant,
        fx: &mut impl Effects,
    ) -> Result<ConnId, SubmitError> {
        let r = self.node.submit(addr, payload, now);
        self.dispatch(fx);
        r
    }

    /// The effects' durability waker fired ([`Effects::set_durable_waker`]): learns whether
    /// the store is healthy and which persists are durable, and queues the output the node held
    /// for them. Cheap when nothing is held; every other input method does the same on its way
    /// out.
    pub fn handle_durable(&mut self, fx: &mut impl Effects) {
        let now = self.node.last_now();
        self.sync_store_health(now, fx);
        if self.node.verifying() > 0 {
            let mut verdicts = std::mem::take(&mut self.verdicts);
            fx.take_verdicts(&mut verdicts);
            for (id, verdict) in verdicts.drain(..) {
                self.node.handle_verdict(id, verdict, now);
            }
            self.verdicts = verdicts;
        }
        self.dispatch(fx);
    }

    /// The loop woke up (a batch of inputs, its timer, the durability waker): releases the
    /// output held for records now durable ([`Driver::handle_durable`]), then fires the node's
    /// timers if `now` has reached [`Driver::poll_timeout`] ([`Driver::handle_timeout`]). Drain
    /// [`Driver::poll_writable`] and [`Driver::poll_dial`] afterwards (see the driving
    /// contract on [`Driver`]).
    pub fn handle_wakeup(&mut self, now: Instant, fx: &mut impl Effects) {
        fx.heartbeat();
        self.handle_durable(fx);
        if self.poll_timeout().is_some_and(|t| t <= now) {
            self.handle_timeout(now, fx);
        }
    }

    /// Closes everything (see [`Node::shutdown`]); flush the connections from
    /// [`Driver::poll_writable`] afterwards.
    ///
    /// Output the node holds for records not yet durable is given a chance first: the driver
    /// waits (bounded) with [`Effects::flush_persists`] and queues what was released, so the
    /// receipts and forwards of events accepted just before shutdown are written before the
    /// closes.
    pub fn shutdown(&mut self, now: Instant, fx: &mut impl Effects) {
        if self.node.held() > 0 && self.durable < self.persists {
            let durable = fx.flush_persists(self.persists).min(self.persists);
            if durable > self.durable {
                self.durable = durable;
                self.node.handle_persisted(durable, now);
            }
            self.dispatch(fx);
        }
        self.node.shutdown(now);
        self.dispatch(fx);
    }

    /// When to call [`Driver::handle_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    /// A connection with data to write or a close to perform: call [`Driver::flush`] for it.
    pub fn poll_writable(&mut self) -> Option<ConnId> {
        while let Some(conn) = self.writable.pop_front() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.writable = false;
                return Some(conn);
            }
        }
        None
    }

    /// An outgoing connection to open, to an address whose port is resolved: report the outcome
    /// with [`Driver::handle_connected`] or [`Driver::handle_closed`].
    pub fn poll_dial(&mut self) -> Option<(ConnId, DialAddr)> {
        self.dials.pop_front()
    }

    /// True if the driver still holds state for `conn`.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Bytes queued for `conn` and not yet written.
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.outbox.queued_bytes())
    }

    /// Writes what is queued for `conn` into `w`, a non-blocking writer that returns
    /// `WouldBlock` when full.
    pub fn flush<W: io::Write>(
        &mut self,
        conn: ConnId,
        w: &mut W,
        now: Instant,
        fx: &mut impl Effects,
    ) -> Flush {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Flush::Close(CloseReason::Done);
        };
        match c.outbox.write_to(w) {
            Ok(true) => match c.close.take() {
                Some(reason) => {
                    self.conns.remove(&conn);
                    Flush::Close(reason)
                }
                None => Flush::Idle,
            },
            Ok(false) => Flush::Pending,
            Err(_) => {
                let close = c.close.take();
                self.conns.remove(&conn);
                // If the node already closed it, it ignores this report.
                self.node.handle_closed(conn, CloseReason::PeerClosed, now);
                self.dispatch(fx);
                Flush::Close(close.unwrap_or(CloseReason::PeerClosed))
            }
        }
    }

    fn new_conn(&self) -> Conn {
        Conn {
            outbox: Outbox::new(self.outbox_limits),
            close: None,
            writable: false,
        }
    }

    fn mark_writable(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.writable
        {
            c.writable = true;
            self.writable.push_back(conn);
        }
    }

    /// Tells the node when [`Effects::store_healthy`] changed.
    fn sync_store_health(&mut self, now: Instant, fx: &mut impl Effects) {
        let healthy = fx.store_healthy();
        if healthy != self.store_healthy {
            self.store_healthy = healthy;
            self.node.handle_store_status(healthy, now);
        }
    }

    fn dispatch(&mut self, fx: &mut impl Effects) {
        loop {
            // `perform` may report an overflow back to the node, which queues more actions: the
            // loop drains those too before the events.
            while let Some(action) = self.node.poll_action() {
                self.perform(action, fx);
            }
            if !self.release_durable(fx) {
                break;
            }
        }
        while let Some(event) = self.node.poll_event() {
            fx.event(event);
        }
    }

    /// Tells the node which persists are durable, if it holds output for some; true when that
    /// may have queued actions.
    fn release_durable(&mut self, fx: &mut impl Effects) -> bool {
        if self.node.held() == 0 || self.durable >= self.persists {
            return false;
        }
        let durable = fx.durable_persists(self.persists).min(self.persists);
        if durable <= self.durable {
            return false;
        }
        self.durable = durable;
        let now = self.node.last_now();
        self.node.handle_persisted(durable, now);
        true
    }

    fn perform(&mut self, action: Action, fx: &mut impl Effects) {
        if let Some((conn, frame)) = action.frame() {
            let forward = matches!(action, Action::Forward { .. });
            let frame = frame.clone();
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.close.is_some() {
                return;
            }
            if c.outbox.push(frame).is_err() {
                c.outbox.clear();
                c.close = Some(CloseReason::OutboxFull);
                let now = self.node.last_now();
                self.node.handle_closed(conn, CloseReason::OutboxFull, now);
            } else if forward {
                fx.forwarded(conn);
            }
            self.mark_writable(conn);
            return;
        }
        match action {
            Action::Close { conn, reason } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.close.get_or_insert(reason);
                }
                self.mark_writable(conn);
            }
            Action::Connect { conn, addr } => {
                self.conns.insert(conn, self.new_conn());
                self.dials.push_back((conn, addr));
            }
            Action::Persist(r) => {
                self.persists += 1;
                fx.store(StoreOp::Persist(r));
            }
            Action::Forget(k) => fx.store(StoreOp::Forget(k)),
            Action::Expire { before_unix_secs } => {
                fx.store(StoreOp::Expire { before_unix_secs });
            }
            Action::Deliver(d) => fx.deliver(d),
            Action::Verify(job) => {
                if let Err(job) = fx.verify(job) {
                    let verdict = job.run();
                    let now = self.node.last_now();
                    self.node.handle_verdict(job.id(), verdict, now);
                }
            }
            Action::DropDuplicate { conn, key } => fx.duplicate(conn, key),
            Action::Commit {
                conn,
                lane,
                next_offset,
            } => fx.commit(conn, lane, next_offset),
            // Frame-carrying variants were handled above.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::filter::NoFilterEngine;
    use std::time::Duration;

    #[derive(Default)]
    struct Fx;
    impl Effects for Fx {
        fn store(&mut self, _: StoreOp) {}
        fn deliver(&mut self, _: Delivery) {}
        fn event(&mut self, _: Event) {}
    }

    /// Effects whose store makes records durable only when the test says so.
    #[derive(Default)]
    struct SlowStore {
        durable: u64,
        asked: u64,
        flushed: bool,
    }
    impl Effects for SlowStore {
        fn store(&mut self, _: StoreOp) {}
        fn deliver(&mut self, _: Delivery) {}
        fn event(&mut self, _: Event) {}
        fn durable_persists(&mut self, handed: u64) -> u64 {
            self.asked += 1;
            self.durable.min(handed)
        }
        fn flush_persists(&mut self, handed: u64) -> u64 {
            self.flushed = true;
            self.durable = handed;
            handed
        }
    }

    /// Effects whose store makes every record durable at once, or fails every commit.
    struct FlakyStore {
        healthy: bool,
        persisted: usize,
    }
    impl Effects for FlakyStore {
        fn store(&mut self, op: StoreOp) {
            if matches!(op, StoreOp::Persist(_)) {
                self.persisted += 1;
            }
        }
        fn deliver(&mut self, _: Delivery) {}
        fn event(&mut self, _: Event) {}
        fn durable_persists(&mut self, handed: u64) -> u64 {
            if self.healthy { handed } else { 0 }
        }
        fn store_healthy(&mut self) -> bool {
            self.healthy
        }
    }

    /// Submits `frame` on a new intake and returns what was written to it and to `feed`.
    fn submit_once(
        d: &mut Driver,
        fx: &mut impl Effects,
        feed: ConnId,
        frame: &[u8],
        now: Instant,
    ) -> (String, Vec<u8>) {
        let author = d
            .handle_accept(ListenerRole::Receive, PEER, now, fx)
            .expect("ok");
        d.handle_input(author, frame, now, fx);
        d.handle_wakeup(now, fx);
        let (mut author_wire, mut feed_wire) = (Vec::new(), Vec::new());
        while let Some(c) = d.poll_writable() {
            let wire = if c == author {
                &mut author_wire
            } else {
                assert_eq!(c, feed);
                &mut feed_wire
            };
            let _ = d.flush(c, wire, now, fx);
        }
        (
            String::from_utf8_lossy(&author_wire).into_owned(),
            feed_wire,
        )
    }

    #[test]
    fn while_the_store_fails_new_events_are_naked_at_once_and_accepted_again_once_it_heals() {
        let now = crate::testutil::origin();
        let mut d = broker(now);
        let fx = &mut FlakyStore {
            healthy: true,
            persisted: 0,
        };
        let feed = subscriber(&mut d, now, fx);
        let (reply, fwd) = submit_once(&mut d, fx, feed, &event(1), now);
        assert!(reply.contains("role=\"ack\""), "{reply}");
        assert_eq!(fwd, event(1));
        assert_eq!(fx.persisted, 1);

        // The disk fills: a new event is naked at once, not recorded, not forwarded.
        fx.healthy = false;
        let (reply, fwd) = submit_once(&mut d, fx, feed, &event(2), now);
        assert!(reply.contains("role=\"nak\""), "{reply}");
        assert!(
            reply.contains(crate::node::NAK_STORE_UNAVAILABLE),
            "{reply}"
        );
        assert!(fwd.is_empty(), "not forwarded");
        assert_eq!(fx.persisted, 1, "not persisted");
        assert!(!d.node().has_seen(&EventKey::of_element(&event(2)[4..])));
        // A duplicate is answered as usual (acked by default), not naked for the store.
        let (reply, fwd) = submit_once(&mut d, fx, feed, &event(1), now);
        assert!(reply.contains("role=\"ack\""), "{reply}");
        assert!(fwd.is_empty());

        // The disk has room again: the same event is accepted.
        fx.healthy = true;
        d.handle_durable(fx);
        let (reply, fwd) = submit_once(&mut d, fx, feed, &event(2), now);
        assert!(reply.contains("role=\"ack\""), "{reply}");
        assert_eq!(fwd, event(2));
        assert_eq!(fx.persisted, 2);
    }

    /// Effects that count forwards and heartbeats.
    #[derive(Default)]
    struct Counting {
        forwarded: Vec<ConnId>,
        heartbeats: u32,
    }
    impl Effects for Counting {
        fn store(&mut self, _: StoreOp) {}
        fn deliver(&mut self, _: Delivery) {}
        fn event(&mut self, _: Event) {}
        fn forwarded(&mut self, conn: ConnId) {
            self.forwarded.push(conn);
        }
        fn heartbeat(&mut self) {
            self.heartbeats += 1;
        }
    }

    #[test]
    fn the_effects_hear_of_each_forward_and_of_each_wakeup() {
        let now = crate::testutil::origin();
        let mut d = broker_with(now, crate::config::Durability::Async);
        let fx = &mut Counting::default();
        let feeds = [subscriber(&mut d, now, fx), subscriber(&mut d, now, fx)];
        let beats = fx.heartbeats;
        let _author = submit(&mut d, 1, now, fx);
        d.handle_wakeup(now, fx);
        assert_eq!(fx.heartbeats, beats + 1, "one wake-up, one heartbeat");
        let mut forwarded = fx.forwarded.clone();
        forwarded.sort();
        assert_eq!(forwarded, feeds, "one forward per subscriber");
    }

    #[test]
    fn with_async_durability_a_failing_store_changes_nothing() {
        let now = crate::testutil::origin();
        let mut d = broker_with(now, crate::config::Durability::Async);
        let fx = &mut FlakyStore {
            healthy: false,
            persisted: 0,
        };
        let feed = subscriber(&mut d, now, fx);
        let (reply, fwd) = submit_once(&mut d, fx, feed, &event(1), now);
        assert!(reply.contains("role=\"ack\""), "{reply}");
        assert_eq!(fwd, event(1));
        assert_eq!(fx.persisted, 1);
    }

    fn broker(now: Instant) -> Driver {
        broker_with(now, crate::config::Durability::BeforeReply)
    }

    fn broker_with(now: Instant, durability: crate::config::Durability) -> Driver {
        let mut config = Config::new(Some("ivo://example.org/b".into()));
        config.timing.test_event_interval = None;
        config.policy.durability = durability;
        let node = Node::new(
            config,
            Box::new(NoFilterEngine),
            1,
            now,
            Duration::from_secs(1_700_000_000),
        )
        .expect("config");
        Driver::new(node, OutboxLimits::default())
    }

    fn event(n: u32) -> bytes::Bytes {
        let ev = format!(
            "<VOEvent xmlns='http://www.ivoa.net/xml/VOEvent/v2.0' \
             ivorn='ivo://example.org/a#{n}' version='2.0'/>"
        );
        crate::frame::encode(ev.as_bytes()).expect("fits")
    }

    const PEER: Peer = Peer::Tcp(std::net::SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        40000,
    ));

    /// A subscriber connection on `d`, its authenticate already written.
    fn subscriber(d: &mut Driver, now: Instant, fx: &mut impl Effects) -> ConnId {
        let feed = d
            .handle_accept(ListenerRole::Broadcast, PEER, now, fx)
            .expect("ok");
        while let Some(c) = d.poll_writable() {
            let _ = d.flush(c, &mut Vec::new(), now, fx);
        }
        feed
    }

    /// An author connection on `d` that has sent event `n`.
    fn submit(d: &mut Driver, n: u32, now: Instant, fx: &mut impl Effects) -> ConnId {
        let author = d
            .handle_accept(ListenerRole::Receive, PEER, now, fx)
            .expect("ok");
        d.handle_input(author, &event(n), now, fx);
        author
    }

    /// Flushes the author's receipt, which must end with the close; returns what was written.
    fn receipt(d: &mut Driver, author: ConnId, now: Instant, fx: &mut impl Effects) -> Vec<u8> {
        let mut out = Vec::new();
        assert_eq!(
            d.flush(author, &mut out, now, fx),
            Flush::Close(CloseReason::Done)
        );
        out
    }

    #[test]
    fn receipts_and_forwards_wait_until_the_effects_report_the_record_durable() {
        let now = crate::testutil::origin();
        let mut d = broker(now);
        let fx = &mut SlowStore::default();
        let feed = d
            .handle_accept(ListenerRole::Broadcast, PEER, now, fx)
            .expect("ok");
        assert_eq!(d.poll_writable(), Some(feed));
        let mut feed_wire = Vec::new();
        assert_eq!(d.flush(feed, &mut feed_wire, now, fx), Flush::Idle);
        feed_wire.clear();
        assert_eq!(fx.asked, 0, "nothing held, nothing asked");

        let author = submit(&mut d, 1, now, fx);
        assert_eq!(fx.asked, 1);
        assert_eq!(d.poll_writable(), None, "no receipt, no forward yet");
        d.handle_durable(fx);
        assert_eq!(d.poll_writable(), None);

        fx.durable = 1;
        d.handle_durable(fx);
        let mut writable = Vec::new();
        while let Some(c) = d.poll_writable() {
            writable.push(c);
        }
        assert_eq!(writable, [author, feed]);
        let author_wire = receipt(&mut d, author, now, fx);
        assert!(!author_wire.is_empty(), "the ack");
        assert_eq!(d.flush(feed, &mut feed_wire, now, fx), Flush::Idle);
        assert_eq!(feed_wire, event(1), "the forward");
        let asked = fx.asked;
        d.handle_durable(fx);
        assert_eq!(fx.asked, asked, "nothing held: the effects are not asked");
    }

    #[test]
    fn a_wakeup_releases_durable_output_and_fires_the_timers_only_when_due() {
        let now = crate::testutil::origin();
        let mut d = broker(now);
        let fx = &mut SlowStore::default();
        let feed = d
            .handle_accept(ListenerRole::Broadcast, PEER, now, fx)
            .expect("ok");
        d.handle_wakeup(now, fx);
        let mut feed_wire = Vec::new();
        while let Some(c) = d.poll_writable() {
            assert_eq!(d.flush(c, &mut feed_wire, now, fx), Flush::Idle);
        }
        let author = submit(&mut d, 4, now, fx);
        d.handle_wakeup(now, fx);
        assert_eq!(d.poll_writable(), None, "the record is not durable yet");

        fx.durable = 1;
        d.handle_wakeup(now, fx);
        assert_eq!(d.poll_writable(), Some(author), "the receipt");
        assert_eq!(d.poll_writable(), Some(feed), "the forward");
        assert!(!receipt(&mut d, author, now, fx).is_empty(), "the ack");
        assert_eq!(d.flush(feed, &mut feed_wire, now, fx), Flush::Idle);

        let due = d.poll_timeout().expect("a broker always has a timer");
        assert!(due > now);
        d.handle_wakeup(due - Duration::from_millis(1), fx);
        assert_eq!(d.poll_writable(), None, "nothing due yet");
        d.handle_wakeup(due, fx);
        assert!(d.poll_timeout().is_some_and(|t| t > due), "the timer fired");
        assert_eq!(d.poll_writable(), Some(feed), "the iamalive");
        assert_eq!(d.poll_dial(), None);
    }

    #[test]
    fn a_half_closed_author_keeps_its_socket_until_the_held_receipt_is_written() {
        let now = crate::testutil::origin();
        let mut d = broker(now);
        let fx = &mut SlowStore::default();
        let author = submit(&mut d, 2, now, fx);
        assert!(!d.handle_eof(author, now, fx), "the receipt is still owed");
        assert!(d.is_open(author));
        assert_eq!(d.poll_writable(), None);
        fx.durable = 1;
        d.handle_durable(fx);
        assert_eq!(d.poll_writable(), Some(author));
        let out = receipt(&mut d, author, now, fx);
        assert!(!out.is_empty());
        assert!(!d.is_open(author));
    }

    #[test]
    fn shutdown_waits_for_the_store_and_writes_held_receipts_before_closing() {
        let now = crate::testutil::origin();
        let mut d = broker(now);
        let fx = &mut SlowStore::default();
        let author = submit(&mut d, 3, now, fx);
        d.shutdown(now, fx);
        assert!(fx.flushed);
        assert_eq!(d.poll_writable(), Some(author));
        let out = receipt(&mut d, author, now, fx);
        assert!(!out.is_empty(), "the receipt went out before the close");

        // Nothing held: shutdown does not wait.
        let mut d = broker(now);
        let fx = &mut SlowStore::default();
        d.shutdown(now, fx);
        assert!(!fx.flushed);
    }

    #[test]
    fn half_closed_author_still_gets_its_receipt() {
        let now = crate::testutil::origin();
        let node = Node::new(
            Config::new(Some("ivo://example.org/b".into())),
            Box::new(NoFilterEngine),
            1,
            now,
            Duration::from_secs(1_700_000_000),
        )
        .expect("config");
        let mut d = Driver::new(node, OutboxLimits::default());
        let fx = &mut Fx;
        let peer = Peer::Tcp((std::net::Ipv4Addr::LOCALHOST, 40000).into());
        let conn = d
            .handle_accept(ListenerRole::Receive, peer, now, fx)
            .expect("accepted");
        let ev = b"<VOEvent xmlns='http://www.ivoa.net/xml/VOEvent/v2.0' \
                   ivorn='ivo://example.org/a#1' version='2.0'/>";
        let frame = crate::frame::encode(ev).expect("fits");
        d.handle_input(conn, &frame, now, fx);
        assert!(
            !d.handle_eof(conn, now, fx),
            "a receipt is queued: keep the socket"
        );
        assert_eq!(d.poll_writable(), Some(conn));
        let mut out = Vec::new();
        assert_eq!(
            d.flush(conn, &mut out, now, fx),
            Flush::Close(CloseReason::Done)
        );
        assert!(!out.is_empty(), "the ack was written before the close");
        // A connection with nothing queued closes at once.
        let idle = d
            .handle_accept(ListenerRole::Receive, peer, now, fx)
            .expect("accepted");
        assert!(d.handle_eof(idle, now, fx));
        assert!(!d.is_open(idle));
    }
}
