//! The fast path of [`parse`](super::parse): the Transport messages and VOEvents peers send,
//! without quick-xml.

use std::borrow::Cow;

use super::{Parser, Path, Root, Sink, TransportAcc, Walk, is_ws, split_qname};
use crate::message::{Message, TransportRole};

impl<'a> Parser<'a, '_> {
    /// The fast path: the pass of [`Parser::run`], with the same per-event handlers (and
    /// `sink`, for a VOEvent), but tokenized here instead of by quick-xml, for a subset of XML
    /// only.
    ///
    /// Returns `None`, leaving the payload to [`Parser::run`], outside that subset and on any
    /// error: a root other than `Transport` or `VOEvent`; a processing instruction or DOCTYPE;
    /// a comment with `--` inside or ending in `-`; an end tag other than exactly `</name>`; a
    /// `>` inside an attribute value; a `&` in text without its `;` before the next tag; more
    /// than [`PLAIN_DEPTH_MAX`] open elements; invalid characters. On that subset the tokens
    /// are quick-xml's (text runs, references, CDATA sections, comments, tags), so a `Some` is
    /// the message [`Parser::run`] returns, and the sink saw the tokens it would have seen
    /// (the differential tests in `message::plain_tests` check both on mutated messages of
    /// every peer and on mutated VOEvents). After a `None` the sink may have seen some tokens:
    /// the caller resets it.
    ///
    /// Implementation note: quick-xml's event loop, and an allocation for each open element
    /// name, were most of the cost of a subscriber's ack, which a broker parses once per
    /// subscriber per event. The plain pass also skips what it knows: the root start tags and
    /// XML declarations that peers send ([`KNOWN_ROOTS`], [`COMMON_DECLARATIONS`]).
    pub(super) fn run_plain(&mut self, sink: Option<&mut dyn Sink<'a>>) -> Option<Message<'a>> {
        let body = self.body;
        let mut pos = self.decl_end;
        // Decide before reading the payload's characters.
        let lt = pos + body[pos..].iter().position(|&b| !is_ws(b))?;
        let name = body.get(lt + 1..)?;
        let name = &name[..name
            .iter()
            .position(|&b| is_ws(b) || b == b'>' || b == b'/')
            .unwrap_or(name.len())];
        let transport = match split_qname(name).1 {
            b"Transport" => true,
            b"VOEvent" => false,
            _ => return None,
        };
        if body[lt] != b'<' {
            return None;
        }
        // The hints pay for a small Transport message, not for a VOEvent's many line ends.
        self.check_chars(transport).ok()?;
        let mut walk = Walk::new(sink);
        // The names of the open elements: (offset, length) in `body`.
        let mut open = [(0usize, 0usize); PLAIN_DEPTH_MAX];
        let mut open_len = 0;
        while pos < body.len() {
            if body[pos] != b'<' {
                let end = memchr::memchr2(b'<', b'&', &body[pos..]).map_or(body.len(), |i| pos + i);
                if end > pos {
                    self.on_text(&mut walk, pos, Cow::Borrowed(&body[pos..end]))
                        .ok()?;
                }
                pos = end;
                if body.get(pos) == Some(&b'&') {
                    // A reference, `&name;`: its name ends at the first `;`, and a `<` first
                    // leaves the payload to quick-xml. The search stops at whichever comes
                    // first, so a text of many references is read once (looking for the next
                    // `<` at each one would read a long text once per reference).
                    let rest = &body[pos + 1..];
                    let semi = memchr::memchr2(b';', b'<', rest)?;
                    if rest[semi] != b';' {
                        return None;
                    }
                    self.on_reference(&mut walk, pos, &rest[..semi]).ok()?;
                    pos += semi + 2;
                }
                continue;
            }
            let rest = &body[pos..];
            match rest.get(1)? {
                b'/' => {
                    let (at, len) = *open[..open_len].last()?;
                    let name = &body[at..at + len];
                    let rest = &body[pos + 2..];
                    if !(rest.starts_with(name) && rest.get(len) == Some(&b'>')) {
                        return None;
                    }
                    let end = pos + 3 + len;
                    self.on_end(&mut walk, pos, end).ok()?;
                    open_len -= 1;
                    pos = end;
                }
                b'!' if rest.starts_with(b"<!--") => {
                    // A comment, as quick-xml (checking comments) accepts it: no `--` inside,
                    // not ending in `-`. Anything else is left to quick-xml.
                    let content = &rest[4..];
                    let close = memchr::memmem::find(content, b"-->")?;
                    let content = &content[..close];
                    if content.ends_with(b"-") || memchr::memmem::find(content, b"--").is_some() {
                        return None;
                    }
                    pos += 4 + close + 3;
                }
                b'!' if rest.starts_with(b"<![CDATA[") => {
                    let close = memchr::memmem::find(&rest[9..], b"]]>")?;
                    let raw = &body[pos + 9..pos + 9 + close];
                    self.on_cdata(&mut walk, pos, Cow::Borrowed(raw)).ok()?;
                    pos += 9 + close + 3;
                }
                b'!' | b'?' => return None,
                _ => {
                    // The first `>`. quick-xml ends a tag at the first `>` outside quotes, but
                    // when the handler accepts the attributes before this one, every quote
                    // before it is closed: then the two are the same `>`.
                    let gt = pos + 1 + memchr::memchr(b'>', &body[pos + 1..])?;
                    let empty = body[gt - 1] == b'/' && gt - 1 > pos;
                    let end = gt + 1;
                    self.on_tag(&mut walk, pos, end, empty).ok()?;
                    if !empty {
                        let slot = open.get_mut(open_len)?;
                        let content = &body[pos + 1..gt];
                        let name_len = content
                            .iter()
                            .position(|&b| is_ws(b))
                            .unwrap_or(content.len());
                        *slot = (pos + 1, name_len);
                        open_len += 1;
                    }
                    pos = end;
                }
            }
        }
        self.finish(walk).ok()
    }

    /// What [`Parser::open_root`] makes of `tag` when it is one of the [`KNOWN_ROOTS`], without
    /// reading it: a Transport root with that role and version `1.0`.
    pub(super) fn known_root(&self, tag: &[u8]) -> Option<Root<'a>> {
        if self.path != Path::Fast {
            return None;
        }
        KNOWN_ROOTS.iter().find_map(|&(head, tail, attrs)| {
            let role = tag.strip_prefix(head)?.strip_suffix(tail)?;
            let role = TransportRole::from_attr(std::str::from_utf8(role).ok()?)?;
            // The limits `open_root` would check: the attribute count, and the size of the two
            // values it extracts (`version` is "1.0").
            let fits = attrs <= self.limits.attrs_max
                && role.as_str().len().max(3) <= self.limits.text_max;
            let version = Some(Cow::Borrowed("1.0"));
            fits.then(|| Root::Transport(TransportAcc::new(role, version, self.keep)))
        })
    }
}

/// The Transport root start tags (between `<` and `>`) of pygcn, Comet and vtp, as a head and a
/// tail around the `role` value, with their number of attributes. All declare the `trn` prefix,
/// have `version="1.0"`, and are otherwise well-formed, so [`Parser::open_root`] finds in each
/// exactly the role and version (`message::plain_tests` checks that).
pub(crate) const KNOWN_ROOTS: [(&[u8], &[u8], usize); 3] = [
    // pygcn 1.1.3 (`gcn/voeventclient.py::_form_response`).
    (
        b"trn:Transport role=\"",
        b"\" version=\"1.0\" \
          xmlns:trn=\"http://telescope-networks.org/schema/Transport/v1.1\" \
          xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
          xsi:schemaLocation=\"http://telescope-networks.org/schema/Transport/v1.1 \
          http://telescope-networks.org/schema/Transport-v1.1.xsd\"",
        5,
    ),
    // Comet 3.1.0 (`comet/protocol/messages.py`, written by lxml).
    (
        b"trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
          xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" version=\"1.0\" \
          xsi:schemaLocation=\"http://telescope-networks.org/schema/Transport/v1.1 \
          http://www.telescope-networks.org/schema/Transport-v1.1.xsd\" role=\"",
        b"\"",
        5,
    ),
    // vtp (`message::build_transport`).
    (
        b"trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
          version=\"1.0\" role=\"",
        b"\"",
        3,
    ),
];

/// XML declarations seen on nearly every message (pygcn's and lxml's, vtp's): what
/// `Parser::declared_encoding` finds in each (UTF-8, ending where the literal does) is known
/// without reading its pseudo-attributes.
pub(crate) const COMMON_DECLARATIONS: [&[u8]; 4] = [
    b"<?xml version='1.0' encoding='UTF-8'?>",
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    b"<?xml version='1.0' encoding='utf-8'?>",
    b"<?xml version=\"1.0\" encoding=\"utf-8\"?>",
];

/// Open elements the fast path of [`parse`](super::parse) keeps track of; deeper documents go
/// to quick-xml. (A VOEvent's deepest element is at depth 8.)
const PLAIN_DEPTH_MAX: usize = 16;
