//! The node: every VTP role in one deterministic state machine.
//!
//! # Theory of operation
//!
//! A [`Node`] owns one machine per connection and the state they share (seen-index, filters,
//! upstream back-offs, node-wide timers). A driver feeds it inputs and performs its outputs:
//!
//! | input | when |
//! |---|---|
//! | [`Node::handle_accept`] | a listener accepted a connection (`Receive` or `Broadcast`) |
//! | [`Node::handle_connected`] | an outgoing connection asked for by [`Action::Connect`] is up |
//! | [`Node::handle_input`] | bytes were read from a connection (any chunking) |
//! | [`Node::handle_closed`] | a connection ended (peer close, IO error, connect failure, outbox overflow) |
//! | [`Node::handle_timeout`] | the deadline from [`Node::poll_timeout`] passed |
//! | [`Node::submit`] | command: submit one event as an author |
//! | [`Node::handle_persisted`] | the store made more [`Action::Persist`] records durable |
//! | [`Node::restore_seen`] | start-up: seen-index records loaded from the store |
//! | [`Node::shutdown`] | command: close everything |
//!
//! After **every** input, drain [`Node::poll_action`] until `None` (perform the actions in
//! order), then [`Node::poll_event`], then read [`Node::poll_timeout`]. `now` must never go
//! backwards.
//!
//! The per-connection machines (PROTOCOL.md §3):
//!
//! | machine | states and inputs | on violation |
//! |---|---|---|
//! | Intake (author → us) | *waiting* (first frame is the submission; 20 s deadline from accept) → *answered* (ack or nak sent, close queued) | bad XML, Transport, bad IVOID, wrong version, schema violation: nak with reason, close; oversize prefix: nak, close; deadline: close without reply |
//! | Feed (us → subscriber) | *open*: authenticate sent on accept; iamalive at each node tick; events forwarded through filters; acks, naks, iamalive replies and authenticate replies (filters) accepted at any time | bad XML or a VOEvent from the subscriber: logged and ignored; unanswered iamalive or too many outstanding acks at a tick: close |
//! | Subscription (us → upstream) | *connecting* → *up* (answer authenticate with filters and iamalive; ack every event; silence timer) → *down* (reconnect after back-off) | bad XML: logged, ignored, silence timer not reset |
//! | Submission (us as author) | *connecting* → *sent* → *done* on the matching ack or nak | timeout or close before the receipt: failed |
//!
//! With [`Durability::BeforeReply`] (the default) the receipt, forwards and delivery of a new
//! event are *held* until the driver reports its [`Action::Persist`] durable with
//! [`Node::handle_persisted`]; the Persist actions are numbered 1, 2, 3... in the order they
//! are emitted, and held output is released in that order. An intake whose receipt is held
//! stays open (its deadline still runs; further input is ignored; a peer's half-close does not
//! cancel the receipt). See the crate docs, "Durability".
//!
//! Implementation note: one node-wide iamalive tick drives every feed, as in Comet: it keeps
//! `poll_timeout` O(1) in the number of subscribers, and each feed still hears from us at least
//! once per period (VTP 2.0 §5 asks for at most 90 s of silence).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backoff::Backoff;
use crate::config::{
    AcceptVersions, Config, DuplicateReply, Durability, InvalidFilters, SchemaCheck, SubscriberNak,
};
use crate::endpoint::DialAddr;
use crate::filter::{FilterEngine, FilterId};
use crate::frame::{self, FrameDecoder};
use crate::ivoid::{self, EventIdError, Ivoid};
use crate::message::{self, Message, TransportRole, VoEvent, VoEventNamespace};
use crate::output::{
    Action, CloseReason, ConnId, ConnRole, Delivery, Event, ListenerRole, Peer, Source,
};
use crate::schema;
use crate::seen::{EventKey, Seen, SeenIndex, SeenRecord};
use crate::time::{WallClock, format_utc};
use crate::timer::Timers;

/// A configuration the node cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `local_ivo` is not a valid IVOA identifier.
    #[error(
        "invalid local IVOID {ivo:?}: {reason}; give an identifier like ivo://example.org/broker"
    )]
    LocalIvo {
        /// The value given.
        ivo: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An upstream has no endpoint.
    #[error("upstream {0} has no endpoint; give at least one HOST[:PORT]")]
    EmptyUpstream(usize),
    /// A filter of this node's own is too long.
    #[error("filter {index} is {len} bytes long, over the limit of {max}; shorten it")]
    FilterTooLong {
        /// Position in the list.
        index: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A submission the node cannot make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The payload is not a well-formed VOEvent.
    #[error("not a valid VOEvent: {0}")]
    NotAnEvent(String),
    /// The payload is larger than a frame may be.
    #[error("event is {len} bytes, over the frame limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// [`Node::shutdown`] was called: the node opens no more connections.
    #[error("the node is shutting down: submit before calling shutdown, or to a new node")]
    ShuttingDown,
}

/// Node-wide and per-connection deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKey {
    IamaliveTick,
    TestEvent,
    Prune,
    Reconnect(usize),
    Conn(ConnId),
}

/// The VTP node. See the [module docs](self) for the driving contract.
#[derive(Debug)]
pub struct Node {
    config: Config,
    local_ivo: Option<Arc<str>>,
    clock: WallClock,
    last_now: Instant,
    next_conn: u64,
    conns: BTreeMap<ConnId, Conn>,
    /// Open intake connections (authors).
    served: usize,
    /// Open feeds (subscribers).
    feeds: usize,
    upstreams: Vec<UpstreamState>,
    seen: SeenIndex,
    filters: FilterTable,
    timers: Timers<TimerKey>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    shut_down: bool,
    /// Persist actions emitted so far (they are numbered 1, 2, 3...).
    persists: u64,
    /// Persist actions reported durable.
    persisted: u64,
    /// Output waiting for a persist to be durable: (persist number, output), in emission
    /// order, so the numbers never decrease.
    held: VecDeque<(u64, Held)>,
    /// Intake connections whose receipt is held.
    replying: BTreeSet<ConnId>,
}

#[derive(Debug)]
struct Conn {
    decoder: FrameDecoder,
    kind: Kind,
}

/// Output held until a persist is durable.
#[derive(Debug)]
enum Held {
    /// A receipt, a close or a delivery.
    Action(Action),
    /// An event's forwards, decided at release: filters are evaluated then, for the feeds
    /// connected then, so holding costs nothing per subscriber.
    FanOut {
        /// The event, framed once.
        frame: Bytes,
        /// Its `VOEvent` element within the payload (for filters).
        element: Range<usize>,
    },
}

#[derive(Debug)]
enum Kind {
    Intake,
    Feed(Feed),
    Subscription(Subscription),
    Submission(Submission),
}

impl Kind {
    fn role(&self) -> ConnRole {
        match self {
            Self::Intake => ConnRole::Intake,
            Self::Feed(_) => ConnRole::Feed,
            Self::Subscription(_) => ConnRole::Subscription,
            Self::Submission(_) => ConnRole::Submission,
        }
    }
}

#[derive(Debug, Default)]
struct Feed {
    iamalive_unanswered: u32,
    /// Events sent, and receipts (ack or nak, any Origin, as Comet) received.
    sent: u64,
    receipts: u64,
    /// `sent` at the previous iamalive tick: events older than that are overdue if unanswered.
    sent_at_tick: u64,
    filters: FeedFilters,
    naks: u64,
}

impl Feed {
    /// Events sent before the previous tick still without a receipt. Receipts are counted, not
    /// matched (Comet matches nothing either), and the oldest events are taken as answered
    /// first; an event sent since the last tick cannot be overdue, so acks still in flight
    /// during a burst never count against the subscriber.
    fn overdue(&self) -> u64 {
        self.sent_at_tick.saturating_sub(self.receipts)
    }
}

#[derive(Debug, Default)]
enum FeedFilters {
    #[default]
    None,
    Some(Vec<FilterId>),
    AllRefused,
}

#[derive(Debug)]
struct Subscription {
    upstream: usize,
    connected_at: Option<Instant>,
}

#[derive(Debug)]
struct Submission {
    ivorn: Arc<str>,
    frame: Bytes,
    sent: bool,
}

#[derive(Debug)]
struct UpstreamState {
    endpoints: Vec<DialAddr>,
    next_endpoint: usize,
    backoff: Backoff,
    conn: Option<ConnId>,
}

#[derive(Debug)]
struct FilterTable {
    engine: Box<dyn FilterEngine + Send>,
    by_expr: HashMap<Arc<str>, FilterId>,
    by_id: BTreeMap<FilterId, (Arc<str>, u32)>,
    feeds_with_filters: usize,
    ids: Vec<FilterId>,
    verdicts: Vec<bool>,
}

impl Node {
    /// Creates a node.
    ///
    /// `engine` evaluates subscriber filters (use [`NoFilterEngine`](crate::filter::NoFilterEngine)
    /// when there is no XPath support), `seed` drives every random choice (back-off jitter), and
    /// `unix_now` is the wall-clock time at `now`, the anchor of every timestamp the node writes.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the local IVOID is invalid, an upstream has no endpoint, or one of
    /// the node's own filters is over the length limit.
    pub fn new(
        config: Config,
        engine: Box<dyn FilterEngine + Send>,
        seed: u64,
        now: Instant,
        unix_now: Duration,
    ) -> Result<Self, ConfigError> {
        if let Some(ivo) = &config.local_ivo {
            Ivoid::parse(ivo).map_err(|e| ConfigError::LocalIvo {
                ivo: ivo.clone(),
                reason: e.to_string(),
            })?;
        }
        for (index, f) in config.filters.iter().enumerate() {
            if f.len() > config.limits.filter_len_max {
                return Err(ConfigError::FilterTooLong {
                    index,
                    len: f.len(),
                    max: config.limits.filter_len_max,
                });
            }
        }
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for (i, up) in config.upstreams.iter().enumerate() {
            if up.endpoints.is_empty() {
                return Err(ConfigError::EmptyUpstream(i));
            }
            upstreams.push(UpstreamState {
                endpoints: up.endpoints.clone(),
                next_endpoint: 0,
                backoff: Backoff::new(
                    config.timing.backoff,
                    seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ),
                conn: None,
            });
        }
        let mut timers = Timers::new();
        timers.set(TimerKey::IamaliveTick, now + config.timing.iamalive_period);
        if config.timing.test_event_interval.is_some() {
            timers.set(TimerKey::TestEvent, now);
        }
        timers.set(TimerKey::Prune, now);
        for i in 0..upstreams.len() {
            timers.set(TimerKey::Reconnect(i), now);
        }
        Ok(Self {
            local_ivo: config.local_ivo.as_deref().map(Arc::from),
            seen: SeenIndex::new(config.limits.seen_entries_max),
            clock: WallClock::new(now, unix_now),
            last_now: now,
            next_conn: 1,
            conns: BTreeMap::new(),
            served: 0,
            feeds: 0,
            upstreams,
            filters: FilterTable {
                engine,
                by_expr: HashMap::new(),
                by_id: BTreeMap::new(),
                feeds_with_filters: 0,
                ids: Vec::new(),
                verdicts: Vec::new(),
            },
            timers,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            shut_down: false,
            persists: 0,
            persisted: 0,
            held: VecDeque::new(),
            replying: BTreeSet::new(),
            config,
        })
    }

    // ---------------------------------------------------------------- inputs

    /// A listener accepted a connection from `peer`. Returns the new connection's handle, or
    /// `None` if it was refused (whitelist, connection limit, no local IVOID); a refused
    /// connection must be closed by the driver without sending anything.
    #[must_use]
    pub fn handle_accept(
        &mut self,
        listener: ListenerRole,
        peer: Peer,
        now: Instant,
    ) -> Option<ConnId> {
        self.advance(now);
        let refuse = |reason: String| Event::Refused {
            listener,
            peer,
            reason,
        };
        if self.shut_down {
            self.events
                .push_back(refuse("node is shutting down".into()));
            return None;
        }
        let Some(local_ivo) = self.local_ivo.clone() else {
            self.events.push_back(refuse(
                "no local IVOID configured: a broker needs --local-ivo to receive or broadcast"
                    .into(),
            ));
            return None;
        };
        let open = match listener {
            ListenerRole::Receive => self.served,
            ListenerRole::Broadcast => self.feeds,
        };
        if open >= self.config.limits.connections_max {
            self.events.push_back(refuse(format!(
                "connection limit reached ({} connections)",
                self.config.limits.connections_max
            )));
            return None;
        }
        let whitelist = match listener {
            ListenerRole::Receive => &self.config.author_whitelist,
            ListenerRole::Broadcast => &self.config.subscriber_whitelist,
        };
        if let Peer::Ip(ip) = peer
            && !whitelist.allows(ip)
        {
            let what = match listener {
                ListenerRole::Receive => "submission",
                ListenerRole::Broadcast => "subscription",
            };
            self.events.push_back(refuse(format!(
                "attempted {what} from non-whitelisted {ip}"
            )));
            return None;
        }
        let conn = self.mint();
        if peer == Peer::Local {
            self.events
                .push_back(Event::UnixPeerNotWhitelisted { conn });
        }
        let kind = match listener {
            ListenerRole::Receive => {
                self.timers.set(
                    TimerKey::Conn(conn),
                    now + self.config.timing.intake_deadline,
                );
                Kind::Intake
            }
            ListenerRole::Broadcast => {
                let ts = self.stamp(now);
                let frame = message::build_authenticate(&local_ivo, ts.as_str());
                self.actions.push_back(Action::Authenticate { conn, frame });
                Kind::Feed(Feed::default())
            }
        };
        self.insert_conn(conn, kind);
        Some(conn)
    }

    /// An outgoing connection requested by [`Action::Connect`] is established.
    pub fn handle_connected(&mut self, conn: ConnId, now: Instant) {
        self.advance(now);
        let silence = self.config.timing.subscriber_silence;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match &mut c.kind {
            Kind::Subscription(s) => {
                s.connected_at = Some(now);
                self.timers.set(TimerKey::Conn(conn), now + silence);
            }
            Kind::Submission(s) => {
                if !s.sent {
                    s.sent = true;
                    let frame = s.frame.clone();
                    self.actions.push_back(Action::Submit { conn, frame });
                }
            }
            Kind::Intake | Kind::Feed(_) => return,
        }
        let role = c.kind.role();
        self.events.push_back(Event::PeerUp { conn, role });
    }

    /// Bytes were read from `conn`. Any chunking is fine.
    pub fn handle_input(&mut self, conn: ConnId, input: &[u8], now: Instant) {
        self.advance(now);
        if self.replying.contains(&conn) {
            // The submission is in; its receipt waits for the store. Anything more is ignored,
            // as it would be on a connection already answered.
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let mut decoder = std::mem::replace(&mut c.decoder, FrameDecoder::new(0));
        let result = decoder.decode(input, |payload| self.handle_frame(conn, payload, now));
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.decoder = decoder;
        if self.replying.contains(&conn) {
            return;
        }
        if let Err(e) = result {
            let detail = e.to_string();
            if matches!(c.kind, Kind::Intake) {
                let reason = format!("Event rejected: {detail}");
                self.nak(conn, "", &reason, now);
            }
            self.events.push_back(Event::ProtocolViolation {
                conn,
                detail: detail.clone(),
            });
            self.close(conn, CloseReason::FramingError(detail), now);
        }
    }

    /// `conn` ended: the peer closed it, an IO error occurred, an outgoing connect failed, or the
    /// driver gave up on it (e.g. [`CloseReason::OutboxFull`]). Unknown handles are ignored, so
    /// reporting a close the node itself asked for is harmless.
    ///
    /// An intake whose receipt is held ([`Node::reply_pending`]) survives
    /// [`CloseReason::PeerClosed`]: the author may only have half-closed its side and still
    /// wait for the receipt, which is sent once the record is durable (if the socket is really
    /// gone, writing it fails and the driver drops it).
    pub fn handle_closed(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        self.advance(now);
        if reason == CloseReason::PeerClosed && self.replying.contains(&conn) {
            return;
        }
        if self.conns.contains_key(&conn) {
            self.remove_conn(conn, reason, now);
        }
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        while let Some(key) = self.timers.pop_due(now) {
            match key {
                TimerKey::IamaliveTick => self.iamalive_tick(now),
                TimerKey::TestEvent => self.test_event(now),
                TimerKey::Prune => self.prune(now),
                TimerKey::Reconnect(i) => self.dial(i, now),
                TimerKey::Conn(conn) => self.conn_deadline(conn, now),
            }
        }
    }

    /// The first `count` [`Action::Persist`] actions (numbered from 1 in emission order) are
    /// durable in the store: output held for them is released, in order, to
    /// [`Node::poll_action`]. A count not above the last one reported changes nothing. Output
    /// for connections closed meanwhile is dropped; deliveries are always released.
    ///
    /// With [`Durability::Async`] nothing is held and this only records the count.
    pub fn handle_persisted(&mut self, count: u64, now: Instant) {
        self.advance(now);
        debug_assert!(
            count <= self.persists,
            "{count} persists reported durable, only {} emitted",
            self.persists
        );
        let count = count.min(self.persists);
        if count <= self.persisted {
            return;
        }
        self.persisted = count;
        while let Some((seq, _)) = self.held.front() {
            if *seq > count {
                break;
            }
            let Some((_, held)) = self.held.pop_front() else {
                break;
            };
            match held {
                Held::Action(action) => self.release(action, now),
                Held::FanOut { frame, element } => {
                    let payload = frame.slice(frame::PREFIX_LEN..);
                    self.fan_out(&frame, &payload, element);
                }
            }
        }
    }

    // -------------------------------------------------------------- commands

    /// Submits one event to the broker at `addr`, as an author. The node emits
    /// [`Action::Connect`], then [`Action::Submit`] once connected, and finally one of
    /// [`Event::SubmissionAcked`], [`Event::SubmissionNaked`] or [`Event::SubmissionFailed`].
    /// The receipt deadline ([`Timing::receipt_timeout`](crate::config::Timing)) counts from now.
    ///
    /// # Errors
    ///
    /// [`SubmitError`] if `payload` is not a well-formed VOEvent or is too large to frame, or
    /// if the node is shutting down.
    pub fn submit(
        &mut self,
        addr: DialAddr,
        payload: &[u8],
        now: Instant,
    ) -> Result<ConnId, SubmitError> {
        self.advance(now);
        if self.shut_down {
            return Err(SubmitError::ShuttingDown);
        }
        let max = self.config.limits.frame_len_max;
        if payload.len() > max as usize {
            return Err(SubmitError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let ivorn = match message::parse(payload, &self.config.limits.parse) {
            Ok(Message::VoEvent(ev)) => Arc::<str>::from(ev.ivorn.as_ref()),
            Ok(Message::Transport(_)) => {
                return Err(SubmitError::NotAnEvent(
                    "it is a Transport message, not a VOEvent".into(),
                ));
            }
            Err(e) => return Err(SubmitError::NotAnEvent(e.to_string())),
        };
        let frame = frame::encode(payload).map_err(|_| SubmitError::TooLarge {
            len: payload.len(),
            max,
        })?;
        let conn = self.mint();
        self.insert_conn(
            conn,
            Kind::Submission(Submission {
                ivorn,
                frame,
                sent: false,
            }),
        );
        self.timers.set(
            TimerKey::Conn(conn),
            now + self.config.timing.receipt_timeout,
        );
        self.actions.push_back(Action::Connect { conn, addr });
        Ok(conn)
    }

    /// Loads seen-index records from the durable store (at start-up, before serving). Records
    /// older than the retention are skipped. Returns the number loaded.
    pub fn restore_seen(
        &mut self,
        records: impl IntoIterator<Item = SeenRecord>,
        now: Instant,
    ) -> usize {
        self.advance(now);
        let unix = self.clock.unix_secs_at(now);
        self.seen
            .restore(records, unix, self.config.timing.seen_retention.as_secs())
    }

    /// Closes every connection, stops reconnecting and refuses new connections.
    pub fn shutdown(&mut self, now: Instant) {
        self.advance(now);
        self.shut_down = true;
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close(conn, CloseReason::Shutdown, now);
        }
        for i in 0..self.upstreams.len() {
            self.timers.cancel(TimerKey::Reconnect(i));
        }
        self.timers.cancel(TimerKey::IamaliveTick);
        self.timers.cancel(TimerKey::TestEvent);
        self.timers.cancel(TimerKey::Prune);
    }

    // --------------------------------------------------------------- outputs

    /// The next side effect to perform, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next application event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Node::handle_timeout`] next; `None` when nothing is scheduled. Returns the
    /// last `now` seen while actions or events are pending ("wake me now").
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.actions.is_empty() || !self.events.is_empty() {
            return Some(self.last_now);
        }
        self.timers.next()
    }

    // --------------------------------------------------------------- queries

    /// Number of open connections, all roles.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Number of connected subscribers (feeds).
    pub fn feeds(&self) -> usize {
        self.feeds
    }

    /// What a connection is for, if it is open.
    pub fn role(&self, conn: ConnId) -> Option<ConnRole> {
        self.conns.get(&conn).map(|c| c.kind.role())
    }

    /// Entries in the seen-index.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// True if this event's key is in the seen-index.
    pub fn has_seen(&self, key: &EventKey) -> bool {
        self.seen.contains(key)
    }

    /// Distinct filter expressions currently compiled.
    pub fn distinct_filters(&self) -> usize {
        self.filters.by_id.len()
    }

    /// Number of [`Action::Persist`] actions emitted so far: the highest count
    /// [`Node::handle_persisted`] accepts.
    pub fn persists(&self) -> u64 {
        self.persists
    }

    /// Number of outputs held until their seen-index records are durable: receipts, closes,
    /// deliveries, and one per event for its forwards to every subscriber.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// True while the receipt for the intake `conn` is held until a record is durable: a driver
    /// that sees the author's end of stream keeps the socket open for it.
    pub fn reply_pending(&self, conn: ConnId) -> bool {
        self.replying.contains(&conn)
    }

    /// The latest `now` the node was given.
    pub fn last_now(&self) -> Instant {
        self.last_now
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ------------------------------------------------------------- internals

    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        if now > self.last_now {
            self.last_now = now;
        }
    }

    fn mint(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    fn insert_conn(&mut self, conn: ConnId, kind: Kind) {
        let role = kind.role();
        self.conns.insert(
            conn,
            Conn {
                decoder: FrameDecoder::new(self.config.limits.frame_len_max),
                kind,
            },
        );
        match role {
            ConnRole::Intake => self.served += 1,
            ConnRole::Feed => self.feeds += 1,
            ConnRole::Subscription | ConnRole::Submission => return,
        }
        self.events.push_back(Event::PeerUp { conn, role });
    }

    fn stamp(&self, now: Instant) -> crate::time::UtcStamp {
        format_utc(self.clock.unix_secs_at(now))
    }

    /// Queues a close and forgets the connection.
    fn close(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        if self.conns.contains_key(&conn) {
            self.actions.push_back(Action::Close {
                conn,
                reason: reason.clone(),
            });
            self.remove_conn(conn, reason, now);
        }
    }

    fn remove_conn(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.replying.remove(&conn);
        self.timers.cancel(TimerKey::Conn(conn));
        let role = c.kind.role();
        match c.kind {
            Kind::Intake => self.served -= 1,
            Kind::Feed(feed) => {
                self.feeds -= 1;
                self.release_filters(feed.filters);
            }
            Kind::Subscription(s) => {
                let lived = s.connected_at.map_or(Duration::ZERO, |t| now - t);
                self.schedule_reconnect(s.upstream, lived, now);
            }
            Kind::Submission(_) => {
                if reason != CloseReason::Done {
                    self.events.push_back(Event::SubmissionFailed {
                        conn,
                        reason: reason.clone(),
                    });
                }
            }
        }
        self.events
            .push_back(Event::PeerDown { conn, role, reason });
    }

    fn handle_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match c.kind {
            // A second frame after the submission, while its receipt waits: ignored.
            Kind::Intake if self.replying.contains(&conn) => {}
            Kind::Intake => self.intake_frame(conn, payload, now),
            Kind::Feed(_) => self.feed_frame(conn, payload, now),
            Kind::Subscription(_) => self.subscription_frame(conn, payload, now),
            Kind::Submission(_) => self.submission_frame(conn, payload, now),
        }
    }

    // ---------------------------------------------------------------- intake

    fn intake_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let msg = match message::parse(payload, &self.config.limits.parse) {
            Ok(m) => m,
            Err(e) => {
                let reason = format!("Event rejected: {e}");
                return self.reject(conn, "", reason, now);
            }
        };
        let ev = match msg {
            Message::VoEvent(ev) => ev,
            Message::Transport(t) => {
                let reason = format!(
                    "Event rejected: expected a VOEvent, got a Transport message (role {})",
                    t.role.as_str()
                );
                return self.reject(conn, "", reason, now);
            }
        };
        if let Err(reason) = self.check_submission(payload, &ev) {
            return self.reject(conn, &ev.ivorn, reason, now);
        }
        let key = EventKey::of_element(&payload[ev.element.clone()]);
        let unix = self.clock.unix_secs_at(now);
        match self.seen.check_and_insert(key, unix) {
            Seen::Duplicate => {
                self.actions.push_back(Action::DropDuplicate { conn, key });
                self.events.push_back(Event::Duplicate { conn, key });
                let mark = self.actions.len();
                match self.config.policy.duplicate_reply {
                    DuplicateReply::Ack => self.ack(conn, &ev.ivorn, now),
                    DuplicateReply::Nak => self.nak(
                        conn,
                        &ev.ivorn,
                        "Event rejected: Previously seen by this broker",
                        now,
                    ),
                }
                self.end_intake(conn, mark, now);
            }
            Seen::New { evicted } => {
                self.persist(key, unix, evicted);
                let mark = self.actions.len();
                self.ack(conn, &ev.ivorn, now);
                self.end_intake(conn, mark, now);
                let ivorn: Arc<str> = Arc::from(ev.ivorn.as_ref());
                self.accept_event(conn, Source::Author(conn), ivorn, key, payload, &ev, now);
            }
        }
    }

    /// Receiver checks on an author's event (PROTOCOL §4.1): IVOID, version, then schema.
    fn check_submission(&self, payload: &[u8], ev: &VoEvent<'_>) -> Result<(), String> {
        match ivoid::check_event_ivorn(&ev.ivorn) {
            Ok(_) => {}
            Err(EventIdError::Invalid(e)) => {
                return Err(format!("Event rejected: Invalid IVOID: {} ({e})", ev.ivorn));
            }
            Err(e) => return Err(format!("Event rejected: {}", e.nak_reason(&ev.ivorn))),
        }
        if self.config.policy.accept_versions == AcceptVersions::V2_0
            && ev.namespace != VoEventNamespace::V2_0
        {
            return Err(format!(
                "Event rejected: this broker accepts only VOEvent 2.0 \
                 (namespace http://www.ivoa.net/xml/VOEvent/v2.0); got {}",
                match (&ev.namespace, &ev.namespace_uri) {
                    (VoEventNamespace::V1_1, _) => "VOEvent 1.1".to_owned(),
                    (VoEventNamespace::None, _) => "no namespace".to_owned(),
                    (_, Some(uri)) => format!("namespace {uri}"),
                    (_, None) => "an unknown namespace".to_owned(),
                }
            ));
        }
        // Only 2.0 packets are schema-checked: with `AcceptVersions::Any`, 1.1 and
        // namespace-less packets pass without one (there is no schema for them here).
        if self.config.policy.schema == SchemaCheck::V2_0 && ev.namespace == VoEventNamespace::V2_0
        {
            let limits = &self.config.limits.parse;
            schema::validate_voevent_2_0(payload, ev.element.clone(), limits)
                .map_err(|e| format!("Event rejected: {e}"))?;
        }
        Ok(())
    }

    fn reject(&mut self, conn: ConnId, ivorn: &str, reason: String, now: Instant) {
        self.nak(conn, ivorn, &reason, now);
        self.events.push_back(Event::Rejected { conn, reason });
        self.close(conn, CloseReason::Done, now);
    }

    fn ack(&mut self, conn: ConnId, ivorn: &str, now: Instant) {
        let ts = self.stamp(now);
        let frame = message::build_ack(ivorn, self.local_ivo.as_deref(), ts.as_str());
        self.actions.push_back(Action::Ack { conn, frame });
    }

    /// A nak answers one submission; its `Origin` is the event's ivorn, or, when the ivorn
    /// could not be read, our own IVOID (an `Origin` must never be empty: pygcn and Comet
    /// read it unconditionally).
    fn nak(&mut self, conn: ConnId, ivorn: &str, reason: &str, now: Instant) {
        let ivorn = match (ivorn.is_empty(), self.local_ivo.as_deref()) {
            (true, Some(local)) => local,
            (true, None) => "ivo://vtp/unknown",
            (false, _) => ivorn,
        };
        let ts = self.stamp(now);
        let frame = message::build_nak(ivorn, self.local_ivo.as_deref(), ts.as_str(), reason);
        self.actions.push_back(Action::Nak { conn, frame });
    }

    fn persist(&mut self, key: EventKey, unix_secs: u64, evicted: Option<EventKey>) {
        if let Some(old) = evicted {
            self.actions.push_back(Action::Forget(old));
        }
        self.persists += 1;
        self.actions
            .push_back(Action::Persist(SeenRecord { key, unix_secs }));
    }

    /// True when output queued now must wait for a persist: the policy holds replies and some
    /// record emitted so far is not durable yet.
    fn holding(&self) -> bool {
        self.config.policy.durability == Durability::BeforeReply && self.persisted < self.persists
    }

    /// Moves the actions queued since `mark` to the held queue, behind the latest persist, when
    /// [`Self::holding`]. Every record emitted so far is then durable before they go out: the
    /// event's own and, for a duplicate, the original's if it is still on its way.
    fn hold(&mut self, mark: usize) {
        if !self.holding() {
            return;
        }
        let seq = self.persists;
        self.held
            .extend(self.actions.drain(mark..).map(|a| (seq, Held::Action(a))));
    }

    /// Closes an intake after its receipt (queued since `mark`): at once, or, when the receipt
    /// must wait for the store, with the close held behind it and the connection kept open (and
    /// ignored) until then.
    fn end_intake(&mut self, conn: ConnId, mark: usize, now: Instant) {
        if self.holding() {
            self.actions.push_back(Action::Close {
                conn,
                reason: CloseReason::Done,
            });
            self.replying.insert(conn);
            self.hold(mark);
        } else {
            self.close(conn, CloseReason::Done, now);
        }
    }

    /// Queues one held action whose record is now durable. A held close ends its intake; frames
    /// for connections that closed meanwhile are dropped.
    fn release(&mut self, action: Action, now: Instant) {
        match action {
            Action::Close { conn, reason } => {
                if self.replying.remove(&conn) {
                    self.close(conn, reason, now);
                }
            }
            action => match action.frame() {
                Some((conn, _)) if !self.conns.contains_key(&conn) => {}
                _ => self.actions.push_back(action),
            },
        }
    }

    /// A new event from any source: forward to every feed whose filters pass, then deliver to
    /// the handlers, at once or held behind its persist. The payload is framed once; every feed
    /// shares that `Bytes`.
    #[allow(clippy::too_many_arguments)]
    fn accept_event(
        &mut self,
        conn: ConnId,
        source: Source,
        ivorn: Arc<str>,
        key: EventKey,
        payload: &[u8],
        ev: &VoEvent<'_>,
        _now: Instant,
    ) {
        let Ok(frame) = frame::encode(payload) else {
            // Unreachable: the payload came through a frame, so it fits one.
            return;
        };
        let mark = self.actions.len();
        if self.holding() {
            let element = ev.element.clone();
            let fan_out = Held::FanOut {
                frame: frame.clone(),
                element,
            };
            self.held.push_back((self.persists, fan_out));
        } else {
            self.fan_out(&frame, payload, ev.element.clone());
        }
        self.events.push_back(Event::Accepted {
            conn,
            ivorn: ivorn.clone(),
            key,
        });
        self.actions.push_back(Action::Deliver(Delivery {
            ivorn,
            key,
            payload: frame.slice(frame::PREFIX_LEN..),
            source,
        }));
        self.hold(mark);
    }

    fn fan_out(&mut self, frame: &Bytes, payload: &[u8], element: Range<usize>) {
        let ft = &mut self.filters;
        let evaluate = ft.feeds_with_filters > 0;
        if evaluate {
            ft.ids.clear();
            ft.ids.extend(ft.by_id.keys().copied());
            ft.verdicts.clear();
            ft.engine
                .evaluate(payload, element, &ft.ids, &mut ft.verdicts);
            // An engine that returns too few verdicts fails closed for the missing ones.
            ft.verdicts.resize(ft.ids.len(), false);
        }
        let invalid = self.config.policy.invalid_filters;
        for (&conn, c) in self.conns.iter_mut() {
            let Kind::Feed(feed) = &mut c.kind else {
                continue;
            };
            let pass = match &feed.filters {
                FeedFilters::None => true,
                FeedFilters::AllRefused => invalid == InvalidFilters::SendEverything,
                FeedFilters::Some(ids) => ids
                    .iter()
                    .any(|id| ft.ids.binary_search(id).is_ok_and(|i| ft.verdicts[i])),
            };
            if pass {
                feed.sent += 1;
                self.actions.push_back(Action::Forward {
                    conn,
                    frame: frame.clone(),
                });
            }
        }
    }

    // ------------------------------------------------------------------ feed

    fn feed_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let Some(t) = self.expect_transport(conn, payload, "subscriber") else {
            return;
        };
        let Some(Conn {
            kind: Kind::Feed(feed),
            ..
        }) = self.conns.get_mut(&conn)
        else {
            return;
        };
        match t.role {
            TransportRole::IamAlive => {
                feed.iamalive_unanswered = feed.iamalive_unanswered.saturating_sub(1);
            }
            TransportRole::Ack => {
                feed.receipts += 1;
            }
            TransportRole::Nak => {
                feed.receipts += 1;
                feed.naks += 1;
                self.events.push_back(Event::SubscriberNak {
                    conn,
                    origin: t.origin.to_string(),
                    reason: t.result.as_deref().map(str::to_owned),
                });
                if self.config.policy.subscriber_nak == SubscriberNak::Disconnect {
                    self.close(conn, CloseReason::SubscriberNak, now);
                }
            }
            TransportRole::Authenticate => {
                let exprs: Vec<&str> = t.xpath_filters().collect();
                self.set_filters(conn, &exprs);
            }
        }
    }

    /// Parses a frame that must be a Transport message; anything else from `who` is logged as
    /// a violation and ignored.
    fn expect_transport<'p>(
        &mut self,
        conn: ConnId,
        payload: &'p [u8],
        who: &str,
    ) -> Option<message::Transport<'p>> {
        // A node never reads `Response` or `TimeStamp`: `parse_routing` skips extracting them.
        let detail = match message::parse_routing(payload, &self.config.limits.parse) {
            Ok(Message::Transport(t)) => return Some(t),
            Ok(Message::VoEvent(ev)) => format!(
                "{who} sent an event ({}) where only Transport messages belong; ignored",
                ev.ivorn
            ),
            Err(e) => format!("unparsable message from {who}, ignored: {e}"),
        };
        self.events
            .push_back(Event::ProtocolViolation { conn, detail });
        None
    }

    fn set_filters(&mut self, conn: ConnId, exprs: &[&str]) {
        let limits = self.config.limits;
        let ft = &mut self.filters;
        let mut ids = Vec::new();
        let mut refused = Vec::new();
        for (i, expr) in exprs.iter().enumerate() {
            if i >= limits.filters_per_feed_max {
                refused.push((
                    (*expr).to_owned(),
                    format!(
                        "more than {} filters sent; the rest are ignored",
                        limits.filters_per_feed_max
                    ),
                ));
                continue;
            }
            if expr.len() > limits.filter_len_max {
                refused.push((
                    truncate(expr, 80),
                    format!(
                        "filter is {} bytes, over the limit of {}",
                        expr.len(),
                        limits.filter_len_max
                    ),
                ));
                continue;
            }
            let id = match ft.by_expr.get(*expr) {
                Some(&id) => id,
                None => match ft.engine.compile(expr) {
                    Ok(id) => {
                        let key: Arc<str> = Arc::from(*expr);
                        ft.by_expr.insert(key.clone(), id);
                        ft.by_id.insert(id, (key, 0));
                        id
                    }
                    Err(e) => {
                        refused.push(((*expr).to_owned(), e.reason));
                        continue;
                    }
                },
            };
            if ids.contains(&id) {
                continue;
            }
            if let Some(entry) = ft.by_id.get_mut(&id) {
                entry.1 += 1;
            }
            ids.push(id);
        }
        let accepted = ids.len();
        let new = if !ids.is_empty() {
            FeedFilters::Some(ids)
        } else if exprs.is_empty() {
            FeedFilters::None
        } else {
            FeedFilters::AllRefused
        };
        let old = match self.conns.get_mut(&conn) {
            Some(Conn {
                kind: Kind::Feed(feed),
                ..
            }) => std::mem::replace(&mut feed.filters, new),
            _ => new,
        };
        if !matches!(self.filters_of(conn), Some(FeedFilters::None) | None) {
            self.filters.feeds_with_filters += 1;
        }
        self.release_filters(old);
        self.events.push_back(Event::FiltersSet {
            conn,
            accepted,
            refused,
        });
    }

    fn filters_of(&self, conn: ConnId) -> Option<&FeedFilters> {
        match self.conns.get(&conn) {
            Some(Conn {
                kind: Kind::Feed(feed),
                ..
            }) => Some(&feed.filters),
            _ => None,
        }
    }

    fn release_filters(&mut self, filters: FeedFilters) {
        let ft = &mut self.filters;
        match filters {
            FeedFilters::None => return,
            FeedFilters::AllRefused => {}
            FeedFilters::Some(ids) => {
                for id in ids {
                    let gone = match ft.by_id.get_mut(&id) {
                        Some(entry) => {
                            entry.1 = entry.1.saturating_sub(1);
                            entry.1 == 0
                        }
                        None => false,
                    };
                    if gone {
                        if let Some((expr, _)) = ft.by_id.remove(&id) {
                            ft.by_expr.remove(&expr);
                        }
                        ft.engine.release(id);
                    }
                }
            }
        }
        ft.feeds_with_filters = ft.feeds_with_filters.saturating_sub(1);
    }

    fn iamalive_tick(&mut self, now: Instant) {
        let period = self.config.timing.iamalive_period;
        self.timers.set(TimerKey::IamaliveTick, now + period);
        let Some(local_ivo) = self.local_ivo.clone() else {
            return;
        };
        let limits = self.config.limits;
        let mut frame: Option<Bytes> = None;
        let mut drop: Vec<(ConnId, CloseReason)> = Vec::new();
        for (&conn, c) in self.conns.iter_mut() {
            let Kind::Feed(feed) = &mut c.kind else {
                continue;
            };
            if feed.iamalive_unanswered >= limits.iamalive_missed_max {
                drop.push((conn, CloseReason::IamaliveUnanswered));
            } else if feed.overdue() >= u64::from(limits.outstanding_acks_max) {
                let overdue = u32::try_from(feed.overdue()).unwrap_or(u32::MAX);
                drop.push((conn, CloseReason::OutstandingAcks(overdue)));
            } else {
                feed.iamalive_unanswered += 1;
                feed.sent_at_tick = feed.sent;
                let frame = frame
                    .get_or_insert_with(|| {
                        let ts = format_utc(self.clock.unix_secs_at(now));
                        message::build_iamalive(&local_ivo, ts.as_str())
                    })
                    .clone();
                self.actions.push_back(Action::IamAlive { conn, frame });
            }
        }
        for (conn, reason) in drop {
            self.close(conn, reason, now);
        }
    }

    fn test_event(&mut self, now: Instant) {
        let Some(interval) = self.config.timing.test_event_interval else {
            return;
        };
        self.timers.set(TimerKey::TestEvent, now + interval);
        let Some(local_ivo) = self.local_ivo.clone() else {
            return;
        };
        if self.feeds() == 0 {
            return;
        }
        let ts = self.stamp(now);
        let frame = message::build_test_event(&local_ivo, ts.as_str(), &self.config.product);
        let payload = frame.slice(frame::PREFIX_LEN..);
        // Test events skip the handlers and the store (Comet) and go through filters. They do
        // enter the seen-index: in a cyclic mesh our own test event comes back through a
        // downstream broker, and must not be relayed (and handled) a second time.
        match message::parse(&payload, &self.config.limits.parse) {
            Ok(Message::VoEvent(ev)) => {
                let key = EventKey::of_element(&payload[ev.element.clone()]);
                let unix = self.clock.unix_secs_at(now);
                if let Seen::New { evicted: Some(old) } = self.seen.check_and_insert(key, unix) {
                    self.actions.push_back(Action::Forget(old));
                }
                self.fan_out(&frame, &payload, ev.element.clone());
            }
            Ok(Message::Transport(_)) | Err(_) => {
                debug_assert!(false, "test event must parse as a VOEvent");
            }
        }
    }

    fn prune(&mut self, now: Instant) {
        self.timers
            .set(TimerKey::Prune, now + self.config.timing.prune_interval);
        let unix = self.clock.unix_secs_at(now);
        let cutoff = unix.saturating_sub(self.config.timing.seen_retention.as_secs());
        let removed = self.seen.expire(cutoff);
        self.actions.push_back(Action::Expire {
            before_unix_secs: cutoff,
        });
        if removed > 0 {
            self.events.push_back(Event::Pruned { removed });
        }
    }

    // ---------------------------------------------------------- subscription

    fn dial(&mut self, upstream: usize, now: Instant) {
        if self.shut_down {
            return;
        }
        let Some(up) = self.upstreams.get_mut(upstream) else {
            return;
        };
        if up.conn.is_some() {
            return;
        }
        let addr = up.endpoints[up.next_endpoint % up.endpoints.len()].clone();
        up.next_endpoint = (up.next_endpoint + 1) % up.endpoints.len();
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        up.conn = Some(conn);
        self.insert_conn(
            conn,
            Kind::Subscription(Subscription {
                upstream,
                connected_at: None,
            }),
        );
        // Bound the connect attempt by the silence timeout.
        self.timers.set(
            TimerKey::Conn(conn),
            now + self.config.timing.subscriber_silence,
        );
        self.actions.push_back(Action::Connect { conn, addr });
    }

    fn schedule_reconnect(&mut self, upstream: usize, lived: Duration, now: Instant) {
        let Some(up) = self.upstreams.get_mut(upstream) else {
            return;
        };
        up.conn = None;
        if self.shut_down {
            return;
        }
        up.backoff.connection_ended(lived);
        let delay = up.backoff.next_delay();
        let endpoint = Arc::from(up.endpoints[up.next_endpoint % up.endpoints.len()].to_string());
        self.timers.set(TimerKey::Reconnect(upstream), now + delay);
        self.events.push_back(Event::Reconnecting {
            upstream,
            endpoint,
            delay,
        });
    }

    fn subscription_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let msg = match message::parse(payload, &self.config.limits.parse) {
            Ok(m) => m,
            Err(e) => {
                self.events.push_back(Event::ProtocolViolation {
                    conn,
                    detail: format!("unparsable message from upstream, ignored: {e}"),
                });
                return;
            }
        };
        // Any valid frame proves the upstream alive.
        self.timers.set(
            TimerKey::Conn(conn),
            now + self.config.timing.subscriber_silence,
        );
        let local = self.local_ivo.clone();
        match msg {
            Message::Transport(t) => match t.role {
                TransportRole::IamAlive => {
                    let ts = self.stamp(now);
                    let frame =
                        message::build_iamalive_reply(&t.origin, local.as_deref(), ts.as_str());
                    self.actions.push_back(Action::IamAlive { conn, frame });
                }
                TransportRole::Authenticate => {
                    let ts = self.stamp(now);
                    let filters: Vec<&str> =
                        self.config.filters.iter().map(String::as_str).collect();
                    let frame = message::build_authenticate_reply(
                        &t.origin,
                        local.as_deref(),
                        ts.as_str(),
                        &filters,
                    );
                    self.actions.push_back(Action::Authenticate { conn, frame });
                }
                TransportRole::Ack | TransportRole::Nak => {
                    self.events.push_back(Event::ProtocolViolation {
                        conn,
                        detail: format!(
                            "upstream sent an unsolicited {} receipt, ignored",
                            t.role.as_str()
                        ),
                    });
                }
            },
            Message::VoEvent(ev) => {
                // Always ack, valid or not, new or not, so the upstream keeps us (Comet); the
                // ack of a new event or a duplicate waits for the store like an author's.
                if let Err(e) = ivoid::check_event_ivorn(&ev.ivorn) {
                    self.ack(conn, &ev.ivorn, now);
                    self.events.push_back(Event::ProtocolViolation {
                        conn,
                        detail: format!("event with invalid IVORN {} dropped: {e}", ev.ivorn),
                    });
                    return;
                }
                let key = EventKey::of_element(&payload[ev.element.clone()]);
                let unix = self.clock.unix_secs_at(now);
                match self.seen.check_and_insert(key, unix) {
                    Seen::Duplicate => {
                        let mark = self.actions.len();
                        self.ack(conn, &ev.ivorn, now);
                        self.actions.push_back(Action::DropDuplicate { conn, key });
                        self.hold(mark);
                        self.events.push_back(Event::Duplicate { conn, key });
                    }
                    Seen::New { evicted } => {
                        self.persist(key, unix, evicted);
                        let mark = self.actions.len();
                        self.ack(conn, &ev.ivorn, now);
                        self.hold(mark);
                        let ivorn: Arc<str> = Arc::from(ev.ivorn.as_ref());
                        self.accept_event(
                            conn,
                            Source::Upstream(conn),
                            ivorn,
                            key,
                            payload,
                            &ev,
                            now,
                        );
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ submission

    fn submission_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let Some(t) = self.expect_transport(conn, payload, "broker") else {
            return;
        };
        let Some(Conn {
            kind: Kind::Submission(sub),
            ..
        }) = self.conns.get(&conn)
        else {
            return;
        };
        let ours = *t.origin == *sub.ivorn;
        match t.role {
            TransportRole::Ack if ours => {
                self.events.push_back(Event::SubmissionAcked { conn });
                self.close(conn, CloseReason::Done, now);
            }
            // One connection carries one submission, so any nak on it refuses ours (a broker
            // that could not parse the event cannot quote its ivorn).
            TransportRole::Nak => {
                let reason = t.result.as_deref().map(str::to_owned);
                self.events
                    .push_back(Event::SubmissionNaked { conn, reason });
                self.close(conn, CloseReason::Done, now);
            }
            _ => {
                self.events.push_back(Event::ProtocolViolation {
                    conn,
                    detail: format!(
                        "broker sent {} with Origin {:?}, not a receipt for {}; ignored",
                        t.role.as_str(),
                        t.origin,
                        sub.ivorn
                    ),
                });
            }
        }
    }

    fn conn_deadline(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let reason = match &c.kind {
            Kind::Intake => CloseReason::IntakeDeadline,
            Kind::Subscription(_) => CloseReason::UpstreamSilent,
            Kind::Submission(_) => CloseReason::ReceiptTimeout,
            Kind::Feed(_) => return,
        };
        self.close(conn, reason, now);
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
