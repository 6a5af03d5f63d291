//! VOEvent 2.0 schema validation of author submissions, equivalent to Comet's lxml check.
//!
//! # Theory of operation
//!
//! Comet's receiver validates every submission against its bundled `VOEvent-v2.0.xsd` with
//! lxml (libxml2) and naks what fails (docs/protocol.md §4.1). [`validate_voevent_2_0`] makes the
//! same decision without a schema engine: the XSD is small and self-contained (no imports, no
//! `xs:any`, no substitution groups, no derivation between its types), so it is encoded here as
//! a table, one `Type` per XSD type (in `schema/xsd.rs`), each citing the XSD name:
//!
//! - the **attributes** a type declares, each with its simple type (`xs:anyURI`, `xs:dateTime`,
//!   `xs:float`, `smallFloat`, `xs:ID`, an enumeration such as `roleValues`, or the fixed
//!   `xs:token` `version="2.0"`), and whether it is required. Any other attribute is refused,
//!   except `xmlns` declarations and `xsi:schemaLocation` / `xsi:noNamespaceSchemaLocation`
//!   (never fetched, never checked, like libxml2 with a preloaded schema);
//! - the **content model**: `xs:all` (each child at most once, any order), `xs:choice
//!   maxOccurs="unbounded"` (any number of the listed children in any order; at least one
//!   unless one of them has `minOccurs="0"`), `xs:sequence` (only `Citations`), empty content
//!   (`Reference`, `AstroCoordSystem`: no child and no character at all, not even whitespace),
//!   or simple content of a typed value.
//!
//! The check is one streaming pass over the `VOEvent` element, with a stack of at most
//! eight frames (the deepest element the schema allows, `C1` in
//! `WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords/Position2D/Value2`, is at depth
//! 8, and any element below a simple or empty type is refused before it is pushed). It stops
//! at the first violation and reports it as a [`SchemaError`] naming the element path, what was
//! found and what the schema expects. It allocates nothing for a typical packet beyond the list
//! of in-scope namespace declarations; typed text is validated in place when it arrives in one
//! piece.
//!
//! Children of `VOEvent` are *unqualified* (`elementFormDefault="unqualified"`): only the root
//! is in the VOEvent namespace. A child in any namespace, including one inherited from a
//! default `xmlns="…v2.0"` on the root, is refused, as libxml2 does.
//!
//! # Fidelity to libxml2 2.14 (lxml 6.1)
//!
//! The lexical checks follow libxml2's `xmlschemastypes.c` and `uri.c` rather than the XSD
//! specification where the two differ, because the point is to agree with Comet:
//!
//! - `xs:dateTime`: `[-]YYYY-MM-DDThh:mm:ss[.s+][Z|(+|-)hh:mm]`, year of four or more digits
//!   (no leading zero beyond four, not `0000`), day valid for the month, `24:00:00` allowed,
//!   no leap second. Leading whitespace is refused, and trailing whitespace is accepted only
//!   after a time zone (libxml2's quirk, reproduced).
//! - `xs:float`: optional sign, digits with an optional `.`, an optional exponent whose digits
//!   may be missing (`1e` is accepted, as libxml2 does), `INF`, `-INF`, `NaN`; leading
//!   whitespace is skipped, trailing whitespace is accepted after a number but not after `NaN`
//!   or `INF`. `smallFloat` compares the single-precision value with 0 and 1 (`NaN` fails).
//! - `xs:anyURI`: whitespace-collapsed; empty is valid; characters that are not printable ASCII
//!   and ``<>"{}|\^`'`` and space count as unreserved (libxml2 replaces them with `_`); the rest
//!   must parse as an RFC 3986 URI or relative reference (`%` followed by two hex digits, one
//!   `#`, a numeric port below 2³¹, `[` `]` only around a host or in the fragment, a scheme
//!   starting with a letter, no `:` in the first segment of a relative path).
//! - enumerations compare the exact value (their base type is `xs:string`, whitespace
//!   preserved), `version` is whitespace-collapsed and compared with `2.0`.
//!
//! Known deviations, all on inputs never seen in VOEvent traffic: `xsi:type` is accepted only
//! when it names the declared type itself (libxml2 also accepts types derived from it, e.g.
//! `xs:token` on an `xs:string` element); non-ASCII characters in `WhereWhen/@id` (an `xs:ID`)
//! are classified with Unicode's current alphabetic/numeric properties instead of the XML 1.0
//! fourth-edition tables libxml2 uses. `core/tests/schema_diff.rs` checks every verdict against
//! lxml over a corpus of packets and a table of values, and lists the deviations it meets.
//!
//! # Where it runs
//!
//! The pass has two drivers: [`validate_voevent_2_0`] reads the element with quick-xml itself,
//! and [`parse_and_validate`] feeds the validator the message parser's tokens (a
//! `message::Sink`), so a node reads each byte of a submission once; the differential tests
//! and the fuzz corpus replay hold the two to the same verdict.
//!
//! The broker applies it to author submissions only, after the IVOID and version checks,
//! when [`Policy::schema`](crate::config::Policy::schema) is
//! [`SchemaCheck::V2_0`](crate::config::SchemaCheck::V2_0) (the default) and the packet is in
//! the 2.0 namespace. Events from upstream brokers are not schema-checked (Comet does not either).
//!
//! The table is in `schema/xsd.rs` and the lexical checks in `schema/lexical.rs`. The pass is
//! a `Validator`, declared here with its state and implemented in `schema/validator.rs`
//! (elements, content models, text) and `schema/attributes.rs`; `schema/xml.rs` holds the
//! little XML reading that quick-xml leaves to it.

use std::borrow::Cow;
use std::ops::Range;

use encoding_rs::Encoding;

use crate::message::{Message, ParseError, ParseLimits, VOEVENT_2_0_NS};

use xml::declared_encoding;
use xsd::{Type, VOEVENT};

mod attributes;
mod lexical;
mod validator;
mod xml;
mod xsd;

/// Validates a VOEvent packet against the VOEvent 2.0 schema (Comet's `VOEvent-v2.0.xsd`).
///
/// `payload` is the whole frame payload (its XML declaration tells the encoding) and
/// `element` the byte span of the root `VOEvent` element in it, as
/// [`message::parse`](crate::message::parse) reports in
/// [`VoEvent::element`](crate::message::VoEvent::element). The root must be `VOEvent` in the
/// VOEvent 2.0 namespace; a 1.1 or namespace-less packet fails, as it does in Comet.
///
/// The payload is expected to be well-formed (it has been through `parse`); if it is not, the
/// result is an error, never a panic. Work is one pass over `element`; typed text values are
/// bounded by `limits.text_max` and attributes per element by `limits.attrs_max`.
///
/// # Errors
///
/// Returns the first violation found, in document order, as a [`SchemaError`] whose `Display`
/// names the element (as a path from the root) and says what was found and what the schema
/// expects, e.g. `element VOEvent/Who: unexpected child 'Foo' (expected one of AuthorIVORN,
/// Date, Description, Reference, Author)`.
pub fn validate_voevent_2_0(
    payload: &[u8],
    element: Range<usize>,
    limits: &ParseLimits,
) -> Result<(), SchemaError> {
    let Some(xml) = payload.get(element) else {
        return Err(SchemaError::Malformed {
            reason: "the element span lies outside the payload".to_owned(),
        });
    };
    Validator::new(xml, declared_encoding(payload), limits).run()
}

/// [`message::parse`](crate::message::parse) and, for a VOEvent,
/// [`validate_voevent_2_0`] on its element, in one pass: the validator is fed the parser's
/// tokens instead of reading the element again.
///
/// The message (or the parse error) is exactly `parse`'s, and the schema verdict exactly what
/// `validate_voevent_2_0(payload, element, limits)` returns (the differential tests and the
/// fuzz corpus replay check both). A node that validates every author's submission reads
/// each byte of it once this way.
///
/// # Errors
///
/// Exactly those of [`parse`](crate::message::parse).
pub fn parse_and_validate<'a>(
    payload: &'a [u8],
    limits: &ParseLimits,
) -> Result<Validated<'a>, ParseError> {
    let mut validator = Validator::new(payload, declared_encoding(payload), limits);
    let message = crate::message::parse_with(payload, limits, &mut validator)?;
    let schema = match message {
        Message::VoEvent(_) => Some(validator.finish()),
        _ => None,
    };
    Ok(Validated { message, schema })
}

/// What [`parse_and_validate`] read.
#[derive(Debug)]
pub struct Validated<'a> {
    /// The message, as [`parse`](crate::message::parse) returns it.
    pub message: Message<'a>,
    /// For a VOEvent, [`validate_voevent_2_0`]'s verdict on its element; `None` for a
    /// Transport message.
    pub schema: Option<Result<(), SchemaError>>,
}

/// Why a packet is not valid VOEvent 2.0.
///
/// `element` fields are paths from the root, e.g. `VOEvent/WhereWhen/ObsDataLocation`. Values
/// copied from the packet are cut to 64 characters, with control characters escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The root element is not `VOEvent` in the VOEvent 2.0 namespace.
    #[error(
        "root element {found} is not a VOEvent 2.0 packet: expected VOEvent in namespace \
         {VOEVENT_2_0_NS}"
    )]
    WrongRoot {
        /// The root as found: `{namespace}local`, or the bare name when it has no namespace.
        found: String,
    },
    /// A child element that the content model does not allow at this point.
    #[error("element {element}: unexpected child '{child}' ({expected})")]
    UnexpectedChild {
        /// Path of the parent element.
        element: String,
        /// Name of the child.
        child: String,
        /// What the schema allows here, e.g. "expected one of Description, Reference".
        expected: String,
    },
    /// A child that the schema allows at most once appears again.
    #[error("element {element}: child {child} appears more than once (the schema allows one)")]
    RepeatedChild {
        /// Path of the parent element.
        element: String,
        /// Name of the repeated child.
        child: &'static str,
    },
    /// A child element in a namespace: VOEvent children must have none.
    #[error(
        "element {element}: child '{child}' is in namespace {namespace}, but VOEvent children \
         have no namespace (bind the VOEvent namespace to a prefix, e.g. <voe:VOEvent \
         xmlns:voe=\"{VOEVENT_2_0_NS}\">, and write children without one)"
    )]
    NamespacedChild {
        /// Path of the parent element.
        element: String,
        /// Local name of the child.
        child: String,
        /// Its namespace URI.
        namespace: String,
    },
    /// An element or attribute uses a namespace prefix that is not declared.
    #[error("element {element}: namespace prefix '{prefix}' is not declared")]
    UndeclaredPrefix {
        /// Path of the element (or of the parent, for a child's own prefix).
        element: String,
        /// The prefix.
        prefix: String,
    },
    /// A child element inside an element of simple or empty content.
    #[error("element {element}: child elements are not allowed ({content}), found '{child}'")]
    ChildNotAllowed {
        /// Path of the element.
        element: String,
        /// Name of the child.
        child: String,
        /// The element's content type, e.g. "its type is xs:string".
        content: &'static str,
    },
    /// A required child element is missing.
    #[error("element {element}: missing {expected}")]
    MissingChild {
        /// Path of the element.
        element: String,
        /// What is missing, e.g. "child Error2Radius", "children AstroCoordSystem,
        /// AstroCoords" or "a child (one of Description, Reference)".
        expected: String,
    },
    /// Character data where the content model allows none.
    #[error("element {element}: text '{text}' is not allowed ({content})")]
    TextNotAllowed {
        /// Path of the element.
        element: String,
        /// The text found.
        text: String,
        /// Why: "only child elements" or "the element must be empty".
        content: &'static str,
    },
    /// The text of a typed element is not a valid value of its type.
    #[error("element {element}: '{value}' is not {expected}")]
    BadText {
        /// Path of the element.
        element: String,
        /// The text found.
        value: String,
        /// What the type requires.
        expected: &'static str,
    },
    /// A required attribute is missing.
    #[error("element {element}: attribute {attribute} is required")]
    MissingAttribute {
        /// Path of the element.
        element: String,
        /// Name of the attribute.
        attribute: &'static str,
    },
    /// An attribute that the element's type does not declare.
    #[error("element {element}: attribute '{attribute}' is not allowed ({allowed})")]
    UnexpectedAttribute {
        /// Path of the element.
        element: String,
        /// Name of the attribute (`{namespace}local` when it has a namespace).
        attribute: String,
        /// The attributes the type declares.
        allowed: String,
    },
    /// An attribute value that is not valid for its type.
    #[error("attribute {attribute} of {element}: '{value}' is not {expected}")]
    BadAttribute {
        /// Path of the element.
        element: String,
        /// Name of the attribute.
        attribute: &'static str,
        /// The value found.
        value: String,
        /// What the type requires.
        expected: String,
    },
    /// An `xsi:type` other than the element's declared type.
    #[error(
        "element {element}: xsi:type '{value}' is not accepted (only the declared type \
         {declared} is; remove the attribute)"
    )]
    XsiType {
        /// Path of the element.
        element: String,
        /// The attribute value.
        value: String,
        /// The declared type.
        declared: &'static str,
    },
    /// An `xsi:nil` attribute: no VOEvent element is nillable.
    #[error("element {element}: xsi:nil is not allowed (no VOEvent element is nillable)")]
    XsiNil {
        /// Path of the element.
        element: String,
    },
    /// The same attribute twice under different prefixes bound to one namespace.
    #[error("element {element}: attribute {attribute} appears more than once")]
    RepeatedAttribute {
        /// Path of the element.
        element: String,
        /// Name of the attribute.
        attribute: String,
    },
    /// A limit of [`ParseLimits`] was exceeded.
    #[error("element {element}: {what} exceeds the limit of {max}")]
    TooLarge {
        /// Path of the element.
        element: String,
        /// What was too large.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The bytes are not well-formed XML (only possible if they did not go through `parse`).
    #[error("malformed XML: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

// ------------------------------------------------------------------------------------ tables

/// Attributes of one tag kept from its first scan: more than any VOEvent type declares (6)
/// plus the usual namespace declarations and `xsi:` hints.
const TAG_ATTRS_KEPT: usize = 12;

/// Nesting depth of the deepest element the schema allows (`C1` in
/// `VOEvent/WhereWhen/ObsDataLocation/ObservationLocation/AstroCoords/Position2D/Value2`).
pub(crate) const DEPTH_MAX: usize = 8;

pub(super) const XS_NS: &str = "http://www.w3.org/2001/XMLSchema";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

// --------------------------------------------------------------------------------- validator

/// One open element.
#[derive(Debug, Clone, Copy)]
struct Frame {
    name: &'static str,
    ty: &'static Type,
    /// `xs:all`: bit `i` is set once particle `i` was seen. `xs:sequence`: index of the
    /// current particle.
    state: u32,
    /// `xs:choice`: children so far. `xs:sequence`: occurrences of the current particle.
    count: u32,
}

impl Frame {
    const ROOT: Frame = Frame {
        name: "VOEvent",
        ty: &VOEVENT,
        state: 0,
        count: 0,
    };

    fn new(name: &'static str, ty: &'static Type) -> Self {
        Self {
            name,
            ty,
            state: 0,
            count: 0,
        }
    }
}

/// A namespace declaration in scope.
#[derive(Debug)]
struct Binding<'a> {
    /// Depth of the element that declares it.
    depth: usize,
    /// The prefix; empty for the default namespace.
    prefix: &'a [u8],
    uri: Cow<'a, str>,
}

/// The text of the open typed element, gathered from text, CDATA and reference pieces.
#[derive(Debug)]
enum Collected<'a> {
    Empty,
    One(Cow<'a, str>),
    Many(String),
}

struct Validator<'a, 'l> {
    xml: &'a [u8],
    /// The payload's declared encoding when it is not UTF-8 (or ASCII).
    encoding: Option<&'static Encoding>,
    limits: &'l ParseLimits,
    frames: [Frame; DEPTH_MAX],
    depth: usize,
    /// The root element has been closed.
    done: bool,
    bindings: Vec<Binding<'a>>,
    text: Collected<'a>,
    /// Payload bytes of `text` so far, for [`ParseLimits::text_max`].
    text_len: usize,
    /// The attributes (`name`, raw value) of the tag being opened, in order, as the one scan
    /// that reads its namespace declarations found them; only the first
    /// [`TAG_ATTRS_KEPT`] are kept (a tag with more is scanned again).
    tag_attrs: [(&'a [u8], &'a [u8]); TAG_ATTRS_KEPT],
    /// Number of attributes of the tag being opened (may exceed [`TAG_ATTRS_KEPT`]).
    tag_attrs_len: usize,
    /// Fed by the parser ([`parse_and_validate`]): the attributes of the next tag are
    /// arriving, before the tag itself.
    receiving: bool,
    /// Fed by the parser: why an attribute of the next tag could not be declared, reported
    /// when the tag opens (where a validator reading the element itself finds it).
    declare_failed: Option<SchemaError>,
    /// Fed by the parser: the first violation, after which tokens are ignored.
    failed: Option<SchemaError>,
}

impl<'a, 'l> Validator<'a, 'l> {
    fn new(xml: &'a [u8], encoding: Option<&'static Encoding>, limits: &'l ParseLimits) -> Self {
        Validator {
            xml,
            encoding,
            limits,
            frames: [Frame::ROOT; DEPTH_MAX],
            depth: 0,
            done: false,
            bindings: Vec::new(),
            text: Collected::Empty,
            text_len: 0,
            tag_attrs: [(&[], &[]); TAG_ATTRS_KEPT],
            tag_attrs_len: 0,
            receiving: false,
            declare_failed: None,
            failed: None,
        }
    }
}

#[cfg(test)]
mod tests;
