//! The node: every VTP role in one deterministic state machine.
//!
//! # Theory of operation
//!
//! A [`Node`] owns one machine per connection and the state they share (seen-index, filters,
//! upstream back-offs, node-wide timers). Its caller (usually the core's
//! [`Driver`](crate::driver::Driver)) feeds it inputs and performs its outputs:
//!
//! | input | when |
//! |---|---|
//! | [`Node::handle_accept`] | a listener accepted a connection (`Receive` or `Broadcast`) |
//! | [`Node::handle_accept_tls`] | a TLS listener accepted a connection (handshake not yet run) |
//! | [`Node::handle_secured`] | that connection's TLS handshake completed, with the client's certificate identity |
//! | [`Node::handle_connected`] | an outgoing connection asked for by [`Action::Connect`] is up |
//! | [`Node::handle_input`] | bytes were read from a connection (any chunking) |
//! | [`Node::handle_closed`] | a connection ended (peer close, IO error, connect failure, outbox overflow) |
//! | [`Node::handle_timeout`] | the deadline from [`Node::poll_timeout`] passed |
//! | [`Node::submit`] | command: submit one event as an author |
//! | [`Node::handle_persisted`] | the store made more [`Action::Persist`] records durable |
//! | [`Node::handle_store_status`] | the store's commits started failing, or work again |
//! | [`Node::restore_seen`] | start-up: seen-index records loaded from the store |
//! | [`Node::reconfigure`] | command: run with a new configuration (a reload), keeping every connection |
//! | [`Node::shutdown`] | command: close everything |
//!
//! After **every** input, drain [`Node::poll_action`] until `None` (perform the actions in
//! order), then [`Node::poll_event`], then read [`Node::poll_timeout`]. `now` must never go
//! backwards.
//!
//! The per-connection machines (docs/protocol.md §3):
//!
//! | machine | states and inputs | on violation |
//! |---|---|---|
//! | Intake (author → us) | *waiting* (first frame is the submission; 20 s deadline from accept) → *answered* (ack or nak sent, close queued) | bad XML, Transport, bad IVOID, wrong version, schema violation: nak with reason, close; oversize prefix: nak, close; deadline: close without reply |
//! | Feed (us → subscriber) | *open*: authenticate sent on accept; iamalive at each node tick; events forwarded through filters; acks, naks, iamalive replies and authenticate replies (filters) accepted at any time | bad XML or a VOEvent from the subscriber: logged and ignored; unanswered iamalive or too many outstanding acks at a tick: close |
//! | Subscription (us → upstream) | *connecting* → *up* (answer authenticate with filters and iamalive; ack every event; silence timer) → *down* (reconnect after back-off) | bad XML: logged, ignored, silence timer not reset |
//! | Submission (us as author) | *connecting* → *sent* → *done* on the matching ack or nak | timeout or close before the receipt: failed |
//!
//! Each violation is reported as a [`Violation`]: in [`Event::Rejected`] for a naked
//! submission, in [`Event::ProtocolViolation`] for anything logged (ignored or closed on), in
//! [`CloseReason::FramingError`] for a stream that cannot continue. Its `Display` is the nak
//! reason or the log text.
//!
//! A connection kept open after a violation (feed, subscription, submission) may commit
//! [`Limits::violations_max`](crate::config::Limits::violations_max) of them per
//! [`Limits::violations_window`](crate::config::Limits::violations_window); one more closes it
//! with [`CloseReason::TooManyViolations`]. Only the first
//! [`Limits::violations_logged_max`](crate::config::Limits::violations_logged_max) of a window
//! are reported, then one [`Event::ViolationsSuppressed`], so a flood of garbage costs a bounded
//! number of log lines.
//!
//! With [`Durability::BeforeReply`](crate::config::Durability::BeforeReply) (the default) the
//! receipt, forwards and delivery of a new event are *held* until the caller reports its
//! [`Action::Persist`] durable with [`Node::handle_persisted`]; the Persist actions are numbered
//! 1, 2, 3... in the order they are emitted, and held output is released in that order. An
//! intake whose receipt is held stays open (its deadline still runs; further input is ignored;
//! a peer's half-close does not cancel the receipt). See the crate docs, "Durability".
//!
//! Implementation note: one node-wide iamalive tick drives every feed, as in Comet: it keeps
//! `poll_timeout` O(1) in the number of subscribers, and each feed still hears from us at least
//! once per period (VTP 2.0 §5 asks for at most 90 s of silence).
//!
//! # Where each part lives
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`Node`]: construction, inputs, outputs, queries, connections, frame dispatch |
//! | `admission.rs` | who may connect: connection and per-address limits, whitelists, refusal reports |
//! | `intake.rs` | submissions from authors: checks, ack or nak, the end of the exchange |
//! | `feed.rs` | subscribers: fan-out, the iamalive tick, test events, their acks and naks |
//! | `filters.rs` | the filter table shared by every feed, and each feed's filters |
//! | `subscription.rs` | upstreams: dial, reconnect with back-off, ack and relay their events |
//! | `submission.rs` | us as author: [`Node::submit`] and the broker's receipt |
//! | `durability.rs` | seen-index records: persist numbering, hold and release, expiry |
//! | `reconfigure.rs` | [`Node::reconfigure`]: a new configuration at run time, what changes live |

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::filter::FilterEngine;
use crate::frame::{self, FrameDecoder};
use crate::identity::{Identity, IdentityRule};
use crate::message::{self, Message};
use crate::output::{
    Action, CloseReason, ConnId, ConnRole, Event, ListenerRole, Peer, RefusalCounts, Remote,
};
use crate::seen::{EventKey, SeenIndex, SeenRecord, SeenSource};
use crate::time::{WallClock, format_utc};
use crate::timer::Timers;
use crate::violation::Violation;

pub use errors::{ConfigError, SubmitError};
pub use external::ExternalError;
pub use intake::NAK_STORE_UNAVAILABLE;
pub use reconfigure::{Fixed, Reconfigured};

use admission::RefusalLog;
use durability::Held;
use feed::Feed;
use filters::FilterTable;
use submission::Submission;
use subscription::{Subscription, UpstreamState};

mod admission;
mod durability;
mod errors;
mod external;
mod feed;
mod filters;
mod intake;
mod reconfigure;
mod signatures;
mod submission;
mod subscription;

/// Node-wide and per-connection deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKey {
    IamaliveTick,
    TestEvent,
    Prune,
    Reconnect(usize),
    Conn(ConnId),
    /// The end of a refusal window with refusals counted but not reported.
    RefusalReport,
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
    /// Open intakes and feeds per listener role and peer network ([`Peer::network`]);
    /// Unix-socket peers are not counted. An entry is removed when its count reaches zero, so
    /// the map never holds more entries than open connections.
    per_address: HashMap<(ListenerRole, IpAddr), usize>,
    /// Accepts refused since start, by cause.
    refusals: RefusalCounts,
    /// Which refusals of the current window are reported.
    refusal_log: RefusalLog,
    /// TLS connections accepted whose handshake has not completed (counted in `served` and
    /// `feeds` too).
    handshakes: usize,
    upstreams: Vec<UpstreamState>,
    seen: SeenIndex,
    /// The seen-index source of each open intake: its author's network.
    authors: HashMap<ConnId, SeenSource>,
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
    /// External sources' commits decided in this call, one per source and lane, queued as
    /// [`Action::Commit`] when it returns.
    commits: Vec<(ConnId, u32, u64)>,
    /// Intake connections whose receipt is held.
    replying: BTreeSet<ConnId>,
    /// False while the store reports failing commits ([`Node::handle_store_status`]).
    store_healthy: bool,
    /// Verifies signed events ([`Node::set_verifier`]).
    verifier: Option<Arc<dyn crate::signature::Verifier>>,
    /// Most author submissions whose signature the host may be verifying at once
    /// ([`Node::set_verify_offload`]); 0: every signature is verified in place.
    verify_offload: usize,
    /// Author submissions waiting for the verdict on their signature, by job number.
    verifying: HashMap<u64, signatures::Parked>,
    /// The number of the next [`Action::Verify`].
    next_verify: u64,
    /// Signs what the node originates ([`Node::set_signer`]).
    signer: Option<Box<dyn crate::signature::EventSigner>>,
}

#[derive(Debug)]
struct Conn {
    decoder: FrameDecoder,
    kind: Kind,
    /// Who: the accepted peer, or the endpoint dialled (named in the events about it).
    remote: Remote,
    /// Since when it is up ([`Event::PeerUp`]); `None` while dialling or handshaking.
    up_since: Option<Instant>,
    /// Protocol violations in the current window.
    violations: Violations,
}

/// A connection's protocol violations in its current window
/// ([`Limits::violations_window`](crate::config::Limits::violations_window)).
#[derive(Debug, Default)]
struct Violations {
    /// When the window began: at the first violation after the previous one ended.
    since: Option<Instant>,
    /// Violations counted since then.
    count: u32,
}

#[derive(Debug)]
enum Kind {
    /// Accepted by a TLS listener, handshake in progress: silent until secured.
    Handshake(ListenerRole),
    Intake,
    Feed(Feed),
    Subscription(Subscription),
    Submission(Submission),
    /// An external source (a Kafka consumer): its records' commit state.
    External(external::External),
}

impl Kind {
    fn role(&self) -> ConnRole {
        match self {
            Self::Handshake(ListenerRole::Receive) | Self::Intake => ConnRole::Intake,
            Self::Handshake(ListenerRole::Broadcast) => ConnRole::Feed,
            Self::Feed(_) => ConnRole::Feed,
            Self::Subscription(_) => ConnRole::Subscription,
            Self::Submission(_) => ConnRole::Submission,
            Self::External(_) => ConnRole::External,
        }
    }
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
    /// [`ConfigError`] when the local IVOID is invalid, the iamalive period is zero or over
    /// 90 s, an upstream has no endpoint, or one of the node's own filters is over the length
    /// limit.
    pub fn new(
        config: Config,
        engine: Box<dyn FilterEngine + Send>,
        seed: u64,
        now: Instant,
        unix_now: Duration,
    ) -> Result<Self, ConfigError> {
        reconfigure::validate(&config)?;
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for (i, up) in config.upstreams.iter().enumerate() {
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
            seen: SeenIndex::new(
                config.limits.seen_entries_max,
                config.limits.seen_sources_max,
            ),
            authors: HashMap::new(),
            clock: WallClock::new(now, unix_now),
            last_now: now,
            next_conn: 1,
            conns: BTreeMap::new(),
            served: 0,
            feeds: 0,
            per_address: HashMap::new(),
            refusals: RefusalCounts::default(),
            refusal_log: RefusalLog::default(),
            handshakes: 0,
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
            commits: Vec::new(),
            replying: BTreeSet::new(),
            store_healthy: true,
            verifier: None,
            verify_offload: 0,
            verifying: HashMap::new(),
            next_verify: 0,
            signer: None,
            config,
        })
    }

    // ---------------------------------------------------------------- inputs

    /// A listener accepted a plain (not TLS) connection from `peer`. Returns the new
    /// connection's handle, or `None` if it was refused (no local IVOID, connection limit,
    /// whitelist, per-address limit, a role that requires a certificate identity); a refused
    /// connection must be closed by the caller at once, without sending anything, so that the
    /// listen queue keeps draining.
    ///
    /// Every refusal is counted ([`Node::refusals`]); the first
    /// [`Limits::refusals_logged_max`](crate::config::Limits::refusals_logged_max) of each
    /// [`Limits::refusals_window`](crate::config::Limits::refusals_window) are reported as
    /// [`Event::Refused`], the rest as one [`Event::RefusalsSuppressed`] when the window ends.
    #[must_use]
    pub fn handle_accept(
        &mut self,
        listener: ListenerRole,
        peer: Peer,
        now: Instant,
    ) -> Option<ConnId> {
        self.accept(listener, peer, false, now)
    }

    /// A TLS listener accepted a connection from `peer`; its handshake has not run yet. As
    /// [`Node::handle_accept`], and also refused when
    /// [`Limits::handshakes_max`](crate::config::Limits::handshakes_max) handshakes are in
    /// progress. The connection stays silent (the node sends nothing and reads nothing on it)
    /// until the caller reports the completed handshake with [`Node::handle_secured`]; if that
    /// does not happen within
    /// [`Timing::handshake_deadline`](crate::config::Timing::handshake_deadline) the node closes
    /// it with [`CloseReason::TlsHandshakeTimeout`]. A failed handshake is reported with
    /// [`Node::handle_closed`] and [`CloseReason::Tls`].
    #[must_use]
    pub fn handle_accept_tls(
        &mut self,
        listener: ListenerRole,
        peer: Peer,
        now: Instant,
    ) -> Option<ConnId> {
        self.accept(listener, peer, true, now)
    }

    /// The TLS handshake of `conn` (accepted with [`Node::handle_accept_tls`]) completed;
    /// `identity` is the verified client certificate's, if the peer presented one. The node
    /// checks it against [`Config::author_identities`] or [`Config::subscriber_identities`]:
    /// refused, the connection is closed with [`CloseReason::NotAuthorized`] before any VTP
    /// exchange; allowed, it starts as a plain connection would at accept (a subscriber gets its
    /// authenticate message; an author's deadline starts). Reported as [`Event::Secured`].
    /// Unknown or already secured connections are ignored.
    pub fn handle_secured(&mut self, conn: ConnId, identity: Option<Identity>, now: Instant) {
        self.advance(now);
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Kind::Handshake(listener) = c.kind else {
            return;
        };
        let peer = c.remote.peer().unwrap_or(Peer::Local);
        self.timers.cancel(TimerKey::Conn(conn));
        let (rules, flag) = self.identity_rules(listener);
        if !rules.is_empty() {
            let refusal = match &identity {
                None => Some(format!(
                    "no client certificate; {flag} requires one (configure clientCA= on the listener)"
                )),
                Some(id) if !id.allowed_by(rules) => Some(format!(
                    "certificate identity {id} is not allowed by {flag}"
                )),
                Some(_) => None,
            };
            if let Some(reason) = refusal {
                // Still a handshake: removing it counts it out.
                self.close(conn, CloseReason::NotAuthorized(reason), now);
                return;
            }
        }
        self.handshakes -= 1;
        self.events.push_back(Event::Secured {
            conn,
            peer,
            identity,
        });
        let Some(local_ivo) = self.local_ivo.clone() else {
            return;
        };
        let kind = self.start(conn, listener, peer, &local_ivo, now);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.kind = kind;
            self.peer_up(conn, now);
        }
    }

    fn identity_rules(&self, listener: ListenerRole) -> (&[IdentityRule], &'static str) {
        match listener {
            ListenerRole::Receive => (&self.config.author_identities, "--author-identity"),
            ListenerRole::Broadcast => {
                (&self.config.subscriber_identities, "--subscriber-identity")
            }
        }
    }

    fn accept(
        &mut self,
        listener: ListenerRole,
        peer: Peer,
        tls: bool,
        now: Instant,
    ) -> Option<ConnId> {
        self.advance(now);
        let local_ivo = match self.admit(listener, peer, tls) {
            Ok(local_ivo) => local_ivo,
            Err(refusal) => {
                self.refuse(listener, peer, refusal, now);
                return None;
            }
        };
        self.hold_address(listener, peer);
        let conn = self.mint();
        if peer == Peer::Local {
            self.events
                .push_back(Event::UnixPeerNotWhitelisted { conn });
        }
        let kind = if tls {
            self.handshakes += 1;
            self.timers.set(
                TimerKey::Conn(conn),
                now + self.config.timing.handshake_deadline,
            );
            Kind::Handshake(listener)
        } else {
            self.start(conn, listener, peer, &local_ivo, now)
        };
        self.insert_conn(conn, kind, Remote::Accepted(peer), now);
        Some(conn)
    }

    /// The machine an accepted connection starts with, once it may speak VTP: an author's
    /// deadline, or a subscriber's authenticate message.
    fn start(
        &mut self,
        conn: ConnId,
        listener: ListenerRole,
        peer: Peer,
        local_ivo: &str,
        now: Instant,
    ) -> Kind {
        match listener {
            ListenerRole::Receive => {
                self.timers.set(
                    TimerKey::Conn(conn),
                    now + self.config.timing.intake_deadline,
                );
                self.authors.insert(conn, SeenSource::author(peer));
                Kind::Intake
            }
            ListenerRole::Broadcast => {
                let ts = self.stamp(now);
                let frame = message::build_authenticate(local_ivo, ts.as_str());
                self.actions.push_back(Action::Authenticate { conn, frame });
                Kind::Feed(Feed::default())
            }
        }
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
            Kind::Handshake(_) | Kind::Intake | Kind::Feed(_) | Kind::External(_) => return,
        }
        self.peer_up(conn, now);
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
            let detail = Violation::Frame(e);
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
    /// caller gave up on it (e.g. [`CloseReason::OutboxFull`]). Unknown handles are ignored, so
    /// reporting a close the node itself asked for is harmless.
    ///
    /// An intake whose receipt is held ([`Node::reply_pending`]) survives
    /// [`CloseReason::PeerClosed`]: the author may only have half-closed its side and still
    /// wait for the receipt, which is sent once the record is durable (if the socket is really
    /// gone, writing it fails and the caller drops it).
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
                TimerKey::RefusalReport => self.report_suppressed_refusals(),
            }
        }
    }

    /// The first `count` [`Action::Persist`] actions (numbered from 1 in emission order) are
    /// durable in the store: output held for them is released, in order, to
    /// [`Node::poll_action`]. A count not above the last one reported changes nothing. Output
    /// for connections closed meanwhile is dropped; deliveries are always released.
    ///
    /// With [`Durability::Async`](crate::config::Durability::Async) nothing is held and this only
    /// records the count.
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
                Held::Commit { conn, at } => self.external_done(conn, at),
            }
        }
        self.flush_commits();
    }

    /// The store's commits started failing (`healthy` false: a full or failing disk) or
    /// succeed again (true). While unhealthy, with
    /// [`Durability::BeforeReply`](crate::config::Durability::BeforeReply), an author's new
    /// event (one whose record would have to be persisted) is naked at once with
    /// [`NAK_STORE_UNAVAILABLE`] and not recorded, forwarded or delivered; duplicates are
    /// answered as usual, and output already held stays held until its record is durable or
    /// its connection's deadline passes. With `Async` nothing changes. Healthy at construction.
    pub fn handle_store_status(&mut self, healthy: bool, now: Instant) {
        self.advance(now);
        self.store_healthy = healthy;
    }

    // -------------------------------------------------------------- commands

    /// Loads seen-index records from the durable store (at start-up, before serving). Records
    /// older than the retention are skipped. Returns the number loaded.
    pub fn restore_seen(
        &mut self,
        records: impl IntoIterator<Item = SeenRecord>,
        now: Instant,
    ) -> usize {
        self.advance(now);
        let unix = self.clock.unix_secs_at(now);
        let loaded = self
            .seen
            .restore(records, unix, self.config.timing.seen_retention.as_secs());
        self.note_seen_level();
        loaded
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
        self.report_suppressed_refusals();
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

    /// Open connections accepted on `listener` from `peer`'s network ([`Peer::network`]): what
    /// the per-address limits count. Always 0 for a Unix-socket peer.
    pub fn connections_from(&self, listener: ListenerRole, peer: Peer) -> usize {
        peer.network()
            .and_then(|net| self.per_address.get(&(listener, net)))
            .copied()
            .unwrap_or(0)
    }

    /// Accepts refused since start, by cause (reported or not).
    pub fn refusals(&self) -> RefusalCounts {
        self.refusals
    }

    /// What a connection is for, if it is open.
    pub fn role(&self, conn: ConnId) -> Option<ConnRole> {
        self.conns.get(&conn).map(|c| c.kind.role())
    }

    /// Entries in the seen-index.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Entries in the seen-index held for an author at `peer` (its network: see
    /// [`crate::seen`]).
    pub fn seen_len_of_author(&self, peer: crate::output::Peer) -> usize {
        self.seen.source_len(SeenSource::author(peer))
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

    /// True while the receipt for the intake `conn` is held until a record is durable: a caller
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

    fn insert_conn(&mut self, conn: ConnId, kind: Kind, remote: Remote, now: Instant) {
        let role = kind.role();
        // A handshaking connection counts against its role's limit, and is up once secured.
        let up = !matches!(kind, Kind::Handshake(_));
        self.conns.insert(
            conn,
            Conn {
                decoder: FrameDecoder::new(self.config.limits.frame_len_max),
                kind,
                remote,
                up_since: None,
                violations: Violations::default(),
            },
        );
        match role {
            ConnRole::Intake => self.served += 1,
            ConnRole::Feed => self.feeds += 1,
            ConnRole::Subscription | ConnRole::Submission | ConnRole::External => return,
        }
        if up {
            self.peer_up(conn, now);
        }
    }

    /// `conn` now speaks VTP: reported as [`Event::PeerUp`], and timed from now.
    fn peer_up(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.up_since = Some(now);
        let upstream = match &c.kind {
            Kind::Subscription(s) => Some(s.upstream),
            _ => None,
        };
        self.events.push_back(Event::PeerUp {
            conn,
            role: c.kind.role(),
            remote: c.remote.clone(),
            upstream,
        });
    }

    /// Who is at the far end of `conn`, if it is open.
    fn remote(&self, conn: ConnId) -> Option<Remote> {
        self.conns.get(&conn).map(|c| c.remote.clone())
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
        self.authors.remove(&conn);
        self.timers.cancel(TimerKey::Conn(conn));
        let role = c.kind.role();
        let peer = c.remote.peer();
        let (mut events_sent, mut events_received) = (0, 0);
        let mut reconnect = None;
        match c.kind {
            Kind::Handshake(listener) => {
                self.handshakes -= 1;
                match listener {
                    ListenerRole::Receive => self.served -= 1,
                    ListenerRole::Broadcast => self.feeds -= 1,
                }
                self.release_address(listener, peer);
            }
            Kind::Intake => {
                self.served -= 1;
                self.release_address(ListenerRole::Receive, peer);
            }
            Kind::Feed(feed) => {
                self.feeds -= 1;
                events_sent = feed.sent();
                self.release_address(ListenerRole::Broadcast, peer);
                self.release_filters(feed.filters);
            }
            Kind::Subscription(s) => {
                events_received = s.received;
                let lived = s.connected_at.map_or(Duration::ZERO, |t| now - t);
                let previous = match &c.remote {
                    Remote::Dialled(endpoint) => endpoint.clone(),
                    Remote::Accepted(peer) => Arc::from(peer.to_string()),
                    Remote::External(name) => name.clone(),
                };
                reconnect = Some((s.upstream, lived, previous));
            }
            Kind::External(x) => events_received = x.received,
            Kind::Submission(_) => {
                if reason != CloseReason::Done {
                    self.events.push_back(Event::SubmissionFailed {
                        conn,
                        reason: reason.clone(),
                    });
                }
            }
        }
        self.events.push_back(Event::PeerDown {
            conn,
            role,
            remote: c.remote,
            reason: reason.clone(),
            connected_for: c.up_since.map(|t| now - t),
            events_sent,
            events_received,
        });
        // After the PeerDown: the retry names the reason the connection ended.
        if let Some((upstream, lived, previous)) = reconnect {
            self.schedule_reconnect(upstream, lived, reason, previous, now);
        }
    }

    fn handle_frame(&mut self, conn: ConnId, payload: &[u8], now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match c.kind {
            // The caller passes no plaintext before the handshake completes; if it did, nothing
            // is read before the peer's identity is known.
            Kind::Handshake(_) => {}
            // A second frame after the submission, while its receipt waits: ignored.
            Kind::Intake if self.replying.contains(&conn) => {}
            Kind::Intake => self.intake_frame(conn, payload, now),
            Kind::Feed(_) => self.feed_frame(conn, payload, now),
            Kind::Subscription(_) => self.subscription_frame(conn, payload, now),
            Kind::Submission(_) => self.submission_frame(conn, payload, now),
            // Its records come through `handle_external`, never as bytes.
            Kind::External(_) => {}
        }
    }

    /// Parses a frame that must be a Transport message; anything else arriving `on` this
    /// connection is logged as a violation and ignored.
    fn expect_transport<'p>(
        &mut self,
        conn: ConnId,
        payload: &'p [u8],
        on: ConnRole,
        now: Instant,
    ) -> Option<message::Transport<'p>> {
        // A node never reads `Response` or `TimeStamp`: `parse_routing` skips extracting them.
        let detail = match message::parse_routing(payload, &self.config.limits.parse) {
            Ok(Message::Transport(t)) => return Some(t),
            Ok(Message::VoEvent(ev)) => Violation::UnexpectedEvent {
                on,
                ivorn: ev.ivorn.into_owned(),
            },
            Err(error) => Violation::Unparsable { on, error },
        };
        self.violation(conn, detail, now);
        None
    }

    /// Counts a violation `conn` committed and keeps its connection for: reported as
    /// [`Event::ProtocolViolation`] while the window has reported fewer than
    /// `violations_logged_max`, then once as [`Event::ViolationsSuppressed`]; past
    /// `violations_max` in the window the connection is closed with
    /// [`CloseReason::TooManyViolations`]. The caller must not touch `conn` afterwards without
    /// looking it up again.
    fn violation(&mut self, conn: ConnId, detail: Violation, now: Instant) {
        self.report_fault(conn, detail, true, now);
    }

    /// Reports `detail` on `conn` under the per-window log limit; closes the connection past
    /// `violations_max` only when `counts` (a refusal caused by this node's own state, such as
    /// a full seen-index, is reported but never held against the peer).
    pub(super) fn report_fault(
        &mut self,
        conn: ConnId,
        detail: Violation,
        counts: bool,
        now: Instant,
    ) {
        let limits = &self.config.limits;
        let window = limits.violations_window;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let v = &mut c.violations;
        if v.since.is_none_or(|since| now >= since + window) {
            v.since = Some(now);
            v.count = 0;
        }
        v.count = v.count.saturating_add(1);
        let count = v.count;
        if count <= limits.violations_logged_max {
            self.events
                .push_back(Event::ProtocolViolation { conn, detail });
        } else if count == limits.violations_logged_max.saturating_add(1) {
            self.events.push_back(Event::ViolationsSuppressed {
                conn,
                reported: limits.violations_logged_max,
                window,
            });
        }
        if counts && count > self.config.limits.violations_max {
            self.close(conn, CloseReason::TooManyViolations { count, window }, now);
        }
    }

    fn conn_deadline(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let reason = match &c.kind {
            Kind::Handshake(_) => CloseReason::TlsHandshakeTimeout,
            Kind::Intake => CloseReason::IntakeDeadline,
            Kind::Subscription(_) => CloseReason::UpstreamSilent,
            Kind::Submission(_) => CloseReason::ReceiptTimeout,
            Kind::Feed(_) | Kind::External(_) => return,
        };
        self.close(conn, reason, now);
    }
}

#[cfg(test)]
mod tests;
