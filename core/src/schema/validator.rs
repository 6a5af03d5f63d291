//! The validating pass: quick-xml's events in document order, each element checked against
//! its parent's content model (`xs:all`, `xs:choice`, `xs:sequence`, empty or simple),
//! namespace declarations tracked, typed text gathered and checked when the element closes,
//! and the errors worded from the table. The attributes of each element are checked in
//! `attributes.rs`.

use std::borrow::Cow;

use encoding_rs::Encoding;
use quick_xml::Reader;
use quick_xml::events::Event;

use super::lexical::{is_any_uri, is_date_time, is_ncname, is_xml_space, parse_float};
use super::xml::{excerpt, lossy, resolve_ref, scan_attrs, split_qname, split_tag};
use super::xsd::{Content, Enumeration, Particle, Type, Value};
use super::{Binding, Collected, DEPTH_MAX, Frame, SchemaError, Validator, XML_NS};
use crate::message::{Sink, VOEVENT_2_0_NS};

impl<'a> Validator<'a, '_> {
    pub(super) fn run(mut self) -> Result<(), SchemaError> {
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
        self.finish()
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
        self.check_not_done()?;
        // Declarations on this tag apply to its own name and attributes.
        self.declare(split_tag(tag).1, self.depth + 1)?;
        self.open_tag(tag)
    }

    fn check_not_done(&self) -> Result<(), SchemaError> {
        if self.done {
            return Err(SchemaError::Malformed {
                reason: "an element follows the VOEvent element".to_owned(),
            });
        }
        Ok(())
    }

    /// Handles a start tag (the bytes between `<` and `>` or `/>`) whose attributes were
    /// declared ([`Self::declare`]).
    fn open_tag(&mut self, tag: &'a [u8]) -> Result<(), SchemaError> {
        let (name, attrs) = split_tag(tag);
        let depth = self.depth + 1;
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
        self.tag_attrs_len = 0;
        let mut failed = None;
        scan_attrs(attrs, |key, raw| {
            self.declare_one(key, raw, depth)
                .map_err(|e| failed = Some(e))
                .is_ok()
        })
        .map_err(malformed)?;
        failed.map_or(Ok(()), Err)
    }

    /// One attribute of the tag being opened at `depth`, for [`Self::declare`]: kept, and
    /// bound when it declares a namespace.
    fn declare_one(
        &mut self,
        key: &'a [u8],
        raw: &'a [u8],
        depth: usize,
    ) -> Result<(), SchemaError> {
        if let Some(slot) = self.tag_attrs.get_mut(self.tag_attrs_len) {
            *slot = (key, raw);
        }
        self.tag_attrs_len += 1;
        let prefix = match key.strip_prefix(b"xmlns") {
            Some([]) => &key[..0],
            Some([b':', prefix @ ..]) => prefix,
            _ => return Ok(()),
        };
        let uri = value_of(self.encoding, raw)?;
        self.bindings.push(Binding { depth, prefix, uri });
        Ok(())
    }

    /// The verdict once the parser's pass is over ([`super::parse_and_validate`]).
    pub(super) fn finish(self) -> Result<(), SchemaError> {
        match self.failed {
            Some(e) => Err(e),
            None if self.done => Ok(()),
            None => Err(SchemaError::Malformed {
                reason: "the VOEvent element is not closed".to_owned(),
            }),
        }
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

    /// The namespace URI bound to `prefix` (`None` for the default namespace) in scope, or
    /// `Ok(None)` when the name has no namespace; `Err` for an undeclared prefix.
    pub(super) fn namespace_of(&self, prefix: Option<&[u8]>) -> Result<Option<&str>, ()> {
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
    pub(super) fn path(&self) -> String {
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
pub(super) fn value_of<'a>(
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

/// "expected X", "expected one of X, Y", or "no further child is allowed here".
fn expected<'n>(names: impl Iterator<Item = &'n str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.as_slice() {
        [] => "no further child is allowed here".to_owned(),
        [one] => format!("expected {one}"),
        many => format!("expected one of {}", many.join(", ")),
    }
}

pub(super) fn join<'n>(names: impl Iterator<Item = &'n str>, sep: &str) -> String {
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

pub(super) fn malformed(reason: &'static str) -> SchemaError {
    SchemaError::Malformed {
        reason: reason.to_owned(),
    }
}

// ---------------------------------------------------------------------------- simple types

/// What a value should have been, for a message.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expected {
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

    pub(super) fn text(self) -> String {
        match self {
            Self::Enum(e) => format!("one of {} ({})", e.values.join(", "), e.name),
            Self::Fixed(v) => format!("{v} (the fixed value)"),
            other => other.static_text().to_owned(),
        }
    }
}

pub(super) fn check_value(ty: Value, value: &str) -> Result<(), Expected> {
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

/// The validator fed by the parser's pass ([`super::parse_and_validate`]): the same steps as
/// [`Validator::run`] takes on quick-xml's events, stopping at the first violation.
impl<'a> Sink<'a> for Validator<'a, '_> {
    fn attribute(&mut self, name: &'a [u8], raw: &'a [u8]) {
        if self.failed.is_some() {
            return;
        }
        if !self.receiving {
            self.receiving = true;
            self.tag_attrs_len = 0;
            self.declare_failed = None;
        }
        // `declare` stops at the first failure, and so does this.
        if self.declare_failed.is_none()
            && let Err(e) = self.declare_one(name, raw, self.depth + 1)
        {
            self.declare_failed = Some(e);
        }
    }

    fn open(&mut self, tag: &'a [u8], _empty: bool) {
        if self.failed.is_some() {
            return;
        }
        if !std::mem::take(&mut self.receiving) {
            self.tag_attrs_len = 0;
            self.declare_failed = None;
        }
        let opened = self
            .check_not_done()
            .and_then(|()| self.declare_failed.take().map_or(Ok(()), Err))
            .and_then(|()| self.open_tag(tag));
        if let Err(e) = opened {
            self.failed = Some(e);
        }
    }

    fn close(&mut self) {
        if self.failed.is_none()
            && let Err(e) = Validator::close(self)
        {
            self.failed = Some(e);
        }
    }

    fn characters(&mut self, raw: Cow<'a, [u8]>) {
        if self.failed.is_none()
            && let Err(e) = Validator::characters(self, raw)
        {
            self.failed = Some(e);
        }
    }

    fn reset(&mut self) {
        let bindings = std::mem::take(&mut self.bindings);
        *self = Validator::new(self.xml, self.encoding, self.limits);
        // Keep the allocation.
        self.bindings = bindings;
        self.bindings.clear();
    }

    fn reference(&mut self, c: char, len: usize) {
        if self.failed.is_none()
            && let Err(e) = self.piece(crate::message::char_piece(c), len)
        {
            self.failed = Some(e);
        }
    }
}
