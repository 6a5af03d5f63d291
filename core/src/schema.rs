//! VOEvent 2.0 schema validation of author submissions, equivalent to Comet's lxml check.
//!
//! # Theory of operation
//!
//! Comet's receiver validates every submission against its bundled `VOEvent-v2.0.xsd` with
//! lxml (libxml2) and naks what fails (PROTOCOL §4.1). [`validate_voevent_2_0`] makes the same
//! decision without a schema engine: the XSD is small and self-contained (no imports, no
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
//! The check is one streaming quick-xml pass over the `VOEvent` element, with a stack of at most
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
//! The broker applies it to author submissions only, after the IVOID and version checks,
//! when [`Policy::schema`](crate::config::Policy::schema) is
//! [`SchemaCheck::V2_0`](crate::config::SchemaCheck::V2_0) (the default) and the packet is in
//! the 2.0 namespace. Events from upstream brokers are not schema-checked (Comet does not either).

use std::borrow::Cow;
use std::ops::Range;

use encoding_rs::Encoding;
use quick_xml::Reader;
use quick_xml::events::Event;

use crate::message::{ParseLimits, VOEVENT_2_0_NS};

use lexical::{is_any_uri, is_date_time, is_ncname, is_xml_space, parse_float};
use xsd::{Content, Enumeration, Particle, Type, VOEVENT, Value};

mod lexical;
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
    Validator {
        xml,
        encoding: declared_encoding(payload),
        limits,
        frames: [Frame::ROOT; DEPTH_MAX],
        depth: 0,
        done: false,
        bindings: Vec::new(),
        text: Collected::Empty,
        text_len: 0,
        tag_attrs: [(&[], &[]); TAG_ATTRS_KEPT],
        tag_attrs_len: 0,
    }
    .run()
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
}

impl<'a> Validator<'a, '_> {
    fn run(mut self) -> Result<(), SchemaError> {
        let mut reader = Reader::from_reader(self.xml);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        loop {
            let start = position(&reader);
            let event = reader.read_event().map_err(|e| SchemaError::Malformed {
                reason: e.to_string(),
            })?;
            let end = position(&reader);
            match event {
                Event::Start(_) => self.open(start, end, false)?,
                Event::Empty(_) => {
                    self.open(start, end, true)?;
                    self.close()?;
                }
                Event::End(_) => self.close()?,
                Event::Text(text) => {
                    let raw = text.into_inner();
                    if !raw.is_empty() {
                        self.characters(raw)?;
                    }
                }
                // lxml parses CDATA sections into text nodes (strip_cdata), an empty one too.
                Event::CData(cdata) => self.characters(cdata.into_inner())?,
                Event::GeneralRef(reference) => {
                    let c = resolve_ref(&reference).ok_or_else(|| SchemaError::Malformed {
                        reason: format!("unknown reference &{};", lossy(&reference)),
                    })?;
                    self.piece(crate::message::char_piece(c), reference.len() + 2)?;
                }
                Event::Comment(_) | Event::PI(_) => {}
                Event::Decl(_) | Event::DocType(_) => {
                    return Err(SchemaError::Malformed {
                        reason: "declaration inside the element".to_owned(),
                    });
                }
                Event::Eof => break,
            }
        }
        if self.done {
            Ok(())
        } else {
            Err(SchemaError::Malformed {
                reason: "the VOEvent element is not closed".to_owned(),
            })
        }
    }

    /// Handles a start tag spanning `start..end` of `xml`.
    fn open(&mut self, start: usize, end: usize, empty: bool) -> Result<(), SchemaError> {
        let close_len = if empty { 2 } else { 1 };
        let tag = self
            .xml
            .get(start + 1..end.saturating_sub(close_len))
            .filter(|_| self.xml.get(start) == Some(&b'<'))
            .ok_or_else(|| SchemaError::Malformed {
                reason: "unexpected tag bounds".to_owned(),
            })?;
        if self.done {
            return Err(SchemaError::Malformed {
                reason: "an element follows the VOEvent element".to_owned(),
            });
        }
        let (name, attrs) = split_tag(tag);
        let depth = self.depth + 1;
        // Declarations on this tag apply to its own name and attributes.
        self.declare(attrs, depth)?;
        let (prefix, local) = split_qname(name);
        let frame = if self.depth == 0 {
            let namespace = self
                .namespace_of(prefix)
                .map_err(|()| SchemaError::WrongRoot { found: lossy(name) })?;
            if local != b"VOEvent" || namespace != Some(VOEVENT_2_0_NS) {
                let found = match namespace {
                    Some(ns) => format!("{{{}}}{}", excerpt(ns), lossy(local)),
                    None => format!("{} (no namespace)", lossy(local)),
                };
                return Err(SchemaError::WrongRoot { found });
            }
            Frame::ROOT
        } else {
            self.child(prefix, local)?
        };
        if self.depth == DEPTH_MAX {
            // Unreachable: every type at the deepest level has simple content, whose children
            // `child` refuses. Kept as an error rather than a panic.
            return Err(SchemaError::ChildNotAllowed {
                element: self.path(),
                child: lossy(name),
                content: "the schema nests no deeper",
            });
        }
        self.frames[self.depth] = frame;
        self.depth = depth;
        self.text = Collected::Empty;
        self.text_len = 0;
        self.attributes(attrs)
    }

    /// Records the namespace declarations among `attrs`, made by the element at `depth`, and
    /// keeps every attribute in `tag_attrs` for [`Self::attributes`].
    fn declare(&mut self, attrs: &'a [u8], depth: usize) -> Result<(), SchemaError> {
        let encoding = self.encoding;
        let bindings = &mut self.bindings;
        let (kept, len) = (&mut self.tag_attrs, &mut self.tag_attrs_len);
        *len = 0;
        let mut failed = None;
        scan_attrs(attrs, |key, raw| {
            if let Some(slot) = kept.get_mut(*len) {
                *slot = (key, raw);
            }
            *len += 1;
            let prefix = match key.strip_prefix(b"xmlns") {
                Some([]) => &key[..0],
                Some([b':', prefix @ ..]) => prefix,
                _ => return true,
            };
            match value_of(encoding, raw) {
                Ok(uri) => {
                    bindings.push(Binding { depth, prefix, uri });
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })
        .map_err(malformed)?;
        failed.map_or(Ok(()), Err)
    }

    /// Checks a child element against the open element's content model; returns its frame.
    fn child(&mut self, prefix: Option<&[u8]>, local: &[u8]) -> Result<Frame, SchemaError> {
        let namespace = self
            .namespace_of(prefix)
            .map_err(|()| SchemaError::UndeclaredPrefix {
                element: self.path(),
                prefix: lossy(prefix.unwrap_or_default()),
            })?;
        let parent = self.frames[self.depth - 1];
        let particles = match parent.ty.content {
            Content::All(p) | Content::Choice(p) | Content::Sequence(p) => p,
            Content::Empty => {
                return Err(SchemaError::ChildNotAllowed {
                    element: self.path(),
                    child: lossy(local),
                    content: "the element must be empty",
                });
            }
            Content::Simple(_) => {
                return Err(SchemaError::ChildNotAllowed {
                    element: self.path(),
                    child: lossy(local),
                    content: simple_content(parent.ty),
                });
            }
        };
        if let Some(namespace) = namespace {
            return Err(SchemaError::NamespacedChild {
                element: self.path(),
                child: lossy(local),
                namespace: excerpt(namespace),
            });
        }
        let found = particles
            .iter()
            .enumerate()
            .find(|(_, p)| p.name.as_bytes() == local);
        let (state, count, p) = match parent.ty.content {
            Content::All(_) => {
                let Some((i, p)) = found else {
                    let unseen = particles
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| parent.state & (1 << i) == 0)
                        .map(|(_, p)| p.name);
                    return Err(self.unexpected(local, unseen));
                };
                if parent.state & (1 << i) != 0 {
                    return Err(SchemaError::RepeatedChild {
                        element: self.path(),
                        child: p.name,
                    });
                }
                (parent.state | (1 << i), parent.count, p)
            }
            Content::Choice(_) => {
                let Some((_, p)) = found else {
                    return Err(self.unexpected(local, particles.iter().map(|p| p.name)));
                };
                (parent.state, parent.count.saturating_add(1), p)
            }
            _ => {
                let (pos, count) = (parent.state as usize, parent.count);
                let next = || sequence_next(particles, pos, count);
                let Some((i, p)) = next().find(|(_, p)| p.name.as_bytes() == local) else {
                    return Err(self.unexpected(local, next().map(|(_, p)| p.name)));
                };
                let count = if i == pos { count + 1 } else { 1 };
                (i as u32, count, p)
            }
        };
        let parent = &mut self.frames[self.depth - 1];
        parent.state = state;
        parent.count = count;
        Ok(Frame::new(p.name, p.ty))
    }

    /// Handles an end tag: checks that the element's content is complete.
    fn close(&mut self) -> Result<(), SchemaError> {
        if self.depth == 0 {
            return Err(SchemaError::Malformed {
                reason: "end tag without a start tag".to_owned(),
            });
        }
        let frame = self.frames[self.depth - 1];
        match frame.ty.content {
            Content::All(particles) => {
                let mut missing = particles
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| p.min > 0 && frame.state & (1 << i) == 0)
                    .map(|(_, p)| p.name)
                    .peekable();
                if let Some(first) = missing.next() {
                    let expected = match missing.peek() {
                        None => format!("child {first}"),
                        Some(_) => format!("children {first}, {}", join(missing, ", ")),
                    };
                    return Err(self.missing(expected));
                }
            }
            Content::Choice(particles) => {
                if frame.count == 0 && particles.iter().all(|p| p.min > 0) {
                    let names = join(particles.iter().map(|p| p.name), ", ");
                    let expected = match particles {
                        [one] => format!("child {}", one.name),
                        _ => format!("a child (one of {names})"),
                    };
                    return Err(self.missing(expected));
                }
            }
            Content::Sequence(particles) => {
                let pos = frame.state as usize;
                let unmet = particles
                    .iter()
                    .enumerate()
                    .skip(pos)
                    .find(|(i, p)| p.min > if *i == pos { frame.count } else { 0 });
                if let Some((_, p)) = unmet {
                    return Err(self.missing(format!("child {}", p.name)));
                }
            }
            Content::Simple(value) => self.check_text(value)?,
            Content::Empty => {}
        }
        let depth = self.depth;
        while self.bindings.last().is_some_and(|b| b.depth == depth) {
            self.bindings.pop();
        }
        self.text = Collected::Empty;
        self.depth -= 1;
        if self.depth == 0 {
            self.done = true;
        }
        Ok(())
    }

    /// Handles character data (a text run or a CDATA section) in the open element.
    fn characters(&mut self, raw: Cow<'a, [u8]>) -> Result<(), SchemaError> {
        // What needs no decoding: text in an `xs:string` element, and whitespace where only
        // whitespace is allowed. In an ASCII-compatible encoding the four XML space characters
        // are single bytes and no other character decodes to one, so the bytes tell.
        let content = self
            .depth
            .checked_sub(1)
            .map(|top| &self.frames[top].ty.content);
        let ignorable = match content {
            Some(Content::Simple(Value::String)) => true,
            None | Some(Content::All(_) | Content::Choice(_) | Content::Sequence(_)) => {
                raw.iter().all(|&b| crate::message::is_ws(b))
            }
            Some(Content::Empty | Content::Simple(_)) => false,
        };
        if ignorable {
            return Ok(());
        }
        let len = raw.len();
        match raw {
            Cow::Borrowed(raw) => {
                let text = self.decode(raw);
                self.piece(text, len)
            }
            Cow::Owned(raw) => {
                let text = Cow::Owned(self.decode(&raw).into_owned());
                self.piece(text, len)
            }
        }
    }

    /// Handles one decoded piece of character data (`len` payload bytes).
    fn piece(&mut self, text: Cow<'a, str>, len: usize) -> Result<(), SchemaError> {
        if self.depth == 0 {
            return if text.chars().all(is_xml_space) {
                Ok(())
            } else {
                Err(SchemaError::Malformed {
                    reason: "text outside the VOEvent element".to_owned(),
                })
            };
        }
        let ty = self.frames[self.depth - 1].ty;
        match ty.content {
            Content::Empty => Err(SchemaError::TextNotAllowed {
                element: self.path(),
                text: excerpt(&text),
                content: "the element must be empty, without even whitespace",
            }),
            Content::All(_) | Content::Choice(_) | Content::Sequence(_) => {
                if text.chars().all(is_xml_space) {
                    Ok(())
                } else {
                    Err(SchemaError::TextNotAllowed {
                        element: self.path(),
                        text: excerpt(text.trim_matches(is_xml_space)),
                        content: "only child elements and whitespace may appear here",
                    })
                }
            }
            Content::Simple(Value::String) => Ok(()),
            Content::Simple(_) => {
                self.text_len = self.text_len.saturating_add(len);
                if self.text_len > self.limits.text_max {
                    return Err(SchemaError::TooLarge {
                        element: self.path(),
                        what: "element text (bytes)",
                        max: self.limits.text_max,
                    });
                }
                self.text = match std::mem::replace(&mut self.text, Collected::Empty) {
                    Collected::Empty => Collected::One(text),
                    Collected::One(first) => Collected::Many(first.into_owned() + &*text),
                    Collected::Many(mut all) => {
                        all.push_str(&text);
                        Collected::Many(all)
                    }
                };
                Ok(())
            }
        }
    }

    /// Checks the collected text of the closing element against its simple type.
    fn check_text(&mut self, value: Value) -> Result<(), SchemaError> {
        let text = match std::mem::replace(&mut self.text, Collected::Empty) {
            Collected::Empty => Cow::Borrowed(""),
            Collected::One(text) => text,
            Collected::Many(text) => Cow::Owned(text),
        };
        match check_value(value, &text) {
            Ok(()) => Ok(()),
            Err(expected) => Err(SchemaError::BadText {
                element: self.path(),
                value: excerpt(&text),
                expected: expected.static_text(),
            }),
        }
    }

    /// Checks the attributes of the element just opened.
    fn attributes(&self, attrs: &'a [u8]) -> Result<(), SchemaError> {
        let ty = self.frames[self.depth - 1].ty;
        let mut seen = 0u32;
        let mut xsi_seen = 0u32;
        let mut count = 0usize;
        let mut failed = None;
        let mut check = |key, raw| {
            count += 1;
            let checked = if count > self.limits.attrs_max {
                Err(SchemaError::TooLarge {
                    element: self.path(),
                    what: "number of attributes",
                    max: self.limits.attrs_max,
                })
            } else {
                self.attribute(ty, key, raw, &mut seen, &mut xsi_seen)
            };
            checked.map_err(|e| failed = Some(e)).is_ok()
        };
        // `declare` scanned this tag to its end (or failed): its attributes are kept unless
        // there were too many.
        match self.tag_attrs.get(..self.tag_attrs_len) {
            Some(kept) => {
                for &(key, raw) in kept {
                    if !check(key, raw) {
                        break;
                    }
                }
            }
            None => scan_attrs(attrs, check).map_err(malformed)?,
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some((_, missing)) = ty
            .attrs
            .iter()
            .enumerate()
            .find(|(i, a)| a.required && seen & (1 << i) == 0)
        {
            return Err(SchemaError::MissingAttribute {
                element: self.path(),
                attribute: missing.name,
            });
        }
        Ok(())
    }

    /// Checks one attribute `key="raw"` of an element of type `ty`, recording declared ones
    /// in `seen` and `xsi:` ones in `xsi_seen`.
    fn attribute(
        &self,
        ty: &'static Type,
        key: &'a [u8],
        raw: &'a [u8],
        seen: &mut u32,
        xsi_seen: &mut u32,
    ) -> Result<(), SchemaError> {
        if key
            .strip_prefix(b"xmlns")
            .is_some_and(|rest| rest.is_empty() || rest[0] == b':')
        {
            return Ok(());
        }
        let (prefix, local) = split_qname(key);
        if let Some(prefix) = prefix {
            let namespace =
                self.namespace_of(Some(prefix))
                    .map_err(|()| SchemaError::UndeclaredPrefix {
                        element: self.path(),
                        prefix: lossy(prefix),
                    })?;
            let namespace = namespace.unwrap_or_default();
            // xsi:schemaLocation and xsi:noNamespaceSchemaLocation are hints that libxml2
            // ignores when it validates with a given schema; xsi:type is checked; xsi:nil
            // fails (no element is nillable).
            let bit = match local {
                _ if namespace != XSI_NS => 0,
                b"schemaLocation" => 1,
                b"noNamespaceSchemaLocation" => 2,
                b"type" => 4,
                b"nil" => {
                    return Err(SchemaError::XsiNil {
                        element: self.path(),
                    });
                }
                _ => 0,
            };
            if bit == 0 {
                return Err(SchemaError::UnexpectedAttribute {
                    element: self.path(),
                    attribute: format!("{{{}}}{}", excerpt(namespace), lossy(local)),
                    allowed: allowed(ty),
                });
            }
            if *xsi_seen & bit != 0 {
                return Err(SchemaError::RepeatedAttribute {
                    element: self.path(),
                    attribute: format!("{{{XSI_NS}}}{}", lossy(local)),
                });
            }
            *xsi_seen |= bit;
            return if bit == 4 {
                self.check_xsi_type(ty, raw)
            } else {
                Ok(())
            };
        }
        let Some((i, decl)) = ty
            .attrs
            .iter()
            .enumerate()
            .find(|(_, a)| a.name.as_bytes() == local)
        else {
            return Err(SchemaError::UnexpectedAttribute {
                element: self.path(),
                attribute: lossy(local),
                allowed: allowed(ty),
            });
        };
        *seen |= 1 << i;
        if matches!(decl.ty, Value::String) {
            return Ok(());
        }
        if raw.len() > self.limits.text_max {
            return Err(SchemaError::TooLarge {
                element: self.path(),
                what: "attribute value (bytes)",
                max: self.limits.text_max,
            });
        }
        let value = value_of(self.encoding, raw)?;
        check_value(decl.ty, &value).map_err(|expected| SchemaError::BadAttribute {
            element: self.path(),
            attribute: decl.name,
            value: excerpt(&value),
            expected: expected.text(),
        })
    }

    /// Accepts an `xsi:type` only when it names the element's declared type.
    fn check_xsi_type(&self, ty: &'static Type, raw: &'a [u8]) -> Result<(), SchemaError> {
        let value = value_of(self.encoding, raw)?;
        let (prefix, local) = split_qname(value.as_bytes());
        // A QName value takes the default namespace when it has no prefix.
        let names_declared = match (self.namespace_of(prefix), ty.qname) {
            (Ok(namespace), Some((want_ns, want_local))) => {
                namespace == Some(want_ns) && local == want_local.as_bytes()
            }
            _ => false,
        };
        if names_declared {
            Ok(())
        } else {
            Err(SchemaError::XsiType {
                element: self.path(),
                value: excerpt(&value),
                declared: ty.name,
            })
        }
    }

    /// The namespace URI bound to `prefix` (`None` for the default namespace) in scope, or
    /// `Ok(None)` when the name has no namespace; `Err` for an undeclared prefix.
    fn namespace_of(&self, prefix: Option<&[u8]>) -> Result<Option<&str>, ()> {
        let wanted = match prefix {
            Some(b"xml") => return Ok(Some(XML_NS)),
            Some(prefix) => prefix,
            None => &[],
        };
        match self.bindings.iter().rev().find(|b| b.prefix == wanted) {
            Some(binding) if binding.uri.is_empty() => Ok(None),
            Some(binding) => Ok(Some(&binding.uri)),
            None if prefix.is_none() => Ok(None),
            None => Err(()),
        }
    }

    fn decode(&self, raw: &'a [u8]) -> Cow<'a, str> {
        decode(self.encoding, raw)
    }

    /// Path of the open element, e.g. `VOEvent/Who/Author`.
    fn path(&self) -> String {
        join(self.frames[..self.depth].iter().map(|f| f.name), "/")
    }

    fn unexpected<'n>(&self, child: &[u8], allowed: impl Iterator<Item = &'n str>) -> SchemaError {
        SchemaError::UnexpectedChild {
            element: self.path(),
            child: lossy(child),
            expected: expected(allowed),
        }
    }

    fn missing(&self, expected: String) -> SchemaError {
        SchemaError::MissingChild {
            element: self.path(),
            expected,
        }
    }
}

/// Decodes a raw attribute value and resolves its references.
fn value_of<'a>(
    encoding: Option<&'static Encoding>,
    raw: &'a [u8],
) -> Result<Cow<'a, str>, SchemaError> {
    let text = decode(encoding, raw);
    if !text.contains('&') {
        return Ok(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = &*text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let resolved = after
            .find(';')
            .and_then(|semi| Some((resolve_ref(&after.as_bytes()[..semi])?, semi)));
        let Some((c, semi)) = resolved else {
            return Err(malformed("invalid reference in an attribute value"));
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Decodes payload bytes: UTF-8 (validated by the parser; lossy here, never failing) or the
/// declared legacy encoding.
fn decode<'a>(encoding: Option<&'static Encoding>, raw: &'a [u8]) -> Cow<'a, str> {
    match encoding {
        None => match std::str::from_utf8(raw) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(raw),
        },
        Some(encoding) => encoding.decode_without_bom_handling(raw).0,
    }
}

/// The particles of a sequence that may come next, with their indices, when particle `pos`
/// has occurred `count` times: the current one while it may repeat, then each following one
/// as long as every particle before it is satisfied (has its `min` occurrences).
fn sequence_next(
    particles: &'static [Particle],
    pos: usize,
    count: u32,
) -> impl Iterator<Item = (usize, &'static Particle)> {
    let mut i = pos;
    let mut reachable = true;
    std::iter::from_fn(move || {
        while reachable && i < particles.len() {
            let p = &particles[i];
            let occurred = if i == pos { count } else { 0 };
            reachable = occurred >= p.min;
            i += 1;
            if occurred < p.max {
                return Some((i - 1, p));
            }
        }
        None
    })
}

fn simple_content(ty: &Type) -> &'static str {
    match ty.name {
        "xs:anyURI" => "its type is xs:anyURI",
        "xs:dateTime" => "its type is xs:dateTime",
        "xs:float" => "its type is xs:float",
        "EventIVORN" => "its content is a string",
        _ => "its type is xs:string",
    }
}

/// "allowed: a, b" or "it has none".
fn allowed(ty: &Type) -> String {
    if ty.attrs.is_empty() {
        format!("{} has no attributes", ty.name)
    } else {
        format!("allowed: {}", join(ty.attrs.iter().map(|a| a.name), ", "))
    }
}

/// "expected X", "expected one of X, Y", or "no further child is allowed here".
fn expected<'n>(names: impl Iterator<Item = &'n str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.as_slice() {
        [] => "no further child is allowed here".to_owned(),
        [one] => format!("expected {one}"),
        many => format!("expected one of {}", many.join(", ")),
    }
}

fn join<'n>(names: impl Iterator<Item = &'n str>, sep: &str) -> String {
    let mut out = String::new();
    for (i, name) in names.enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(name);
    }
    out
}

fn position(reader: &Reader<&[u8]>) -> usize {
    usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX)
}

fn malformed(reason: &'static str) -> SchemaError {
    SchemaError::Malformed {
        reason: reason.to_owned(),
    }
}

// ---------------------------------------------------------------------------- simple types

/// What a value should have been, for a message.
#[derive(Debug, Clone, Copy)]
enum Expected {
    AnyUri,
    DateTime,
    Float,
    SmallFloat,
    Id,
    Enum(&'static Enumeration),
    Fixed(&'static str),
}

impl Expected {
    fn static_text(self) -> &'static str {
        match self {
            Self::AnyUri => {
                "a valid xs:anyURI (an RFC 3986 URI or relative reference: `%` followed by two \
                 hex digits, at most one `#`, a numeric port)"
            }
            Self::DateTime => {
                "a valid xs:dateTime (YYYY-MM-DDThh:mm:ss, optional fraction of a second, \
                 optional Z or +hh:mm / -hh:mm; no surrounding whitespace)"
            }
            Self::Float => "a valid xs:float (e.g. 1.5, -2E3, INF, -INF, NaN)",
            Self::SmallFloat => "an xs:float between 0.0 and 1.0 (smallFloat)",
            Self::Id => {
                "a valid xs:ID (an NCName: a letter or '_', then letters, digits, '.', '-', '_')"
            }
            Self::Enum(_) | Self::Fixed(_) => "a permitted value",
        }
    }

    fn text(self) -> String {
        match self {
            Self::Enum(e) => format!("one of {} ({})", e.values.join(", "), e.name),
            Self::Fixed(v) => format!("{v} (the fixed value)"),
            other => other.static_text().to_owned(),
        }
    }
}

fn check_value(ty: Value, value: &str) -> Result<(), Expected> {
    let (ok, expected) = match ty {
        Value::String => return Ok(()),
        Value::AnyUri => (is_any_uri(value), Expected::AnyUri),
        Value::DateTime => (is_date_time(value.as_bytes()), Expected::DateTime),
        Value::Float => (parse_float(value).is_some(), Expected::Float),
        Value::SmallFloat => (
            parse_float(value).is_some_and(|v| (0.0..=1.0).contains(&f64::from(v))),
            Expected::SmallFloat,
        ),
        Value::Id => (is_ncname(value), Expected::Id),
        Value::Enum(e) => (e.values.contains(&value), Expected::Enum(e)),
        Value::FixedToken(fixed) => (
            value.trim_matches(is_xml_space) == fixed,
            Expected::Fixed(fixed),
        ),
    };
    if ok { Ok(()) } else { Err(expected) }
}

// ------------------------------------------------------------------------------- XML helpers

/// The encoding the payload's XML declaration names, when it is an ASCII-compatible encoding
/// other than UTF-8; `None` for UTF-8, ASCII, no declaration, or anything unknown (which
/// [`message::parse`](crate::message::parse) refuses before the schema check runs).
fn declared_encoding(payload: &[u8]) -> Option<&'static Encoding> {
    let body = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    let rest = body.strip_prefix(b"<?xml")?;
    let decl = &rest[..rest.windows(2).position(|w| w == b"?>")?];
    let at = decl.windows(8).position(|w| w == b"encoding")?;
    let after = decl[at + 8..].trim_ascii_start().strip_prefix(b"=")?;
    let after = after.trim_ascii_start();
    let quote = *after.first().filter(|&&q| q == b'"' || q == b'\'')?;
    let value = &after[1..];
    let label = value[..value.iter().position(|&b| b == quote)?].trim_ascii();
    // As the parser does: ASCII labels read as UTF-8 (encoding_rs maps them to windows-1252).
    let utf8_like: [&[u8]; 4] = [b"us-ascii", b"ascii", b"utf-8", b"utf8"];
    if utf8_like
        .iter()
        .any(|known| label.eq_ignore_ascii_case(known))
    {
        return None;
    }
    Encoding::for_label(label).filter(|e| *e != encoding_rs::UTF_8 && e.is_ascii_compatible())
}

/// Calls `on_attr(name, raw_value)` for each attribute of a tag (the part after its name),
/// until it returns `false`.
fn scan_attrs<'t>(
    attrs: &'t [u8],
    mut on_attr: impl FnMut(&'t [u8], &'t [u8]) -> bool,
) -> Result<(), &'static str> {
    let is_ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let n = attrs.len();
    let mut i = 0;
    loop {
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        if i == n {
            return Ok(());
        }
        let key_start = i;
        while i < n && !is_ws(attrs[i]) && attrs[i] != b'=' {
            i += 1;
        }
        let key = &attrs[key_start..i];
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        if key.is_empty() || attrs.get(i) != Some(&b'=') {
            return Err("expected `name=\"value\"` in a tag");
        }
        i += 1;
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        let quote = match attrs.get(i) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return Err("attribute value must be quoted"),
        };
        let value_start = i + 1;
        let Some(len) = memchr::memchr(quote, &attrs[value_start..]) else {
            return Err("attribute value is not closed");
        };
        i = value_start + len + 1;
        if !on_attr(key, &attrs[value_start..value_start + len]) {
            return Ok(());
        }
    }
}

/// Resolves the name of a reference (between `&` and `;`) to its character, as the message
/// parser does (the payload has been through it).
fn resolve_ref(name: &[u8]) -> Option<char> {
    crate::message::resolve_ref(name, 0).ok()
}

/// Splits a tag's content into its name and the rest (the attributes).
fn split_tag(tag: &[u8]) -> (&[u8], &[u8]) {
    let name_len = tag
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(tag.len());
    tag.split_at(name_len)
}

/// Splits a qualified name into its prefix and local name.
fn split_qname(name: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match name.iter().position(|&b| b == b':') {
        Some(colon) => (Some(&name[..colon]), &name[colon + 1..]),
        None => (None, name),
    }
}

fn lossy(bytes: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(bytes))
}

/// Peer text for a message: at most 64 characters, control characters escaped.
fn excerpt(text: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
