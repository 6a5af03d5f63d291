//! VTP messages: classify a frame payload as a VOEvent or a Transport message, and build
//! Transport messages.
//!
//! # Theory of operation
//!
//! [`parse`] reads a payload (one XML document, the body of one frame) in a single streaming
//! pass and classifies it by the *local name* of its root element (`VOEvent` or
//! `Transport`; a namespace prefix and the namespace URI are ignored, docs/protocol.md §2.2). It
//! returns borrowed views ([`Cow`] into the payload) and allocates only where a value needs
//! unescaping, decoding or concatenation. A Transport message or a VOEvent without processing
//! instructions, DOCTYPE or unusual tags (what every peer sends) takes a fast path with a
//! tokenizer of its own and the same checks, and no allocation; anything else, and anything the
//! fast path would refuse, is read by quick-xml, whose verdict is the one returned. The schema
//! check of an author's VOEvent runs inside the same pass
//! ([`schema::parse_and_validate`](crate::schema::parse_and_validate)). [`parse_routing`]
//! is [`parse()`] without extracting what a node never reads.
//!
//! - For a **VOEvent** it extracts the root's attributes and the byte span of the root element
//!   (the V2 §8 de-duplication identity and the bytes a detached signature covers), but still
//!   reads the whole document to the end.
//! - For a **Transport** it also extracts `Origin`, `Response`, `TimeStamp` and `Meta`
//!   (`Param`, `Result` and the legacy `filter` carrier of docs/protocol.md §3.3).
//!
//! Every payload is checked for well-formedness as it is read, because a relay must not pass on
//! a document that Comet (lxml) would refuse: end tags match, names and attributes are
//! well-formed, attribute names are unique, characters are legal XML 1.0 characters, only the five
//! predefined entities and numeric character references are used, there is exactly one root
//! element with only comments, processing instructions and whitespace around it, and no DOCTYPE
//! at all (no DTD, no entity declarations: billion-laughs and XXE are refused outright). Limits
//! ([`ParseLimits`]) bound nesting depth, attributes per element, Transport parameters and the
//! size of every captured value.
//!
//! Encodings: UTF-8 (also when undeclared or declared as ASCII) is validated up front. Other
//! ASCII-compatible encodings that `encoding_rs` knows (ISO-8859-*, windows-125x, Shift_JIS,
//! EUC-*, Big5, GB18030, ...) are accepted: the XML structure is read on the raw bytes (the
//! structural bytes are all below 0x40 and unambiguous in these encodings), the whole payload is
//! checked to decode without errors, and only captured values are decoded. UTF-16 and other
//! ASCII-incompatible encodings are refused.
//!
//! Values are returned the way a conforming XML processor reports them: entity and character
//! references resolved, line ends normalised (`\r\n` and `\r` become `\n`), and in attribute
//! values `\t`, `\n` and `\r` become spaces (attribute-value normalisation).
//!
//! The builders ([`build_transport`] and its conveniences, [`build_test_event`]) write the
//! docs/protocol.md §2.3 shapes and return a ready-to-send frame (4-byte big-endian length prefix
//! plus payload) in one exactly-sized allocation. They never fail: every value is XML-escaped, and
//! characters that XML 1.0 cannot carry (C0 controls other than tab, newline and carriage return;
//! U+FFFE; U+FFFF) are replaced with U+FFFD. Tab, newline and carriage return are written as
//! character references where a parser would otherwise normalise them, so every string the
//! builders accept comes back from [`parse`] unchanged (except `Origin`, `Response` and
//! `TimeStamp`, which [`parse`] trims of surrounding whitespace).

mod build;
mod parse;

/// Reference resolution, shared with the schema validator (one reading of `&...;`).
pub(crate) use parse::{Sink, char_piece, is_ws, parse_with, resolve_ref};

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

pub use build::{
    PROJECT_URI, build_ack, build_authenticate, build_authenticate_reply, build_iamalive,
    build_iamalive_reply, build_nak, build_test_event, build_transport,
};
pub use parse::{parse, parse_routing};

/// Namespace URI that vtp emits on every Transport message (Comet's; pygcn accepts it).
pub const TRANSPORT_NS: &str = "http://www.telescope-networks.org/xml/Transport/v1.1";

/// Namespace URI of VOEvent 2.0 (VOE2).
pub const VOEVENT_2_0_NS: &str = "http://www.ivoa.net/xml/VOEvent/v2.0";

/// Namespace URI of VOEvent 1.1.
pub const VOEVENT_1_1_NS: &str = "http://www.ivoa.net/xml/VOEvent/v1.1";

/// Name of the `Meta/Param` that carries one XPath filter (docs/protocol.md §3.3).
pub const XPATH_FILTER_PARAM: &str = "xpath-filter";

/// Bounds that [`parse`] enforces on every payload.
///
/// They cap the work and memory one hostile payload can cost. The defaults are far above
/// anything seen in the field (real packets are 0.5–10 kB with depth below 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Maximum element nesting depth; the root element is at depth 1. Default 64.
    pub depth_max: usize,
    /// Maximum number of attributes on one element (namespace declarations included).
    /// Default 64.
    pub attrs_max: usize,
    /// Maximum number of `Meta/Param` plus legacy `Meta/filter` entries kept from one Transport
    /// message. Default 64.
    pub transport_params_max: usize,
    /// Maximum size in bytes (as found in the payload, before unescaping) of each captured text
    /// or attribute value. Default 64 KiB.
    pub text_max: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            depth_max: 64,
            attrs_max: 64,
            transport_params_max: 64,
            text_max: 64 * 1024,
        }
    }
}

/// A classified frame payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// A VOEvent packet (root local name `VOEvent`).
    VoEvent(VoEvent<'a>),
    /// A Transport message (root local name `Transport`).
    Transport(Transport<'a>),
}

/// The envelope of a VOEvent packet: what routing, receipts and de-duplication need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoEvent<'a> {
    /// The `ivorn` attribute, entity-unescaped and attribute-value-normalised; never empty.
    /// A receipt's `Origin` must be exactly this string (docs/protocol.md §7.1 item 2).
    pub ivorn: Cow<'a, str>,
    /// The `role` attribute; [`EventRole::Observation`] when absent (the VOEvent 2.0 default).
    pub role: EventRole,
    /// Whether the `role` attribute was present (Comet drops events without one, §7.1 item 9).
    pub role_given: bool,
    /// The `version` attribute, if present (`"2.0"` or `"1.1"` in practice). Not validated.
    pub version: Option<Cow<'a, str>>,
    /// The namespace of the root element, classified.
    pub namespace: VoEventNamespace,
    /// The namespace URI of the root element as written, if it has one.
    pub namespace_uri: Option<Cow<'a, str>>,
    /// Byte span of the root element in the payload: from the '<' of the start tag through the
    /// '>' of the end tag (or of a self-closing start tag). Dedup key & signed bytes use it.
    pub element: Range<usize>,
    /// Where the root's `Who` and `WhereWhen` children are in the payload, for
    /// [`crate::summary::summarize_spans`]; `None` when the root has more than one of either
    /// (not a valid VOEvent 2.0; [`crate::summary::summarize`] then reads the whole event).
    pub spans: Option<crate::summary::Spans>,
}

/// The `role` of a VOEvent (VOE2 §3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventRole {
    /// `observation`: the default when `role` is absent.
    Observation,
    /// `prediction`.
    Prediction,
    /// `utility`.
    Utility,
    /// `test`: includes broker test events.
    Test,
}

impl EventRole {
    /// The attribute value for this role, as written on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Observation => "observation",
            Self::Prediction => "prediction",
            Self::Utility => "utility",
            Self::Test => "test",
        }
    }

    pub(crate) fn from_attr(value: &str) -> Option<Self> {
        match value {
            "observation" => Some(Self::Observation),
            "prediction" => Some(Self::Prediction),
            "utility" => Some(Self::Utility),
            "test" => Some(Self::Test),
            _ => None,
        }
    }
}

impl fmt::Display for EventRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The namespace of a VOEvent root element, classified (docs/protocol.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VoEventNamespace {
    /// [`VOEVENT_2_0_NS`].
    V2_0,
    /// [`VOEVENT_1_1_NS`].
    V1_1,
    /// No namespace (seen in the field: Dakota broker test events).
    None,
    /// Any other URI; see [`VoEvent::namespace_uri`].
    Other,
}

impl VoEventNamespace {
    pub(crate) fn classify(uri: Option<&str>) -> Self {
        match uri {
            None | Some("") => Self::None,
            Some(VOEVENT_2_0_NS) => Self::V2_0,
            Some(VOEVENT_1_1_NS) => Self::V1_1,
            Some(_) => Self::Other,
        }
    }
}

/// A Transport message (docs/protocol.md §2.2): keepalive, authenticate, ack or nak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport<'a> {
    /// The `role` attribute.
    pub role: TransportRole,
    /// The `version` attribute, if present (everyone sends `"1.0"`). Not validated.
    pub version: Option<Cow<'a, str>>,
    /// Text of the first `<Origin>` child, trimmed of surrounding whitespace; never empty.
    /// Not validated as an IVOID (docs/protocol.md §7.2).
    pub origin: Cow<'a, str>,
    /// Text of the first `<Response>` child, trimmed, if present.
    pub response: Option<Cow<'a, str>>,
    /// Text of the first `<TimeStamp>` child, trimmed, if present: kept as text and never
    /// validated (pygcn sends zone-less local time, docs/protocol.md §7.1 item 3).
    pub timestamp: Option<Cow<'a, str>>,
    /// `Meta/Param` `(name, value)` pairs in document order; a `Param` without either attribute
    /// is skipped.
    pub params: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Text of the first `Meta/Result`, untrimmed, if present (the nak reason).
    pub result: Option<Cow<'a, str>>,
    /// Legacy filter carrier: `Meta/filter[@type="xpath"]` element text (docs/protocol.md §3.3).
    pub legacy_filters: Vec<Cow<'a, str>>,
}

impl Transport<'_> {
    /// The XPath filters this message carries: the values of the `Meta/Param`s named
    /// `xpath-filter` in order, then the legacy `Meta/filter` texts.
    pub fn xpath_filters(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(|(name, _)| name == XPATH_FILTER_PARAM)
            .map(|(_, value)| value.as_ref())
            .chain(self.legacy_filters.iter().map(AsRef::as_ref))
    }
}

/// The `role` of a Transport message (V2 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportRole {
    /// `iamalive`: keepalive request or reply.
    IamAlive,
    /// `authenticate`: broker greeting or subscriber reply (which may carry filters).
    Authenticate,
    /// `ack`: receipt of a VOEvent.
    Ack,
    /// `nak`: refusal of a VOEvent.
    Nak,
}

impl TransportRole {
    /// The attribute value for this role, as written on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::IamAlive => "iamalive",
            Self::Authenticate => "authenticate",
            Self::Ack => "ack",
            Self::Nak => "nak",
        }
    }

    pub(crate) fn from_attr(value: &str) -> Option<Self> {
        match value {
            "iamalive" => Some(Self::IamAlive),
            "authenticate" => Some(Self::Authenticate),
            "ack" => Some(Self::Ack),
            "nak" => Some(Self::Nak),
            _ => None,
        }
    }
}

impl fmt::Display for TransportRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`parse`] refused a payload.
///
/// The `Display` text says what was wrong and is meant to be usable as a nak reason. Strings
/// copied from the payload are cut to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The payload has zero bytes.
    #[error("empty payload: a frame must carry one XML document")]
    Empty,
    /// The document contains a `<!DOCTYPE ...>` declaration.
    #[error("DOCTYPE/entity declarations are not allowed")]
    Doctype,
    /// An entity reference other than `&lt;` `&gt;` `&amp;` `&apos;` `&quot;`.
    #[error(
        "undefined entity reference `&{0};`: only &lt; &gt; &amp; &apos; &quot; and numeric \
         character references are allowed"
    )]
    UndefinedEntity(String),
    /// The document is not well-formed XML.
    #[error("malformed XML at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset in the payload where the problem was detected.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// The payload is not valid UTF-8, and declares no other encoding.
    #[error(
        "invalid UTF-8 at byte {offset}: send UTF-8 or declare the encoding in the XML declaration"
    )]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The payload is (or declares) an encoding that is not ASCII-compatible or not known.
    #[error("unsupported encoding `{0}`: send UTF-8 (or another ASCII-compatible encoding)")]
    UnsupportedEncoding(String),
    /// Elements are nested deeper than [`ParseLimits::depth_max`].
    #[error("elements are nested more than {max} levels deep")]
    TooDeep {
        /// The limit that was exceeded.
        max: usize,
    },
    /// An element has more attributes than [`ParseLimits::attrs_max`].
    #[error("an element has more than {max} attributes")]
    TooManyAttributes {
        /// The limit that was exceeded.
        max: usize,
    },
    /// A captured value or a count exceeds its limit in [`ParseLimits`].
    #[error("{what} exceeds the limit of {max}")]
    TooLarge {
        /// What was too large (e.g. "attribute value (bytes)").
        what: &'static str,
        /// The limit that was exceeded.
        max: usize,
    },
    /// The root element is neither `VOEvent` nor `Transport`.
    #[error("unknown root element `{0}`: expected VOEvent or Transport")]
    UnknownRoot(String),
    /// The document has no root element.
    #[error("no root element: expected a VOEvent or Transport document")]
    NoRoot,
    /// A second element follows the root element.
    #[error("more than one root element: a frame must carry exactly one VOEvent or Transport")]
    MultipleRoots,
    /// Text (other than whitespace) follows the root element.
    #[error("text after the root element: only comments may follow it")]
    TrailingContent,
    /// The VOEvent has no `ivorn` attribute, or an empty one.
    #[error("VOEvent has no ivorn attribute")]
    MissingIvorn,
    /// The VOEvent's `role` is not one of the four VOEvent roles.
    #[error("VOEvent role `{0}` is not one of observation, prediction, utility, test")]
    BadEventRole(String),
    /// The Transport message has no `role` attribute.
    #[error("Transport message has no role attribute")]
    MissingTransportRole,
    /// The Transport message's `role` is not one of the four Transport roles.
    #[error("Transport role `{0}` is not one of iamalive, authenticate, ack, nak")]
    UnknownTransportRole(String),
    /// The Transport message has no `Origin` child, or an empty one.
    #[error("Transport message has no Origin element")]
    MissingOrigin,
}

#[cfg(test)]
mod plain_tests;
#[cfg(test)]
mod tests;
