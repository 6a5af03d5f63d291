//! Peer faults as a typed value, [`Violation`]: what a peer sent that the node refused or
//! ignored, with the text the node sends or logs about it.

use std::fmt;
use std::sync::Arc;

use crate::frame::FrameError;
use crate::ivoid::EventIdError;
use crate::message::{ParseError, TransportRole, VoEventNamespace};
use crate::output::ConnRole;
use crate::schema::SchemaError;

/// A peer's fault, detected by the node.
///
/// The node reports every fault of a peer as a `Violation`: in [`Event::Rejected`] (an
/// author's submission refused with a nak), in [`Event::ProtocolViolation`] (logged, and
/// ignored or closed on) and in [`CloseReason::FramingError`]. `Display` writes the text the
/// node sends and logs, byte for byte: the `Result` of an author's nak (Comet's
/// `Event rejected: ...` forms, which authors and tests compare), or the log line of a fault
/// that is only reported. Where the same fault reads differently on different connections (an
/// unparsable message is naked on an intake and ignored from an upstream), the variant carries
/// the [`ConnRole`] it arrived on.
///
/// That text already contains the message of the error a variant wraps, so
/// [`source`](std::error::Error::source) is `None`: a report walking the chain would otherwise
/// print that message twice.
///
/// Variants follow the order of the checks: framing, parsing, the message's kind for the
/// connection, the receiver checks of docs/protocol.md §4.1 (IVOID, version, schema), then
/// Transport messages out of turn.
///
/// [`Event::Rejected`]: crate::Event::Rejected
/// [`Event::ProtocolViolation`]: crate::Event::ProtocolViolation
/// [`CloseReason::FramingError`]: crate::CloseReason::FramingError
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The byte stream cannot be cut into frames (a length prefix over the limit): the stream
    /// cannot continue, so the connection is closed. Any role.
    ///
    /// Displays the frame error alone; an author also gets a nak whose reason is
    /// `Event rejected: ` followed by this text.
    Frame(FrameError),
    /// A frame is not a VTP message: not well-formed XML, neither a VOEvent nor a Transport
    /// message, a Transport message without a role or Origin or with an unknown role...
    ///
    /// On an intake the submission is naked with `Event rejected: <error>`; from a subscriber,
    /// an upstream or a broker it is ignored (`unparsable message from <peer>, ignored: <error>`).
    Unparsable {
        /// The connection it arrived on.
        on: ConnRole,
        /// What the parser refused.
        error: ParseError,
    },
    /// An author sent a Transport message where its submission, a VOEvent, belongs: naked.
    UnexpectedTransport {
        /// The Transport message's role.
        role: TransportRole,
    },
    /// A subscriber (on a feed) or a broker (answering our submission) sent a VOEvent where
    /// only Transport messages belong: ignored.
    UnexpectedEvent {
        /// The connection it arrived on.
        on: ConnRole,
        /// The event's `ivorn`.
        ivorn: String,
    },
    /// An event's IVORN is not a valid IVOID or has no local ID (docs/protocol.md §4.1).
    ///
    /// On an intake the submission is naked with Comet's reason (`Invalid IVOID: <ivorn>` or
    /// `No per-event local ID`); from an upstream the event is acked and dropped.
    BadIvorn {
        /// The connection it arrived on.
        on: ConnRole,
        /// The IVORN as sent.
        ivorn: String,
        /// What is wrong with it.
        error: EventIdError,
    },
    /// An author's event is not VOEvent 2.0 and the node accepts only 2.0
    /// ([`AcceptVersions::V2_0`](crate::config::AcceptVersions::V2_0)): naked.
    UnsupportedVersion {
        /// The root element's namespace, classified.
        namespace: VoEventNamespace,
        /// The namespace URI, when there is one.
        namespace_uri: Option<String>,
    },
    /// An author's VOEvent 2.0 event is not valid against the schema
    /// ([`SchemaCheck::V2_0`](crate::config::SchemaCheck::V2_0)): naked.
    Schema(SchemaError),
    /// The seen-index is full and the event's source already holds its fair share of it
    /// ([`crate::seen`]): an author's submission is naked (`Event rejected: seen-index quota
    /// for this source exhausted; try later`), so that it evicts nobody else's entries. An
    /// upstream recycles its own entries instead, so its event is refused only when the bound
    /// is below the number of sources; it is then acked and dropped (logged with this text).
    SeenQuota,
    /// The store's commits fail (a full or failing disk) and replies wait for durable records
    /// ([`Node::handle_store_status`](crate::Node::handle_store_status)): an author's new event
    /// is naked with [`NAK_STORE_UNAVAILABLE`](crate::node::NAK_STORE_UNAVAILABLE), not
    /// recorded. Not the author's fault; it may send the event again.
    StoreUnavailable,
    /// A record of an external source is larger than the node takes: `max` is the bound that
    /// refused it (the node's frame limit, or the host's on the records it reads).
    Oversize {
        /// The record's size in bytes.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The node requires valid signatures
    /// ([`SignaturePolicy::Require`](crate::config::SignaturePolicy::Require)) and this new
    /// event's is not: an author's submission is naked
    /// (`Event rejected: a valid OpenPGP signature is required; this event's signature is
    /// <status>: <reason>`); an upstream's event is acked and dropped, an external record
    /// skipped, both reported with the event's IVORN.
    Signature {
        /// The connection it arrived on.
        on: ConnRole,
        /// The event's IVORN.
        ivorn: String,
        /// The event's status, and its reason.
        signature: crate::signature::Signature,
    },
    /// An upstream sent an ack or a nak, though we send it nothing to answer: ignored.
    UnsolicitedReceipt {
        /// `Ack` or `Nak`.
        role: TransportRole,
    },
    /// A broker answered our submission with something other than its receipt (an ack or nak
    /// for another event, an iamalive...): ignored.
    NotOurReceipt {
        /// The Transport message's role.
        role: TransportRole,
        /// Its `Origin`.
        origin: String,
        /// The ivorn of the event we submitted.
        ivorn: Arc<str>,
    },
}

impl Violation {
    /// Every value [`Violation::kind`] returns.
    pub const KINDS: [&'static str; 14] = [
        "framing",
        "unparsable",
        "not_an_event",
        "unexpected_event",
        "bad_ivorn",
        "version",
        "schema",
        "seen_quota",
        "store_unavailable",
        "oversize",
        "signature",
        "unsolicited_receipt",
        "not_our_receipt",
        "other",
    ];

    /// The kind of fault, one of a small fixed set ([`Violation::KINDS`]) without the
    /// details: a label for metrics (`vtp_naks_total{reason="schema"}`), where the full text
    /// would make a new series for every event. `other` is for variants added later.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Frame(_) => "framing",
            Self::Unparsable { .. } => "unparsable",
            Self::UnexpectedTransport { .. } => "not_an_event",
            Self::UnexpectedEvent { .. } => "unexpected_event",
            Self::BadIvorn { .. } => "bad_ivorn",
            Self::UnsupportedVersion { .. } => "version",
            Self::Schema(_) => "schema",
            Self::SeenQuota => "seen_quota",
            Self::StoreUnavailable => "store_unavailable",
            Self::Oversize { .. } => "oversize",
            Self::Signature { .. } => "signature",
            Self::UnsolicitedReceipt { .. } => "unsolicited_receipt",
            Self::NotOurReceipt { .. } => "not_our_receipt",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => write!(f, "{e}"),
            Self::Unparsable {
                on: ConnRole::Intake,
                error,
            } => write!(f, "Event rejected: {error}"),
            Self::Unparsable { on, error } => {
                write!(f, "unparsable message from {}, ignored: {error}", peer(*on))
            }
            Self::UnexpectedTransport { role } => write!(
                f,
                "Event rejected: expected a VOEvent, got a Transport message (role {})",
                role.as_str()
            ),
            Self::UnexpectedEvent { on, ivorn } => write!(
                f,
                "{} sent an event ({ivorn}) where only Transport messages belong; ignored",
                peer(*on)
            ),
            Self::BadIvorn {
                on: ConnRole::Subscription,
                ivorn,
                error,
            } => write!(f, "event with invalid IVORN {ivorn} dropped: {error}"),
            Self::BadIvorn {
                ivorn,
                error: EventIdError::Invalid(e),
                ..
            } => write!(f, "Event rejected: Invalid IVOID: {ivorn} ({e})"),
            Self::BadIvorn { ivorn, error, .. } => {
                write!(f, "Event rejected: {}", error.nak_reason(ivorn))
            }
            Self::UnsupportedVersion {
                namespace,
                namespace_uri,
            } => {
                f.write_str(
                    "Event rejected: this broker accepts only VOEvent 2.0 \
                     (namespace http://www.ivoa.net/xml/VOEvent/v2.0); got ",
                )?;
                match (namespace, namespace_uri) {
                    (VoEventNamespace::V1_1, _) => f.write_str("VOEvent 1.1"),
                    (VoEventNamespace::None, _) => f.write_str("no namespace"),
                    (_, Some(uri)) => write!(f, "namespace {uri}"),
                    (_, None) => f.write_str("an unknown namespace"),
                }
            }
            Self::Schema(e) => write!(f, "Event rejected: {e}"),
            Self::SeenQuota => {
                f.write_str("Event rejected: seen-index quota for this source exhausted; try later")
            }
            Self::StoreUnavailable => f.write_str(crate::node::NAK_STORE_UNAVAILABLE),
            Self::Oversize { len, max } => write!(
                f,
                "Event rejected: {len} bytes, over the limit of {max} bytes for one event"
            ),
            Self::Signature {
                on: ConnRole::Intake,
                signature,
                ..
            } => write!(
                f,
                "Event rejected: a valid OpenPGP signature is required; this event's signature is {}",
                Status(signature)
            ),
            Self::Signature {
                on,
                ivorn,
                signature,
            } => write!(
                f,
                "event {ivorn} from {} dropped: a valid OpenPGP signature is required; its signature is {}",
                peer(*on),
                Status(signature)
            ),
            Self::UnsolicitedReceipt { role } => write!(
                f,
                "upstream sent an unsolicited {} receipt, ignored",
                role.as_str()
            ),
            Self::NotOurReceipt {
                role,
                origin,
                ivorn,
            } => write!(
                f,
                "broker sent {} with Origin {origin:?}, not a receipt for {ivorn}; ignored",
                role.as_str()
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// A status and its reason, without the signer (a nak names no key the node trusts).
struct Status<'a>(&'a crate::signature::Signature);

impl fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.status.as_str())?;
        match &self.0.detail {
            Some(detail) => write!(f, ": {detail}"),
            None => Ok(()),
        }
    }
}

/// Who is at the far end of a connection with this role, as the log texts name them.
fn peer(on: ConnRole) -> &'static str {
    match on {
        ConnRole::Intake => "author",
        ConnRole::Feed => "subscriber",
        ConnRole::Subscription => "upstream",
        ConnRole::Submission => "broker",
        ConnRole::External => "external source",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ivoid::IvoidError;
    use crate::signature::{Signature, StatusKind};

    /// One row per variant (and per branch of its text): the exact text, as sent or logged.
    #[test]
    fn each_violation_writes_its_wire_or_log_text() {
        let frame = FrameError::TooLong {
            len: 2_000_000,
            max: 1_048_576,
            swapped: None,
        };
        let version = |namespace, uri: Option<&str>| Violation::UnsupportedVersion {
            namespace,
            namespace_uri: uri.map(str::to_owned),
        };
        let only_2_0 = "Event rejected: this broker accepts only VOEvent 2.0 \
                        (namespace http://www.ivoa.net/xml/VOEvent/v2.0); got ";
        let rows: Vec<(Violation, String)> =
            vec![
            (Violation::Frame(frame.clone()), frame.to_string()),
            (
                Violation::Unparsable {
                    on: ConnRole::Intake,
                    error: ParseError::Empty,
                },
                "Event rejected: empty payload: a frame must carry one XML document".into(),
            ),
            (
                Violation::Unparsable {
                    on: ConnRole::Submission,
                    error: ParseError::NoRoot,
                },
                "unparsable message from broker, ignored: no root element: expected a VOEvent \
                 or Transport document"
                    .into(),
            ),
            (
                Violation::UnexpectedTransport {
                    role: TransportRole::Authenticate,
                },
                "Event rejected: expected a VOEvent, got a Transport message (role \
                 authenticate)"
                    .into(),
            ),
            (
                Violation::UnexpectedEvent {
                    on: ConnRole::Feed,
                    ivorn: "ivo://a.b/c#1".into(),
                },
                "subscriber sent an event (ivo://a.b/c#1) where only Transport messages belong; \
                 ignored"
                    .into(),
            ),
            (
                Violation::BadIvorn {
                    on: ConnRole::Intake,
                    ivorn: "ivo:/x".into(),
                    error: EventIdError::Invalid(IvoidError::NotIvoScheme),
                },
                format!(
                    "Event rejected: Invalid IVOID: ivo:/x ({})",
                    IvoidError::NotIvoScheme
                ),
            ),
            (
                Violation::BadIvorn {
                    on: ConnRole::Intake,
                    ivorn: "ivo://a.b/c".into(),
                    error: EventIdError::NoLocalId,
                },
                "Event rejected: No per-event local ID".into(),
            ),
            (
                Violation::BadIvorn {
                    on: ConnRole::Subscription,
                    ivorn: "ivo://a.b/c".into(),
                    error: EventIdError::NoLocalId,
                },
                format!(
                    "event with invalid IVORN ivo://a.b/c dropped: {}",
                    EventIdError::NoLocalId
                ),
            ),
            (
                version(VoEventNamespace::V1_1, Some("http://www.ivoa.net/xml/VOEvent/v1.1")),
                format!("{only_2_0}VOEvent 1.1"),
            ),
            (
                version(VoEventNamespace::None, None),
                format!("{only_2_0}no namespace"),
            ),
            (
                version(VoEventNamespace::Other, Some("urn:x")),
                format!("{only_2_0}namespace urn:x"),
            ),
            (
                version(VoEventNamespace::Other, None),
                format!("{only_2_0}an unknown namespace"),
            ),
            (
                Violation::Schema(SchemaError::WrongRoot { found: "x".into() }),
                format!(
                    "Event rejected: {}",
                    SchemaError::WrongRoot { found: "x".into() }
                ),
            ),
            (
                Violation::SeenQuota,
                "Event rejected: seen-index quota for this source exhausted; try later".into(),
            ),
            (
                Violation::StoreUnavailable,
                "Event rejected: storage unavailable at this broker; not recorded, try again later"
                    .into(),
            ),
            (
                Violation::Oversize { len: 5, max: 4 },
                "Event rejected: 5 bytes, over the limit of 4 bytes for one event".into(),
            ),
            (
                Violation::Signature {
                    on: ConnRole::Intake,
                    ivorn: "ivo://a.b/c#1".into(),
                    signature: Signature::with_detail(StatusKind::Invalid, "bad signature"),
                },
                "Event rejected: a valid OpenPGP signature is required; this event's signature \
                 is invalid: bad signature"
                    .into(),
            ),
            (
                Violation::Signature {
                    on: ConnRole::External,
                    ivorn: "ivo://a.b/c#1".into(),
                    signature: Signature::unsigned(),
                },
                "event ivo://a.b/c#1 from external source dropped: a valid OpenPGP signature is \
                 required; its signature is unsigned"
                    .into(),
            ),
            (
                Violation::UnsolicitedReceipt {
                    role: TransportRole::Nak,
                },
                "upstream sent an unsolicited nak receipt, ignored".into(),
            ),
            (
                Violation::NotOurReceipt {
                    role: TransportRole::Ack,
                    origin: "ivo://a.b/c#2".into(),
                    ivorn: Arc::from("ivo://a.b/c#1"),
                },
                "broker sent ack with Origin \"ivo://a.b/c#2\", not a receipt for ivo://a.b/c#1; \
                 ignored"
                    .into(),
            ),
        ];
        for (violation, text) in rows {
            assert_eq!(violation.to_string(), text, "{violation:?}");
            assert!(std::error::Error::source(&violation).is_none());
            assert!(
                Violation::KINDS.contains(&violation.kind()),
                "{violation:?}"
            );
        }
    }
}
