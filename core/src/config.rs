//! Node configuration: identity, timings, limits and policy switches.
//!
//! Every timing and limit of the node is a field here, with Comet's value (or our recommended
//! one, docs/protocol.md §7.1) as the default. Where Comet and VTP 2.0 disagree, a [`Policy`]
//! switch offers both, VTP 2.0 being the default.

use std::time::Duration;

use crate::backoff::BackoffConfig;
use crate::endpoint::DialAddr;
use crate::frame::FRAME_LEN_MAX_DEFAULT;
use crate::identity::IdentityRule;
use crate::message::ParseLimits;
use crate::signature::AuthorKey;
use crate::whitelist::Whitelist;

/// Everything a [`Node`](crate::node::Node) needs to know at construction.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// This node's IVOA identifier (`--local-ivo`): the `Response` of its receipts and the
    /// `Origin` of its iamalive and authenticate messages. Required to receive or broadcast.
    pub local_ivo: Option<String>,
    /// Product string put in test events, e.g. `"vtp 0.1.0"`.
    pub product: String,
    /// Timings.
    pub timing: Timing,
    /// Bounds on peer input and on state.
    pub limits: Limits,
    /// Choices where implementations differ.
    pub policy: Policy,
    /// Peers allowed to submit events (`--author-whitelist`).
    pub author_whitelist: Whitelist,
    /// Peers allowed to subscribe (`--subscriber-whitelist`).
    pub subscriber_whitelist: Whitelist,
    /// Filters this node sends upstream in its authenticate replies (`--filter`).
    pub filters: Vec<String>,
    /// Upstream brokers to subscribe to. Each upstream is one subscription; its endpoints are
    /// tried in turn (failover), one connection at a time.
    pub upstreams: Vec<Upstream>,
    /// Certificate identities allowed to submit (`--author-identity`). When not empty, an
    /// author must connect over TLS and present a verified client certificate one of these
    /// names, in addition to passing the IP whitelist; plain connections are refused.
    pub author_identities: Vec<IdentityRule>,
    /// Certificate identities allowed to subscribe (`--subscriber-identity`), as
    /// [`author_identities`](Self::author_identities).
    pub subscriber_identities: Vec<IdentityRule>,
    /// Keys bound to the streams they may sign for (`--author-key`): see
    /// [`AuthorKey`]. Empty: any trusted key signs for any stream.
    pub author_keys: Vec<AuthorKey>,
}

impl Config {
    /// Defaults with the given local IVOID (or none, for a plain subscriber or author).
    pub fn new(local_ivo: Option<String>) -> Self {
        Self {
            local_ivo,
            product: concat!("vtp ", env!("CARGO_PKG_VERSION")).to_owned(),
            timing: Timing::default(),
            limits: Limits::default(),
            policy: Policy::default(),
            author_whitelist: Whitelist::allow_all(),
            subscriber_whitelist: Whitelist::allow_all(),
            filters: Vec::new(),
            upstreams: Vec::new(),
            author_identities: Vec::new(),
            subscriber_identities: Vec::new(),
            author_keys: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new(None)
    }
}

/// One upstream subscription: endpoints tried in order, one connection at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The brokers' addresses, ports resolved (parse a string with
    /// [`DialAddr::parse`] and [`PORT_SUBSCRIBE`](crate::endpoint::PORT_SUBSCRIBE)). Never
    /// empty.
    pub endpoints: Vec<DialAddr>,
}

/// The longest iamalive period VTP allows: a subscriber must hear from its broker after at
/// most 90 s of inactivity (VTP 2.0 §5, §7.3; docs/protocol.md §6).
pub const IAMALIVE_PERIOD_MAX: Duration = Duration::from_secs(90);

/// Timings (defaults from Comet; docs/protocol.md §6).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Timing {
    /// An author connection is closed this long after accept, reply or not (20 s).
    pub intake_deadline: Duration,
    /// Broker: period of the iamalive tick to subscribers (60 s). [`crate::node::Node::new`]
    /// refuses zero and anything over [`IAMALIVE_PERIOD_MAX`].
    pub iamalive_period: Duration,
    /// Subscriber: drop the connection after this long without a valid frame (120 s).
    pub subscriber_silence: Duration,
    /// Author: how long to wait for the receipt, counted from the connect attempt (20 s).
    pub receipt_timeout: Duration,
    /// Broker: interval of test events to subscribers; `None` disables (3600 s; first at start).
    pub test_event_interval: Option<Duration>,
    /// Seen-index retention (`--seen-retention`, 30 days).
    pub seen_retention: Duration,
    /// Seen-index pruning period (6 h; first at start).
    pub prune_interval: Duration,
    /// Reconnect back-off of subscriptions.
    pub backoff: BackoffConfig,
    /// A TLS connection a listener accepted is closed if its handshake has not completed this
    /// long after accept (10 s; `--tls-handshake-timeout`).
    pub handshake_deadline: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            intake_deadline: Duration::from_secs(20),
            iamalive_period: Duration::from_secs(60),
            subscriber_silence: Duration::from_secs(120),
            receipt_timeout: Duration::from_secs(20),
            test_event_interval: Some(Duration::from_secs(3600)),
            seen_retention: Duration::from_secs(30 * 24 * 3600),
            prune_interval: Duration::from_secs(6 * 3600),
            backoff: BackoffConfig::default(),
            handshake_deadline: Duration::from_secs(10),
        }
    }
}

/// Bounds on everything a peer can make the node hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frame payload accepted (1 MiB). Checked on the prefix, before allocating.
    pub frame_len_max: u32,
    /// XML parser bounds.
    pub parse: ParseLimits,
    /// Close a feed at the iamalive tick when this many iamalives are unanswered (1).
    pub iamalive_missed_max: u32,
    /// Close a feed at an iamalive tick when this many events sent before the previous tick are
    /// still without a receipt (10). Comet counts every unacknowledged event at the tick, which
    /// drops a healthy subscriber whose acks are in flight during a burst; counting only events
    /// a whole period old does not.
    pub outstanding_acks_max: u32,
    /// Most connections accepted at once per listener role (authors; subscribers), so idle
    /// subscribers can never lock authors out; beyond, accepts are refused
    /// (`--max-connections`, 20,000; the `vtp` binary lowers it to fit its file-descriptor
    /// limit).
    pub connections_max: usize,
    /// Most author connections open at once from one address (`--author-connections-per-address`,
    /// 32); beyond, accepts from that address are refused (closed at once, nothing sent) while
    /// other addresses are served. An address is an IPv4 address or an IPv6 /64 (an
    /// IPv4-mapped IPv6 address counts as IPv4), as for the seen-index's shares; Unix-socket
    /// peers are not counted.
    ///
    /// Why 32: an author connection carries one event and lives from accept to its receipt,
    /// milliseconds on a healthy path and at most
    /// [`Timing::intake_deadline`] (20 s). Even a pipeline submitting a burst from one host
    /// rarely has more than a handful open at once (`vtp-bench` drives 8 to 32 concurrent
    /// authors); 32 leaves room for that while one address that opens connections and sends
    /// nothing holds at most 32 of the [`connections_max`](Self::connections_max) slots and
    /// file descriptors, so it can no longer lock other authors out.
    pub author_connections_per_address: usize,
    /// Most subscriber connections open at once from one address
    /// (`--subscriber-connections-per-address`, 64); beyond, accepts from that address are
    /// refused. Addresses as for
    /// [`author_connections_per_address`](Self::author_connections_per_address).
    ///
    /// Why 64: a subscriber is one long-lived connection per listening process; one address
    /// usually runs one or two, but a site behind NAT, or a host running a listener per
    /// instrument team, can run dozens. 64 serves them while one address can take at most 64
    /// of the subscriber slots.
    pub subscriber_connections_per_address: usize,
    /// Most [`Event::Refused`] reports per [`refusals_window`](Self::refusals_window) (5):
    /// further refusals in the window are only counted ([`crate::Node::refusals`]) and reported
    /// together as one [`Event::RefusalsSuppressed`] when the window ends, so a flood of
    /// connections costs a bounded number of log lines.
    ///
    /// [`Event::Refused`]: crate::Event::Refused
    /// [`Event::RefusalsSuppressed`]: crate::Event::RefusalsSuppressed
    pub refusals_logged_max: u32,
    /// The window [`refusals_logged_max`](Self::refusals_logged_max) counts in (10 s): it
    /// starts at the first refusal after the previous window ended.
    pub refusals_window: Duration,
    /// Most entries in the seen-index (`--seen-max`, 500,000). When full, a new entry evicts
    /// the oldest of a source over its fair share, or an author over its share is naked: see
    /// [`crate::seen`].
    pub seen_entries_max: usize,
    /// Most distinct sources (author networks, upstreams) the seen-index tracks shares for
    /// (1024); sources beyond share one bucket.
    pub seen_sources_max: usize,
    /// Most filters one subscriber may send; extra ones are dropped (logged).
    pub filters_per_feed_max: usize,
    /// Longest filter expression accepted, in bytes.
    pub filter_len_max: usize,
    /// Most protocol violations one connection may commit within
    /// [`violations_window`](Self::violations_window) and keep its connection
    /// (`--violations-max`, 100); one more closes it with [`CloseReason::TooManyViolations`].
    ///
    /// [`CloseReason::TooManyViolations`]: crate::CloseReason::TooManyViolations
    pub violations_max: u32,
    /// The window [`violations_max`](Self::violations_max) and
    /// [`violations_logged_max`](Self::violations_logged_max) count in (10 s): it starts at a
    /// connection's first violation and a new one starts at the first violation after it ends.
    pub violations_window: Duration,
    /// Most [`Event::ProtocolViolation`] reports per connection per window (5); the next
    /// violation is reported once as [`Event::ViolationsSuppressed`] and later ones in that
    /// window are only counted, so a flood cannot flood the log.
    ///
    /// [`Event::ProtocolViolation`]: crate::Event::ProtocolViolation
    /// [`Event::ViolationsSuppressed`]: crate::Event::ViolationsSuppressed
    pub violations_logged_max: u32,
    /// Most TLS handshakes in progress at once on all listeners (`--tls-handshakes-max`,
    /// 256); a TLS connection accepted beyond it is refused (closed at once), so a flood of
    /// handshakes costs bounded CPU and memory and ends within
    /// [`Timing::handshake_deadline`].
    pub handshakes_max: usize,
    /// Most records of one external source (a Kafka consumer) handed in and not yet
    /// committable (65,536): beyond it [`Node::handle_external`](crate::Node::handle_external)
    /// answers [`ExternalError::Busy`](crate::node::ExternalError::Busy), so a store that
    /// falls behind slows the source instead of growing memory.
    pub external_pending_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_len_max: FRAME_LEN_MAX_DEFAULT,
            parse: ParseLimits::default(),
            iamalive_missed_max: 1,
            outstanding_acks_max: 10,
            connections_max: 20_000,
            author_connections_per_address: 32,
            subscriber_connections_per_address: 64,
            refusals_logged_max: 5,
            refusals_window: Duration::from_secs(10),
            seen_entries_max: 500_000,
            seen_sources_max: 1024,
            filters_per_feed_max: 32,
            filter_len_max: 4096,
            violations_max: 100,
            violations_window: Duration::from_secs(10),
            violations_logged_max: 5,
            handshakes_max: 256,
            external_pending_max: 65_536,
        }
    }
}

/// Choices where Comet and VTP 2.0 differ, and other policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// How the receiver answers an author's duplicate.
    pub duplicate_reply: DuplicateReply,
    /// What a broker does when a subscriber naks an event.
    pub subscriber_nak: SubscriberNak,
    /// Which VOEvent versions the receiver accepts from authors.
    pub accept_versions: AcceptVersions,
    /// What a feed receives when every filter it sent was refused.
    pub invalid_filters: InvalidFilters,
    /// Schema validation of author submissions.
    pub schema: SchemaCheck,
    /// When receipts, forwards and deliveries of a new event go out relative to its
    /// seen-index record becoming durable.
    pub durability: Durability,
    /// When a new event's [`Action::Deliver`](crate::Action::Deliver) is queued: with its
    /// receipt, or ahead of its record for a host that spools deliveries.
    pub delivery_timing: DeliveryTiming,
    /// What the node does with OpenPGP signatures on incoming events (`--signatures`).
    pub signatures: SignaturePolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            duplicate_reply: DuplicateReply::Ack,
            subscriber_nak: SubscriberNak::Keep,
            accept_versions: AcceptVersions::V2_0,
            invalid_filters: InvalidFilters::SendNothing,
            schema: SchemaCheck::V2_0,
            durability: Durability::BeforeReply,
            delivery_timing: DeliveryTiming::WithReceipt,
            signatures: SignaturePolicy::Verify,
        }
    }
}

/// What the node does with the OpenPGP signatures of new events, from authors, upstreams and
/// external sources alike (see [`crate::signature`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignaturePolicy {
    /// Signatures are not looked at; deliveries carry no status.
    Off,
    /// Every new event's status is decided, reported and carried by its delivery; none is
    /// refused for it.
    Verify,
    /// As `Verify`, and an event whose status is not `valid` is refused: an author's
    /// submission is naked with the status and its reason, an upstream's event is acked and
    /// dropped, an external record skipped (both reported).
    Require,
}

impl SignaturePolicy {
    /// The name used on the command line: `off`, `verify` or `require`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Verify => "verify",
            Self::Require => "require",
        }
    }
}

/// Receiver's answer to a duplicate submission (docs/protocol.md §7.1 item 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateReply {
    /// VTP 2.0 §6.3: a nak is not appropriate for a duplicate; ack it and do not relay it.
    Ack,
    /// Comet: nak with `Event rejected: Previously seen by this broker`.
    Nak,
}

/// Broker's reaction to a nak from a subscriber (docs/protocol.md §7.1 item 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriberNak {
    /// VTP 2.0 §6.3, §7.3: do not redeliver that event; keep the connection (counted, logged).
    Keep,
    /// Comet: close the connection.
    Disconnect,
}

/// VOEvent versions the receiver accepts from authors (docs/protocol.md §7.1 item 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptVersions {
    /// Only the VOEvent 2.0 namespace, like Comet's 2.0-only schema check.
    V2_0,
    /// 2.0, 1.1 and no namespace.
    Any,
}

/// Schema validation of author submissions (docs/protocol.md §4.1). Events from upstream brokers
/// are never schema-checked, as in Comet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaCheck {
    /// No schema validation: a well-formed VOEvent that passes the other receiver checks is
    /// accepted.
    Off,
    /// Like Comet: a submission in the VOEvent 2.0 namespace must be valid against the VOEvent
    /// 2.0 schema ([`schema::validate_voevent_2_0`](crate::schema::validate_voevent_2_0)), or
    /// it is nak'd with the violation. 1.1 and namespace-less packets, which only
    /// [`AcceptVersions::Any`] lets through, are not schema-checked.
    V2_0,
}

/// Delivery to a subscriber whose filters were all refused (docs/protocol.md §7.1 item 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidFilters {
    /// Send it nothing but keep-alives (logged): it asked for a subset and we cannot compute it.
    SendNothing,
    /// Comet: an empty filter set means everything.
    SendEverything,
}

/// When a new event's [`Action::Deliver`] is queued relative to its [`Action::Persist`] (see the
/// crate docs, "Durability").
///
/// [`Action::Deliver`]: crate::Action::Deliver
/// [`Action::Persist`]: crate::Action::Persist
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryTiming {
    /// With the event's receipt and forwards: after its `Persist`, and under
    /// [`Durability::BeforeReply`] held until that record is durable, so handlers only ever see
    /// events whose record is on disk. Handler work queued in memory is lost in a crash.
    WithReceipt,
    /// Just before the event's `Persist`, never held. For a host that writes every delivery
    /// ahead to a durable spool which a store committing in order makes durable no later than
    /// the record (the vtp store's handler spool), and runs the handlers once that commit is
    /// done: the receipt, held behind the record, then never goes out for an event whose
    /// handler work could be lost in a crash. A host without such a spool should keep
    /// [`WithReceipt`](Self::WithReceipt): with this, its handlers may see an event before its
    /// record is durable.
    BeforeRecord,
}

/// When a new event's receipt, forwards and delivery go out relative to the commit of its
/// seen-index record (see the crate docs, "Durability").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Hold the receipt (the ack to the author, with its close, or the ack to the upstream),
    /// every forward and the delivery of a new event until its [`Action::Persist`] is reported
    /// durable ([`Node::handle_persisted`]); hold the receipt of a duplicate until every record
    /// persisted before it is durable. A crash then never loses a record of an event that was
    /// acked or forwarded, so a restarted node forwards no event twice.
    ///
    /// [`Action::Persist`]: crate::Action::Persist
    /// [`Node::handle_persisted`]: crate::Node::handle_persisted
    BeforeReply,
    /// Reply, forward and deliver at once, while the record is still on its way to the disk.
    /// A crash can lose the last records: a restarted node may then forward those events again
    /// when they are resubmitted or relayed to it.
    Async,
}
