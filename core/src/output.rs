//! What the node asks of its runtime ([`Action`]) and tells its application ([`Event`]).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::endpoint::DialAddr;
use crate::identity::Identity;
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

/// The far end of an accepted connection, for the whitelist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer.
    Ip(IpAddr),
    /// A Unix-domain socket peer: not subject to IP whitelists (logged).
    Local,
}

impl Peer {
    /// The network this peer counts as wherever the node bounds what one source may hold (the
    /// per-address connection caps, the seen-index's shares): its IPv4 address (an IPv4-mapped
    /// IPv6 address counts as IPv4) or its IPv6 /64 (host bits zero). `None` for a Unix-socket
    /// peer.
    pub fn network(self) -> Option<IpAddr> {
        match self {
            Self::Local => None,
            Self::Ip(ip) => Some(match ip.to_canonical() {
                IpAddr::V4(v4) => IpAddr::V4(v4),
                IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            }),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Local => f.write_str("a Unix-socket peer"),
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
    /// An outgoing connection could not be established.
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
            Self::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            Self::Shutdown => f.write_str("shutting down"),
            Self::TlsHandshakeTimeout => f.write_str("TLS handshake not completed in time"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::NotAuthorized(e) => write!(f, "not authorized: {e}"),
        }
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
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("ivorn", &self.ivorn)
            .field("key", &self.key)
            .field("payload_len", &self.payload.len())
            .field("source", &self.source)
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
    /// Run the event handlers on an accepted event. With
    /// [`DeliveryTiming::BeforeRecord`](crate::config::DeliveryTiming::BeforeRecord) it comes
    /// just before the event's `Persist`, never held; otherwise with the receipt.
    Deliver(Delivery),
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
            | Self::Deliver(_) => None,
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
            Self::Deliver(d) => write!(f, "Deliver({d:?})"),
        }
    }
}

/// Application news, for logs, metrics and embedding programs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum Event {
    /// A connection was accepted or established.
    PeerUp {
        /// Connection.
        conn: ConnId,
        /// What it is for.
        role: ConnRole,
        /// Who, for a connection a listener accepted (`None` for the node's own dials).
        peer: Option<Peer>,
        /// For a [`ConnRole::Subscription`]: the index of its upstream in
        /// [`Config::upstreams`](crate::Config::upstreams), as in [`Event::Reconnecting`].
        upstream: Option<usize>,
    },
    /// A connection ended (closed by us or the peer).
    PeerDown {
        /// Connection.
        conn: ConnId,
        /// What it was for.
        role: ConnRole,
        /// Who, for a connection a listener accepted (`None` for the node's own dials).
        peer: Option<Peer>,
        /// Why.
        reason: CloseReason,
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
    },
    /// An author's event was refused with a nak.
    Rejected {
        /// Connection.
        conn: ConnId,
        /// What was wrong; its `Display` is the nak's reason, as sent.
        reason: Violation,
    },
    /// An author's new event was naked because the store cannot record it now (its commits
    /// fail: [`Node::handle_store_status`](crate::Node::handle_store_status)); the nak's
    /// reason is [`NAK_STORE_UNAVAILABLE`](crate::node::NAK_STORE_UNAVAILABLE).
    StoreUnavailable {
        /// Connection.
        conn: ConnId,
    },
    /// An event was a duplicate and was not relayed.
    Duplicate {
        /// Connection.
        conn: ConnId,
        /// Its identity.
        key: EventKey,
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
