//! `node_input`: a broker [`Node`] driven by a small program, checked against a runtime's model.
//!
//! Input format: byte 0 is the configuration ([`flags`]); then operations, each an opcode byte
//! (mod [`OPCODES`]) and its operands (see [`Op::decode`]; missing operand bytes read as 0).
//! A "connection selector" byte picks cyclically among the open connections that fit the
//! operation (values below 0xF0: never a pending dial for reads, only pending dials for connect
//! outcomes), or a stale handle: a closed connection, if `known[sel % known.len()]` is one
//! (0xF0 and above). At most [`OPS_MAX`] operations run and at most [`VIRTUAL_TIME_MAX`] of
//! virtual time passes per input.
//!
//! After every operation the harness acts like a runtime: it performs every action in order,
//! reads every event, and fires timers due at `now` until the node is quiet (a bounded number
//! of rounds: a deadline that re-arms itself in the past is a spin). Checked all along:
//!
//! - no panic;
//! - every write and close targets a connection the runtime has open, with a role allowed to
//!   receive it (feeds get the authenticate greeting first; only intakes get naks; a submission
//!   frame goes out once, after the connect); nothing is closed twice;
//! - **at most one receipt per intake**, and exactly one (followed by the close) as soon as the
//!   intake has received a complete frame or an oversize prefix;
//! - an event is delivered at most once while its seen-index record lives, and only after that
//!   record was persisted; each delivery is a parseable VOEvent whose key matches its bytes;
//! - the node's connection and feed counts, roles and compiled filters match the model; the
//!   filter engine is never asked about a released expression and never holds two copies;
//! - `poll_timeout` is never in the past once the node is quiet;
//! - at the end, after a shutdown: no connection, no feed, no filter, no timer, no queued
//!   output, and every submission ended with exactly one outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vtp_core::config::{AcceptVersions, DuplicateReply, InvalidFilters, SubscriberNak, Upstream};
use vtp_core::endpoint::{DialAddr, PORT_SUBMIT, PORT_SUBSCRIBE};
use vtp_core::filter::{FilterEngine, NoFilterEngine};
use vtp_core::frame::{self, FrameDecoder};
use vtp_core::message::{self, Message, ParseLimits, TransportRole};
use vtp_core::testing::SubstringEngine;
use vtp_core::whitelist::Whitelist;
use vtp_core::{
    Action, CloseReason, Config, ConnId, ConnRole, Event, EventKey, ListenerRole, Node, Peer,
    SubmitError, Violation,
};

use super::Bytes;

/// This broker's IVOID.
pub(crate) const LOCAL: &str = "ivo://example.org/broker";
/// The upstream broker's IVOID, as used in canned messages.
pub(crate) const UPSTREAM: &str = "ivo://example.org/upstream";
/// Where submissions go (never resolved: the harness is the network).
pub(crate) const SUBMIT_HOST: &str = "broker.invalid";
/// Wall-clock anchor: 2024-05-01T12:00:00Z.
const UNIX0: u64 = 1_714_564_800;
/// Operations run per input at most, so one input cannot run for long.
const OPS_MAX: usize = 512;
/// Virtual time one input may let pass: six hours (enough for expiry under the small limits:
/// an hour of retention, pruned every 10 minutes). Every minute costs an iamalive tick and
/// every few minutes a redial, so this bounds the time one input takes.
const VIRTUAL_TIME_MAX: Duration = Duration::from_secs(6 * 3600);
/// Timer rounds at one instant before the node counts as spinning.
const QUIET_ROUNDS_MAX: usize = 64;
/// Timer firings during one `Advance` before the node counts as spinning.
const ADVANCE_STEPS_MAX: usize = 100_000;

/// Configuration flags (byte 0 of the input).
pub(crate) mod flags {
    /// Comet's duplicate reply: nak.
    pub(crate) const DUPLICATE_NAK: u8 = 1 << 0;
    /// Comet's reaction to a subscriber's nak: disconnect.
    pub(crate) const NAK_DISCONNECTS: u8 = 1 << 1;
    /// Accept VOEvent 1.1 and namespace-less events from authors.
    pub(crate) const ANY_VERSION: u8 = 1 << 2;
    /// Comet: a feed whose filters were all refused gets everything.
    pub(crate) const REFUSED_SENDS_ALL: u8 = 1 << 3;
    /// Tiny limits (3 connections, 3 seen entries, 2 filters of 16 bytes, 2 KiB frames, tight
    /// parse limits) and a one-hour retention pruned every 10 minutes.
    pub(crate) const SMALL: u8 = 1 << 4;
    /// No upstream subscription.
    pub(crate) const NO_UPSTREAM: u8 = 1 << 5;
    /// The filter engine of builds without XPath (refuses every filter).
    pub(crate) const NO_FILTERS: u8 = 1 << 6;
    /// No broker test events.
    pub(crate) const NO_TEST_EVENTS: u8 = 1 << 7;
}

/// Number of opcodes; an opcode byte is taken modulo this.
pub(crate) const OPCODES: u8 = 11;

/// One runtime operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    /// Accept on the receive (`feed == false`) or broadcast listener from a peer chosen by the
    /// byte (see [`peer`]).
    Accept { feed: bool, peer: u8 },
    /// A dial asked for by `Action::Connect` succeeded (selector among pending dials).
    Connected(u8),
    /// A dial failed (selector among pending dials).
    ConnectFailed(u8),
    /// Raw bytes read from a connection (length as a big-endian `u16`, cut at the end).
    Input(u8, &'a [u8]),
    /// A well-formed frame from [`canned`] read from a connection.
    Canned { conn: u8, kind: u8, id: u8 },
    /// Virtual time passes (see [`advance_secs`]).
    Advance(u8),
    /// The connection ended: the peer closed it, or (`outbox_full`) the runtime gave up on it.
    Close { conn: u8, outbox_full: bool },
    /// Submit raw bytes as an author (length as a big-endian `u16`).
    Submit(&'a [u8]),
    /// Submit a canned event as an author.
    SubmitCanned(u8),
    /// Shut the node down (later accepts are refused).
    Shutdown,
}

impl<'a> Op<'a> {
    /// Reads the next operation; `None` at the end of the input.
    pub(crate) fn decode(input: &mut Bytes<'a>) -> Option<Self> {
        let op = match input.next()? % OPCODES {
            0 => Op::Accept {
                feed: false,
                peer: input.byte(),
            },
            1 => Op::Accept {
                feed: true,
                peer: input.byte(),
            },
            2 => Op::Connected(input.byte()),
            3 => Op::ConnectFailed(input.byte()),
            4 => {
                let conn = input.byte();
                let len = input.u16();
                Op::Input(conn, input.take(usize::from(len)))
            }
            5 => Op::Canned {
                conn: input.byte(),
                kind: input.byte(),
                id: input.byte(),
            },
            6 => Op::Advance(input.byte()),
            7 => Op::Close {
                conn: input.byte(),
                outbox_full: input.byte() & 1 == 1,
            },
            8 => {
                let len = input.u16();
                Op::Submit(input.take(usize::from(len)))
            }
            9 => Op::SubmitCanned(input.byte()),
            _ => Op::Shutdown,
        };
        Some(op)
    }

    /// Appends this operation's bytes (the inverse of [`Op::decode`]), for writing seeds.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let len = |bytes: &[u8]| u16::try_from(bytes.len()).expect("seed operand fits a u16");
        match *self {
            Op::Accept { feed, peer } => out.extend([u8::from(feed), peer]),
            Op::Connected(sel) => out.extend([2, sel]),
            Op::ConnectFailed(sel) => out.extend([3, sel]),
            Op::Input(conn, bytes) => {
                out.extend([4, conn]);
                out.extend(len(bytes).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            Op::Canned { conn, kind, id } => out.extend([5, conn, kind, id]),
            Op::Advance(b) => out.extend([6, b]),
            Op::Close { conn, outbox_full } => out.extend([7, conn, u8::from(outbox_full)]),
            Op::Submit(bytes) => {
                out.push(8);
                out.extend(len(bytes).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            Op::SubmitCanned(id) => out.extend([9, id]),
            Op::Shutdown => out.push(10),
        }
    }
}

/// Seconds of an `Advance` byte: the top two bits pick the unit (1 s, 10 s, 1 min, 10 min),
/// the low six bits the count. The total per input is capped at [`VIRTUAL_TIME_MAX`].
pub(crate) fn advance_secs(b: u8) -> u64 {
    let count = u64::from(b & 63);
    count
        * match b >> 6 {
            0 => 1,
            1 => 10,
            2 => 60,
            _ => 600,
        }
}

/// The peer of an accept: loopback v4 and v6 (whitelisted for authors), a foreign address and
/// its IPv4-mapped form (refused for authors, allowed for subscribers), a Unix-socket peer.
pub(crate) fn peer(b: u8) -> Peer {
    match b % 5 {
        0 => Peer::Tcp(([127, 0, 0, 1], 40000).into()),
        1 => Peer::Tcp((std::net::Ipv6Addr::LOCALHOST, 40000).into()),
        2 => Peer::Tcp(([10, 1, 2, 3], 40000).into()),
        3 => Peer::Tcp(std::net::SocketAddr::new(
            std::net::Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().into(),
            40000,
        )),
        _ => Peer::Local,
    }
}

/// Number of canned frame kinds; a kind byte is taken modulo this.
pub(crate) const CANNED_KINDS: u8 = 14;

/// The ivorn of canned event `id` (eight distinct ones).
pub(crate) fn event_ivorn(id: u8) -> String {
    format!("ivo://example.org/survey#e{}", id % 8)
}

/// A VOEvent document with the given namespace declaration (bound to the `voe` prefix; none
/// when empty) and ivorn.
pub(crate) fn event_doc(xmlns: &str, ivorn: &str, role: &str) -> Vec<u8> {
    let root = if xmlns.is_empty() {
        "VOEvent"
    } else {
        "voe:VOEvent"
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <{root}{xmlns} ivorn=\"{ivorn}\" role=\"{role}\" version=\"2.0\">\n  \
         <Who><AuthorIVORN>ivo://example.org/survey</AuthorIVORN>\
         <Date>2024-05-01T12:00:00</Date></Who>\n  \
         <What><Param name=\"Packet_Type\" value=\"61\"/></What>\n\
         </{root}>\n"
    )
    .into_bytes()
}

const NS_2_0: &str = " xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"";
const NS_1_1: &str = " xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v1.1\"";

/// Filters a canned authenticate reply may carry (`has:TEXT` compiles, anything else is
/// refused by the harness engine); the id's bits choose which.
const FILTERS: [&str; 6] = [
    "has:#e1",
    "has:#e2",
    "has:e",
    "bad filter",
    "has:a-filter-longer-than-the-small-limit",
    "has:#e1",
];

/// The payload of canned frame `kind` (mod [`CANNED_KINDS`]) with parameter `id`.
pub(crate) fn canned_payload(kind: u8, id: u8) -> Vec<u8> {
    let ts = format!("2024-05-01T12:00:{:02}Z", id % 60);
    let transport = |frame: &[u8]| frame[frame::PREFIX_LEN..].to_vec();
    match kind % CANNED_KINDS {
        0 => event_doc(NS_2_0, &event_ivorn(id), "observation"),
        1 => event_doc(NS_1_1, &event_ivorn(id), "observation"),
        2 => event_doc("", &event_ivorn(id), "utility"),
        3 => event_doc(NS_2_0, &format!("ivo://a2#{}", id % 4), "observation"),
        4 => transport(&message::build_test_event(UPSTREAM, &ts, "upstream 1.0")),
        5 => transport(&message::build_iamalive_reply(
            LOCAL,
            Some("ivo://example.org/subscriber"),
            &ts,
        )),
        6 => transport(&message::build_iamalive(UPSTREAM, &ts)),
        7 => transport(&message::build_authenticate(UPSTREAM, &ts)),
        8 => {
            let chosen: Vec<&str> = FILTERS
                .iter()
                .enumerate()
                .filter(|(i, _)| id & (1 << i) != 0)
                .map(|(_, f)| *f)
                .collect();
            transport(&message::build_authenticate_reply(
                LOCAL,
                Some("ivo://example.org/subscriber"),
                &ts,
                &chosen,
            ))
        }
        9 => transport(&message::build_ack(&event_ivorn(id), Some(UPSTREAM), &ts)),
        10 => transport(&message::build_nak(
            &event_ivorn(id),
            Some(UPSTREAM),
            &ts,
            "Event rejected: not wanted",
        )),
        11 => format!(
            "<trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
             version=\"1.0\" role=\"authenticate\"><Origin>{LOCAL}</Origin>\
             <Meta><filter type=\"xpath\">has:#e{}</filter></Meta></trn:Transport>",
            id % 8
        )
        .into_bytes(),
        12 => b"<junk/>".to_vec(),
        _ => Vec::new(),
    }
}

/// The fuzz body.
pub(crate) fn node_input(data: &[u8]) {
    let _ = run(data);
}

/// What one program made the node do, for tests that check a seed reaches what it is for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) accepted: usize,
    pub(crate) refused: usize,
    pub(crate) acks: usize,
    pub(crate) naks: usize,
    pub(crate) iamalives: usize,
    pub(crate) authenticates: usize,
    pub(crate) forwards: usize,
    pub(crate) submits: usize,
    pub(crate) connects: usize,
    pub(crate) closes: usize,
    pub(crate) persists: usize,
    pub(crate) forgets: usize,
    pub(crate) duplicates: usize,
    pub(crate) deliveries: usize,
    pub(crate) filters_accepted: usize,
    pub(crate) filters_refused: usize,
    pub(crate) subscriber_naks: usize,
    pub(crate) violations: usize,
    pub(crate) submissions_acked: usize,
    pub(crate) submissions_naked: usize,
    pub(crate) submissions_failed: usize,
}

/// Runs one program with every check of the module docs; returns what happened.
pub(crate) fn run(data: &[u8]) -> Tally {
    let mut input = Bytes::new(data);
    let mut sim = Sim::new(input.byte());
    let mut ops = 0;
    while let Some(op) = Op::decode(&mut input) {
        sim.apply(op);
        ops += 1;
        if ops == OPS_MAX {
            break;
        }
    }
    sim.finish()
}

/// The node's configuration for a flags byte.
pub(crate) fn config(flags: u8) -> Config {
    let mut c = Config::new(Some(LOCAL.into()));
    // The body's model expects receipts at once; holding them until records are durable is
    // covered by core/tests/durability.rs.
    c.policy.durability = vtp_core::config::Durability::Async;
    c.product = "vtp-fuzz".into();
    c.filters = vec!["has:GRB".into()];
    c.author_whitelist =
        Whitelist::new(Whitelist::parse_list("127.0.0.0/8 ::1").expect("valid networks"));
    if flags & flags::DUPLICATE_NAK != 0 {
        c.policy.duplicate_reply = DuplicateReply::Nak;
    }
    if flags & flags::NAK_DISCONNECTS != 0 {
        c.policy.subscriber_nak = SubscriberNak::Disconnect;
    }
    if flags & flags::ANY_VERSION != 0 {
        c.policy.accept_versions = AcceptVersions::Any;
    }
    if flags & flags::REFUSED_SENDS_ALL != 0 {
        c.policy.invalid_filters = InvalidFilters::SendEverything;
    }
    if flags & flags::SMALL != 0 {
        c.limits.connections_max = 3;
        c.limits.seen_entries_max = 3;
        c.limits.filters_per_feed_max = 2;
        c.limits.filter_len_max = 16;
        c.limits.frame_len_max = 2048;
        c.limits.outstanding_acks_max = 2;
        c.limits.parse = ParseLimits {
            depth_max: 6,
            attrs_max: 6,
            transport_params_max: 3,
            text_max: 128,
        };
        c.timing.seen_retention = Duration::from_secs(3600);
        c.timing.prune_interval = Duration::from_secs(600);
    }
    if flags & flags::NO_UPSTREAM == 0 {
        c.upstreams = vec![Upstream {
            endpoints: vec![
                DialAddr::tcp("up1.invalid", PORT_SUBSCRIBE),
                DialAddr::tcp("up2.invalid", PORT_SUBSCRIBE),
            ],
        }];
    }
    c.timing.test_event_interval = if flags & flags::NO_TEST_EVENTS == 0 {
        Some(Duration::from_secs(900))
    } else {
        None
    };
    c
}

/// What the runtime knows about one connection.
#[derive(Debug)]
struct Model {
    role: ConnRole,
    open: bool,
    /// Dialed (`Action::Connect`) and not yet reported connected or failed.
    dialing: bool,
    connected: bool,
    /// Frames written to it.
    frames: usize,
    /// Ack and nak receipts written to it.
    receipts: usize,
    /// Intakes: what the node's decoder sees, to know when an answer is due.
    shadow: Option<FrameDecoder>,
    /// Intakes: a complete frame or a bad prefix arrived, so it must have been answered.
    answer_due: bool,
    /// Intakes: the `Origin` the receipt must carry, once an answer is due: the event's ivorn
    /// if the first frame is a VOEvent, otherwise this broker's IVOID.
    receipt_origin: Option<String>,
    peer_up: usize,
    peer_down: usize,
    /// Submissions: acked, naked and failed outcomes reported.
    outcomes: usize,
}

impl Model {
    fn new(role: ConnRole, frame_len_max: u32) -> Self {
        Self {
            role,
            open: true,
            dialing: false,
            connected: false,
            frames: 0,
            receipts: 0,
            shadow: (role == ConnRole::Intake).then(|| FrameDecoder::new(frame_len_max)),
            answer_due: false,
            receipt_origin: None,
            peer_up: 0,
            peer_down: 0,
            outcomes: 0,
        }
    }
}

struct Sim {
    node: Node,
    now: Instant,
    live_filters: Arc<AtomicUsize>,
    frame_len_max: u32,
    upstreams: usize,
    conns: BTreeMap<ConnId, Model>,
    /// Every connection ever seen, in order.
    known: Vec<ConnId>,
    /// The connections the runtime has open.
    open: BTreeSet<ConnId>,
    /// Open feeds and subscriptions.
    feeds_open: usize,
    subscriptions_open: usize,
    /// Connections opened, closed, fed or answered since the last check.
    touched: Vec<ConnId>,
    /// Virtual time let pass so far.
    elapsed: Duration,
    /// Seen-index records the store holds (from `Persist`, minus `Forget` and `Expire`).
    persisted: BTreeMap<EventKey, u64>,
    /// Keys delivered while their record lives.
    delivered: BTreeSet<EventKey>,
    /// `Op::Shutdown` has run: the node refuses submissions.
    shut_down: bool,
    tally: Tally,
}

impl Sim {
    fn new(flags: u8) -> Self {
        let config = config(flags);
        // `has:TEXT` filters; the engine panics if the node evaluates a released expression,
        // releases one twice, or compiles an expression it already holds, and counts the live
        // ones.
        let substrings = SubstringEngine::default();
        let live_filters = substrings.live.clone();
        let engine: Box<dyn FilterEngine + Send> = if flags & flags::NO_FILTERS != 0 {
            Box::new(NoFilterEngine)
        } else {
            Box::new(substrings)
        };
        let frame_len_max = config.limits.frame_len_max;
        let upstreams = config.upstreams.len();
        let now = origin();
        let node = Node::new(
            config,
            engine,
            u64::from(flags),
            now,
            Duration::from_secs(UNIX0),
        )
        .expect("valid configuration");
        let mut sim = Self {
            node,
            now,
            live_filters,
            frame_len_max,
            upstreams,
            conns: BTreeMap::new(),
            known: Vec::new(),
            open: BTreeSet::new(),
            feeds_open: 0,
            subscriptions_open: 0,
            touched: Vec::new(),
            elapsed: Duration::ZERO,
            persisted: BTreeMap::new(),
            delivered: BTreeSet::new(),
            shut_down: false,
            tally: Tally::default(),
        };
        sim.settle();
        sim
    }

    fn apply(&mut self, op: Op<'_>) {
        let now = self.now;
        match op {
            Op::Accept { feed, peer: p } => {
                let listener = if feed {
                    ListenerRole::Broadcast
                } else {
                    ListenerRole::Receive
                };
                let accepted = self.node.handle_accept(listener, peer(p), now);
                if accepted.is_some() {
                    self.tally.accepted += 1;
                } else {
                    self.tally.refused += 1;
                }
                if let Some(conn) = accepted {
                    let role = if feed {
                        ConnRole::Feed
                    } else {
                        ConnRole::Intake
                    };
                    self.opened(conn, Model::new(role, self.frame_len_max));
                }
            }
            Op::Connected(sel) => {
                if let Some(conn) = self.pick_dialing(sel) {
                    if self.open.contains(&conn)
                        && let Some(m) = self.conns.get_mut(&conn)
                    {
                        m.dialing = false;
                        m.connected = true;
                    }
                    self.node.handle_connected(conn, now);
                }
            }
            Op::ConnectFailed(sel) => {
                if let Some(conn) = self.pick_dialing(sel) {
                    self.closed(conn);
                    let reason = CloseReason::ConnectFailed("connection refused".into());
                    self.node.handle_closed(conn, reason, now);
                }
            }
            Op::Input(sel, bytes) => {
                if let Some(conn) = self.pick(sel, false) {
                    self.input(conn, bytes);
                }
            }
            Op::Canned { conn, kind, id } => {
                if let Some(conn) = self.pick(conn, false) {
                    let framed = frame::encode(&canned_payload(kind, id)).expect("small payload");
                    self.input(conn, &framed);
                }
            }
            Op::Advance(b) => {
                let d = Duration::from_secs(advance_secs(b)).min(VIRTUAL_TIME_MAX - self.elapsed);
                self.elapsed += d;
                return self.advance(d);
            }
            Op::Close { conn, outbox_full } => {
                if let Some(conn) = self.pick(conn, true) {
                    self.closed(conn);
                    let reason = if outbox_full {
                        CloseReason::OutboxFull
                    } else {
                        CloseReason::PeerClosed
                    };
                    self.node.handle_closed(conn, reason, now);
                }
            }
            Op::Submit(bytes) => {
                let _ = self.node.submit(submit_addr(), bytes, now);
            }
            Op::SubmitCanned(id) => {
                let payload = canned_payload(0, id);
                let submitted = self.node.submit(submit_addr(), &payload, now);
                if self.shut_down {
                    assert!(
                        matches!(submitted, Err(SubmitError::ShuttingDown)),
                        "a submission after shutdown: {submitted:?}"
                    );
                } else {
                    submitted.expect("a canned event is a valid submission");
                }
            }
            Op::Shutdown => {
                self.shut_down = true;
                self.node.shutdown(now);
            }
        }
        self.settle();
    }

    /// Feeds bytes to a connection, keeping the intake shadow decoder in step.
    fn input(&mut self, conn: ConnId, bytes: &[u8]) {
        let limits = self.node.config().limits.parse;
        if let Some(m) = self.conns.get_mut(&conn)
            && m.open
            && !m.answer_due
            && let Some(shadow) = &mut m.shadow
        {
            let mut origin = None;
            let result = shadow.decode(bytes, |payload| {
                origin.get_or_insert_with(|| match message::parse(payload, &limits) {
                    Ok(Message::VoEvent(ev)) => ev.ivorn.into_owned(),
                    _ => LOCAL.to_owned(),
                });
            });
            if origin.is_none() && result.is_err() {
                origin = Some(LOCAL.to_owned());
            }
            if origin.is_some() {
                m.answer_due = true;
                m.receipt_origin = origin;
                self.touched.push(conn);
            }
        }
        self.node.handle_input(conn, bytes, self.now);
    }

    /// A connection to read from or close: an open one that is not still dialing (selector
    /// below 0xF0; `dialing` allows those too), or a closed one (0xF0 and above: a stale
    /// handle, which the node must ignore).
    fn pick(&self, sel: u8, dialing: bool) -> Option<ConnId> {
        if sel < 0xF0 {
            self.nth_open(sel, |m| dialing || !m.dialing)
        } else {
            self.stale(sel)
        }
    }

    /// A pending dial (selector below 0xF0) or a closed connection (a stale handle). Never an
    /// established one: a runtime reports each connect once.
    fn pick_dialing(&self, sel: u8) -> Option<ConnId> {
        if sel < 0xF0 {
            self.nth_open(sel, |m| m.dialing)
        } else {
            self.stale(sel)
        }
    }

    /// The `sel`-th (cyclically) open connection matching `keep`.
    fn nth_open(&self, sel: u8, keep: impl Fn(&Model) -> bool) -> Option<ConnId> {
        let matching = || self.open.iter().filter(|c| keep(&self.conns[c]));
        let count = matching().count();
        if count == 0 {
            return None;
        }
        matching().nth(usize::from(sel) % count).copied()
    }

    /// A connection seen before and closed since, if the selector lands on one.
    fn stale(&self, sel: u8) -> Option<ConnId> {
        let conn = *self.known.get(usize::from(sel) % self.known.len().max(1))?;
        (!self.open.contains(&conn)).then_some(conn)
    }

    /// A new connection is open (accepted, or dialed by the node).
    fn opened(&mut self, conn: ConnId, m: Model) {
        match m.role {
            ConnRole::Feed => self.feeds_open += 1,
            ConnRole::Subscription => self.subscriptions_open += 1,
            ConnRole::Intake | ConnRole::Submission | ConnRole::External => {}
        }
        assert!(
            self.conns.insert(conn, m).is_none(),
            "{conn} handed out twice"
        );
        self.known.push(conn);
        self.open.insert(conn);
        self.touched.push(conn);
    }

    /// `conn` is closed, by the node's `Close` or by the runtime; false if it already was.
    fn closed(&mut self, conn: ConnId) -> bool {
        let Some(m) = self.conns.get_mut(&conn) else {
            return false;
        };
        if !m.open {
            return false;
        }
        m.open = false;
        m.dialing = false;
        match m.role {
            ConnRole::Feed => self.feeds_open -= 1,
            ConnRole::Subscription => self.subscriptions_open -= 1,
            ConnRole::Intake | ConnRole::Submission | ConnRole::External => {}
        }
        self.open.remove(&conn);
        self.touched.push(conn);
        true
    }

    /// Lets `d` of virtual time pass, firing each deadline at its own instant, like a runtime.
    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        let mut steps = 0;
        loop {
            self.drain();
            match self.node.poll_timeout() {
                Some(t) if t <= target => {
                    assert!(t >= self.now, "deadline in the past");
                    self.now = t;
                    self.node.handle_timeout(t);
                    steps += 1;
                    assert!(steps < ADVANCE_STEPS_MAX, "timers spin");
                }
                _ => break,
            }
        }
        self.now = target;
        self.node.handle_timeout(target);
        self.settle();
    }

    /// Performs every output and fires timers due now until the node is quiet, then checks
    /// the model against the node.
    fn settle(&mut self) {
        for _ in 0..QUIET_ROUNDS_MAX {
            self.drain();
            match self.node.poll_timeout() {
                Some(t) if t <= self.now => self.node.handle_timeout(self.now),
                _ => {
                    self.check();
                    return;
                }
            }
        }
        panic!("the node is not quiet after {QUIET_ROUNDS_MAX} rounds at one instant");
    }

    fn drain(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.perform(action);
        }
        while let Some(event) = self.node.poll_event() {
            self.observe(event);
        }
    }

    fn perform(&mut self, action: Action) {
        if let Some((conn, bytes)) = action.frame() {
            let m = self
                .conns
                .get_mut(&conn)
                .unwrap_or_else(|| panic!("write to unknown {conn}: {action:?}"));
            assert!(m.open, "write to closed {conn}: {action:?}");
            let allowed = matches!(
                (&action, m.role),
                (
                    Action::Ack { .. },
                    ConnRole::Intake | ConnRole::Subscription
                ) | (Action::Nak { .. }, ConnRole::Intake)
                    | (
                        Action::IamAlive { .. } | Action::Authenticate { .. },
                        ConnRole::Feed | ConnRole::Subscription,
                    )
                    | (Action::Forward { .. }, ConnRole::Feed)
                    | (Action::Submit { .. }, ConnRole::Submission)
            );
            assert!(allowed, "{action:?} on a {:?} connection", m.role);
            if m.role == ConnRole::Feed && m.frames == 0 {
                assert!(
                    matches!(action, Action::Authenticate { .. }),
                    "a feed's first frame must be the greeting: {action:?}"
                );
            }
            if m.role == ConnRole::Submission {
                assert!(m.connected, "submission sent before the connect");
                assert_eq!(m.frames, 0, "submission sent twice");
            }
            if matches!(action, Action::Ack { .. } | Action::Nak { .. }) {
                m.receipts += 1;
                if m.role == ConnRole::Intake {
                    assert_eq!(m.receipts, 1, "second receipt on intake {conn}");
                    assert!(m.answer_due, "intake {conn} answered before a frame");
                    let receipt = match message::parse(&bytes[frame::PREFIX_LEN..], &UNLIMITED) {
                        Ok(Message::Transport(t)) => t,
                        other => panic!("receipt is not a Transport message: {other:?}"),
                    };
                    let want = m.receipt_origin.as_deref().unwrap_or_default();
                    assert_eq!(
                        &*receipt.origin,
                        want.trim_matches([' ', '\t', '\n', '\r']),
                        "receipt Origin on intake {conn}"
                    );
                    self.touched.push(conn);
                }
            }
            m.frames += 1;
            check_frame(&action, bytes);
            let t = &mut self.tally;
            *match action {
                Action::Ack { .. } => &mut t.acks,
                Action::Nak { .. } => &mut t.naks,
                Action::IamAlive { .. } => &mut t.iamalives,
                Action::Authenticate { .. } => &mut t.authenticates,
                Action::Forward { .. } => &mut t.forwards,
                _ => &mut t.submits,
            } += 1;
            return;
        }
        match action {
            Action::Close { conn, .. } => {
                assert!(self.conns.contains_key(&conn), "close of unknown {conn}");
                assert!(self.closed(conn), "{conn} closed twice");
                self.tally.closes += 1;
            }
            Action::Connect { conn, addr } => {
                assert!(!self.conns.contains_key(&conn), "{conn} dialed twice");
                let role = if addr == submit_addr() {
                    ConnRole::Submission
                } else {
                    ConnRole::Subscription
                };
                self.tally.connects += 1;
                let mut m = Model::new(role, self.frame_len_max);
                m.dialing = true;
                self.opened(conn, m);
                assert!(
                    self.subscriptions_open <= self.upstreams,
                    "two connections to one upstream"
                );
            }
            Action::DropDuplicate { conn, key } => {
                assert!(
                    self.conns.contains_key(&conn),
                    "duplicate on unknown {conn}"
                );
                assert!(
                    self.persisted.contains_key(&key),
                    "duplicate of an unrecorded key"
                );
                self.tally.duplicates += 1;
            }
            Action::Persist(record) => {
                let old = self.persisted.insert(record.key, record.unix_secs);
                assert!(old.is_none(), "persisted a live key again");
                self.tally.persists += 1;
            }
            Action::Forget(key) => {
                assert!(
                    self.persisted.remove(&key).is_some(),
                    "forgot an unknown key"
                );
                self.tally.forgets += 1;
                self.delivered.remove(&key);
            }
            Action::Expire { before_unix_secs } => {
                let gone: Vec<EventKey> = self
                    .persisted
                    .iter()
                    .filter(|(_, t)| **t <= before_unix_secs)
                    .map(|(k, _)| *k)
                    .collect();
                for key in gone {
                    self.persisted.remove(&key);
                    self.delivered.remove(&key);
                }
            }
            Action::Deliver(d) => {
                assert!(
                    self.persisted.contains_key(&d.key),
                    "delivered before persisting"
                );
                assert!(self.delivered.insert(d.key), "delivered twice: {}", d.ivorn);
                self.tally.deliveries += 1;
                match message::parse(&d.payload, &ParseLimits::default()) {
                    Ok(Message::VoEvent(ev)) => {
                        assert_eq!(&*ev.ivorn, &*d.ivorn);
                        assert_eq!(EventKey::of_element(&d.payload[ev.element]), d.key);
                    }
                    other => panic!("delivered a non-event: {other:?}"),
                }
            }
            other => panic!("unexpected action {other:?}"),
        }
    }

    fn observe(&mut self, event: Event) {
        match event {
            Event::PeerUp { conn, role, .. } => {
                let m = self.model(conn);
                assert_eq!(m.role, role);
                m.peer_up += 1;
                assert_eq!(m.peer_up, 1, "{conn} up twice");
            }
            Event::PeerDown { conn, role, .. } => {
                let m = self.model(conn);
                assert_eq!(m.role, role);
                m.peer_down += 1;
                assert_eq!(m.peer_down, 1, "{conn} down twice");
            }
            Event::SubmissionAcked { conn }
            | Event::SubmissionNaked { conn, .. }
            | Event::SubmissionFailed { conn, .. } => {
                let t = &mut self.tally;
                *match event {
                    Event::SubmissionAcked { .. } => &mut t.submissions_acked,
                    Event::SubmissionNaked { .. } => &mut t.submissions_naked,
                    _ => &mut t.submissions_failed,
                } += 1;
                let m = self.model(conn);
                assert_eq!(m.role, ConnRole::Submission);
                m.outcomes += 1;
                assert_eq!(m.outcomes, 1, "two outcomes for submission {conn}");
            }
            Event::Rejected { conn, reason, .. } => {
                assert_eq!(self.model(conn).role, ConnRole::Intake);
                // The reason is the nak's text, in Comet's form.
                let text = reason.to_string();
                assert!(text.starts_with("Event rejected: "), "{conn}: {text}");
            }
            Event::FiltersSet {
                conn,
                accepted,
                refused,
                ..
            } => {
                assert_eq!(self.model(conn).role, ConnRole::Feed);
                self.tally.filters_accepted += accepted;
                self.tally.filters_refused += refused.len();
            }
            Event::SubscriberNak { conn, .. } => {
                assert_eq!(self.model(conn).role, ConnRole::Feed);
                self.tally.subscriber_naks += 1;
            }
            Event::ProtocolViolation { conn, detail } => {
                // A fault that names the connection it arrived on names the right one.
                if let Violation::Unparsable { on, .. }
                | Violation::UnexpectedEvent { on, .. }
                | Violation::BadIvorn { on, .. } = &detail
                {
                    assert_eq!(self.model(conn).role, *on, "{conn}: {detail}");
                }
                self.tally.violations += 1;
            }
            _ => {}
        }
    }

    fn model(&mut self, conn: ConnId) -> &mut Model {
        self.conns
            .get_mut(&conn)
            .unwrap_or_else(|| panic!("event about unknown {conn}"))
    }

    /// The node agrees with the model; only called when every queue is drained.
    fn check(&mut self) {
        assert_eq!(self.node.connections(), self.open.len(), "open connections");
        assert_eq!(self.node.feeds(), self.feeds_open, "open feeds");
        // Only connections that changed can disagree: the counts above catch the node dropping
        // one silently, and each write is checked as it is performed.
        let touched = std::mem::take(&mut self.touched);
        for conn in &touched {
            let m = &self.conns[conn];
            assert_eq!(
                self.node.role(*conn),
                m.open.then_some(m.role),
                "role of {conn}"
            );
            if m.role == ConnRole::Intake {
                assert!(m.receipts <= 1);
                if m.receipts == 1 {
                    assert!(!m.open, "intake {conn} answered but left open");
                }
                if m.answer_due {
                    assert_eq!(m.receipts, 1, "intake {conn} got a frame and no answer");
                }
            }
        }
        let distinct = self.node.distinct_filters();
        assert_eq!(distinct, self.live_filters.load(Ordering::Relaxed));
        if self.feeds_open == 0 {
            assert_eq!(distinct, 0, "filters outlive every feed");
        }
        assert!(self.node.seen_len() <= self.node.config().limits.seen_entries_max);
        if let Some(t) = self.node.poll_timeout() {
            assert!(t > self.now, "a deadline stays in the past");
        }
    }

    /// Shuts down and checks that nothing is left.
    fn finish(mut self) -> Tally {
        let now = self.now;
        self.node.shutdown(now);
        self.drain();
        self.check();
        assert_eq!(self.node.connections(), 0);
        assert_eq!(self.node.feeds(), 0);
        assert_eq!(self.node.distinct_filters(), 0);
        assert_eq!(self.live_filters.load(Ordering::Relaxed), 0);
        assert!(self.node.poll_action().is_none());
        assert!(self.node.poll_event().is_none());
        assert_eq!(self.node.poll_timeout(), None, "a timer survives shutdown");
        assert!(self.open.is_empty(), "open after shutdown: {:?}", self.open);
        for (conn, m) in &self.conns {
            if m.role == ConnRole::Submission {
                assert_eq!(m.outcomes, 1, "submission {conn} never ended");
            }
        }
        self.tally
    }
}

/// Parse limits for the node's own output: any size (a nak may quote a long reason).
const UNLIMITED: ParseLimits = ParseLimits {
    depth_max: 64,
    attrs_max: 64,
    transport_params_max: 64,
    text_max: usize::MAX,
};

/// Every frame the node writes is one well-formed frame of the kind its action says.
fn check_frame(action: &Action, bytes: &[u8]) {
    let mut payloads = 0;
    let mut decoder = FrameDecoder::new(u32::MAX);
    decoder
        .decode(bytes, |payload| {
            payloads += 1;
            let parsed = message::parse(payload, &UNLIMITED);
            let role = match (action, parsed) {
                (Action::Forward { .. } | Action::Submit { .. }, Ok(Message::VoEvent(_))) => {
                    return;
                }
                (_, Ok(Message::Transport(t))) => t.role,
                (_, other) => panic!("{action:?} carries {other:?}"),
            };
            let want = match action {
                Action::Ack { .. } => TransportRole::Ack,
                Action::Nak { .. } => TransportRole::Nak,
                Action::IamAlive { .. } => TransportRole::IamAlive,
                Action::Authenticate { .. } => TransportRole::Authenticate,
                other => panic!("{other:?} carries a Transport message"),
            };
            assert_eq!(role, want);
        })
        .expect("our own frame is within any limit");
    assert_eq!(payloads, 1);
    assert!(decoder.is_idle(), "a written frame is cut short");
}

/// The origin of virtual time. An `Instant` can only come from the clock; every other instant
/// in the harness is this one plus a duration, so runs do not depend on it.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// Where submissions go: [`SUBMIT_HOST`] on the submit port.
fn submit_addr() -> DialAddr {
    DialAddr::tcp(SUBMIT_HOST, PORT_SUBMIT)
}
