//! What the node asks of its runtime ([`Action`]) and tells its application ([`Event`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;

use crate::endpoint::DialAddr;
use crate::identity::Identity;
use crate::message::EventRole;
use crate::seen::{EventKey, SeenLevel, SeenRecord};
use crate::violation::Violation;

/// Opaque handle of one connection, minted by the node and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The raw number, for logs and for runtimes that key tables by it.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which listener a connection was accepted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerRole {
    /// Authors submit events here (`--receive`, port 8098).
    Receive,
    /// Subscribers connect here (`--broadcast`, port 8099).
    Broadcast,
}

impl fmt::Display for ListenerRole {
    /// `receive` or `broadcast`, as the flags name the listeners.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Receive => "receive",
            Self::Broadcast => "broadcast",
        })
    }
}

/// The far end of an accepted connection: what the whitelists, the per-address limits and the
/// seen-index's shares look at (the IP address only, through [`Peer::ip`] and
/// [`Peer::network`]), and what the logs name (with the port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer: its address and port.
    Tcp(SocketAddr),
    /// A Unix-domain socket peer: not subject to IP whitelists (logged).
    Local,
}

impl Peer {
    /// The peer's IP address; `None` for a Unix-socket peer. Every policy keyed by the peer
    /// (whitelists, per-address limits, seen-index shares) uses this or [`Peer::network`],
    /// never the port.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Self::Tcp(addr) => Some(addr.ip()),
            Self::Local => None,
        }
    }

    /// The network this peer counts as wherever the node bounds what one source may hold (the
    /// per-address connection caps, the seen-index's shares): its IPv4 address (an IPv4-mapped
    /// IPv6 address counts as IPv4) or its IPv6 /64 (host bits zero). `None` for a Unix-socket
    /// peer.
    pub fn network(self) -> Option<IpAddr> {
        Some(match self.ip()?.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        })
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp(addr)
    }
}

impl fmt::Display for Peer {
    /// `127.0.0.1:48272`, `[2001:db8::1]:48272` (an IPv4-mapped IPv6 address as its IPv4
    /// address), or `a Unix-socket peer`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(
                f,
                "{}",
                SocketAddr::new(addr.ip().to_canonical(), addr.port())
            ),
            Self::Local => f.write_str("a Unix-socket peer"),
        }
    }
}

/// The far end of a connection, as the node knows it and the logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A listener accepted the connection from this peer.
    Accepted(Peer),
    /// The node dialled this endpoint (an upstream, or a broker it submits to), as
    /// [`DialAddr`] displays it: `host:port`, `tls:host:port` or `unix:path`.
    Dialled(Arc<str>),
    /// An external source, by the name it was opened with
    /// ([`Node::open_external`](crate::Node::open_external)).
    External(Arc<str>),
}

impl Remote {
    /// The peer, for an accepted connection.
    pub fn peer(&self) -> Option<Peer> {
        match self {
            Self::Accepted(peer) => Some(*peer),
            Self::Dialled(_) | Self::External(_) => None,
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accepted(peer) => write!(f, "{peer}"),
            Self::Dialled(endpoint) | Self::External(endpoint) => f.write_str(endpoint),
        }
    }
}

/// Why the node refused an accept ([`Event::Refused`]), one of the causes
/// [`RefusalCounts`] counts: a small fixed set, fit for a metric's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalCause {
    /// The peer's address held its per-address share already.
    PerAddress,
    /// Every slot of the role was taken.
    ConnectionsMax,
    /// The peer is not on the role's whitelist.
    Whitelist,
    /// Too many TLS handshakes were in progress.
    Handshakes,
    /// Anything else (shutting down, no local IVOID, a certificate identity required on a
    /// plain connection).
    Other,
}

impl RefusalCause {
    /// Every cause, in the order of [`RefusalCounts`]' fields.
    pub const ALL: [Self; 5] = [
        Self::PerAddress,
        Self::ConnectionsMax,
        Self::Whitelist,
        Self::Handshakes,
        Self::Other,
    ];

    /// A short name: `per_address`, `connections_max`, `whitelist`, `handshakes`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerAddress => "per_address",
            Self::ConnectionsMax => "connections_max",
            Self::Whitelist => "whitelist",
            Self::Handshakes => "handshakes",
            Self::Other => "other",
        }
    }
}

/// Accepts the node refused, by cause: since start ([`Node::refusals`](crate::Node::refusals)),
/// or those of one window that were counted but not reported
/// ([`Event::RefusalsSuppressed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusalCounts {
    /// The peer's address held its per-address share already
    /// ([`Limits::author_connections_per_address`](crate::config::Limits::author_connections_per_address),
    /// [`Limits::subscriber_connections_per_address`](crate::config::Limits::subscriber_connections_per_address)).
    pub per_address: u64,
    /// Every slot of the role was taken
    /// ([`Limits::connections_max`](crate::config::Limits::connections_max)).
    pub connections_max: u64,
    /// The peer is not on the role's whitelist.
    pub whitelist: u64,
    /// [`Limits::handshakes_max`](crate::config::Limits::handshakes_max) TLS handshakes were
    /// in progress.
    pub handshakes: u64,
    /// Anything else: the node is shutting down, has no local IVOID, or the role requires a
    /// certificate identity and the connection is plain.
    pub other: u64,
}

impl RefusalCounts {
    /// Refusals of every cause.
    pub fn total(&self) -> u64 {
        self.per_address + self.connections_max + self.whitelist + self.handshakes + self.other
    }

    /// The count of one cause.
    pub fn of(&self, cause: RefusalCause) -> u64 {
        match cause {
            RefusalCause::PerAddress => self.per_address,
            RefusalCause::ConnectionsMax => self.connections_max,
            RefusalCause::Whitelist => self.whitelist,
            RefusalCause::Handshakes => self.handshakes,
            RefusalCause::Other => self.other,
        }
    }

    /// Counts one refusal of `cause` (saturating).
    pub fn add(&mut self, cause: RefusalCause) {
        let n = match cause {
            RefusalCause::PerAddress => &mut self.per_address,
            RefusalCause::ConnectionsMax => &mut self.connections_max,
            RefusalCause::Whitelist => &mut self.whitelist,
            RefusalCause::Handshakes => &mut self.handshakes,
            RefusalCause::Other => &mut self.other,
        };
        *n = n.saturating_add(1);
    }
}

impl fmt::Display for RefusalCounts {
    /// The non-zero causes, e.g. `120 over a per-address limit, 3 not whitelisted`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.per_address, "over a per-address limit"),
            (self.connections_max, "over the connection limit"),
            (self.whitelist, "not whitelisted"),
            (self.handshakes, "over the TLS handshake limit"),
            (self.other, "other causes"),
        ];
        let mut first = true;
        for (n, what) in parts {
            if n == 0 {
                continue;
            }
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n} {what}")?;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRole {
    /// Broker side of an author (intake).
    Intake,
    /// Broker side of a subscriber (feed).
    Feed,
    /// This node subscribing to an upstream broker.
    Subscription,
    /// This node submitting one event as an author.
    Submission,
    /// An external source of events, such as a Kafka consumer
    /// ([`Node::open_external`](crate::Node::open_external)).
    External,
}

impl fmt::Display for ConnRole {
    /// Who is at the far end: `author`, `subscriber`, `upstream` or `broker` (the broker we
    /// submit to).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Intake => "author",
            Self::Feed => "subscriber",
            Self::Subscription => "upstream",
            Self::Submission => "broker",
            Self::External => "external source",
        })
    }
}

/// Why the node closes (or saw the close of) a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The exchange is complete (receipt sent or received).
    Done,
    /// An author connection reached its deadline without a complete exchange.
    IntakeDeadline,
    /// A subscriber left an iamalive unanswered until the next tick.
    IamaliveUnanswered,
    /// A subscriber has too many unacknowledged events at the tick.
    OutstandingAcks(u32),
    /// A subscriber nak'd an event and the policy is to disconnect.
    SubscriberNak,
    /// Our upstream sent nothing valid for too long.
    UpstreamSilent,
    /// An author waited too long for its receipt.
    ReceiptTimeout,
    /// The peer violated framing (e.g. oversize prefix) and the stream cannot continue: a
    /// [`Violation::Frame`].
    FramingError(Violation),
    /// The peer's outbox overflowed: it is not reading.
    OutboxFull,
    /// The peer committed more than
    /// [`Limits::violations_max`](crate::config::Limits::violations_max) protocol violations
    /// within [`Limits::violations_window`](crate::config::Limits::violations_window).
    TooManyViolations {
        /// Violations counted in the window, this one included.
        count: u32,
        /// The window.
        window: std::time::Duration,
    },
    /// The peer closed the connection or an IO error occurred.
    PeerClosed,
    /// An outgoing connection was refused: nobody listens at the address (see
    /// [`CloseReason::connect_failed`]).
    ConnectRefused,
    /// An outgoing connection could not be established (the name did not resolve, the network
    /// is unreachable, the attempt timed out...): the error's text.
    ConnectFailed(String),
    /// The node is shutting down.
    Shutdown,
    /// A TLS connection did not complete its handshake within
    /// [`Timing::handshake_deadline`](crate::config::Timing::handshake_deadline).
    TlsHandshakeTimeout,
    /// The TLS layer failed (a bad handshake, a certificate that does not verify, an alert);
    /// reported by the caller, with the TLS library's message.
    Tls(String),
    /// The peer's certificate identity (or its lack) is not allowed for this role.
    NotAuthorized(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done => f.write_str("exchange complete"),
            Self::IntakeDeadline => f.write_str("author connection deadline reached"),
            Self::IamaliveUnanswered => f.write_str("iamalive left unanswered"),
            Self::OutstandingAcks(n) => write!(f, "{n} events unacknowledged"),
            Self::SubscriberNak => f.write_str("subscriber nak'd an event (disconnect policy)"),
            Self::UpstreamSilent => f.write_str("upstream silent for too long"),
            Self::ReceiptTimeout => f.write_str("no receipt before the deadline"),
            Self::FramingError(e) => write!(f, "framing error: {e}"),
            Self::OutboxFull => f.write_str("send queue full: peer is not reading"),
            Self::TooManyViolations { count, window } => write!(
                f,
                "{count} protocol violations within {} s",
                window.as_secs_f64()
            ),
            Self::PeerClosed => f.write_str("closed by peer"),
            Self::ConnectRefused => f.write_str("connection refused"),
            Self::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            Self::Shutdown => f.write_str("shutting down"),
            Self::TlsHandshakeTimeout => f.write_str("TLS handshake not completed in time"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::NotAuthorized(e) => write!(f, "not authorized: {e}"),
        }
    }
}

impl CloseReason {
    /// The reason a dial failed with `error`: [`CloseReason::ConnectRefused`] for a refused
    /// connection, otherwise [`CloseReason::ConnectFailed`] with the error's text.
    pub fn connect_failed(error: &std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::ConnectionRefused => Self::ConnectRefused,
            _ => Self::ConnectFailed(error.to_string()),
        }
    }

    /// The reason's class: what a log line or a metric groups it under.
    pub fn class(&self) -> CloseClass {
        match self {
            Self::Done => CloseClass::Done,
            Self::ConnectRefused => CloseClass::Refused,
            Self::ConnectFailed(_) => CloseClass::Unreachable,
            Self::PeerClosed => CloseClass::Closed,
            Self::IntakeDeadline
            | Self::IamaliveUnanswered
            | Self::UpstreamSilent
            | Self::ReceiptTimeout => CloseClass::Silent,
            Self::OutstandingAcks(_) | Self::OutboxFull => CloseClass::Slow,
            Self::FramingError(_) | Self::TooManyViolations { .. } | Self::SubscriberNak => {
                CloseClass::Protocol
            }
            Self::TlsHandshakeTimeout | Self::Tls(_) => CloseClass::Tls,
            Self::NotAuthorized(_) => CloseClass::NotAuthorized,
            Self::Shutdown => CloseClass::Shutdown,
        }
    }
}

/// A [`CloseReason`] by kind ([`CloseReason::class`]): what an operator asks first about a
/// lost connection. Its `Display` is [`CloseClass::as_str`], one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseClass {
    /// The exchange completed ([`CloseReason::Done`]).
    Done,
    /// Our dial was refused: nobody listens there ([`CloseReason::ConnectRefused`]).
    Refused,
    /// Our dial failed otherwise: no address, no route, no answer
    /// ([`CloseReason::ConnectFailed`]).
    Unreachable,
    /// The peer closed the connection, or it broke ([`CloseReason::PeerClosed`]).
    Closed,
    /// The peer went quiet past a deadline: an upstream sent nothing, a subscriber left an
    /// iamalive unanswered, an author sent no event, a broker sent no receipt.
    Silent,
    /// The peer did not keep up: its send queue filled, or its acks fell behind.
    Slow,
    /// The peer broke the protocol (framing, too many violations), or a subscriber nak'd an
    /// event under the disconnect policy.
    Protocol,
    /// The TLS handshake failed or did not complete in time.
    Tls,
    /// The peer's certificate identity (or its lack) is not allowed for the role.
    NotAuthorized,
    /// The node is shutting down.
    Shutdown,
}

impl CloseClass {
    /// One word, for a log field or a metric label: `done`, `refused`, `unreachable`,
    /// `closed`, `silent`, `slow`, `protocol`, `tls`, `unauthorized` or `shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Refused => "refused",
            Self::Unreachable => "unreachable",
            Self::Closed => "closed",
            Self::Silent => "silent",
            Self::Slow => "slow",
            Self::Protocol => "protocol",
            Self::Tls => "tls",
            Self::NotAuthorized => "unauthorized",
            Self::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for CloseClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an accepted event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Submitted by an author on an intake connection.
    Author(ConnId),
    /// Received from an upstream broker.
    Upstream(ConnId),
    /// Read back from a host's handler spool: accepted earlier, by this run or one before a
    /// restart, on a connection that is not known any more.
    Spool,
    /// Read from an external source ([`Node::open_external`](crate::Node::open_external)).
    External(ConnId),
}

/// Where a record sits in an external source: a lane (a Kafka partition) and an offset in
/// it. Offsets of a lane grow as records are appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The lane (partition).
    pub lane: u32,
    /// The record's offset in its lane.
    pub offset: u64,
}

impl fmt::Display for Position {
    /// `[LANE]@OFFSET`, as Kafka tools print a partition and an offset.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]@{}", self.lane, self.offset)
    }
}

/// An accepted event handed to the application's handlers (print, save, cmd, callbacks).
#[derive(Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event's `ivorn`.
    pub ivorn: Arc<str>,
    /// The event's identity.
    pub key: EventKey,
    /// The raw payload exactly as received (no framing prefix).
    pub payload: Bytes,
    /// Where it came from.
    pub source: Source,
    /// The event's `role` attribute ([`EventRole::Observation`] when absent, the VOEvent 2.0
    /// default): lets a handler pass over `test` events (`--save-event-skip-test`).
    pub role: EventRole,
    /// Its signature status ([`crate::signature`]); `None` when signatures are off, or when
    /// the delivery was read back from a host's spool that did not record one (vtp's spool
    /// records it from format 3 on).
    pub signature: Option<Arc<crate::signature::Signature>>,
    /// Where the event's `Who` and `WhereWhen` are in `payload`, as the parser found them
    /// ([`crate::summary::summarize_spans`] reads only those); `None` when not known (a
    /// delivery read back from a host's spool, or one an embedder made).
    pub spans: Option<Arc<crate::summary::Spans>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("ivorn", &self.ivorn)
            .field("key", &self.key)
            .field("payload_len", &self.payload.len())
            .field("source", &self.source)
            .field("role", &self.role)
            .field("signature", &self.signature)
            .field("spans", &self.spans)
            .finish()
    }
}

/// A side effect to perform, in queue order: by the runtime, usually through its
/// [`Driver`](crate::driver::Driver).
///
/// Every variant that carries a `frame` asks the runtime to write those bytes (already framed
/// with the length prefix) to `conn`. The order matters: a `Nak` followed by a `Close` for the
/// same connection must reach the socket in that order.
#[derive(Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Action {
    /// Send an ack receipt.
    Ack {
        /// Connection.
        conn: ConnId,
        /// Framed Transport message.
        frame: Bytes,
    },
    /// Send a nak receipt.
    Nak {
        /// Connection.
        conn: ConnId,
        /// Framed Transport message.
        frame: Bytes,
    },
    /// Send an iamalive (a broker's request or a subscriber's reply).
    IamAlive {
        /// Connection.
        conn: ConnId,
        /// Framed Transport message.
        frame: Bytes,
    },
    /// Send an authenticate (a broker's request or a subscriber's reply with filters).
    Authenticate {
        /// Connection.
        conn: ConnId,
        /// Framed Transport message.
        frame: Bytes,
    },
    /// Forward an event to a subscriber: the author's bytes, framed once and shared.
    Forward {
        /// Connection.
        conn: ConnId,
        /// Framed VOEvent, shared by every feed.
        frame: Bytes,
    },
    /// Submit an event to a broker (author role).
    Submit {
        /// Connection.
        conn: ConnId,
        /// Framed VOEvent.
        frame: Bytes,
    },
    /// An event was a duplicate: nothing to send; for logs and metrics.
    DropDuplicate {
        /// Connection it arrived on.
        conn: ConnId,
        /// Its identity.
        key: EventKey,
    },
    /// Close the connection after everything queued before this action has been written.
    Close {
        /// Connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Open an outgoing connection to `addr` and report it with `handle_connected` or
    /// `handle_closed`.
    Connect {
        /// Handle for the new connection.
        conn: ConnId,
        /// Where to connect, the port resolved.
        addr: DialAddr,
    },
    /// Record a seen-index entry in the durable store.
    Persist(SeenRecord),
    /// Remove one entry from the store (evicted from the bounded index).
    Forget(EventKey),
    /// Remove every store entry seen at or before this UNIX second (expiry).
    Expire {
        /// Cut-off, inclusive.
        before_unix_secs: u64,
    },
    /// Tell the external source `conn` that every record of `lane` before `next_offset` is
    /// done: durable here, or skipped. The source may commit `next_offset` (Kafka's committed
    /// offset is the next one to read). Per lane, in increasing order.
    Commit {
        /// The external source.
        conn: ConnId,
        /// The lane (partition).
        lane: u32,
        /// The first offset not yet done.
        next_offset: u64,
    },
    /// Run the event handlers on an accepted event. With
    /// [`DeliveryTiming::BeforeRecord`](crate::config::DeliveryTiming::BeforeRecord) it comes
    /// just before the event's `Persist`, never held; otherwise with the receipt.
    Deliver(Delivery),
    /// Verify a signature off the event loop and hand the verdict back with
    /// [`Node::handle_verdict`](crate::Node::handle_verdict) (the [`Driver`](crate::driver::Driver)
    /// does both through [`Effects::verify`](crate::driver::Effects::verify)). Only a node
    /// told it may ([`Node::set_verify_offload`](crate::Node::set_verify_offload)) asks; the
    /// author's receipt waits for the verdict.
    Verify(crate::signature::VerifyJob),
}

impl Action {
    /// The connection and bytes to write, for every action that writes.
    pub fn frame(&self) -> Option<(ConnId, &Bytes)> {
        match self {
            Self::Ack { conn, frame }
            | Self::Nak { conn, frame }
            | Self::IamAlive { conn, frame }
            | Self::Authenticate { conn, frame }
            | Self::Forward { conn, frame }
            | Self::Submit { conn, frame } => Some((*conn, frame)),
            Self::DropDuplicate { .. }
            | Self::Close { .. }
            | Self::Connect { .. }
            | Self::Persist(_)
            | Self::Forget(_)
            | Self::Expire { .. }
            | Self::Commit { .. }
            | Self::Deliver(_)
            | Self::Verify(_) => None,
        }
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = |f: &mut fmt::Formatter<'_>, name: &str, conn: &ConnId, frame: &Bytes| {
            write!(f, "{name} {{ conn: {conn}, frame: {} bytes }}", frame.len())
        };
        match self {
            Self::Ack { conn, frame } => named(f, "Ack", conn, frame),
            Self::Nak { conn, frame } => named(f, "Nak", conn, frame),
            Self::IamAlive { conn, frame } => named(f, "IamAlive", conn, frame),
            Self::Authenticate { conn, frame } => named(f, "Authenticate", conn, frame),
            Self::Forward { conn, frame } => named(f, "Forward", conn, frame),
            Self::Submit { conn, frame } => named(f, "Submit", conn, frame),
            Self::DropDuplicate { conn, key } => {
                write!(f, "DropDuplicate {{ conn: {conn}, key: {key:?} }}")
            }
            Self::Close { conn, reason } => write!(f, "Close {{ conn: {conn}, reason: {reason} }}"),
            Self::Connect { conn, addr } => write!(f, "Connect {{ conn: {conn}, addr: {addr} }}"),
            Self::Persist(r) => write!(f, "Persist({r:?})"),
            Self::Forget(k) => write!(f, "Forget({k:?})"),
            Self::Expire { before_unix_secs } => write!(f, "Expire({before_unix_secs})"),
            Self::Commit {
                conn,
                lane,
                next_offset,
            } => write!(
                f,
                "Commit {{ conn: {conn}, lane: {lane}, next_offset: {next_offset} }}"
            ),
            Self::Deliver(d) => write!(f, "Deliver({d:?})"),
            Self::Verify(job) => write!(f, "Verify({job:?})"),
        }
    }
}

/// Application news, for logs, metrics and embedding programs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Event {
    /// A connection was accepted (a TLS one: once secured) or established: it now speaks VTP.
    PeerUp {
        /// Connection.
        conn: ConnId,
        /// What it is for.
        role: ConnRole,
        /// Who: the accepted peer's address and port, or the endpoint dialled.
        remote: Remote,
        /// For a [`ConnRole::Subscription`]: the index of its upstream in
        /// [`Config::upstreams`](crate::Config::upstreams), as in [`Event::Reconnecting`].
        upstream: Option<usize>,
    },
    /// A connection ended (closed by us or the peer), or a dial or TLS handshake failed.
    PeerDown {
        /// Connection.
        conn: ConnId,
        /// What it was for.
        role: ConnRole,
        /// Who: the accepted peer's address and port, or the endpoint dialled.
        remote: Remote,
        /// Why.
        reason: CloseReason,
        /// How long it was up, from its [`Event::PeerUp`]; `None` if it never came up (a failed
        /// dial, a TLS handshake that did not complete or was refused).
        connected_for: Option<std::time::Duration>,
        /// Events forwarded to it (a feed: test events included); 0 for other roles.
        events_sent: u64,
        /// Events received on it (a subscription: new, duplicate or refused alike); 0 for
        /// other roles.
        events_received: u64,
    },
    /// An accept was refused before anything was sent.
    Refused {
        /// Which listener.
        listener: ListenerRole,
        /// Who.
        peer: Peer,
        /// Why, as one of a fixed set of causes (for counting).
        cause: RefusalCause,
        /// Why (whitelist, connection limit, per-address limit, role not enabled), naming
        /// the limit's flag.
        reason: String,
    },
    /// More accepts were refused in one window than
    /// [`Limits::refusals_logged_max`](crate::config::Limits::refusals_logged_max): those not
    /// reported as [`Event::Refused`], by cause. Reported once when the window ends (or at
    /// shutdown).
    RefusalsSuppressed {
        /// The refusals counted but not reported.
        counts: RefusalCounts,
        /// The window.
        window: std::time::Duration,
    },
    /// A TLS connection completed its handshake and was allowed in; it now speaks VTP.
    Secured {
        /// Connection.
        conn: ConnId,
        /// Who.
        peer: Peer,
        /// The verified client certificate's identity, if the peer presented one.
        identity: Option<Identity>,
    },
    /// A Unix-socket peer was accepted without a whitelist check.
    UnixPeerNotWhitelisted {
        /// Connection.
        conn: ConnId,
    },
    /// A new event was accepted (and will be forwarded and delivered).
    Accepted {
        /// Connection it arrived on.
        conn: ConnId,
        /// Its `ivorn`.
        ivorn: Arc<str>,
        /// Its identity.
        key: EventKey,
        /// Who sent it: the author's address and port, or the upstream's endpoint.
        remote: Remote,
        /// Its signature status (`None` with signatures off).
        signature: Option<Arc<crate::signature::Signature>>,
    },
    /// An author's event was refused with a nak.
    Rejected {
        /// Connection.
        conn: ConnId,
        /// What was wrong; its `Display` is the nak's reason, as sent.
        reason: Violation,
        /// Who sent it: the author's address and port.
        remote: Remote,
    },
    /// A record of an external source was skipped: not a VOEvent, or one that fails the
    /// checks an author's submission gets. Its position is done at once (committable).
    ExternalSkipped {
        /// The external source.
        conn: ConnId,
        /// Where the record sits.
        at: Position,
        /// The event's ivorn, when it was read.
        ivorn: Option<Arc<str>>,
        /// Why; its `Display` is the nak text an author would have got.
        reason: Violation,
    },
    /// An event was a duplicate and was not relayed.
    Duplicate {
        /// Connection.
        conn: ConnId,
        /// Its identity.
        key: EventKey,
        /// Its `ivorn`.
        ivorn: Arc<str>,
        /// Who sent it: the author's address and port, or the upstream's endpoint.
        remote: Remote,
    },
    /// A subscriber set its filters (authenticate reply).
    FiltersSet {
        /// Connection.
        conn: ConnId,
        /// Filters accepted.
        accepted: usize,
        /// The accepted filters' expressions (`accepted` of them), as the subscriber sent them.
        filters: Vec<Arc<str>>,
        /// Filters refused, each with its reason.
        refused: Vec<(String, String)>,
    },
    /// A subscriber nak'd an event we sent.
    SubscriberNak {
        /// Connection.
        conn: ConnId,
        /// The nak's `Origin` (the event's ivorn).
        origin: String,
        /// The nak's `Result`, if any.
        reason: Option<String>,
    },
    /// The peer sent something we ignored or refused (bad XML, wrong message for the role...).
    ProtocolViolation {
        /// Connection.
        conn: ConnId,
        /// What was wrong; its `Display` is the text to log.
        detail: Violation,
    },
    /// A connection passed
    /// [`Limits::violations_logged_max`](crate::config::Limits::violations_logged_max)
    /// violations in the current window: its further violations in the window are counted
    /// (and close it past [`Limits::violations_max`](crate::config::Limits::violations_max))
    /// but not reported. Reported once per connection per window.
    ViolationsSuppressed {
        /// Connection.
        conn: ConnId,
        /// Violations reported in the window before this.
        reported: u32,
        /// The window.
        window: std::time::Duration,
    },
    /// Author role: the broker acknowledged our event.
    SubmissionAcked {
        /// Connection.
        conn: ConnId,
    },
    /// Author role: the broker refused our event.
    SubmissionNaked {
        /// Connection.
        conn: ConnId,
        /// The broker's reason (`Meta/Result`), if any.
        reason: Option<String>,
    },
    /// The node's signer ([`Node::set_signer`](crate::Node::set_signer)) could not sign a
    /// message the node originated (a test event, an authenticate reply): it went out
    /// unsigned.
    SigningFailed {
        /// Why.
        reason: String,
    },
    /// Author role: no receipt (timeout, connect failure or early close).
    SubmissionFailed {
        /// Connection.
        conn: ConnId,
        /// What happened.
        reason: CloseReason,
    },
    /// A subscription will retry after a delay.
    Reconnecting {
        /// Index of the upstream in the configuration.
        upstream: usize,
        /// Endpoint that will be tried.
        endpoint: Arc<str>,
        /// Delay.
        delay: std::time::Duration,
        /// Why: how the previous connection or attempt ended.
        reason: CloseReason,
        /// The endpoint of that connection or attempt: `endpoint` itself, or the one before it
        /// when the upstream has several (failover).
        previous: Arc<str>,
    },
    /// Entries were removed from the seen-index by expiry.
    Pruned {
        /// How many.
        removed: usize,
    },
    /// The seen-index's fill level changed: high at 80 % of
    /// [`Limits::seen_entries_max`](crate::config::Limits::seen_entries_max), full at 100 %
    /// (new entries then evict others over their fair share, or are refused), back to high
    /// below 90 % and to normal below 70 %. Reported once per change.
    SeenIndexLevel {
        /// The new level.
        level: SeenLevel,
        /// Entries now.
        entries: usize,
        /// The bound.
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_print_with_their_port_and_count_by_address() {
        let v4 = Peer::Tcp("127.0.0.1:48272".parse().expect("an address"));
        let v6 = Peer::Tcp("[2001:db8::1:2]:48272".parse().expect("an address"));
        let mapped = Peer::Tcp("[::ffff:192.0.2.7]:5".parse().expect("an address"));
        assert_eq!(v4.to_string(), "127.0.0.1:48272");
        assert_eq!(v6.to_string(), "[2001:db8::1:2]:48272");
        assert_eq!(
            mapped.to_string(),
            "192.0.2.7:5",
            "shown as the IPv4 peer it is"
        );
        assert_eq!(Peer::Local.to_string(), "a Unix-socket peer");
        assert_eq!(v4.ip(), Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(mapped.network(), Some(IpAddr::from([192, 0, 2, 7])));
        assert_eq!(v6.network(), "2001:db8::".parse().ok());
        assert_eq!(Peer::Local.network(), None);
        let dialled = Remote::Dialled(Arc::from("tls:broker.example:8099"));
        assert_eq!(dialled.to_string(), "tls:broker.example:8099");
        assert_eq!(dialled.peer(), None);
        assert_eq!(Remote::Accepted(v4).peer(), Some(v4));
    }

    #[test]
    fn roles_and_listeners_print_as_words() {
        let roles = [
            ConnRole::Intake,
            ConnRole::Feed,
            ConnRole::Subscription,
            ConnRole::Submission,
        ];
        let words: Vec<String> = roles.iter().map(ToString::to_string).collect();
        assert_eq!(words, ["author", "subscriber", "upstream", "broker"]);
        assert_eq!(ListenerRole::Receive.to_string(), "receive");
        assert_eq!(ListenerRole::Broadcast.to_string(), "broadcast");
    }

    #[test]
    fn each_close_reason_has_its_class() {
        let rows = [
            (CloseReason::Done, "done"),
            (CloseReason::ConnectRefused, "refused"),
            (CloseReason::ConnectFailed("no route".into()), "unreachable"),
            (CloseReason::PeerClosed, "closed"),
            (CloseReason::UpstreamSilent, "silent"),
            (CloseReason::IamaliveUnanswered, "silent"),
            (CloseReason::IntakeDeadline, "silent"),
            (CloseReason::ReceiptTimeout, "silent"),
            (CloseReason::OutboxFull, "slow"),
            (CloseReason::OutstandingAcks(3), "slow"),
            (CloseReason::SubscriberNak, "protocol"),
            (
                CloseReason::TooManyViolations {
                    count: 101,
                    window: std::time::Duration::from_secs(10),
                },
                "protocol",
            ),
            (CloseReason::Tls("bad certificate".into()), "tls"),
            (CloseReason::TlsHandshakeTimeout, "tls"),
            (CloseReason::NotAuthorized("no".into()), "unauthorized"),
            (CloseReason::Shutdown, "shutdown"),
        ];
        for (reason, class) in rows {
            assert_eq!(reason.class().to_string(), class, "{reason}");
        }
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            CloseReason::connect_failed(&refused),
            CloseReason::ConnectRefused
        );
        assert_eq!(
            CloseReason::ConnectRefused.to_string(),
            "connection refused"
        );
        let other = std::io::Error::other("no address for broker.example");
        assert_eq!(
            CloseReason::connect_failed(&other),
            CloseReason::ConnectFailed("no address for broker.example".into())
        );
    }
}
