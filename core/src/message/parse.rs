//! The single-pass classifier behind [`parse`].

use std::borrow::Cow;
use std::ops::Range;

use encoding_rs::Encoding;
use quick_xml::Reader;
use quick_xml::events::Event;

use super::{
    EventRole, Message, ParseError, ParseLimits, Transport, TransportRole, VoEvent,
    VoEventNamespace,
};

mod encoding;
mod plain;

use encoding::{check_decodes, resolve_label, scan_chars, sniff_bom};

#[cfg(test)]
pub(crate) use plain::KNOWN_ROOTS;

/// Parses one frame payload and classifies it as a VOEvent or a Transport message.
///
/// The whole payload is read, in one streaming pass, and checked for well-formedness and
/// against `limits` (see the [module documentation](super) for exactly what is checked). The
/// result borrows from `payload`; values are copied only when they must be unescaped, decoded
/// from a non-UTF-8 encoding, or joined from several pieces.
///
/// This function never panics, whatever the bytes.
///
/// Implementation note: a plain Transport message (no comment, CDATA, reference in text or
/// processing instruction; the shape every peer sends) is read by a small tokenizer of its
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
    if let Some(message) = parser.run_plain() {
        return Ok(message);
    }
    parser.run_checked()
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
    if let Some(message) = parser.run_plain() {
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
        .run_plain()
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
struct Walk<'a> {
    phase: Phase,
    /// Number of open elements.
    depth: usize,
    root: Option<Root<'a>>,
    /// The root element's span in `body`.
    span: Range<usize>,
}

impl Walk<'_> {
    fn new() -> Self {
        Self {
            phase: Phase::Prolog,
            depth: 0,
            root: None,
            span: 0..0,
        }
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
        self.run()
    }

    fn run(&mut self) -> Result<Message<'a>, ParseError> {
        let mut reader = Reader::from_reader(self.body);
        let config = reader.config_mut();
        config.check_comments = true;
        config.check_end_names = true;
        config.allow_dangling_amp = false;
        config.allow_unmatched_ends = false;
        config.expand_empty_elements = false;
        config.trim_text(false);

        let mut walk = Walk::new();
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
                Event::CData(cdata) => match walk.phase {
                    Phase::Root => {
                        if let Some(Root::Transport(acc)) = &mut walk.root
                            && acc.capturing_at(walk.depth)
                        {
                            let raw = cdata.into_inner();
                            let len = raw.len();
                            let piece = if acc.keeps_text() {
                                normalize_newlines(self.decode(raw, self.base + start)?)
                            } else {
                                Cow::Borrowed("")
                            };
                            acc.push_text(piece, len, self.limits)?;
                        }
                    }
                    Phase::Prolog => {
                        return Err(self.malformed(start, "CDATA before the root element"));
                    }
                    Phase::Epilog => return Err(ParseError::TrailingContent),
                },
                Event::GeneralRef(reference) => {
                    let c = resolve_ref(&reference, self.base + start)?;
                    match walk.phase {
                        Phase::Root => {
                            if let Some(Root::Transport(acc)) = &mut walk.root
                                && acc.capturing_at(walk.depth)
                            {
                                let piece = if acc.keeps_text() {
                                    char_piece(c)
                                } else {
                                    Cow::Borrowed("")
                                };
                                acc.push_text(piece, reference.len() + 2, self.limits)?;
                            }
                        }
                        Phase::Prolog => {
                            return Err(self.malformed(start, "reference before the root element"));
                        }
                        Phase::Epilog => return Err(ParseError::TrailingContent),
                    }
                }
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
        walk: &mut Walk<'a>,
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
                    None => self.open_root(tag, at)?,
                };
                walk.root = Some(root);
                walk.phase = Phase::Root;
            }
            Some(Root::Transport(acc)) => {
                self.transport_child(acc, tag, at, walk.depth, empty)?;
            }
            Some(Root::VoEvent(_)) => self.check_tag(tag, at)?,
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
    fn on_end(&mut self, walk: &mut Walk<'a>, start: usize, end: usize) -> Result<(), ParseError> {
        if walk.depth == 0 {
            // quick-xml already refuses unmatched end tags; kept as a guard.
            return Err(self.malformed(start, "end tag without a start tag"));
        }
        if let Some(Root::Transport(acc)) = &mut walk.root {
            acc.close(walk.depth);
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
        walk: &mut Walk<'a>,
        start: usize,
        raw: Cow<'a, [u8]>,
    ) -> Result<(), ParseError> {
        match walk.phase {
            Phase::Root => {
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
            }
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

    /// The end of the document: the message, or what is missing.
    fn finish(&self, walk: Walk<'a>) -> Result<Message<'a>, ParseError> {
        if walk.depth > 0 {
            return Err(self.malformed(self.body.len(), "element not closed at end of input"));
        }
        let element = self.base + walk.span.start..self.base + walk.span.end;
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
            })),
            Some(Root::Transport(acc)) => acc.finish().map(Message::Transport),
        }
    }

    /// Validates the payload's characters before the structure is read, and records what the
    /// pass can then skip ([`Parser::body_text`], and with `hints` [`Parser::has_cr`] and, for
    /// plain ASCII, the UTF-8 validation).
    fn check_chars(&mut self, hints: bool) -> Result<(), ParseError> {
        let (body, base) = (self.body, self.base);
        let utf8 = matches!(self.text, TextEncoding::Utf8);
        let scan = if hints {
            scan_chars::<true>(body, utf8)
        } else {
            scan_chars::<false>(body, utf8)
        };
        // Plain ASCII needs no UTF-8 validation (its pieces are validated as they are taken).
        let text = if utf8 && !(scan.plain && scan.forbidden.is_none()) {
            let text = std::str::from_utf8(body).map_err(|e| ParseError::NotUtf8 {
                offset: base + e.valid_up_to(),
            })?;
            Some(text)
        } else {
            None
        };
        if let Some(at) = scan.forbidden {
            let reason = match body[at] {
                0xEF => format!(
                    "character U+FFF{:X} is not allowed in XML",
                    body[at + 2] & 0x0F
                ),
                byte => format!("character U+{byte:04X} is not allowed in XML"),
            };
            return Err(malformed(base + at, &reason));
        }
        if let TextEncoding::Legacy(encoding) = self.text {
            check_decodes(body, base, encoding)?;
        }
        self.chars_checked = true;
        self.body_text = text;
        // In a legacy encoding the decoded text is what counts: always normalise.
        self.has_cr = scan.has_cr || !utf8;
        Ok(())
    }

    /// Reads the encoding from the XML declaration, if there is one.
    ///
    /// The declaration is parsed here, before the main pass, because the payload must be
    /// validated in its encoding before quick-xml reads it.
    fn declared_encoding(&mut self) -> Result<TextEncoding, ParseError> {
        if self.path == Path::Fast
            && let Some(decl) = plain::COMMON_DECLARATIONS
                .iter()
                .find(|decl| self.body.starts_with(decl))
        {
            self.decl_end = decl.len();
            return Ok(TextEncoding::Utf8);
        }
        let Some(rest) = self.body.strip_prefix(b"<?xml") else {
            return Ok(TextEncoding::Utf8);
        };
        if !rest.first().is_some_and(|&b| is_ws(b)) {
            // `<?xml-stylesheet ...?>` or a broken declaration: the main pass decides.
            return Ok(TextEncoding::Utf8);
        }
        let Some(end) = rest.windows(2).position(|w| w == b"?>") else {
            return Err(self.malformed(0, "XML declaration is not closed"));
        };
        let mut index = 0usize;
        let mut encoding: Option<&[u8]> = None;
        let mut order_ok = true;
        let at = self.base + 5;
        scan_attrs(&rest[..end], at, 3, &mut self.keys, |key, value, _| {
            order_ok &= match (index, key) {
                (0, b"version") => true,
                (1, b"encoding") => {
                    encoding = Some(value);
                    true
                }
                (1 | 2, b"standalone") => true,
                _ => false,
            };
            index += 1;
            Ok(())
        })
        .map_err(|e| match e {
            ParseError::TooManyAttributes { .. } => {
                self.malformed(0, "XML declaration has unexpected pseudo-attributes")
            }
            other => other,
        })?;
        if !order_ok || index == 0 {
            return Err(self.malformed(
                0,
                "XML declaration must be `version`, then optional `encoding` and `standalone`",
            ));
        }
        // `<?xml`, the pseudo-attributes, `?>`.
        self.decl_end = 5 + end + 2;
        match encoding {
            None => Ok(TextEncoding::Utf8),
            Some(label) => resolve_label(label),
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

    /// Checks a tag's name and attributes without keeping anything.
    fn check_tag(&mut self, tag: &'a [u8], at: usize) -> Result<(), ParseError> {
        let (name, attrs) = split_name(tag, at)?;
        scan_attrs(
            attrs,
            at + name.len(),
            self.limits.attrs_max,
            &mut self.keys,
            |_, _, _| Ok(()),
        )
    }

    fn open_root(&mut self, tag: &'a [u8], at: usize) -> Result<Root<'a>, ParseError> {
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

    /// Handles a start or empty tag below a Transport root.
    fn transport_child(
        &mut self,
        acc: &mut TransportAcc<'a>,
        tag: &'a [u8],
        at: usize,
        depth: usize,
        empty: bool,
    ) -> Result<(), ParseError> {
        let (name, attrs) = split_name(tag, at)?;
        let attrs_at = at + name.len();
        let max = self.limits.attrs_max;
        match acc.classify(depth, split_qname(name).1) {
            Child::Param => {
                let mut param_name = None;
                let mut param_value = None;
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |key, value, at| {
                    match key {
                        b"name" => param_name = Some((value, at)),
                        b"value" => param_value = Some((value, at)),
                        _ => {}
                    }
                    Ok(())
                })?;
                if let (Some((n, n_at)), Some((v, v_at))) = (param_name, param_value) {
                    acc.check_count(self.limits)?;
                    let entry = (self.attr_value(n, n_at)?, self.attr_value(v, v_at)?);
                    acc.params.push(entry);
                }
            }
            Child::Filter => {
                let mut kind = None;
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |key, value, at| {
                    if key == b"type" {
                        kind = Some((value, at));
                    }
                    Ok(())
                })?;
                if let Some((k, k_at)) = kind
                    && self.attr_value(k, k_at)? == "xpath"
                {
                    acc.check_count(self.limits)?;
                    acc.open(Target::Filter, depth, empty);
                }
            }
            Child::Text(target) => {
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |_, _, _| Ok(()))?;
                acc.open(target, depth, empty);
            }
            Child::Meta => {
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |_, _, _| Ok(()))?;
                acc.meta_open = !empty;
            }
            Child::Other => {
                scan_attrs(attrs, attrs_at, max, &mut self.keys, |_, _, _| Ok(()))?;
            }
        }
        Ok(())
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

/// Which Transport child an element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Child {
    Text(Target),
    Meta,
    Param,
    Filter,
    Other,
}

/// Where a captured text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Origin,
    Response,
    TimeStamp,
    Result,
    Filter,
}

/// Collects the parts of a Transport message during the pass.
#[derive(Debug)]
struct TransportAcc<'a> {
    role: TransportRole,
    version: Option<Cow<'a, str>>,
    origin: Option<Cow<'a, str>>,
    response: Option<Cow<'a, str>>,
    timestamp: Option<Cow<'a, str>>,
    result: Option<Cow<'a, str>>,
    params: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    legacy_filters: Vec<Cow<'a, str>>,
    /// A `Meta` child of the root is open.
    meta_open: bool,
    /// The element whose text is being collected, if any.
    capture: Option<Capture<'a>>,
    keep: Keep,
    /// A `Response`, a `TimeStamp` child was found (only the first of each counts).
    response_seen: bool,
    timestamp_seen: bool,
}

#[derive(Debug)]
struct Capture<'a> {
    target: Target,
    depth: usize,
    text: TextAcc<'a>,
    /// Bytes of payload consumed so far, for [`ParseLimits::text_max`].
    len: usize,
}

impl<'a> TransportAcc<'a> {
    fn new(role: TransportRole, version: Option<Cow<'a, str>>, keep: Keep) -> Self {
        Self {
            role,
            version,
            origin: None,
            response: None,
            timestamp: None,
            result: None,
            params: Vec::new(),
            legacy_filters: Vec::new(),
            meta_open: false,
            capture: None,
            keep,
            response_seen: false,
            timestamp_seen: false,
        }
    }

    /// Whether the text being captured is kept (else it is only measured).
    fn keeps_text(&self) -> bool {
        self.capture.as_ref().is_some_and(|c| self.kept(c.target))
    }

    fn kept(&self, target: Target) -> bool {
        self.keep == Keep::All || !matches!(target, Target::Response | Target::TimeStamp)
    }

    /// Classifies an element at `depth` by local name. Only the first `Origin`, `Response`,
    /// `TimeStamp` and `Result` count.
    fn classify(&self, depth: usize, local: &[u8]) -> Child {
        if self.capture.is_some() {
            return Child::Other;
        }
        match (depth, local) {
            (2, b"Origin") if self.origin.is_none() => Child::Text(Target::Origin),
            (2, b"Response") if !self.response_seen => Child::Text(Target::Response),
            (2, b"TimeStamp") if !self.timestamp_seen => Child::Text(Target::TimeStamp),
            (2, b"Meta") => Child::Meta,
            (3, b"Param") if self.meta_open => Child::Param,
            (3, b"Result") if self.meta_open && self.result.is_none() => {
                Child::Text(Target::Result)
            }
            (3, b"filter") if self.meta_open => Child::Filter,
            _ => Child::Other,
        }
    }

    fn check_count(&self, limits: &ParseLimits) -> Result<(), ParseError> {
        if self.params.len() + self.legacy_filters.len() >= limits.transport_params_max {
            return Err(ParseError::TooLarge {
                what: "number of Transport parameters",
                max: limits.transport_params_max,
            });
        }
        Ok(())
    }

    /// Starts collecting the text of an element (or stores `""` for an empty one).
    fn open(&mut self, target: Target, depth: usize, empty: bool) {
        match target {
            Target::Response => self.response_seen = true,
            Target::TimeStamp => self.timestamp_seen = true,
            Target::Origin | Target::Result | Target::Filter => {}
        }
        if empty {
            self.assign(target, Cow::Borrowed(""));
        } else {
            self.capture = Some(Capture {
                target,
                depth,
                text: TextAcc::Empty,
                len: 0,
            });
        }
    }

    fn capturing_at(&self, depth: usize) -> bool {
        self.capture.as_ref().is_some_and(|c| c.depth == depth)
    }

    fn push_text(
        &mut self,
        piece: Cow<'a, str>,
        raw_len: usize,
        limits: &ParseLimits,
    ) -> Result<(), ParseError> {
        if let Some(capture) = &mut self.capture {
            capture.len += raw_len;
            if capture.len > limits.text_max {
                return Err(ParseError::TooLarge {
                    what: "element text (bytes)",
                    max: limits.text_max,
                });
            }
            capture.text.push(piece);
        }
        Ok(())
    }

    /// Handles the end tag of the element at `depth`.
    fn close(&mut self, depth: usize) {
        if self.capturing_at(depth)
            && let Some(capture) = self.capture.take()
        {
            self.assign(capture.target, capture.text.finish());
        }
        if depth == 2 {
            self.meta_open = false;
        }
    }

    fn assign(&mut self, target: Target, value: Cow<'a, str>) {
        if !self.kept(target) {
            return;
        }
        match target {
            Target::Origin => self.origin = Some(trim_ws(value)),
            Target::Response => self.response = Some(trim_ws(value)),
            Target::TimeStamp => self.timestamp = Some(trim_ws(value)),
            Target::Result => self.result = Some(value),
            Target::Filter => self.legacy_filters.push(value),
        }
    }

    fn finish(self) -> Result<Transport<'a>, ParseError> {
        let origin = self
            .origin
            .filter(|o| !o.is_empty())
            .ok_or(ParseError::MissingOrigin)?;
        Ok(Transport {
            role: self.role,
            version: self.version,
            origin,
            response: self.response,
            timestamp: self.timestamp,
            params: self.params,
            result: self.result,
            legacy_filters: self.legacy_filters,
        })
    }
}

/// Text of one element, gathered from text, CDATA and reference pieces; allocates only when
/// there is more than one piece.
#[derive(Debug)]
enum TextAcc<'a> {
    Empty,
    One(Cow<'a, str>),
    Many(String),
}

impl<'a> TextAcc<'a> {
    fn push(&mut self, piece: Cow<'a, str>) {
        if piece.is_empty() {
            return;
        }
        *self = match std::mem::replace(self, TextAcc::Empty) {
            TextAcc::Empty => TextAcc::One(piece),
            TextAcc::One(first) => {
                let mut joined = String::with_capacity(first.len() + piece.len());
                joined.push_str(&first);
                joined.push_str(&piece);
                TextAcc::Many(joined)
            }
            TextAcc::Many(mut joined) => {
                joined.push_str(&piece);
                TextAcc::Many(joined)
            }
        };
    }

    fn finish(self) -> Cow<'a, str> {
        match self {
            TextAcc::Empty => Cow::Borrowed(""),
            TextAcc::One(text) => text,
            TextAcc::Many(text) => Cow::Owned(text),
        }
    }
}

/// Scans the attributes of one tag, checking their syntax, uniqueness, count and references,
/// and calls `on_attr(name, raw_value, value_offset)` for each.
///
/// `attrs` is the part of the tag after its name; `at` is its payload offset.
fn scan_attrs<'t>(
    attrs: &'t [u8],
    at: usize,
    max: usize,
    keys: &mut Keys,
    mut on_attr: impl FnMut(&'t [u8], &'t [u8], usize) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    keys.clear();
    let n = attrs.len();
    let mut i = 0;
    loop {
        let gap_start = i;
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        if i == n {
            return Ok(());
        }
        if i == gap_start {
            return Err(malformed(
                at + i,
                "attributes must be separated by whitespace",
            ));
        }
        let key_start = i;
        let mut colons = 0u32;
        while let Some(&b) = attrs.get(i)
            && is_name_char(b)
        {
            colons += u32::from(b == b':');
            i += 1;
        }
        let key = &attrs[key_start..i];
        if !is_name_run(key, colons) {
            check_name(key, at + key_start)?;
        }
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        if attrs.get(i) != Some(&b'=') {
            return Err(malformed(at + i, "expected `=` after an attribute name"));
        }
        i += 1;
        while i < n && is_ws(attrs[i]) {
            i += 1;
        }
        let quote = match attrs.get(i) {
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return Err(malformed(at + i, "attribute value must be quoted")),
        };
        i += 1;
        let value_start = i;
        loop {
            let Some(step) = memchr::memchr3(quote, b'<', b'&', &attrs[i..]) else {
                return Err(malformed(at + value_start, "attribute value is not closed"));
            };
            i += step;
            match attrs[i] {
                b'<' => {
                    return Err(malformed(
                        at + i,
                        "`<` is not allowed in an attribute value",
                    ));
                }
                b'&' => {
                    let Some(len) = attrs[i + 1..]
                        .iter()
                        .position(|&b| b == b';' || b == quote || b == b'&')
                    else {
                        return Err(malformed(at + value_start, "attribute value is not closed"));
                    };
                    if attrs[i + 1 + len] != b';' {
                        return Err(malformed(
                            at + i,
                            "`&` must start a reference ending in `;`",
                        ));
                    }
                    resolve_ref(&attrs[i + 1..i + 1 + len], at + i)?;
                    i += len + 2;
                }
                _ => break,
            }
        }
        let value = &attrs[value_start..i];
        i += 1;
        if keys.len() >= max {
            return Err(ParseError::TooManyAttributes { max });
        }
        if keys.contains(attrs, key) {
            return Err(malformed(
                at + key_start,
                &format!("duplicate attribute `{}`", excerpt(key)),
            ));
        }
        keys.push(key_start, key.len());
        on_attr(key, value, at + value_start)?;
    }
}

/// Attribute names of one tag, as `(offset, length)` in its attribute text, for the
/// duplicate check: the first [`KEYS_INLINE`] in place, any more in a vector (which allocates
/// only for a tag with more attributes than that).
struct Keys {
    inline: [(usize, usize); KEYS_INLINE],
    inline_len: usize,
    spill: Vec<(usize, usize)>,
}

/// Attribute names a tag can have before [`Keys`] allocates.
const KEYS_INLINE: usize = 8;

impl Keys {
    fn new() -> Self {
        Self {
            inline: [(0, 0); KEYS_INLINE],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.inline_len = 0;
        self.spill.clear();
    }

    fn len(&self) -> usize {
        self.inline_len + self.spill.len()
    }

    fn push(&mut self, at: usize, len: usize) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = (at, len);
                self.inline_len += 1;
            }
            None => self.spill.push((at, len)),
        }
    }

    /// Whether `key` is one of the names, which are ranges of `attrs`.
    fn contains(&self, attrs: &[u8], key: &[u8]) -> bool {
        let same =
            |&(at, len): &(usize, usize)| len == key.len() && attrs.get(at..at + len) == Some(key);
        self.inline[..self.inline_len].iter().any(same) || self.spill.iter().any(same)
    }
}

/// Resolves the name of a reference (the part between `&` and `;`) to its character.
pub(crate) fn resolve_ref(name: &[u8], at: usize) -> Result<char, ParseError> {
    match name {
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"amp" => Ok('&'),
        b"apos" => Ok('\''),
        b"quot" => Ok('"'),
        [b'#', b'x', hex @ ..] => char_ref(hex, 16, at),
        [b'#', decimal @ ..] => char_ref(decimal, 10, at),
        _ if check_name(name, at).is_ok() => Err(ParseError::UndefinedEntity(excerpt(name))),
        _ => Err(malformed(at, "invalid entity reference")),
    }
}

fn char_ref(digits: &[u8], radix: u32, at: usize) -> Result<char, ParseError> {
    let invalid = || malformed(at, "invalid character reference");
    if digits.is_empty() {
        return Err(invalid());
    }
    let mut value: u32 = 0;
    for &digit in digits {
        let digit = char::from(digit).to_digit(radix).ok_or_else(invalid)?;
        value = value
            .checked_mul(radix)
            .and_then(|v| v.checked_add(digit))
            .ok_or_else(invalid)?;
    }
    char::from_u32(value)
        .filter(|&c| is_xml_char(c))
        .ok_or_else(invalid)
}

/// The text a reference stands for, without allocating for the predefined entities.
pub(crate) fn char_piece(c: char) -> Cow<'static, str> {
    match c {
        '<' => Cow::Borrowed("<"),
        '>' => Cow::Borrowed(">"),
        '&' => Cow::Borrowed("&"),
        '\'' => Cow::Borrowed("'"),
        '"' => Cow::Borrowed("\""),
        ' ' => Cow::Borrowed(" "),
        '\n' => Cow::Borrowed("\n"),
        other => Cow::Owned(other.to_string()),
    }
}

/// Whether `c` is a `Char` of XML 1.0.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..
    )
}

/// Resolves references and applies attribute-value normalisation (XML 1.0 §3.3.3): a literal
/// tab, newline, carriage return or CR LF pair becomes one space.
fn normalize_attr(value: Cow<'_, str>, at: usize) -> Result<Cow<'_, str>, ParseError> {
    let special = |b: u8| matches!(b, b'&' | b'\t' | b'\n' | b'\r');
    if !value.bytes().any(special) {
        return Ok(value);
    }
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .position(|&b| special(b))
            .map_or(bytes.len(), |p| i + p);
        out.push_str(&value[i..run]);
        i = run;
        match bytes.get(i) {
            Some(b'&') => {
                let len = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == b';')
                    .ok_or_else(|| malformed(at + i, "`&` must start a reference ending in `;`"))?;
                out.push(resolve_ref(&bytes[i + 1..i + 1 + len], at + i)?);
                i += len + 2;
            }
            Some(b'\r') if bytes.get(i + 1) == Some(&b'\n') => {
                out.push(' ');
                i += 2;
            }
            Some(_) => {
                out.push(' ');
                i += 1;
            }
            None => {}
        }
    }
    Ok(Cow::Owned(out))
}

/// Applies line-end normalisation (XML 1.0 §2.11): CR LF and lone CR become LF.
fn normalize_newlines(text: Cow<'_, str>) -> Cow<'_, str> {
    if memchr::memchr(b'\r', text.as_bytes()).is_none() {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Trims XML whitespace from both ends, keeping a borrow borrowed.
fn trim_ws(text: Cow<'_, str>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(trim(s)),
        Cow::Owned(s) => {
            let trimmed = trim(&s);
            if trimmed.len() == s.len() {
                Cow::Owned(s)
            } else {
                Cow::Owned(trimmed.to_owned())
            }
        }
    }
}

/// [`trim_ws`] on a `str`.
fn trim(s: &str) -> &str {
    // Whitespace is ASCII: the bytes next to it are character boundaries.
    let bytes = s.as_bytes();
    let start = bytes.iter().position(|&b| !is_ws(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_ws(b))
        .map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// Splits a tag's content into its name, checked with [`check_name`], and the rest (the
/// attributes).
///
/// # Errors
///
/// [`check_name`]'s, for the name.
fn split_name(tag: &[u8], at: usize) -> Result<(&[u8], &[u8]), ParseError> {
    // One pass over the name characters; [`check_name`] only to word an error.
    let mut end = 0;
    let mut colons = 0u32;
    while let Some(&b) = tag.get(end)
        && is_name_char(b)
    {
        colons += u32::from(b == b':');
        end += 1;
    }
    let (name, rest) = tag.split_at(end);
    if rest.first().is_none_or(|&b| is_ws(b)) && is_name_run(name, colons) {
        return Ok((name, rest));
    }
    let (name, rest) = split_tag(tag);
    check_name(name, at)?;
    Ok((name, rest))
}

/// Splits a tag's content into its name and the rest (the attributes).
fn split_tag(tag: &[u8]) -> (&[u8], &[u8]) {
    let name_len = tag.iter().position(|&b| is_ws(b)).unwrap_or(tag.len());
    tag.split_at(name_len)
}

/// Splits a qualified name into its prefix and local name.
fn split_qname(name: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match name.iter().position(|&b| b == b':') {
        Some(colon) => (Some(&name[..colon]), &name[colon + 1..]),
        None => (None, name),
    }
}

/// Whether attribute `key` declares the namespace of `prefix` (`xmlns` for no prefix).
fn declares_prefix(key: &[u8], prefix: Option<&[u8]>) -> bool {
    match prefix {
        None => key == b"xmlns",
        Some(prefix) => key.strip_prefix(b"xmlns:") == Some(prefix),
    }
}

/// Checks a name (element, attribute, PI target or entity): the XML `Name` production for ASCII
/// (every non-ASCII byte is accepted), plus the namespace rule of at most one colon, with text
/// on both sides.
fn check_name(name: &[u8], at: usize) -> Result<(), ParseError> {
    // One pass: AND the byte classes together and count colons.
    let (classes, colons) = name
        .iter()
        .fold((NAME_CHAR, 0u32), |(classes, colons), &b| {
            (
                classes & NAME_CLASS[usize::from(b)],
                colons + u32::from(b == b':'),
            )
        });
    let syntax_ok = classes & NAME_CHAR != 0 && name.first().is_some_and(|&b| is_name_start(b));
    let colons_ok =
        colons == 0 || (colons == 1 && name.first() != Some(&b':') && name.last() != Some(&b':'));
    if syntax_ok && colons_ok {
        Ok(())
    } else {
        Err(malformed(at, &format!("invalid name `{}`", excerpt(name))))
    }
}

/// [`check_name`]'s test for bytes known to be name characters, holding `colons` colons.
fn is_name_run(name: &[u8], colons: u32) -> bool {
    name.first().is_some_and(|&b| is_name_start(b) && b != b':')
        && (colons == 0 || (colons == 1 && name.last() != Some(&b':')))
}

const NAME_START: u8 = 1;
const NAME_CHAR: u8 = 2;

/// Byte classes for names: `NAME_START` and/or `NAME_CHAR`.
static NAME_CLASS: [u8; 256] = name_classes();

const fn name_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let start = b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80;
        let other = b.is_ascii_digit() || b == b'-' || b == b'.';
        if start {
            table[i] = NAME_START | NAME_CHAR;
        } else if other {
            table[i] = NAME_CHAR;
        }
        i += 1;
    }
    table
}

fn is_name_start(b: u8) -> bool {
    NAME_CLASS[usize::from(b)] & NAME_START != 0
}

fn is_name_char(b: u8) -> bool {
    NAME_CLASS[usize::from(b)] & NAME_CHAR != 0
}

/// XML whitespace (`S`): space, tab, newline, carriage return.
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_all_ws(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| is_ws(b))
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
