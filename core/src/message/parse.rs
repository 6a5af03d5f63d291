//! The single-pass classifier behind [`parse`].
//!
//! This file holds the entry points, the parse state, the quick-xml pass with the per-event
//! handlers both tokenizers feed, the root element, and the decoding of values. Beside it:
//! `plain` (the fast path's own tokenizer), `encoding` (byte-order marks, the XML declaration
//! and the character checks), `transport` (collecting a Transport message's children),
//! `attrs` (attribute lists), `names` (XML names) and `text` (characters, references and
//! normalisation).

use std::borrow::Cow;
use std::ops::Range;

use encoding_rs::Encoding;
use quick_xml::Reader;
use quick_xml::events::Event;

use super::{
    EventRole, Message, ParseError, ParseLimits, TransportRole, VoEvent, VoEventNamespace,
};

mod attrs;
mod encoding;
mod names;
mod plain;
mod text;
mod transport;

use crate::summary::Spans;
use attrs::{Keys, scan_attrs};
use encoding::sniff_bom;
use names::{check_name, declares_prefix, split_name, split_qname};
#[cfg(test)]
pub(crate) use plain::KNOWN_ROOTS;
#[cfg(test)]
pub(crate) use text::is_xml_char;
pub(crate) use text::{char_piece, is_ws, resolve_ref};
use text::{is_all_ws, normalize_attr, normalize_newlines};
use transport::TransportAcc;

/// Parses one frame payload and classifies it as a VOEvent or a Transport message.
///
/// The whole payload is read, in one streaming pass, and checked for well-formedness and
/// against `limits` (see the [module documentation](super) for exactly what is checked). The
/// result borrows from `payload`; values are copied only when they must be unescaped, decoded
/// from a non-UTF-8 encoding, or joined from several pieces.
///
/// This function never panics, whatever the bytes.
///
/// Implementation note: a Transport message or a VOEvent without processing instructions,
/// DOCTYPE or unusual tags (the shapes every peer sends) is read by a small tokenizer of its
/// own instead of quick-xml, feeding the same checks; anything else, and anything it would
/// refuse, is read again by quick-xml, so the verdict is always quick-xml's.
///
/// # Errors
///
/// Returns a [`ParseError`] saying what is wrong when the payload is empty, is not well-formed
/// XML, contains a DOCTYPE or an undefined entity reference, is in an unsupported encoding,
/// exceeds a limit in `limits`, has a root element other than `VOEvent` or `Transport`, or
/// lacks what that root needs (`ivorn` and a valid `role` on a VOEvent; a known `role` and an
/// `Origin` on a Transport message).
pub fn parse<'a>(payload: &'a [u8], limits: &ParseLimits) -> Result<Message<'a>, ParseError> {
    let mut parser = Parser::new(payload, limits, Keep::All, Path::Fast)?;
    if let Some(message) = parser.run_plain(None) {
        return Ok(message);
    }
    parser.run_checked()
}

/// [`parse`], with `sink` fed the tokens of a VOEvent's root element as the pass reads them
/// (see [`Sink`]): the schema check runs inside the parser's one pass instead of reading the
/// element again. The result is exactly [`parse`]'s; a Transport message feeds nothing.
///
/// # Errors
///
/// Exactly those of [`parse`].
pub(crate) fn parse_with<'a>(
    payload: &'a [u8],
    limits: &ParseLimits,
    sink: &mut dyn Sink<'a>,
) -> Result<Message<'a>, ParseError> {
    let mut parser = Parser::new(payload, limits, Keep::All, Path::Fast)?;
    if let Some(message) = parser.run_plain(Some(&mut *sink)) {
        return Ok(message);
    }
    // The fast path gave up, maybe after feeding the sink: the quick-xml pass starts again.
    sink.reset();
    if !parser.chars_checked {
        parser.check_chars(false)?;
    }
    parser.run(Some(sink))
}

/// What the parser's pass tells a checker of a VOEvent's root element ([`parse_with`]): its
/// tokens in document order, from the root's start tag to its end tag, nothing before or
/// after it. Each start tag comes as its attributes ([`Sink::attribute`], in order) and then
/// the tag itself ([`Sink::open`]); a self-closing tag is followed by a [`Sink::close`].
///
/// The sink sees only what the parser accepted so far: when the parse fails later, the
/// parse's error is the verdict and whatever the sink concluded is ignored. A sink keeps its
/// own errors (the first one, typically) and may ignore everything after it.
pub(crate) trait Sink<'a> {
    /// One attribute of the start tag being read: its qualified name and its raw value
    /// (between the quotes, references unresolved).
    fn attribute(&mut self, name: &'a [u8], raw: &'a [u8]);
    /// A start tag, whose attributes were just given: `tag` is the bytes between `<` and `>`
    /// (or `/>` when `empty`).
    fn open(&mut self, tag: &'a [u8], empty: bool);
    /// The end of the innermost open element.
    fn close(&mut self);
    /// Character data: a text run (never empty) or a CDATA section's content (maybe empty).
    fn characters(&mut self, raw: Cow<'a, [u8]>);
    /// A character reference or predefined entity, resolved to `c`; `len` is its length in
    /// the payload (`&amp;` is 5).
    fn reference(&mut self, c: char, len: usize);
    /// Forget every token so far: the pass starts again from the payload's beginning (the
    /// fast path gave up, and quick-xml reads the payload).
    fn reset(&mut self);
}

/// [`parse`] for a node routing messages: the same verdict, the same VOEvent, and the same
/// Transport message except that its `response` and `timestamp` are always `None`.
///
/// A node reads a Transport message's role, origin, `Meta/Result` and filters, never its
/// `Response` or `TimeStamp`: not extracting them (they are checked all the same) saves a
/// tenth of the parse of a subscriber's ack, which a broker does for each subscriber and
/// event.
///
/// # Errors
///
/// Exactly those of [`parse`].
pub fn parse_routing<'a>(
    payload: &'a [u8],
    limits: &ParseLimits,
) -> Result<Message<'a>, ParseError> {
    let mut parser = Parser::new(payload, limits, Keep::Routing, Path::Fast)?;
    if let Some(message) = parser.run_plain(None) {
        return Ok(message);
    }
    parser.run_checked()
}

/// [`parse`] without its shortcuts: always the quick-xml pass, every tag and declaration read.
/// The reference the shortcuts are tested against.
#[cfg(test)]
pub(crate) fn parse_full<'a>(
    payload: &'a [u8],
    limits: &ParseLimits,
) -> Result<Message<'a>, ParseError> {
    Parser::new(payload, limits, Keep::All, Path::Full)?.run_checked()
}

/// Only the fast path of [`parse`]: `None` where it leaves the payload to quick-xml.
#[cfg(test)]
pub(crate) fn parse_plain<'a>(payload: &'a [u8], limits: &ParseLimits) -> Option<Message<'a>> {
    Parser::new(payload, limits, Keep::All, Path::Fast)
        .ok()?
        .run_plain(None)
}

/// What to extract from a Transport message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Everything ([`parse`]).
    All,
    /// All but `Response` and `TimeStamp` ([`parse_routing`]).
    Routing,
}

/// Whether the shortcuts are taken: the fast path ([`Parser::run_plain`]), the
/// [`plain::KNOWN_ROOTS`] and [`plain::COMMON_DECLARATIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Fast,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the reference path of the tests")
    )]
    Full,
}

/// How the payload's text is encoded.
#[derive(Debug, Clone, Copy)]
enum TextEncoding {
    /// UTF-8, validated for the whole payload before parsing.
    Utf8,
    /// An ASCII-compatible legacy encoding, checked to decode without errors before parsing.
    Legacy(&'static Encoding),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Prolog,
    Root,
    Epilog,
}

/// What is being collected for the root element.
#[derive(Debug)]
enum Root<'a> {
    VoEvent(VoEventHead<'a>),
    Transport(TransportAcc<'a>),
}

#[derive(Debug)]
struct VoEventHead<'a> {
    ivorn: Cow<'a, str>,
    role: EventRole,
    role_given: bool,
    version: Option<Cow<'a, str>>,
    namespace_uri: Option<Cow<'a, str>>,
}

/// The parse state: the payload (after any BOM) and scratch space reused across elements.
struct Parser<'a, 'l> {
    body: &'a [u8],
    /// Offset of `body` in the payload (3 after a UTF-8 BOM, else 0).
    base: usize,
    text: TextEncoding,
    limits: &'l ParseLimits,
    keep: Keep,
    path: Path,
    /// Attribute names of the current tag, for the duplicate check.
    keys: Keys,
    /// Offset in `body` just after the XML declaration's `?>`; 0 without a declaration.
    decl_end: usize,
    /// The payload's characters have been checked ([`Parser::check_chars`]).
    chars_checked: bool,
    /// `body` as text, once checked and if it is UTF-8.
    body_text: Option<&'a str>,
    /// Whether `body` may hold a carriage return (true until the characters are checked).
    has_cr: bool,
}

/// Where the pass is in the document: what both tokenizers (quick-xml's and the plain one)
/// feed the shared per-event handlers.
struct Walk<'a, 's> {
    phase: Phase,
    /// Number of open elements.
    depth: usize,
    root: Option<Root<'a>>,
    /// The root element's span in `body`.
    span: Range<usize>,
    /// Where a VOEvent's tokens go ([`parse_with`]).
    sink: Option<&'s mut dyn Sink<'a>>,
    /// The root's `Who` and `WhereWhen` children, as spans of `body` ([`VoEvent::spans`]).
    who: Child,
    where_when: Child,
    /// The root's child open now, when it is one of those two: which, and where it starts.
    open_child: Option<(Part, usize)>,
}

/// A child of a VOEvent's root that [`VoEvent::spans`] locates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Who,
    WhereWhen,
}

/// Where the root's one child of a kind is in `body`, as far as the pass has read.
#[derive(Clone, Default)]
enum Child {
    #[default]
    Absent,
    At(Range<usize>),
    /// More than one: the spans say nothing.
    Repeated,
}

impl Child {
    fn found(&mut self, span: Range<usize>) {
        *self = match self {
            Child::Absent => Child::At(span),
            _ => Child::Repeated,
        };
    }
}

/// Which of [`Part`] an element of qualified name `name` is, by its local name.
fn part_of(name: &[u8]) -> Option<Part> {
    match split_qname(name).1 {
        b"Who" => Some(Part::Who),
        b"WhereWhen" => Some(Part::WhereWhen),
        _ => None,
    }
}

impl<'a, 's> Walk<'a, 's> {
    fn new(sink: Option<&'s mut dyn Sink<'a>>) -> Self {
        Self {
            phase: Phase::Prolog,
            depth: 0,
            root: None,
            span: 0..0,
            sink,
            who: Child::Absent,
            where_when: Child::Absent,
            open_child: None,
        }
    }

    /// Notes a child of the root spanning `span` of `body`.
    fn found(&mut self, part: Part, span: Range<usize>) {
        match part {
            Part::Who => self.who.found(span),
            Part::WhereWhen => self.where_when.found(span),
        }
    }

    /// The sink while the root element is open (and only for a VOEvent).
    fn sink(&mut self) -> Option<&mut (dyn Sink<'a> + 's)> {
        let sink = self.sink.as_deref_mut()?;
        (self.phase == Phase::Root && matches!(self.root, Some(Root::VoEvent(_)))).then_some(sink)
    }
}

impl<'a, 'l> Parser<'a, 'l> {
    /// A parser for `payload`, its byte-order mark and XML declaration read.
    fn new(
        payload: &'a [u8],
        limits: &'l ParseLimits,
        keep: Keep,
        path: Path,
    ) -> Result<Self, ParseError> {
        if payload.is_empty() {
            return Err(ParseError::Empty);
        }
        let base = sniff_bom(payload)?;
        let mut parser = Parser {
            body: &payload[base..],
            base,
            text: TextEncoding::Utf8,
            limits,
            keep,
            path,
            keys: Keys::new(),
            decl_end: 0,
            chars_checked: false,
            body_text: None,
            has_cr: true,
        };
        parser.text = parser.declared_encoding()?;
        Ok(parser)
    }

    /// The quick-xml pass, after checking the characters (unless the fast path has).
    fn run_checked(&mut self) -> Result<Message<'a>, ParseError> {
        if !self.chars_checked {
            self.check_chars(false)?;
        }
        self.run(None)
    }

    fn run(&mut self, sink: Option<&mut dyn Sink<'a>>) -> Result<Message<'a>, ParseError> {
        let mut reader = Reader::from_reader(self.body);
        let config = reader.config_mut();
        config.check_comments = true;
        config.check_end_names = true;
        config.allow_dangling_amp = false;
        config.allow_unmatched_ends = false;
        config.expand_empty_elements = false;
        config.trim_text(false);

        let mut walk = Walk::new(sink);
        let mut first = true;
        loop {
            let start = position(&reader);
            let event = match reader.read_event() {
                Ok(event) => event,
                Err(e) => return Err(self.xml_error(&reader, &e)),
            };
            let end = position(&reader);
            match event {
                Event::Start(_) => self.on_tag(&mut walk, start, end, false)?,
                Event::Empty(_) => self.on_tag(&mut walk, start, end, true)?,
                Event::End(_) => self.on_end(&mut walk, start, end)?,
                Event::Text(text) => self.on_text(&mut walk, start, text.into_inner())?,
                Event::CData(cdata) => self.on_cdata(&mut walk, start, cdata.into_inner())?,
                Event::GeneralRef(reference) => self.on_reference(&mut walk, start, &reference)?,
                Event::Decl(decl) => {
                    if !first || start != 0 {
                        return Err(self.malformed(
                            start,
                            "the XML declaration is only allowed at the very start",
                        ));
                    }
                    if let Err(e) = decl.version() {
                        return Err(self.malformed(start, &xml_reason(&e)));
                    }
                }
                Event::PI(pi) => {
                    let target = pi.target();
                    if target.eq_ignore_ascii_case(b"xml") {
                        return Err(self
                            .malformed(start, "processing instruction target `xml` is reserved"));
                    }
                    check_name(target, self.base + start + 2)?;
                }
                Event::DocType(_) => return Err(ParseError::Doctype),
                Event::Comment(_) => {}
                Event::Eof => break,
            }
            first = false;
        }
        self.finish(walk)
    }

    /// A start tag (`empty`: a self-closing one) spanning `start..end` of `body`.
    fn on_tag(
        &mut self,
        walk: &mut Walk<'a, '_>,
        start: usize,
        end: usize,
        empty: bool,
    ) -> Result<(), ParseError> {
        if walk.phase == Phase::Epilog {
            return Err(ParseError::MultipleRoots);
        }
        walk.depth += 1;
        if walk.depth > self.limits.depth_max {
            return Err(ParseError::TooDeep {
                max: self.limits.depth_max,
            });
        }
        let tag = self.tag_content(start, end, empty)?;
        let at = self.base + start + 1;
        match &mut walk.root {
            None => {
                walk.span.start = start;
                let root = match self.known_root(tag) {
                    Some(root) => root,
                    None => self.open_root(tag, at, walk.sink.as_deref_mut())?,
                };
                walk.root = Some(root);
                walk.phase = Phase::Root;
            }
            Some(Root::Transport(acc)) => {
                self.transport_child(acc, tag, at, walk.depth, empty)?;
            }
            Some(Root::VoEvent(_)) => {
                let name = self.check_tag(tag, at, walk.sink.as_deref_mut())?;
                if walk.depth == 2
                    && let Some(part) = part_of(name)
                {
                    if empty {
                        walk.found(part, start..end);
                    } else {
                        walk.open_child = Some((part, start));
                    }
                }
            }
        }
        if let Some(sink) = walk.sink() {
            sink.open(tag, empty);
            if empty {
                sink.close();
            }
        }
        if empty {
            walk.depth -= 1;
            if walk.depth == 0 {
                walk.span.end = end;
                walk.phase = Phase::Epilog;
            }
        }
        Ok(())
    }

    /// An end tag spanning `start..end` of `body`, already matched to its start tag.
    fn on_end(
        &mut self,
        walk: &mut Walk<'a, '_>,
        start: usize,
        end: usize,
    ) -> Result<(), ParseError> {
        if walk.depth == 0 {
            // quick-xml already refuses unmatched end tags; kept as a guard.
            return Err(self.malformed(start, "end tag without a start tag"));
        }
        if let Some(Root::Transport(acc)) = &mut walk.root {
            acc.close(walk.depth);
        }
        if let Some(sink) = walk.sink() {
            sink.close();
        }
        if walk.depth == 2
            && let Some((part, from)) = walk.open_child.take()
        {
            walk.found(part, from..end);
        }
        walk.depth -= 1;
        if walk.depth == 0 {
            walk.span.end = end;
            walk.phase = Phase::Epilog;
        }
        Ok(())
    }

    /// Character data `raw` (no markup, no reference) starting at `start` of `body`.
    fn on_text(
        &mut self,
        walk: &mut Walk<'a, '_>,
        start: usize,
        raw: Cow<'a, [u8]>,
    ) -> Result<(), ParseError> {
        match walk.phase {
            Phase::Root => self.root_characters(walk, start, raw, false)?,
            Phase::Prolog => {
                if !is_all_ws(&raw) {
                    return Err(self.malformed(start, "text before the root element"));
                }
            }
            Phase::Epilog => {
                if !is_all_ws(&raw) {
                    return Err(ParseError::TrailingContent);
                }
            }
        }
        Ok(())
    }

    /// Character data inside the root element, a text run or (`cdata`) a CDATA section's
    /// content, at `start` of `body`: to the sink, and to a Transport message's capture.
    fn root_characters(
        &mut self,
        walk: &mut Walk<'a, '_>,
        start: usize,
        raw: Cow<'a, [u8]>,
        cdata: bool,
    ) -> Result<(), ParseError> {
        // An empty CDATA section is a piece of text for the schema check (lxml makes it a text
        // node); an empty text run is nothing.
        if let Some(sink) = walk.sink()
            && (cdata || !raw.is_empty())
        {
            sink.characters(raw.clone());
        }
        if let Some(Root::Transport(acc)) = &mut walk.root
            && acc.capturing_at(walk.depth)
        {
            let len = raw.len();
            let mut piece = Cow::Borrowed("");
            if acc.keeps_text() {
                piece = self.decode(raw, self.base + start)?;
                if self.has_cr {
                    piece = normalize_newlines(piece);
                }
            }
            acc.push_text(piece, len, self.limits)?;
        }
        Ok(())
    }

    /// A CDATA section's content `raw`; the section starts at `start` of `body`.
    fn on_cdata(
        &mut self,
        walk: &mut Walk<'a, '_>,
        start: usize,
        raw: Cow<'a, [u8]>,
    ) -> Result<(), ParseError> {
        match walk.phase {
            Phase::Root => self.root_characters(walk, start, raw, true),
            Phase::Prolog => Err(self.malformed(start, "CDATA before the root element")),
            Phase::Epilog => Err(ParseError::TrailingContent),
        }
    }

    /// A reference in text, `&name;`, at `start` of `body`.
    fn on_reference(
        &mut self,
        walk: &mut Walk<'a, '_>,
        start: usize,
        name: &[u8],
    ) -> Result<(), ParseError> {
        let c = resolve_ref(name, self.base + start)?;
        match walk.phase {
            Phase::Root => {
                if let Some(sink) = walk.sink() {
                    sink.reference(c, name.len() + 2);
                }
                if let Some(Root::Transport(acc)) = &mut walk.root
                    && acc.capturing_at(walk.depth)
                {
                    let piece = if acc.keeps_text() {
                        char_piece(c)
                    } else {
                        Cow::Borrowed("")
                    };
                    acc.push_text(piece, name.len() + 2, self.limits)?;
                }
                Ok(())
            }
            Phase::Prolog => Err(self.malformed(start, "reference before the root element")),
            Phase::Epilog => Err(ParseError::TrailingContent),
        }
    }

    /// The end of the document: the message, or what is missing.
    fn finish(&self, walk: Walk<'a, '_>) -> Result<Message<'a>, ParseError> {
        if walk.depth > 0 {
            return Err(self.malformed(self.body.len(), "element not closed at end of input"));
        }
        let element = self.base + walk.span.start..self.base + walk.span.end;
        let in_payload = |child: Child| match child {
            Child::Absent => Some(None),
            Child::At(span) => Some(Some(self.base + span.start..self.base + span.end)),
            Child::Repeated => None,
        };
        let spans = in_payload(walk.who)
            .zip(in_payload(walk.where_when))
            .map(|(who, where_when)| Spans { who, where_when });
        match walk.root {
            None => Err(ParseError::NoRoot),
            Some(Root::VoEvent(head)) => Ok(Message::VoEvent(VoEvent {
                ivorn: head.ivorn,
                role: head.role,
                role_given: head.role_given,
                version: head.version,
                namespace: VoEventNamespace::classify(head.namespace_uri.as_deref()),
                namespace_uri: head.namespace_uri,
                element,
                spans,
            })),
            Some(Root::Transport(acc)) => acc.finish().map(Message::Transport),
        }
    }

    /// The bytes between `<` and `>` (or `/>`) of the tag that `start..end` covers.
    fn tag_content(&self, start: usize, end: usize, empty: bool) -> Result<&'a [u8], ParseError> {
        let close = if empty { 2 } else { 1 };
        let body = self.body;
        let tag = (body.get(start) == Some(&b'<') && end >= start + 1 + close)
            .then(|| body.get(start + 1..end - close))
            .flatten();
        tag.ok_or_else(|| self.malformed(start, "unexpected tag bounds"))
    }

    /// Checks a tag's name and attributes, passing the attributes to `sink`; the name.
    fn check_tag(
        &mut self,
        tag: &'a [u8],
        at: usize,
        mut sink: Option<&mut (dyn Sink<'a> + '_)>,
    ) -> Result<&'a [u8], ParseError> {
        let (name, attrs) = split_name(tag, at)?;
        scan_attrs(
            attrs,
            at + name.len(),
            self.limits.attrs_max,
            &mut self.keys,
            |key, value, _| {
                if let Some(sink) = sink.as_deref_mut() {
                    sink.attribute(key, value);
                }
                Ok(())
            },
        )?;
        Ok(name)
    }

    /// Reads the root's start tag; a VOEvent's attributes go to `sink` too (a Transport
    /// message's do not: the sink is for a VOEvent's element).
    fn open_root(
        &mut self,
        tag: &'a [u8],
        at: usize,
        mut sink: Option<&mut (dyn Sink<'a> + '_)>,
    ) -> Result<Root<'a>, ParseError> {
        let (name, attrs) = split_name(tag, at)?;
        let (prefix, local) = split_qname(name);
        let is_voevent = match local {
            b"VOEvent" => true,
            b"Transport" => false,
            _ => return Err(ParseError::UnknownRoot(excerpt(name))),
        };
        let mut ivorn = None;
        let mut role = None;
        let mut version = None;
        let mut namespace = None;
        let attrs_at = at + name.len();
        scan_attrs(
            attrs,
            attrs_at,
            self.limits.attrs_max,
            &mut self.keys,
            |key, value, at| {
                if is_voevent && let Some(sink) = sink.as_deref_mut() {
                    sink.attribute(key, value);
                }
                match key {
                    b"ivorn" => ivorn = Some((value, at)),
                    b"role" => role = Some((value, at)),
                    b"version" => version = Some((value, at)),
                    _ if declares_prefix(key, prefix) => namespace = Some((value, at)),
                    _ => {}
                }
                Ok(())
            },
        )?;
        if let (Some(prefix), None) = (prefix, namespace) {
            return Err(malformed(
                at,
                &format!("namespace prefix `{}` is not declared", excerpt(prefix)),
            ));
        }
        let version = version.map(|(v, at)| self.attr_value(v, at)).transpose()?;
        let role = role.map(|(v, at)| self.attr_value(v, at)).transpose()?;
        if is_voevent {
            let ivorn = match ivorn {
                Some((v, at)) => self.attr_value(v, at)?,
                None => return Err(ParseError::MissingIvorn),
            };
            if ivorn.is_empty() {
                return Err(ParseError::MissingIvorn);
            }
            let (event_role, role_given) = match role {
                None => (EventRole::Observation, false),
                Some(r) => match EventRole::from_attr(&r) {
                    Some(event_role) => (event_role, true),
                    None => return Err(ParseError::BadEventRole(excerpt(r.as_bytes()))),
                },
            };
            let namespace_uri = namespace
                .map(|(v, at)| self.attr_value(v, at))
                .transpose()?;
            Ok(Root::VoEvent(VoEventHead {
                ivorn,
                role: event_role,
                role_given,
                version,
                namespace_uri,
            }))
        } else {
            let role = match role {
                None => return Err(ParseError::MissingTransportRole),
                Some(r) => TransportRole::from_attr(&r)
                    .ok_or_else(|| ParseError::UnknownTransportRole(excerpt(r.as_bytes())))?,
            };
            Ok(Root::Transport(TransportAcc::new(role, version, self.keep)))
        }
    }

    /// Decodes, unescapes and normalises one attribute value found at payload offset `at`.
    fn attr_value(&self, raw: &'a [u8], at: usize) -> Result<Cow<'a, str>, ParseError> {
        if raw.len() > self.limits.text_max {
            return Err(ParseError::TooLarge {
                what: "attribute value (bytes)",
                max: self.limits.text_max,
            });
        }
        normalize_attr(self.decode_body(raw, at)?, at)
    }

    fn decode(&self, raw: Cow<'a, [u8]>, at: usize) -> Result<Cow<'a, str>, ParseError> {
        match raw {
            Cow::Borrowed(raw) => self.decode_body(raw, at),
            Cow::Owned(raw) => Ok(Cow::Owned(self.decode_slice(&raw, at)?.into_owned())),
        }
    }

    /// [`Parser::decode_slice`] for a part of `body`: a slice of [`Parser::body_text`] when
    /// the body is known to be UTF-8, which costs no second validation.
    fn decode_body(&self, raw: &'a [u8], at: usize) -> Result<Cow<'a, str>, ParseError> {
        if let Some(text) = self.body_text
            && let Some(offset) = raw.as_ptr().addr().checked_sub(self.body.as_ptr().addr())
            && let Some(piece) = text.get(offset..offset + raw.len())
            && piece.as_ptr() == raw.as_ptr()
        {
            return Ok(Cow::Borrowed(piece));
        }
        self.decode_slice(raw, at)
    }

    fn decode_slice<'s>(&self, raw: &'s [u8], at: usize) -> Result<Cow<'s, str>, ParseError> {
        match self.text {
            TextEncoding::Utf8 => {
                std::str::from_utf8(raw)
                    .map(Cow::Borrowed)
                    .map_err(|e| ParseError::NotUtf8 {
                        offset: at + e.valid_up_to(),
                    })
            }
            TextEncoding::Legacy(encoding) => Ok(encoding.decode_without_bom_handling(raw).0),
        }
    }

    fn xml_error(&self, reader: &Reader<&'a [u8]>, error: &quick_xml::Error) -> ParseError {
        let at = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
        let doctype = self
            .body
            .get(at..)
            .and_then(|rest| rest.get(..9))
            .is_some_and(|head| head.eq_ignore_ascii_case(b"<!DOCTYPE"));
        if doctype {
            return ParseError::Doctype;
        }
        self.malformed(at.min(self.body.len()), &xml_reason(error))
    }

    /// A [`ParseError::Malformed`] at `at`, an offset into the body (not the payload).
    fn malformed(&self, at: usize, reason: &str) -> ParseError {
        malformed(self.base + at, reason)
    }
}

fn position(reader: &Reader<&[u8]>) -> usize {
    // The position never exceeds the length of the slice being read.
    usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX)
}

fn malformed(offset: usize, reason: &str) -> ParseError {
    ParseError::Malformed {
        offset,
        reason: reason.to_owned(),
    }
}

/// The text of a quick-xml error, bounded like every other [`ParseError`]: the names it quotes
/// from the payload (end tags, the first pseudo-attribute of the XML declaration) are cut to 64
/// characters, and any other message to [`XML_REASON_MAX`], so a hostile payload cannot
/// inflate a nak reason (quick-xml quotes names whole).
fn xml_reason(error: &quick_xml::Error) -> String {
    use quick_xml::errors::IllFormedError as Ill;
    let cut = |name: &str| excerpt(name.as_bytes());
    let detail = match error {
        quick_xml::Error::IllFormed(Ill::MissingDeclVersion(Some(attr))) => format!(
            "an XML declaration must start with `version` attribute, but it starts with `{}`",
            cut(attr)
        ),
        quick_xml::Error::IllFormed(Ill::MissingEndTag(tag)) => format!(
            "start tag not closed: `</{}>` not found before end of input",
            cut(tag)
        ),
        quick_xml::Error::IllFormed(Ill::UnmatchedEndTag(tag)) => {
            format!("close tag `</{}>` does not match any open tag", cut(tag))
        }
        quick_xml::Error::IllFormed(Ill::MismatchedEndTag { expected, found }) => format!(
            "expected `</{}>`, but `</{}>` was found",
            cut(expected),
            cut(found)
        ),
        other => {
            let text = other.to_string();
            return match text.char_indices().nth(XML_REASON_MAX) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            };
        }
    };
    format!("ill-formed document: {detail}")
}

/// Longest quick-xml error text kept in a [`ParseError::Malformed`] reason, in characters.
const XML_REASON_MAX: usize = 160;

/// Peer text for an error message: lossy UTF-8, at most 64 characters.
fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}
